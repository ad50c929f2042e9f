"""Gateways sharing a city store each record once: one storer per sensor, derived from the
zone leases, and a takeover writes what the old storer held but had not written."""

from __future__ import annotations

import asyncio
import collections
import math
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.clock import ScaledClock
from gateway.events import LevelEvent
from gateway.leases import LeaseStore
from gateway.storage import Storage, levels
from gateway.storage.database import Database
from tests.gateway.conftest import SITE, Sensors, mqtt_client, wait_for
from tests.gateway.postgres import scratch_database
from tests.gateway.test_lease_gateways import LEASE_S, gateway, held, spawn_gateway
from tools.broker import Mosquitto, free_port

T0 = 1_795_213_800.0  # a minute boundary
# zone -> its sensors, in the site file's order; x4 is in both (its first zone: north)
ZONES = {"north": ("n1", "x4"), "south": ("s1", "x4")}
FIRST_ZONE = {"n1": "north", "s1": "south", "x4": "north"}


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


def records(sensor: str, seqs: range, laeq: float = 60.0) -> list[LevelEvent]:
    """1 s records, seq n ending at T0 + n + 1 (varying levels, so sums tell rows apart)."""
    return [
        LevelEvent(sensor, n, T0 + n, T0 + n + 1, laeq + n % 7, laeq + 5, laeq + 3) for n in seqs
    ]


def stored(url: str) -> dict[tuple[str, int], tuple[int, float]]:
    """(sensor, minute) -> (records counted, energy_a) in the shared store."""
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT sensor, minute, n, energy_a FROM levels_minute").fetchall()
    return {(str(s), int(m)): (int(n), float(e)) for s, m, n, e in rows}


def expected(recs: list[LevelEvent]) -> dict[tuple[str, int], tuple[int, float]]:
    out: dict[tuple[str, int], tuple[int, float]] = {}
    for r in recs:
        key = (r.sensor, int(r.t0 // 60) * 60)
        n, e = out.get(key, (0, 0.0))
        out[key] = (n + 1, e + (r.t1 - r.t0) * 10 ** (r.laeq / 10))
    return out


def same(
    a: dict[tuple[str, int], tuple[int, float]], b: dict[tuple[str, int], tuple[int, float]]
) -> bool:
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0] and math.isclose(a[k][1], b[k][1], rel_tol=1e-9) for k in a
    )


def test_one_storer_per_sensor_and_a_takeover_writes_what_the_dead_one_had_not(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no early write of the newest minute in this test: what a holds of it dies with it
    monkeypatch.setattr(levels, "EARLY_WRITE_S", 1e9)
    holder = {"north": "a", "south": "b"}
    sent = [r for s in ("n1", "s1", "x4") for r in records(s, range(90))]  # 1.5 minutes
    more = [r for s in ("n1", "s1", "x4") for r in records(s, range(90, 120))]
    a, b = Storage(pg_url), Storage(pg_url)
    try:
        for gw, name in ((a, "a"), (b, "b")):
            gw.keep_sensor = lambda s, name=name: holder[FIRST_ZONE[s]] == name
            gw.keep_token = lambda: tuple(sorted(holder.items()))
            assert gw.write_minutes() == 0  # its first leases, before any record
            # every gateway folds every record, whoever stores it
            assert gw.fold_levels(sent) == len(sent)
        # the minute that is over: a writes n1 and x4 (x4's first zone is a's), b only s1
        assert a.write_minutes() == 2 and b.write_minutes() == 1
        assert same(stored(pg_url), {k: v for k, v in expected(sent).items() if k[1] == T0})
        # a dies in the middle of the next minute: it never writes what it holds of it
        Database.close(a)
        holder["north"] = "b"  # its lease runs out and b takes the zone
        b.flush()  # b writes everything it holds of n1 and x4 now
        assert same(stored(pg_url), expected(sent))
        b.fold_levels(more)
        b.flush()
        b.flush()  # written again: the same rows, never summed twice
        assert same(stored(pg_url), expected(sent + more))
    finally:
        b.close()


def test_a_gateway_handing_a_sensor_over_finishes_the_minute_the_newcomer_holds_in_part(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(levels, "EARLY_WRITE_S", 1e9)  # early writes only where the test says
    holder = {"north": "a"}
    minute = records("n1", range(60))
    a, b = Storage(pg_url), Storage(pg_url)
    try:
        for gw, name in ((a, "a"), (b, "b")):
            gw.keep_sensor = lambda s, name=name: holder["north"] == name
            gw.keep_token = lambda: holder["north"]
        a.fold_levels(minute[:20])
        a.flush()  # a's early write: 20 records
        # b starts at seq 20, and a hands it the zone at seq 30 (the second gateway's share)
        for gw in (a, b):
            gw.fold_levels(minute[20:30])
        holder["north"] = "b"
        b.flush()  # b writes what it holds: 10 records, fewer than the store's 20
        a.flush()
        for gw in (a, b):
            gw.fold_levels(minute[30:] + records("n1", range(60, 62)))
        # the minute is over: a, which began it, writes it whole; b its last 40 records,
        # and the next minute, which a leaves to b
        assert a.write_minutes(everything=True) == 1
        assert b.write_minutes(everything=True) == 2
        assert same(stored(pg_url), expected(minute + records("n1", range(60, 62))))
    finally:
        a.close()
        b.close()


def test_a_lone_gateway_restarted_mid_minute_adds_what_it_folds_to_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(levels, "EARLY_WRITE_S", 1e9)  # early writes only where the test says
    path = tmp_path / "h.db"
    minute, after = records("n1", range(60)), records("n1", range(60, 61))
    first = Storage(path)
    first.head_before = T0 - 3600.0  # the service sets its start: long before
    first.fold_levels(minute[:30])
    first.flush()  # its early write
    first.fold_levels(minute[30:35])
    Database.close(first)  # killed: the five records since its early write die with it
    again = Storage(path)
    again.head_before = T0 + 40.0  # back at 40 s into the minute
    again.fold_levels(minute[40:50])
    again.flush()
    again.fold_levels(minute[50:] + after)
    again.flush()
    again.flush()
    again.close()
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT sensor, minute, n, energy_a FROM levels_minute").fetchall()
    found = {(str(s), int(m)): (int(n), float(e)) for s, m, n, e in rows}
    assert same(found, expected(minute[:30] + minute[40:] + after))


def test_a_delta_whose_write_failed_is_added_with_what_came_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    recs, later = records("n1", range(3)), records("n1", range(60, 61))
    with Storage(path) as db:
        db.head_before = T0 + 1.0  # started in minute T0: its row is written as a delta
        db.fold_levels(recs[:2] + later)
        db._db.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON levels_minute "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        with pytest.raises(sqlite3.Error, match="disk says no"):
            db.flush()
        db.fold_levels(recs[2:])
        db._db.execute("DROP TRIGGER refuse")
        db.flush()
        db.flush()
        [row, next_row] = db.minute_levels(["n1"], T0, T0 + 120)
    assert (row.n, row.dur) == (3, 3.0)
    assert (next_row.minute, next_row.n) == (T0 + 60, 1)  # a whole row, kept for the retry
    assert row.laeq == pytest.approx(10 * math.log10(sum(10 ** (r.laeq / 10) for r in recs) / 3))


def test_records_that_come_after_their_minute_left_memory_are_added_once(tmp_path: Path) -> None:
    with Storage(tmp_path / "h.db") as db:
        db.hold_s = 0.0  # a minute leaves memory as soon as it is over and written
        first, late = records("n1", range(30)), records("n1", range(30, 60))
        next_minute = records("n1", range(60, 61))
        db.fold_levels(first + next_minute)
        assert db.write_minutes() == 1
        db.fold_levels(late)  # the sensor's backlog, for the minute already written
        db.flush()
        db.flush()
        rows = db.minute_levels(["n1"], T0, T0 + 120)
    assert [(r.minute, r.n) for r in rows] == [(T0, 60), (T0 + 60, 1)]
    assert rows[0].laeq == pytest.approx(
        10 * math.log10(sum(10 ** (r.laeq / 10) for r in first + late) / 60)
    )


def site_toml(tmp_path: Path, name: str, broker_url: str, pg_url: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    lines = ["[site]", f'id = "{SITE}"', "[broker]", f'url = "{broker_url}"']
    lines += [f'client_id = "{name}"', "[storage]", f'url = "{pg_url}"', f"lease_s = {LEASE_S}"]
    lines += ["[http]", f"port = {free_port()}"]
    for zone, sensors in ZONES.items():
        lines += ["[[zones]]", f'id = "{zone}"', f"sensors = {list(sensors)!r}".replace("'", '"')]
        lines += [f'light_groups = ["g-{zone}"]', 'schedule = ["00:00-24:00"]']
    path = folder / "site.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_a_gateway_killed_mid_minute_loses_no_record_and_none_is_stored_twice(
    tmp_path: Path, fresh_broker: Mosquitto, pg_url: str
) -> None:
    """Two gateways on PostgreSQL with leases; x4 is in both zones; the storer of north (n1
    and x4) is killed with SIGKILL in the middle of a minute: every record once in the store."""
    clock = ScaledClock(origin=time.time(), scale=1.0)
    config_a = site_toml(tmp_path, "gw-a", fresh_broker.url, pg_url)
    proc = spawn_gateway(config_a, tmp_path / "gw-a.log")
    store = LeaseStore(pg_url)
    sent: collections.Counter[tuple[str, int]] = collections.Counter()
    try:

        def owners() -> dict[str, str | None]:
            return {z: o if alive else None for z, (o, _, alive) in store.owners().items()}

        await wait_for(lambda: set(owners().values()) == {"gw-a"}, 15, "gw-a up with the city")
        async with (
            mqtt_client(fresh_broker.port) as pub,
            gateway(site_toml(tmp_path, "gw-b", fresh_broker.url, pg_url), clock) as b,
        ):
            await wait_for(lambda: len(held(b)) == 1, 4 * LEASE_S, "b's share")
            # a hands back the zones past its share in the zones' order, so it keeps north:
            # a stores n1 and x4, b stores s1
            assert set(held(b)) == {"south"}
            sensors = Sensors(pub, clock)
            accepted = b.metrics.records_accepted

            async def send(first: float, last: float) -> None:
                for sensor in ("n1", "s1", "x4"):
                    t = first
                    while t <= last:
                        await sensors.send(sensor, 55.0 + t % 5, t1=t)
                        sent[(sensor, int((t - 1) // 60) * 60)] += 1
                        t += 1.0

            def b_has_all() -> bool:
                return accepted.total() == sum(sent.values())

            now = math.floor(time.time())
            await send(now - 75, now)  # the minute before and part of this one
            await wait_for(b_has_all, 10, "b folding every record")
            await asyncio.sleep(0.5)  # a, on the same broker, is as far
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            await wait_for(lambda: set(held(b)) == set(ZONES), 3 * LEASE_S, "b takes over")
            await send(now + 1, math.floor(time.time()))  # records after the takeover
            await wait_for(b_has_all, 10, "b folding the records after the takeover")
        # b stopped cleanly (it writes what it stores); a never wrote its last seconds
        rows = {k: v[0] for k, v in stored(pg_url).items()}
        lost = sum(max(0, n - rows.get(k, 0)) for k, n in sent.items())
        twice = sum(max(0, n - sent.get(k, 0)) for k, n in rows.items())
        assert (lost, twice) == (0, 0), (sent, rows)
    finally:
        store.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
