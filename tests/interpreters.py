"""Run a test package on both MicroPython interpreters (see `tools.upy`).

A conftest that imports `upy_interpreter` and `on_interpreter` makes every
test below it run twice, ``[device]`` (the 32-bit, single-precision ESP32
stand-in) and ``[host]`` (the x86-64 port).  `on_interpreter` sets
``$HUSHLIGHT_INTERPRETER`` for the test, so everything that starts
MicroPython, in this process or in a child such as `hushlight sensor`, uses
that interpreter.  Session fixtures that start MicroPython depend on
`upy_interpreter` so that they are made once per interpreter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tools import upy


@pytest.fixture(scope="session", params=upy.NAMES)
def upy_interpreter(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(upy.ENV_VAR, name)
        yield name


@pytest.fixture(autouse=True)
def on_interpreter(upy_interpreter: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(upy.ENV_VAR, upy_interpreter)
    return upy_interpreter
