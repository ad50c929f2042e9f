"""gateway/sensorconfig.py and `[sensor_config]`: each sensor's config, sent when its status
shows another rev; against a real Mosquitto, with the firmware itself as the sensor."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.sensorconfig import BURST, OUTBOX_ROOM, ConfigDelivery, config_owner, resend_after
from gateway.service import Gateway
from protocol import payloads, schema, topics
from tests.gateway.conftest import SITE, mqtt_client, wait_for, write_config
from tests.gateway.postgres import scratch_database
from tests.gateway.test_lease_gateways import LEASE_S, ZONES, held, site_toml
from tests.tools.virtual import Sensor
from tools.broker import Mosquitto

EXAMPLE = Path(__file__).parents[2] / "gateway" / "site.example.toml"


def site(**sensor_config: Any) -> dict[str, Any]:
    zone = {"id": "main", "sensors": ["s1", "s2"], "light_groups": ["g1"]}
    return {"site": {"id": SITE}, "zones": [zone], "sensor_config": sensor_config}


def error_of(**sensor_config: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(site(**sensor_config), source="site.toml")
    return str(err.value)


# ---------------------------------------------------------------- the table


def test_defaults_and_one_sensors_values_make_its_config() -> None:
    cfg = parse_config(
        site(rev=4, peak_threshold_db=65, sensors={"s2": {"calibration_offset_db": -1.25}})
    ).sensor_config
    assert cfg is not None
    assert payloads.decode_config(cfg.payload("s1")) == {
        **dict.fromkeys(schema.CONFIG_KEYS),
        "rev": 4,
        "peak_threshold_db": 65.0,
    }
    s2 = payloads.decode_config(cfg.payload("s2"))
    assert (s2["rev"], s2["peak_threshold_db"], s2["calibration_offset_db"]) == (4, 65.0, -1.25)


def test_no_table_no_config() -> None:
    raw = site()
    del raw["sensor_config"]
    assert parse_config(raw).sensor_config is None


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({}, "sensor_config.rev: missing"),
        ({"rev": -1}, "sensor_config.rev: expected a whole number 0-2147483647, got -1"),
        ({"rev": 1, "interval_s": 1.1}, "expected a multiple of 0.125 seconds, got 1.1"),
        ({"rev": 1, "interval_s": 0.5}, "expected a number of seconds between 1 and 60"),
        ({"rev": 1, "peak_threshold_db": "loud"}, 'between 30 and 140, got "loud"'),
        ({"rev": 1, "calibration_offset_db": 1.234}, "keeps (2); write 1.23"),
        ({"rev": 1, "sample_rate": 22050}, "one of 48000, 44100, 32000, 16000, got 22050"),
        ({"rev": 1, "status_interval_s": 5}, "status_interval_s: expected a whole number of sec"),
        ({"rev": 1, "backlog_rate": 1.5}, "sensor_config.backlog_rate: expected a whole number"),
        ({"rev": 1, "intervall_s": 1}, 'sensor_config.intervall_s: unknown key in [sensor_config]'),
        ({"rev": 1, "sensors": {"s1": {"rev": 2}}}, "sensors.s1.rev: one rev covers the whole"),
        ({"rev": 1, "sensors": {"S1": {}}}, 'sensors.S1: expected a sensor id matching'),
        ({"rev": 1, "sensors": {"s1": {"calibration_offset_db": 30}}}, "s1.calibration_offset_db"),
    ],
)  # fmt: skip
def test_a_bad_value_is_named_with_its_key(table: dict[str, Any], needle: str) -> None:
    msg = error_of(**table)
    assert msg.startswith("site.toml: ") and needle in msg, msg


def test_limits_are_the_wires() -> None:
    # every value the table accepts, the sensor's decoder accepts: the table's bounds
    # come from protocol.schema.CONFIG, so the edges of each range load
    for f in schema.CONFIG[1:]:
        name, lo, hi, extra = f[0], f[4], f[5], f[6]
        for value in extra if isinstance(extra, tuple) else (lo, hi):
            cfg = parse_config(site(rev=1, **{name: value})).sensor_config
            assert cfg is not None
            assert payloads.decode_config(cfg.payload("s1"))[name] == value


def test_the_examples_table_loads_once_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    start = text.index("# [sensor_config]\n")
    end = text.index("\n\n", start)
    block = text[start:end]
    # "# key = value   # comment" -> "key = value   # comment"; comment-only lines stay
    opened = re.sub(r"^# (\[|[a-z_]+ = )", r"\1", block, flags=re.M)
    path = tmp_path / "site.toml"
    path.write_text(text[:start] + opened + text[end:])
    cfg = load_config(path).sensor_config
    assert cfg is not None
    raw = tomllib.loads(opened)["sensor_config"]
    assert cfg.rev == raw["rev"]
    assert set(cfg.default) == set(schema.CONFIG_KEYS)
    assert {s: dict(v) for s, v in cfg.sensors.items()} == raw["sensors"]


# ---------------------------------------------------------------- who sends


def test_the_owner_of_a_sensor_is_a_holder_of_one_of_its_zones() -> None:
    zones = [
        {"id": "b-street", "sensors": ["s1", "s2"], "light_groups": ["g1"]},
        {"id": "a-square", "sensors": ["s2", "s3"], "light_groups": ["g2"]},
    ]
    raw = {
        "site": {"id": SITE},
        "zones": zones,
        "sensor_config": {"rev": 1, "sensors": {"spare": {}}},
    }
    cfg = parse_config(raw)
    assert config_owner(cfg, None)("spare")  # one gateway: every sensor
    held: set[str] = set()
    owns = config_owner(cfg, held.__contains__)
    assert not any(owns(s) for s in ("s1", "s2", "s3", "spare"))
    held.add("b-street")
    assert [owns(s) for s in ("s1", "s2", "s3", "spare")] == [True, True, False, False]
    held.add("a-square")  # the first zone alphabetically: the zone-less sensors too
    assert [owns(s) for s in ("s1", "s2", "s3", "spare")] == [True, True, True, True]


def test_resends_double_up_to_the_cap() -> None:
    assert [resend_after(n, 30.0, 3600.0) for n in range(1, 10)] == [
        30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0,
    ]  # fmt: skip


# ---------------------------------------------------------------- on the wire


def config_text(rev: int, **more: Any) -> str:
    lines = [
        "[sensor_config]",
        f"rev = {rev}",
        *(f"{k} = {json.dumps(v)}" for k, v in more.items()),
    ]
    return "\n" + "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def gateway(path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(load_config(path), install_signals=False)
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 10)
        yield gw
    finally:
        gw.stop()
        await asyncio.wait_for(task, 10)


@pytest.fixture
def sensors() -> Iterator[list[Sensor]]:
    started: list[Sensor] = []
    yield started
    for s in started:
        s.kill()


async def collect(client: aiomqtt.Client, into: list[tuple[str, Any, float]]) -> None:
    """(leaf, JSON payload, monotonic arrival) of every message until cancelled."""
    async for m in client.messages:
        assert isinstance(m.payload, bytes)
        into.append((m.topic.value.rsplit("/", 1)[1], json.loads(m.payload), time.monotonic()))


async def test_a_sensor_gets_its_config_on_birth_echoes_it_and_is_not_sent_it_again(
    tmp_path: Path, fresh_broker: Mosquitto, sensors: list[Sensor]
) -> None:
    # the firmware itself (MicroPython unix port) as sensor s1
    path = write_config(tmp_path, fresh_broker.url)
    with path.open("a") as f:
        f.write(config_text(7, peak_threshold_db=65.0, status_interval_s=30))
        f.write("[sensor_config.sensors.s1]\ninterval_s = 2.0\n")
    seen: list[tuple[str, Any, float]] = []
    args = ["--id", "s1", "--site", SITE, "--broker", fresh_broker.url]
    args += ["--state-dir", str(tmp_path / "flash"), "--synthetic", "quiet"]

    def statuses() -> list[dict[str, Any]]:
        return [v for leaf, v, _ in seen if leaf == "status" and v["state"] == "online"]

    def rest(mark: int) -> list[tuple[str, Any]]:
        return [(leaf, v) for leaf, v, _ in seen[mark:]]

    def heard() -> int:
        return 0 if gw.configs is None else gw.configs.heard

    async with gateway(path) as gw, mqtt_client(fresh_broker.port) as watcher:
        assert gw.configs is not None
        await watcher.subscribe(f"{topics.root(SITE)}/sensors/s1/+", qos=1)
        watch = asyncio.create_task(collect(watcher, seen))
        try:
            sensors.append(Sensor(tmp_path, *args))
            try:
                await wait_for(
                    lambda: any(s.get("config_rev") == 7 for s in statuses()), 60, "config_rev 7"
                )
            except AssertionError as exc:
                said = sensors[0].output()[-3000:]
                raise AssertionError(
                    f"{exc}; seen {rest(0)[-6:]}; the sensor said: {said}"
                ) from None
            first = statuses()[0]
            assert first.get("config_rev") is None  # a new sensor: provisioned, never configured
            configs = [v for leaf, v, _ in seen if leaf == "config"]
            assert configs == [
                {"rev": 7, "interval_s": 2, "peak_threshold_db": 65, "status_interval_s": 30}
            ]
            assert gw.configs.sends == 1
            assert gw.metrics.configs_sent.get("s1") == 1
            await wait_for(lambda: heard() >= len(statuses()), 10, "the statuses taken in")
            fleet = {f["sensor"]: f for f in gw.ingest.fleet()}
            assert (fleet["s1"]["config_rev"], fleet["s1"]["config_rev_wanted"]) == (7, 7)
            assert (fleet["s2"]["config_rev"], fleet["s2"]["config_rev_wanted"]) == (None, 7)
            assert gw.configs.behind() == 0

            # restarted: it comes back with rev 7 from its flash, and is not sent it again
            mark = len(seen)
            assert sensors[0].stop() == 0
            saved = json.loads((tmp_path / "flash" / "config.json").read_text())
            assert (saved["config_rev"], saved["interval_s"], saved["peak_threshold_db"]) == (
                7,
                2.0,
                65.0,
            )
            # gone without a DISCONNECT: the broker publishes its last will
            await wait_for(lambda: ("status", {"state": "offline"}) in rest(mark), 30, "last will")
            mark = len(seen)
            before = len(statuses())
            sensors.append(Sensor(tmp_path, *args))
            await wait_for(lambda: len(statuses()) > before, 60, "the restarted sensor's status")
            assert statuses()[before]["config_rev"] == 7
            await wait_for(lambda: heard() > before, 10, "the birth taken in")
            assert gw.configs.sends == 1 and not gw.configs.pending()
            assert [leaf for leaf, _ in rest(0)].count("config") == 1
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


async def test_a_refused_config_is_sent_again_no_faster_than_the_limit_and_logged_once(
    tmp_path: Path, fresh_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    # a simulated sensor that refuses every config it is sent, as the firmware does
    # (status config_error, the old rev kept)
    path = write_config(tmp_path, fresh_broker.url)
    with path.open("a") as f:
        f.write(config_text(3, sample_rate=16000))
    refusal = "sample_rate 16000 cannot be applied: the audio source 'wav:x.wav' has its own rate"

    async def status(client: aiomqtt.Client, error: str | None) -> None:
        body = payloads.encode_status(
            "online", fw="1.0.0", uptime_s=1, free_mem=20000, dsp_load=0.1, buffered=0,
            calibration_offset_db=0.0, config_rev=2, config_error=error,
        )  # fmt: skip
        await client.publish(topics.status(SITE, "s2"), body, qos=1, retain=True)

    received: list[tuple[str, Any, float]] = []
    caplog.set_level(logging.INFO, "hushlight.sensorconfig")
    async with gateway(path) as gw, mqtt_client(fresh_broker.port) as sensor:
        assert gw.configs is not None
        gw.configs.settle_s = 0.2
        gw.configs.resend_s = 0.3  # 30 s in service; the rule is the same
        sent_at: list[float] = []
        publish = gw.outbox.publish
        s2 = gw.configs.sensors["s2"]

        def stamped(topic: str, payload: bytes, **kw: Any) -> None:
            assert s2.sent_at is not None
            sent_at.append(s2.sent_at)  # the time the rule reckons from
            publish(topic, payload, **kw)

        gw.outbox.publish = stamped  # type: ignore[method-assign]  # the times of the sends
        await sensor.subscribe(topics.config(SITE, "s2"), qos=1)
        take = asyncio.create_task(collect(sensor, received))
        try:
            await status(sensor, None)
            for answered in range(4):
                await wait_for(
                    lambda n=answered: len(received) > n,
                    30,
                    f"config {answered + 1}",
                )
                await status(sensor, refusal)  # every time: the same refusal
        finally:
            take.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await take
        assert all(v == {"rev": 3, "sample_rate": 16000} for _, v, _ in received)
        gaps = [b - a for a, b in itertools.pairwise(sent_at)]
        # 0.3 s after the first refusal, then doubling while it keeps refusing
        wanted = [resend_after(n, 0.3, 3600.0) for n in range(1, len(gaps) + 1)]
        assert len(sent_at) >= 4 and wanted[:3] == [0.3, 0.6, 1.2]
        assert all(g >= w for g, w in zip(gaps, wanted, strict=True)), (gaps, wanted)
        # one warning for one refusal, however often it comes
        refused = [r for r in caplog.records if "refused config rev 3" in r.getMessage()]
        assert len(refused) == 1 and refusal in refused[0].getMessage()
        assert gw.metrics.configs_refused.get("s2") == 1
        assert gw.configs.behind() == 1
        metrics = "\n".join(gw.metrics.lines())
        assert "hushlight_sensor_configs_behind 1" in metrics
        assert f'hushlight_sensor_configs_sent_total{{sensor="s2"}} {len(sent_at)}' in metrics


async def test_with_leases_the_holder_of_a_zone_configures_its_sensors(
    tmp_path: Path, fresh_broker: Mosquitto
) -> None:
    # two gateways share the city through PostgreSQL leases; "spare" is in no zone
    sensors = [sensor for sensor, _ in ZONES.values()] + ["spare"]
    received: list[tuple[str, Any, float]] = []
    with scratch_database() as pg_url:
        paths = [site_toml(tmp_path, name, fresh_broker.url, pg_url) for name in ("gw-a", "gw-b")]
        for path in paths:
            with path.open("a") as f:
                f.write(config_text(2, backlog_rate=10) + "[sensor_config.sensors.spare]\n")
        async with (
            gateway(paths[0]) as a,
            gateway(paths[1]) as b,
            mqtt_client(fresh_broker.port) as sim,
        ):
            for gw in (a, b):
                assert gw.configs is not None
                gw.configs.settle_s = 0.2
            await wait_for(lambda: len(held(a)) == len(held(b)) == 1, 4 * LEASE_S, "a split")
            await sim.subscribe(f"{topics.root(SITE)}/sensors/+/config", qos=1)
            take = asyncio.create_task(collect(sim, received))
            try:
                for sensor in sensors:
                    body = payloads.encode_status(
                        "online", fw="1.0.0", uptime_s=1, free_mem=20000, dsp_load=0.1,
                        buffered=0, calibration_offset_db=0.0, config_rev=1,
                    )  # fmt: skip
                    await sim.publish(topics.status(SITE, sensor), body, qos=1)
                await wait_for(lambda: len(received) >= len(sensors), 10, "a config for each")
                # both took in the three statuses: the one that did not send chose not to
                await wait_for(
                    lambda: all(g.configs and g.configs.heard == len(sensors) for g in (a, b)),
                    10,
                    "the statuses taken in by both",
                )
                # the holder of the zone, and of north (the first zone) for the spare
                owner = {
                    sensor: next(g for g in (a, b) if zone in held(g))
                    for zone, (sensor, _) in [*ZONES.items(), ("north", ("spare", ""))]
                }
                for gw in (a, b):
                    assert gw.configs is not None
                    for sensor in sensors:
                        wanted = 1 if owner[sensor] is gw else 0
                        assert gw.metrics.configs_sent.get(sensor) == wanted, (sensor, wanted)
            finally:
                take.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await take
    assert sorted(v["rev"] for _, v, _ in received) == [2, 2, 2]


def online(config_rev: int | None) -> bytes:
    return payloads.encode_status(
        "online", fw="1.0.0", uptime_s=1, free_mem=20000, dsp_load=0.1, buffered=0,
        calibration_offset_db=0.0, config_rev=config_rev,
    )  # fmt: skip


async def test_a_whole_fleet_goes_out_in_bursts_and_not_into_a_full_outbox() -> None:
    # a new rev for every sensor at once must not crowd the light commands out of the
    # outbox they share (it drops its oldest message when full)
    fleet = [f"x{i}" for i in range(2 * BURST + 50)]
    cfg = parse_config(site(rev=1, sensors={s: {} for s in fleet}))
    outbox = Outbox()
    for _ in range(OUTBOX_ROOM):
        outbox.publish("hushlight/v1/testsite/lights/g1/set", b"{}")
    delivery = ConfigDelivery(cfg, outbox, Metrics(), config_owner(cfg, None))
    delivery.settle_s = 0.0
    for s in fleet:
        delivery.status(topics.status(SITE, s), online(None))
    assert len(delivery.pending()) == len(fleet)
    task = asyncio.create_task(delivery.run())
    try:
        await asyncio.sleep(0)  # one pass: the outbox is full
        assert delivery.sends == 0
        full = Outbox()
        delivery.outbox = full
        await wait_for(lambda: delivery.sends > 0, 10, "the first burst")
        assert delivery.sends == len(full) == BURST  # one pass, one burst
        await wait_for(lambda: delivery.sends == len(fleet), 10, "the whole fleet")
        assert len(full) == len(fleet) and not delivery.pending()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
