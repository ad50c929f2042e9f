"""Fixtures shared by every test package.

`broker`: one real Mosquitto per test session on a free port (tests may stop
and restart it; the fixture makes sure it runs again before the next test).
`fresh_broker`: a Mosquitto of the test's own, for tests that must not see
anybody else's retained messages or sessions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tools.broker import Mosquitto


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """On several workers (`make test`: pytest-xdist `-n 2`) each test module goes
    to one worker whole, so that its module fixtures are made once, and every
    module of tests/cluster to the same worker, so that one broker cluster is
    started for the session and no two tests kill its nodes at once."""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndCluster(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/cluster" if module.startswith("tests/cluster/") else module

    return ModulesAndCluster(config, log)


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
