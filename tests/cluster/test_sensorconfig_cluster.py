"""gateway/sensorconfig.py on the broker cluster: the gateway on one node configures a
sensor connected to another, where a retained config would never reach it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from pathlib import Path

from gateway.config import load_config
from gateway.service import Gateway
from tests.cluster.conftest import SITE, Cluster
from tests.cluster.test_rabbit_cluster import provision
from tests.gateway.conftest import wait_for, write_config
from tests.tools.virtual import Sensor


async def test_a_gateway_on_one_node_configures_a_sensor_on_another(
    rabbit: Cluster, tmp_path: Path
) -> None:
    sensor = "ns-51"
    account = provision(rabbit, tmp_path, sensor)
    path = write_config(
        tmp_path,
        rabbit.nodes.urls[0],
        broker={"username": "gateway", "password": rabbit.gateway_password},
        client_id="gw-config-" + secrets.token_hex(3),
        zone={"sensors": [sensor]},
    )
    assert load_config(path).site_id == SITE
    with path.open("a") as f:
        f.write("[sensor_config]\nrev = 5\npeak_threshold_db = 66.0\n")
    gw = Gateway(load_config(path), install_signals=False)
    run = asyncio.create_task(gw.run())
    secret = tmp_path / "secret"
    secret.write_text(account["mqtt_password"])
    secret.chmod(0o600)
    args = ["--id", sensor, "--site", SITE, "--broker", rabbit.nodes.urls[1]]
    args += ["--username", account["mqtt_user"], "--password-file", str(secret)]
    args += ["--state-dir", str(tmp_path / "flash"), "--synthetic", "quiet"]
    started: Sensor | None = None
    try:
        await asyncio.wait_for(gw.ready.wait(), 30)
        started = Sensor(tmp_path, *args)
        configs = gw.configs
        assert configs is not None

        def echoed() -> object:
            return {f["sensor"]: f for f in gw.ingest.fleet()}[sensor]["config_rev"]

        # heard through node 1 from node 2, answered, applied, echoed
        try:
            await wait_for(lambda: echoed() == 5, 60, f"config_rev 5 from {sensor}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the sensor said: {started.output()[-3000:]}") from None
        assert configs.sends == 1
        assert gw.metrics.configs_sent.get(sensor) == 1
        status = gw.ingest.sensors[sensor].status
        assert status is not None and status.get("config_error") is None
        assert started.stop() == 0
        flash = json.loads((tmp_path / "flash" / "config.json").read_text())
        assert (flash["config_rev"], flash["peak_threshold_db"]) == (5, 66.0)
    finally:
        if started is not None:
            started.kill()
        gw.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(run, 15)
