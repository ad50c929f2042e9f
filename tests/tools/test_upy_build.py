"""Building the 32-bit MicroPython (tools/upy_build.py): once, checked, and
with a message that names the failed step."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tools import upy_build
from tools.upy_build import BuildError


def test_a_current_build_is_not_built_again() -> None:
    # make test built it before the tests ran
    stamp = json.loads(upy_build.STAMP.read_text())
    assert stamp["version"] == upy_build.VERSION
    assert upy_build.is_current(stamp["key"])
    mtime = upy_build.INTERPRETER.stat().st_mtime_ns
    started = time.monotonic()
    assert upy_build.build() == upy_build.INTERPRETER
    assert time.monotonic() - started < 10  # hashing the source, no compiler
    assert upy_build.INTERPRETER.stat().st_mtime_ns == mtime


def test_the_key_changes_with_the_source_and_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    key = upy_build.build_key("a" * 64)
    assert upy_build.build_key("b" * 64) != key
    monkeypatch.setattr(upy_build, "MAKE_OPTIONS", (*upy_build.MAKE_OPTIONS, "EXTRA=1"))
    assert upy_build.build_key("a" * 64) != key


def test_a_damaged_shared_tarball_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "micropython-1.28.0-src.tar.gz"
    fake.write_bytes(b"not the source")
    monkeypatch.delenv("HUSHLIGHT_MICROPYTHON_SRC", raising=False)
    monkeypatch.setattr(upy_build, "SHARED_TARBALL", fake)
    with pytest.raises(BuildError, match=r"step 'check source' failed: .* has sha256"):
        upy_build.find_source(tmp_path)


def test_a_source_that_is_no_tarball_fails_at_unpacking(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "src.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    monkeypatch.setenv("HUSHLIGHT_MICROPYTHON_SRC", str(bad))
    before = upy_build.STAMP.read_text()
    with pytest.raises(BuildError, match="step 'unpack source' failed"):
        upy_build.build()
    assert upy_build.STAMP.read_text() == before  # the working build is untouched


def test_a_missing_given_source_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUSHLIGHT_MICROPYTHON_SRC", str(tmp_path / "nope.tar.gz"))
    with pytest.raises(BuildError, match=r"nope\.tar\.gz is not a file"):
        upy_build.find_source(tmp_path)
