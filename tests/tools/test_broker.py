"""The private Mosquitto used by the tests really starts, stops and restarts."""

from __future__ import annotations

import socket

from tools.broker import Mosquitto


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_stop_and_restart_on_same_port(fresh_broker: Mosquitto) -> None:
    port = fresh_broker.port
    assert _accepts(port)
    fresh_broker.stop()
    assert not _accepts(port)
    fresh_broker.start()
    assert fresh_broker.port == port
    assert _accepts(port)
