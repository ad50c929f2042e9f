"""`hushlight release`: build and sign a firmware release for updates over the air.

A release bundle is a folder::

    OUT/hushlight-VERSION/manifest.txt      the manifest (protocol.ota), signed
    OUT/hushlight-VERSION/manifest.sig      its RSASSA-PKCS1-v1_5 SHA-256 signature
    OUT/hushlight-VERSION/files/PATH        each file the manifest names

The files are the sensor's modules, `firmware/hushlight/*.py` and the
`protocol/*.py` it imports, compiled with mpy-cross for the sensors that will
load them (the ESP32 with ``--esp32``, or one of the MicroPython unix ports
of the virtual sensors), with `platform.FW_VERSION` set to the release's
version.  The sensor checks the signature with the city's public key
(`release.pub`, written by `hushlight keygen`), then each file's size and
SHA-256 against the manifest as it arrives.

`check_bundle` reads a bundle back and checks all of it against a public key
(`hushlight release --check DIR --pub release.pub`), so a roll-out refuses a
broken or tampered bundle before it offers it to any sensor.

The private key signs; it never goes to a sensor.  `hushlight keygen` makes
one (tools/keygen.py).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from protocol import ota
from protocol.errors import ProtocolError
from tools import build, upy
from tools.errors import ToolError, UsageError

__all__ = [
    "KEY_NAME",
    "PUB_NAME",
    "Bundle",
    "BundleError",
    "Target",
    "build_release",
    "check_bundle",
    "generate_key",
    "load_private_key",
    "read_bundle",
    "read_public_key",
    "stamp_version",
    "target",
]

HELP = "build and sign a firmware release for updates over the air (or --check one)"

KEY_NAME = "release-key.pem"
PUB_NAME = "release.pub"
KEY_BITS = (2048, 3072, 4096)
DEFAULT_BITS = 3072
EXPONENT = 65537
DEFAULT_MIN_VERSION = "0.0.0"
MANIFEST = "manifest.txt"
SIGNATURE = "manifest.sig"
FILES = "files"
PACKAGES = ("hushlight", "protocol")
_FW_LINE = re.compile(r'^FW_VERSION = "[^"\n]*"$', re.MULTILINE)


class BundleError(ToolError):
    """A release bundle is broken, tampered with or signed with another key; says which file."""


# ---- keys ---------------------------------------------------------------------


def generate_key(out: Path, bits: int = DEFAULT_BITS) -> tuple[Path, Path]:
    """Write a new release key into the folder `out`: `release-key.pem` (private,
    PKCS#8 PEM, mode 0600) and `release.pub` (protocol.ota.encode_public_key).
    UsageError if either exists: a release key is never overwritten."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if bits not in KEY_BITS:
        raise UsageError(f"--bits {bits} is not offered; use {', '.join(map(str, KEY_BITS))}")
    private, public = out / KEY_NAME, out / PUB_NAME
    for path in (private, public):
        if path.exists():
            raise UsageError(
                f"{path} exists; a release key is never overwritten (the sensors trust its "
                "public half): give another --out folder, or move the old key away first"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the folder {out}: {exc.strerror}") from None
    key = rsa.generate_private_key(public_exponent=EXPONENT, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    numbers = key.public_key().public_numbers()
    try:
        # O_EXCL: a key that appeared since the check above is not overwritten either
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public.write_text(ota.encode_public_key(numbers.n, numbers.e))
    except OSError as exc:
        raise UsageError(f"cannot write the release key into {out}: {exc.strerror}") from None
    return private, public


def load_private_key(path: Path) -> Any:
    """The RSA private key (cryptography's RSAPrivateKey) in the PEM file `path`;
    UsageError saying why it is not a usable release key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"--key {path}: cannot read it ({exc.strerror}); give the release-key.pem "
            "that `hushlight keygen` wrote"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UsageError(
            f"--key {path} is protected by a passphrase; give the unencrypted PKCS#8 key "
            "that `hushlight keygen` wrote"
        ) from None
    except ValueError as exc:
        raise UsageError(
            f"--key {path} is not a PEM private key ({exc}); give the release-key.pem "
            "that `hushlight keygen` wrote (release.pub is its public half, for the sensors)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError(
            f"--key {path} is a {type(key).__name__.lstrip('_')}, not an RSA private key; "
            "make a release key with `hushlight keygen`"
        )
    if key.key_size < 2048 or key.public_key().public_numbers().e != EXPONENT:
        raise UsageError(
            f"--key {path} is RSA {key.key_size} bits with e = "
            f"{key.public_key().public_numbers().e}; the sensors take 2048 bits or more with "
            f"e = {EXPONENT}: make a release key with `hushlight keygen`"
        )
    return key


def read_public_key(path: Path) -> tuple[int, int]:
    """(n, e) of the public release key `path` (the sensors' release.pub);
    UsageError if it is not one."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read the public release key {path} ({exc}); give the release.pub "
            "that `hushlight keygen` wrote"
        ) from None
    try:
        return ota.parse_public_key(text)
    except ProtocolError as exc:
        raise UsageError(
            f"{path} is not a public release key: {exc}; give the release.pub that "
            "`hushlight keygen` wrote"
        ) from None


# ---- building -----------------------------------------------------------------


class Target(NamedTuple):
    """What the release is compiled for: a name, mpy-cross and its -march."""

    name: str
    mpy_cross: str
    arch: str


def target(interpreter: str | None = None, *, esp32: bool = False) -> Target:
    """The ESP32 (`esp32`), or the MicroPython unix port `interpreter` of the
    virtual sensors (default: `tools.upy`'s default); UsageError if it cannot
    be built for."""
    if esp32:
        return Target("esp32", build.mpy_cross_binary(), build.ARCH)
    try:
        interp = upy.interpreter(interpreter)
    except ToolError as exc:
        raise UsageError(str(exc)) from None
    if interp.mpy_cross is None or interp.march is None:
        raise UsageError(
            f"the {interp.name} interpreter runs its modules from source on this CPU "
            "(mpy-cross has no code generator for it); build with --esp32 or the device "
            "interpreter"
        )
    return Target(interp.name, interp.mpy_cross, interp.march)


def stamp_version(source: str, version: str) -> str:
    """platform.py's text `source` with its FW_VERSION line set to `version`."""
    found = _FW_LINE.findall(source)
    if len(found) != 1:
        raise UsageError(
            f'platform.py has {len(found)} lines `FW_VERSION = "..."`, not exactly one; '
            "the release stamps its version there: restore the module from git"
        )
    return _FW_LINE.sub(f'FW_VERSION = "{version}"', source)


def firmware_sources(firmware: Path) -> list[tuple[Path, str]]:
    """(source, path on the flash) of every module of a release, sorted by path:
    `firmware`/hushlight/*.py and the protocol/*.py modules (from
    `firmware`/protocol/ when that exists, else this checkout's protocol/)."""
    own_protocol = firmware / "protocol"
    roots = {
        "hushlight": firmware / "hushlight",
        "protocol": own_protocol if own_protocol.is_dir() else upy.PROTOCOL_DIR,
    }
    found: list[tuple[Path, str]] = []
    for package in PACKAGES:
        root = roots[package]
        sources = sorted(root.glob("*.py")) if root.is_dir() else []
        if not sources:
            raise UsageError(
                f"no {package} modules in {root}; give --firmware the folder holding "
                "hushlight/ (a copy of this checkout's firmware/)"
            )
        found += [(s, f"{package}/{s.name}") for s in sources]
    return found


def _check_versions(version: str, min_version: str) -> None:
    for option, value in (("--version", version), ("--min-version", min_version)):
        try:
            ota.parse_version(value)
        except ProtocolError:
            raise UsageError(
                f"{option} {value!r} is not a version; give MAJOR.MINOR.PATCH, each 0-999 "
                "without leading zeros, e.g. 0.2.0"
            ) from None
    if ota.parse_version(min_version) > ota.parse_version(version):
        raise UsageError(
            f"--min-version {min_version} is above --version {version}; a sensor must be "
            "able to run the release's own version: give a lower --min-version"
        )


def _mpy_of(path: Path) -> int:
    """`sys.implementation._mpy` a .mpy file asks of its loader: header byte 1
    (bytecode version) | byte 2 (native architecture, sub-version) << 8.  Byte 2
    is 0 in a module without native code, which loads on any architecture."""
    head = path.read_bytes()[:3]
    if len(head) < 3 or head[:1] != b"M":
        raise build.BuildError(f"{path} is not a .mpy file (mpy-cross wrote no 'M' header)")
    return head[1] | head[2] << 8


# a module with native code: its header carries the target's whole `_mpy`
_PROBE = "import micropython\n\n\n@micropython.native\ndef f():\n    return 1\n"


def target_mpy(to: Target, work: Path) -> int:
    """`sys.implementation._mpy` of the MicroPython that loads what `to` compiles."""
    source = work / "mpy_probe.py"
    source.write_text(_PROBE)
    compiled = work / "mpy_probe.mpy"
    build.compile_one(to.mpy_cross, source, compiled, "probe.py", arch=to.arch)
    mpy = _mpy_of(compiled)
    source.unlink()
    compiled.unlink()
    return mpy


def build_release(
    key_path: Path,
    version: str,
    out: Path,
    *,
    min_version: str = DEFAULT_MIN_VERSION,
    to: Target | None = None,
    firmware: Path = upy.FIRMWARE_DIR,
    say: Callable[[str], None] = lambda line: None,
) -> Path:
    """Compile, stamp and sign a release; return its folder OUT/hushlight-VERSION.

    Everything is checked before anything is written; the bundle appears
    whole (built beside it and renamed) or not at all."""
    _check_versions(version, min_version)
    key = load_private_key(key_path)
    bundle = out / f"hushlight-{version}"
    if bundle.exists():
        raise UsageError(
            f"{bundle} exists; a release is never rebuilt in place (sensors may hold it): "
            "give another --out, or a new --version"
        )
    to = to or target()
    sources = firmware_sources(firmware)
    platform_py = firmware / "hushlight" / "platform.py"
    try:
        stamped = stamp_version(platform_py.read_text(), version)
    except OSError as exc:
        raise UsageError(
            f"cannot read {platform_py} ({exc.strerror}); the release stamps its version there"
        ) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".hushlight-{version}-", dir=out))
    except OSError as exc:
        raise UsageError(f"cannot write into --out {out}: {exc.strerror}") from None
    try:
        say(f"compiling {len(sources)} modules for {to.name} (mpy-cross -march={to.arch})")
        stamped_py = work / "platform.py"
        stamped_py.write_text(stamped)
        entries: list[tuple[str, int, str]] = []
        mpy = target_mpy(to, work)
        for source, device_path in sources:
            if device_path == "hushlight/platform.py":
                source = stamped_py
            mpy_path = device_path[: -len(".py")] + ".mpy"
            compiled = work / FILES / mpy_path
            build.compile_one(
                to.mpy_cross,
                source,
                compiled,
                device_path,
                arch=to.arch,
                command="hushlight release",
            )
            data = compiled.read_bytes()
            entries.append((mpy_path, len(data), hashlib.sha256(data).hexdigest()))
            if _mpy_of(compiled) not in (mpy, mpy & 0xFF):
                raise build.BuildError(
                    f"mpy-cross compiled {device_path} as .mpy {_mpy_of(compiled)}, "
                    f"not {mpy} like its other modules"
                )
        stamped_py.unlink()
        try:
            manifest = ota.encode_manifest(version, min_version, mpy, entries)
        except ProtocolError as exc:
            raise UsageError(f"the release cannot be described: {exc}") from None
        sig = sign(key, manifest)
        (work / MANIFEST).write_bytes(manifest)
        (work / SIGNATURE).write_bytes(sig)
        work.rename(bundle)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return bundle


def sign(key: Any, manifest: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 SHA-256 signature of `manifest`, checked with the
    sensor's own arithmetic (protocol.ota.verify) before it is used."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig: bytes = key.sign(manifest, padding.PKCS1v15(), hashes.SHA256())
    numbers = key.public_key().public_numbers()
    if not ota.verify(numbers.n, numbers.e, sig, hashlib.sha256(manifest).digest()):
        raise ToolError("the signature just made does not verify; the key file may be damaged")
    return sig


# ---- reading and checking a bundle --------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A release bundle as read from its folder."""

    path: Path
    manifest: bytes
    sig: bytes
    version: str
    min_version: str
    mpy: int
    files: tuple[tuple[str, int, str], ...]  # (path, size, sha256 hex) in manifest order

    @property
    def total(self) -> int:
        """Bytes of the release as transferred: the manifest, then every file."""
        return len(self.manifest) + sum(size for _, size, _ in self.files)

    def file_path(self, name: str) -> Path:
        return self.path / FILES / name

    def release_bytes(self) -> bytes:
        """The release as transferred: the manifest's bytes, then each file's."""
        parts = [self.manifest]
        parts += [self.file_path(name).read_bytes() for name, _, _ in self.files]
        return b"".join(parts)

    def offer(self) -> dict[str, Any]:
        """The `ota/offer` payload for this release (protocol.ota)."""
        return {
            "version": self.version,
            "size": len(self.manifest),
            "total": self.total,
            "sig": base64.b64encode(self.sig).decode(),
        }


def _version_text(v: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in v)


def read_bundle(directory: Path) -> Bundle:
    """The bundle in `directory`, its manifest parsed; the files are not checked
    (see `check_bundle`).  BundleError if it is not a bundle."""
    redo = "give the folder `hushlight release` wrote (hushlight-VERSION)"
    try:
        manifest = (directory / MANIFEST).read_bytes()
        sig = (directory / SIGNATURE).read_bytes()
    except OSError as exc:
        raise BundleError(
            f"{directory} is not a release bundle: cannot read {exc.filename} "
            f"({exc.strerror}); {redo}"
        ) from None
    try:
        parsed = ota.parse_manifest(manifest.decode("ascii"))
    except UnicodeDecodeError:
        raise BundleError(f"{directory / MANIFEST} is not ASCII text; {redo}") from None
    except ProtocolError as exc:
        raise BundleError(f"{directory / MANIFEST}: {exc}; {redo}") from None
    return Bundle(
        directory,
        manifest,
        sig,
        _version_text(parsed["version"]),
        _version_text(parsed["min_version"]),
        parsed["mpy"],
        tuple(parsed["files"]),
    )


def check_bundle(directory: Path, pub: Path | tuple[int, int]) -> Bundle:
    """The bundle in `directory` once all of it checks out: the manifest's
    signature under the public key `pub` (release.pub, or (n, e)), every file
    there with the manifest's size and SHA-256, and nothing else in files/.
    BundleError naming the first thing wrong."""
    n, e = read_public_key(pub) if isinstance(pub, Path) else pub
    bundle = read_bundle(directory)
    where = f"release bundle {directory}"
    if not ota.verify(n, e, bundle.sig, hashlib.sha256(bundle.manifest).digest()):
        raise BundleError(
            f"{where}: the signature does not match the release key"
            f"{' ' + str(pub) if isinstance(pub, Path) else ''}: the bundle was signed with "
            "another key, or manifest.txt or manifest.sig was changed after signing; "
            "build it again with `hushlight release`"
        )
    if len(bundle.manifest) > ota.MANIFEST_MAX:
        raise BundleError(f"{where}: manifest.txt is over {ota.MANIFEST_MAX} bytes")
    for name, size, digest in bundle.files:
        path = bundle.file_path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(
                f"{where}: cannot read {FILES}/{name} ({exc.strerror}); the bundle is "
                "incomplete: copy it again"
            ) from None
        if len(data) != size:
            raise BundleError(
                f"{where}: {FILES}/{name} has {len(data)} bytes, the signed manifest says "
                f"{size} (truncated or changed): copy the bundle again"
            )
        if hashlib.sha256(data).hexdigest() != digest:
            raise BundleError(
                f"{where}: {FILES}/{name} differs from the signed manifest (its SHA-256 does "
                "not match): the file was changed after signing; copy the bundle again"
            )
    listed = {name for name, _, _ in bundle.files}
    root = directory / FILES
    extra = sorted(
        p.relative_to(root).as_posix()
        for p in (root.rglob("*") if root.is_dir() else ())
        if p.is_file() and p.relative_to(root).as_posix() not in listed
    )
    if extra:
        raise BundleError(
            f"{where}: {FILES}/{extra[0]} is not in the signed manifest"
            f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}: remove it"
        )
    return bundle


# ---- command line -------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key", type=Path, metavar="PEM", help=f"the private release key ({KEY_NAME})"
    )
    parser.add_argument("--version", metavar="V", help="the release's version, e.g. 0.2.0")
    parser.add_argument(
        "--min-version",
        default=DEFAULT_MIN_VERSION,
        metavar="M",
        help="the oldest version a sensor may run to take this release "
        f"(default {DEFAULT_MIN_VERSION}: any)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--esp32", action="store_true", help="compile for the ESP32 (-march=xtensawin)"
    )
    where.add_argument(
        "--interpreter",
        choices=upy.NAMES,
        default=None,
        help="compile for the virtual sensors of this MicroPython unix port: 'device' "
        "(default; the 32-bit ESP32 stand-in) or 'host' (x86-64)",
    )
    parser.add_argument(
        "--firmware",
        type=Path,
        default=upy.FIRMWARE_DIR,
        metavar="DIR",
        help="the firmware folder holding hushlight/ (default: firmware/ of this checkout)",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write hushlight-VERSION/")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="DIR",
        help="check the bundle DIR against --pub instead of building one",
    )
    parser.add_argument(
        "--pub", type=Path, metavar="FILE", help=f"the public release key ({PUB_NAME}) for --check"
    )


def _print(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.check is not None:
        if args.pub is None:
            raise UsageError(f"--check needs --pub FILE, the public release key ({PUB_NAME})")
        try:
            bundle = check_bundle(args.check, args.pub)
        except BundleError as exc:
            print(f"hushlight release: {exc}", file=sys.stderr)
            return 1
        print(
            f"{bundle.path}: release {bundle.version} (min_version {bundle.min_version}, "
            f"mpy {bundle.mpy}), {len(bundle.files)} files, {bundle.total:,} bytes: "
            f"signature and every file check out against {args.pub}"
        )
        return 0
    missing = [o for o, v in (("--key", args.key), ("--version", args.version)) if v is None]
    if args.out is None:
        missing.append("--out")
    if missing:
        raise UsageError(
            f"give {', '.join(missing)} to build a release (or --check DIR --pub FILE to check one)"
        )
    _check_versions(args.version, args.min_version)
    to = target(args.interpreter, esp32=args.esp32)
    try:
        bundle_dir = build_release(
            args.key,
            args.version,
            args.out,
            min_version=args.min_version,
            to=to,
            firmware=args.firmware,
            say=_print,
        )
    except build.BuildError as exc:
        print(f"hushlight release: {exc}", file=sys.stderr)
        return 1
    bundle = read_bundle(bundle_dir)
    print(
        f"release {bundle.version} for {to.name} (mpy {bundle.mpy}, min_version "
        f"{bundle.min_version}): {len(bundle.files)} files, {bundle.total:,} bytes, "
        f"signed with {args.key}"
    )
    print(f"written to {bundle_dir}")
    return 0
