"""`hushlight fleet`: the site's sensors from their retained statuses and the site config."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.ota.site import ONLINE, write_site
from tests.tools.virtual import publish
from tools.broker import Mosquitto, free_port
from tools.fleet import Seen, gateway_last_seen, rows, summary
from tools.upy import REPO_ROOT

ZONES = {"north": ["n-1", "n-2", "both"], "south": ["both", "s-1"]}
ZONES_OF = {"n-1": ("north",), "n-2": ("north",), "both": ("north", "south"), "s-1": ("south",)}


def test_rows_join_the_zones_and_say_what_is_known() -> None:
    seen = {
        "n-1": Seen(ONLINE, retained=True, at=1000.0),
        "both": Seen({**ONLINE, "ota": "staging", "ota_version": "0.2.0"}, False, 1005.0),
        "stray": Seen({"state": "offline"}, retained=True, at=1000.0),
        "bad": Seen({}, retained=False, at=1001.0),
    }
    table = {r.sensor: r for r in rows(seen, ZONES_OF)}
    assert sorted(table) == ["bad", "both", "n-1", "n-2", "s-1", "stray"]
    assert table["both"].zones == ("north", "south")
    assert table["both"].ota == "staging" and table["both"].last_seen == 1005.0
    # a retained status has no arrival time worth showing
    assert table["n-1"].last_seen is None and table["n-1"].retained
    assert table["n-1"].free_mem == 21000 and table["n-1"].dsp_load == 0.04
    assert not table["n-2"].known and not table["n-2"].online
    assert table["stray"].zones == () and not table["stray"].online
    assert table["bad"].fw is None and table["bad"].known


def test_the_gateway_times_win_when_asked_for() -> None:
    seen = {"n-1": Seen(ONLINE, retained=True, at=1000.0)}
    table = {r.sensor: r for r in rows(seen, ZONES_OF, {"n-1": 990.0, "s-1": 500.0})}
    assert table["n-1"].last_seen == 990.0
    assert table["s-1"].last_seen == 500.0 and not table["s-1"].known
    assert table["n-2"].last_seen is None


def test_the_summary_counts_online_versions_and_updates() -> None:
    seen = {
        "n-1": Seen(ONLINE, True, 0.0),
        "n-2": Seen({**ONLINE, "fw": "0.2.0", "ota": "confirmed", "ota_version": "0.2.0"}, True, 0),
        "both": Seen({**ONLINE, "ota": "trial", "ota_version": "0.2.0"}, True, 0.0),
        "s-1": Seen({"state": "offline"}, True, 0.0),
    }
    line = summary(rows(seen, ZONES_OF))
    assert line == (
        "4 sensors: 3 online, 1 offline; 2 on 0.1.0, 1 on 0.2.0; "
        "updates going on: 1 (both trial 0.2.0)"
    )


def _fleet(broker: Mosquitto, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "fleet", "--broker", broker.url, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_lists_the_retained_statuses(fresh_broker: Mosquitto, tmp_path: Path) -> None:
    root = "hushlight/v1/street/sensors"
    publish(fresh_broker.port, f"{root}/n-1/status", json.dumps(ONLINE), retain=True)
    refused = {**ONLINE, "ota": "refused", "ota_version": "0.2.0", "ota_reason": "downgrade"}
    publish(fresh_broker.port, f"{root}/both/status", json.dumps(refused), retain=True)
    publish(fresh_broker.port, f"{root}/s-1/status", '{"state":"offline"}', retain=True)
    site = write_site(tmp_path / "site.toml", "street", ZONES, "mon-sun 23:00-05:00")

    done = _fleet(fresh_broker, "--site", "street", "--config", str(site), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    got = {r["sensor"]: r for r in out["sensors"]}
    assert sorted(got) == ["both", "n-1", "n-2", "s-1"]
    assert got["both"]["ota_reason"] == "downgrade" and got["both"]["zones"] == ["north", "south"]
    assert got["n-1"]["online"] and got["n-1"]["retained"]
    assert not got["n-2"]["status_received"]
    assert out["summary"].startswith("4 sensors: 2 online, 2 offline; 1 never heard of")

    table = _fleet(fresh_broker, "--site", "street", "--config", str(site))
    assert table.returncode == 0, table.stderr
    both = next(line for line in table.stdout.splitlines() if " both " in line)
    assert "north,south" in both and "refused 0.2.0: downgrade" in both and "retained" in both
    assert table.stdout.rstrip().endswith("updates going on: 0")


def test_mistakes_are_one_line_each(fresh_broker: Mosquitto, tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.toml", "street", ZONES, "mon-sun 23:00-05:00")
    for args, message in [
        (["--site", "Street"], "--site 'Street' is not a valid id"),
        (["--site", "other", "--config", str(site)], "is the site 'street', not --site 'other'"),
        (["--site", "street", "--config", str(tmp_path / "no.toml")], "no such configuration"),
        (["--site", "street", "--wait", "0"], "--wait 0 is out of range"),
    ]:
        done = _fleet(fresh_broker, *args)
        assert done.returncode == 2, (args, done.stdout)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_last_seen_comes_from_the_gateway(fresh_broker: Mosquitto, tmp_path: Path) -> None:
    from gateway.config import load_config
    from gateway.service import Gateway
    from tests.gateway.conftest import SITE, write_config

    config = write_config(tmp_path, fresh_broker.url)
    gw = Gateway(load_config(config), install_signals=False)
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 10)
        await asyncio.wait_for(gw.http_ready.wait(), 10)
        base = f"http://127.0.0.1:{gw.http.port}"
        topic = f"hushlight/v1/{SITE}/sensors/s1/status"
        await asyncio.to_thread(publish, fresh_broker.port, topic, json.dumps(ONLINE), retain=True)
        seen: float | None = None
        for _ in range(100):
            fleet = (await asyncio.to_thread(gateway_last_seen, base)).get("s1")
            if fleet is not None:
                seen = fleet
                break
            await asyncio.sleep(0.1)
        assert seen is not None, "the gateway never saw s1's status"
        done = await asyncio.to_thread(
            _fleet,
            fresh_broker,
            "--site",
            SITE,
            "--config",
            str(config),
            "--gateway",
            base,
            "--json",
        )
        assert done.returncode == 0, done.stderr
        got = {r["sensor"]: r for r in json.loads(done.stdout)["sensors"]}
        assert got["s1"]["last_seen"] == seen and got["s1"]["retained"]
        assert got["s2"]["last_seen"] is None and not got["s2"]["status_received"]
    finally:
        gw.stop()
        await asyncio.wait_for(task, 10)


def test_a_gateway_that_does_not_answer_is_one_line(fresh_broker: Mosquitto) -> None:
    port = free_port()
    done = _fleet(fresh_broker, "--site", "street", "--gateway", f"http://127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"--gateway http://127.0.0.1:{port}: no answer from" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
