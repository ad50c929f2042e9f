"""Fixtures shared by every test package.

`broker`: one real Mosquitto per test session on a free port (tests may stop
and restart it; the fixture makes sure it runs again before the next test).
`fresh_broker`: a Mosquitto of the test's own, for tests that must not see
anybody else's retained messages or sessions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tools.broker import Mosquitto


@pytest.fixture(scope="session")
def _session_broker() -> Iterator[Mosquitto]:
    with Mosquitto() as m:
        yield m


@pytest.fixture
def broker(_session_broker: Mosquitto) -> Iterator[Mosquitto]:
    _session_broker.start()  # a previous test may have stopped it
    yield _session_broker
    _session_broker.start()


@pytest.fixture
def fresh_broker() -> Iterator[Mosquitto]:
    with Mosquitto() as m:
        yield m
