"""`hushlight keygen` and `hushlight release` (tools/release.py): the signed
bundle checks out on CPython and in both MicroPython interpreters, and every
kind of damage is caught by `check_bundle`."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocol import ota
from tools import release, upy
from tools.cli import main
from tools.errors import UsageError

VERSION = "0.2.0"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # 2048 bits: the smallest the sensors take, and quick to make
    return release.generate_key(tmp_path_factory.mktemp("keys"), 2048)


@pytest.fixture(scope="module")
def bundles(keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A release of VERSION for each MicroPython interpreter."""
    out = tmp_path_factory.mktemp("releases")
    return {
        name: release.build_release(
            keys[0], VERSION, out / name, min_version="0.1.0", to=release.target(name)
        )
        for name in upy.NAMES
    }


def test_keygen_writes_a_private_key_for_its_owner_and_the_sensors_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--out", str(tmp_path), "--bits", "2048"]) == 0
    private, public = tmp_path / release.KEY_NAME, tmp_path / release.PUB_NAME
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    numbers = key.public_key().public_numbers()  # type: ignore[union-attr]  # RSA, checked below
    assert (numbers.n, numbers.e) == ota.parse_public_key(public.read_text())
    assert key.key_size == 2048  # type: ignore[union-attr]  # an RSA key has one
    # never overwritten
    before = private.read_bytes()
    assert main(["keygen", "--out", str(tmp_path), "--bits", "2048"]) == 2
    assert f"{private} exists" in capsys.readouterr().err
    assert private.read_bytes() == before


def test_the_bundle_is_the_firmware_compiled_and_signed(
    bundles: dict[str, Path], keys: tuple[Path, Path]
) -> None:
    path = bundles["device"]
    assert path.name == f"hushlight-{VERSION}"
    bundle = release.check_bundle(path, keys[1])
    assert (bundle.version, bundle.min_version) == (VERSION, "0.1.0")
    modules = release.firmware_sources(upy.FIRMWARE_DIR)
    assert [f[0] for f in bundle.files] == [p[:-3] + ".mpy" for _, p in modules]
    assert "hushlight/app.mpy" in dict((f[0], f) for f in bundle.files)
    # offer and transfer as protocol.ota describes them
    data = bundle.release_bytes()
    offer = bundle.offer()
    assert offer["size"] == len(bundle.manifest) and offer["total"] == len(data)
    assert data[: offer["size"]] == (path / "manifest.txt").read_bytes()
    n, e = ota.parse_public_key(keys[1].read_text())
    sig = base64.b64decode(offer["sig"])
    assert ota.verify(n, e, sig, hashlib.sha256(data[: offer["size"]]).digest())


VERIFY = """
import hashlib
from protocol import ota
n, e = ota.parse_public_key(open(%(pub)r).read())
manifest = open(%(manifest)r, "rb").read()
sig = open(%(sig)r, "rb").read()
good = ota.verify(n, e, sig, hashlib.sha256(manifest).digest())
bent = bytearray(manifest)
bent[-2] ^= 1
print(good, ota.verify(n, e, sig, hashlib.sha256(bytes(bent)).digest()))
"""


@pytest.mark.parametrize("name", upy.NAMES)
def test_the_manifest_verifies_in_micropython(
    name: str, bundles: dict[str, Path], keys: tuple[Path, Path]
) -> None:
    path = bundles[name]
    code = VERIFY % {
        "pub": str(keys[1]),
        "manifest": str(path / "manifest.txt"),
        "sig": str(path / "manifest.sig"),
    }
    assert upy.run_code(code, name=name).split() == ["True", "False"]


IMPORT_PLATFORM = """
import sys
import hushlight.platform as p
print(p.FW_VERSION, sys.implementation._mpy, p.__file__)
"""


@pytest.mark.parametrize("name", upy.NAMES)
def test_the_release_runs_its_version_in_micropython(name: str, bundles: dict[str, Path]) -> None:
    bundle = release.read_bundle(bundles[name])
    files = bundles[name] / "files"
    proc = subprocess.run(
        upy.command("-c", IMPORT_PLATFORM, name=name),
        capture_output=True,
        text=True,
        timeout=60,
        env=upy.firmware_env({"MICROPYPATH": str(files)}),
        check=True,
    )
    version, mpy, where = proc.stdout.split()
    assert version == VERSION != _checkout_version()
    assert int(mpy) == bundle.mpy  # what the sensor compares before it takes the release
    assert where.endswith("hushlight/platform.mpy")


def _checkout_version() -> str:
    text = (upy.FIRMWARE_DIR / "hushlight" / "platform.py").read_text()
    return text.split('FW_VERSION = "', 1)[1].split('"', 1)[0]


def _flip(path: Path) -> None:
    target = path / "files" / "hushlight" / "app.mpy"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    target = path / "files" / "protocol" / "ota.mpy"
    target.write_bytes(target.read_bytes()[:-10])


def _extra(path: Path) -> None:
    (path / "files" / "hushlight" / "evil.mpy").write_bytes(b"M\x06\x00\x1f")


def _manifest(path: Path) -> None:
    manifest = path / "manifest.txt"
    manifest.write_text(manifest.read_text().replace("min_version 0.1.0", "min_version 0.0.0"))


def _missing(path: Path) -> None:
    (path / "files" / "hushlight" / "store.mpy").unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "changed byte": (_flip, "files/hushlight/app.mpy differs from the signed manifest"),
    "truncated file": (_truncate, "files/protocol/ota.mpy has"),
    "extra file": (_extra, "files/hushlight/evil.mpy is not in the signed manifest"),
    "changed manifest": (_manifest, "the signature does not match"),
    "missing file": (_missing, "cannot read files/hushlight/store.mpy"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_check_bundle_catches_damage(
    damage: str, bundles: dict[str, Path], keys: tuple[Path, Path], tmp_path: Path
) -> None:
    copy = tmp_path / bundles["device"].name
    shutil.copytree(bundles["device"], copy)
    release.check_bundle(copy, keys[1])  # the copy itself is good
    spoil, message = DAMAGE[damage]
    spoil(copy)
    with pytest.raises(release.BundleError, match=message):
        release.check_bundle(copy, keys[1])


def test_check_bundle_refuses_another_key(
    bundles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, other = release.generate_key(tmp_path, 2048)
    with pytest.raises(release.BundleError, match="signed with another key"):
        release.check_bundle(bundles["device"], other)
    path = str(bundles["device"])
    assert main(["release", "--check", path, "--pub", str(other)]) == 1
    assert "signature does not match" in capsys.readouterr().err


def _release(*args: str) -> list[str]:
    return ["release", "--interpreter", "device", *args]


def test_release_mistakes_are_one_sentence_each(
    keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key, pub = str(keys[0]), str(keys[1])
    out = str(tmp_path / "out")
    cases = {
        "not a PEM private key": _release("--key", pub, "--version", "0.2.0", "--out", out),
        "not an RSA private key": _release(
            "--key", str(ec_key), "--version", "0.2.0", "--out", out
        ),
        "--version '0.2' is not a version": _release(
            "--key", key, "--version", "0.2", "--out", out
        ),
        "--min-version 0.3.0 is above --version 0.2.0": _release(
            "--key", key, "--version", "0.2.0", "--min-version", "0.3.0", "--out", out
        ),
        "give --key, --out": _release("--version", "0.2.0"),
        "--check needs --pub": ["release", "--check", out],
    }
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing written by a refused build
    # an existing bundle is never rebuilt
    assert main(_release("--key", key, "--version", "0.2.0", "--out", out)) == 0
    first = (tmp_path / "out" / "hushlight-0.2.0" / "manifest.sig").read_bytes()
    assert main(_release("--key", key, "--version", "0.2.0", "--out", out)) == 2
    assert "hushlight-0.2.0 exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "hushlight-0.2.0" / "manifest.sig").read_bytes() == first


def test_a_module_mpy_cross_refuses_leaves_no_bundle(
    keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    firmware = tmp_path / "firmware"
    shutil.copytree(upy.FIRMWARE_DIR / "hushlight", firmware / "hushlight")
    (firmware / "hushlight" / "broken.py").write_text("def f(:\n    pass\n")
    out = tmp_path / "out"
    argv = ["--key", str(keys[0]), "--version", "0.3.0", "--out", str(out)]
    assert main(_release(*argv, "--firmware", str(firmware))) == 1
    err = capsys.readouterr().err
    assert "mpy-cross could not compile" in err and "broken.py" in err
    assert list(out.iterdir()) == []  # neither the bundle nor its work folder


def test_the_version_is_stamped_on_exactly_one_line() -> None:
    source = 'A = 1\nFW_VERSION = "0.1.0"\nB = "FW_VERSION"\n'
    assert (
        release.stamp_version(source, "1.2.3") == 'A = 1\nFW_VERSION = "1.2.3"\nB = "FW_VERSION"\n'
    )
    for bad in ("A = 1\n", 'FW_VERSION = "0.1.0"\nFW_VERSION = "0.1.1"\n'):
        with pytest.raises(UsageError, match="not exactly one"):
            release.stamp_version(bad, "1.2.3")


def test_the_manifest_lists_sizes_and_digests_of_the_files(bundles: dict[str, Path]) -> None:
    path = bundles["host"]
    parsed = ota.parse_manifest((path / "manifest.txt").read_text())
    for name, size, digest in parsed["files"]:
        data = (path / "files" / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest)
    assert json.loads(json.dumps(release.read_bundle(path).offer()))["version"] == VERSION
