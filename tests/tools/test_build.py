"""`hushlight build`: every module compiled for the ESP32, sizes printed, compiler errors shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools import build
from tools.errors import UsageError
from tools.upy import FIRMWARE_DIR, PROTOCOL_DIR

# The .mpy header (MicroPython docs, "MicroPython .mpy files"): b"M", the
# format version, then the native architecture in the top six bits of the
# third byte; 10 is MP_NATIVE_ARCH_XTENSAWIN, the ESP32's core.
MPY_VERSION = 6
ARCH_XTENSAWIN = 10


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


VIPER = (
    "import micropython\n@micropython.viper\ndef add(a: int, b: int) -> int:\n    return a + b\n"
)


def test_layout_as_on_the_device(tmp_path: Path) -> None:
    fw = _tree(
        tmp_path / "fw",
        {
            "boot.py": "pass\n",
            "main.py": "import hushlight.app\n",
            "hushlight/__init__.py": "",
            "hushlight/meter.py": VIPER,
            "config.example.json": "{}\n",
        },
    )
    proto = _tree(tmp_path / "proto", {"__init__.py": "", "topics.py": "ROOT = 'x'\n"})
    out = tmp_path / "out"
    (out / "stale.mpy").parent.mkdir(parents=True)
    (out / "stale.mpy").write_bytes(b"old")
    built = build.build(out, ((fw, Path(".")), (proto, Path("protocol"))))
    names = sorted(b.target.relative_to(out).as_posix() for b in built)
    assert names == [
        "boot.py",
        "hushlight/__init__.mpy",
        "hushlight/meter.mpy",
        "main.py",
        "protocol/__init__.mpy",
        "protocol/topics.mpy",
    ]
    assert not (out / "stale.mpy").exists()
    assert (out / "main.py").read_text() == "import hushlight.app\n"
    header = (out / "hushlight" / "meter.mpy").read_bytes()[:4]
    assert header[0:1] == b"M"
    assert header[1] == MPY_VERSION
    assert header[2] >> 2 == ARCH_XTENSAWIN
    assert all(b.size == b.target.stat().st_size for b in built)


def test_compiler_error_names_file_and_line(tmp_path: Path) -> None:
    fw = _tree(tmp_path / "fw", {"main.py": "pass\n", "hushlight/bad.py": "x = 1\ndef f(:\n"})
    with pytest.raises(build.BuildError) as err:
        build.build(tmp_path / "out", ((fw, Path(".")),))
    text = str(err.value)
    assert "bad.py" in text
    assert "line 2" in text
    assert "SyntaxError" in text


def test_empty_tree_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "fw").mkdir()
    with pytest.raises(UsageError, match="no Python modules"):
        build.build(tmp_path / "out", ((tmp_path / "fw", Path(".")),))


def test_command_builds_the_real_tree(tmp_path: Path) -> None:
    out = tmp_path / "firmware"
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "build", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    modules = [
        p
        for root in (FIRMWARE_DIR, PROTOCOL_DIR)
        for p in root.rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    for source in modules:
        rel = source.relative_to(
            FIRMWARE_DIR if source.is_relative_to(FIRMWARE_DIR) else PROTOCOL_DIR.parent
        )
        expected = out / (rel if rel.as_posix() in build.KEEP_SOURCE else rel.with_suffix(".mpy"))
        assert expected.exists(), f"{source} was not built"
    lines = proc.stdout.strip().splitlines()
    total = lines[-1]
    assert total.startswith("total")
    sizes = sum(int(line.split()[-2].replace(",", "")) for line in lines[:-1])
    assert f"{sizes:,} B" in total
