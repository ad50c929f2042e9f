"""A sensor given every node of the RabbitMQ cluster (`--broker URL1,URL2,URL3`)
carries on through another node when its own dies, and the gateway's
persistent session sees every record.

The sensor's session (clean session off, the same client id) and the
subscriber's are quorum queues with a copy on every node, so they outlive
the node.  The firmware runs in the MicroPython unix port, once per
interpreter, with the account `hushlight provision --rabbit-defs` gives it.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from protocol import payloads, topics
from tests.cluster.conftest import SITE, Cluster
from tests.cluster.test_rabbit_cluster import Link, gateway, provision
from tests.interpreters import on_interpreter, upy_interpreter  # noqa: F401  (fixtures)
from tests.tools.virtual import Sensor
from tools.console import Console

WAIT = 60.0  # bound of each wait: the cluster elects new queue leaders after a node dies


def collect(link: Link, seqs: set[int], until: int, timeout: float) -> None:
    """Add the seq of each record `link` receives to `seqs` until one is `until` or more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in link.received(1, timeout=0.5):
            seqs.add(int(payloads.decode_levels(m.payload)["seq"]))
        if seqs and max(seqs) >= until:
            return
    raise AssertionError(f"no record with seq {until} within {timeout} s; got {sorted(seqs)}")


def test_a_sensor_moves_to_another_node_when_its_own_dies_and_loses_no_record(
    rabbit: Cluster,
    tmp_path: Path,
    upy_interpreter: str,  # noqa: F811  (the fixture)
) -> None:
    sensor_id = "ns-fo-" + upy_interpreter
    config = provision(rabbit, tmp_path, sensor_id)
    # the gateway's persistent session, on the node that stays up
    watcher = gateway(rabbit, 2, client_id="gw-" + secrets.token_hex(4), clean=False)
    assert watcher.subscribe(topics.levels(SITE, sensor_id)) == [1]
    secret = tmp_path / "secret"
    secret.write_text(config["mqtt_password"])
    secret.chmod(0o600)
    urls = rabbit.nodes.urls
    args = ["--id", sensor_id, "--site", SITE, "--broker", ",".join(urls)]
    args += ["--username", config["mqtt_user"], "--password-file", str(secret)]
    args += ["--state-dir", str(tmp_path / "st"), "--synthetic", "street", "--speed", "4"]
    args += ["--keepalive", "5", "--console"]
    sensor = Sensor(tmp_path, *args)
    seqs: set[int] = set()
    try:
        with Console(sensor.console_path(), timeout=10) as con:
            collect(watcher, seqs, 8, WAIT)
            [status] = con.command("status")
            assert status["broker_in_use"] == urls[0], status
            rabbit.nodes.kill(0)
            # records made after the move arrive too
            target = max(seqs) + 12
            collect(watcher, seqs, target, WAIT)
            [status] = con.command("status")
        assert seqs >= set(range(target + 1)), sorted(set(range(target + 1)) - seqs)
        assert status["broker_in_use"] == urls[1] and status["broker_connected"] is True
        moved = [line for line in sensor.output().splitlines() if f"connected to {urls[1]}" in line]
        assert moved and f"127.0.0.1:{urls[0].rsplit(':', 1)[1]}" in moved[0], sensor.output()
        assert sensor.proc.poll() is None, sensor.output()
    finally:
        sensor.kill()
        watcher.close()
