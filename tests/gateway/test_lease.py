"""Zone leases on a real PostgreSQL: the split, the takeover, the fence at the lights."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from gateway.leases import LEASE_TIMEOUT_S, LeaseKeeper, LeaseStore
from gateway.lighting import MqttLighting
from gateway.policy import Override
from tests.gateway.clocks import FixedClock
from tests.gateway.postgres import scratch_database
from tools.lights_sim import LightsSim

ZONES = ("north", "south", "east", "west")


@pytest.fixture
def pg_url() -> Iterator[str]:
    with scratch_database() as url:
        yield url


@pytest.fixture
def stores(pg_url: str) -> Iterator[tuple[LeaseStore, LeaseStore]]:
    a, b = LeaseStore(pg_url), LeaseStore(pg_url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def override(zone: str, cmd_id: str, level: float) -> Override:
    return Override(
        zone=zone,
        group=f"{zone}-lights",
        cmd_id=cmd_id,
        level=level,
        ramp_s=1.0,
        expires_at=time.time() + 600,
        reason="noise",
        evidence={},
        at=time.time(),
        episode="e-1",
    )


class Sent:
    """A publisher that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.messages.append((topic, payload))


def test_two_gateways_split_the_zones(stores: tuple[LeaseStore, LeaseStore]) -> None:
    a = LeaseKeeper(stores[0], "gw-a", ZONES, ttl_s=10, renew_s=3)
    b = LeaseKeeper(stores[1], "gw-b", ZONES, ttl_s=10, renew_s=3)
    assert set(a.renew_once()) == set(ZONES)  # alone, a takes the city
    assert b.renew_once() == {}  # nothing free yet: a holds it all
    a.renew_once()  # a sees two live gateways and hands back what is over its half
    b.renew_once()
    held_a, held_b = a.held(), b.held()
    assert set(held_a).isdisjoint(held_b)
    assert set(held_a) | set(held_b) == set(ZONES)
    assert len(held_a) == len(held_b) == len(ZONES) // 2
    # a zone that changed owner has a newer epoch than its first owner's
    first = {z: e for z, e in held_a.items()}
    for zone, epoch in held_b.items():
        assert epoch > 1, (zone, epoch)
    assert all(e == 1 for e in first.values())
    owners = stores[0].owners()
    assert {z: o for z, (o, _, alive) in owners.items() if alive} == {
        **{z: "gw-a" for z in held_a},
        **{z: "gw-b" for z in held_b},
    }


@contextlib.asynccontextmanager
async def running(*keepers: LeaseKeeper) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(k.run(stop), name=k.owner) for k in keepers]
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def until(predicate: object, limit: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]  # a zero-argument callable
        if time.monotonic() - start > limit:
            raise AssertionError(f"{what}: not within {limit} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_hung_owner_loses_its_zones_to_the_other_within_the_lease_time(
    stores: tuple[LeaseStore, LeaseStore],
) -> None:
    ttl, renew = 2.0, 0.4
    a = LeaseKeeper(stores[0], "gw-a", ZONES, ttl_s=ttl, renew_s=renew)
    b = LeaseKeeper(stores[1], "gw-b", ZONES, ttl_s=ttl, renew_s=renew)
    async with running(a, b):
        await until(lambda: len(a.held()) == len(b.held()) == 2, 10, "an even split")
        lost = dict(a.held())
        a.paused = True  # a stops renewing, as a gateway whose loop hangs
        # a goes quiet in its zones by itself, before b may take them
        quiet = await until(lambda: not a.held(), ttl + 1, "a's leases lapse locally")
        assert all(b.epoch(z) is None for z in lost)
        took = await until(lambda: len(b.held()) == len(ZONES), ttl + 3 * renew, "b takes over")
        for zone, epoch in lost.items():
            assert b.epoch(zone) is not None and b.epoch(zone) > epoch  # type: ignore[operator]
    print(f"a quiet after {quiet:.2f} s; b held every zone {took:.2f} s later (lease {ttl} s)")


async def test_a_stopped_gateway_hands_its_zones_back_at_once(
    stores: tuple[LeaseStore, LeaseStore],
) -> None:
    a = LeaseKeeper(stores[0], "gw-a", ZONES, ttl_s=30, renew_s=0.3)
    b = LeaseKeeper(stores[1], "gw-b", ZONES, ttl_s=30, renew_s=0.3)
    stop_a = asyncio.Event()
    task_a = asyncio.create_task(a.run(stop_a))
    async with running(b):
        await until(lambda: len(a.held()) == len(b.held()) == 2, 10, "an even split")
        stop_a.set()
        await asyncio.wait_for(task_a, 5)
        assert a.held() == {}
        # well within the 30 s lease: the leases were handed back, not left to expire
        await until(lambda: len(b.held()) == len(ZONES), 3, "b takes over")


def test_a_stale_owners_command_is_refused_by_the_lights(
    stores: tuple[LeaseStore, LeaseStore],
) -> None:
    now = [0.0]
    a = LeaseKeeper(stores[0], "gw-a", ZONES, ttl_s=5, renew_s=1, monotonic=lambda: now[0])
    b = LeaseKeeper(stores[1], "gw-b", ZONES, ttl_s=5, renew_s=1, monotonic=lambda: now[0])
    sent_a, sent_b = Sent(), Sent()
    lights_a = MqttLighting("s", sent_a, a.epoch)
    lights_b = MqttLighting("s", sent_b, b.epoch)
    a.renew_once()
    zone = "north"
    sim = LightsSim("s", [f"{zone}-lights"], 80.0, FixedClock(time.time()))
    asyncio.run(lights_a.apply(override(zone, "a-1", 40)))
    ((_, first),) = sent_a.messages
    assert sim.command(f"{zone}-lights", first, time.time())
    # a's command still in flight when a loses the zone: b takes it over
    asyncio.run(lights_a.apply(override(zone, "a-2", 10)))
    stale = sent_a.messages[-1][1]
    stores[0].release("gw-a")
    b.renew_once()
    asyncio.run(lights_b.apply(override(zone, "b-1", 60)))
    ((_, fresh),) = sent_b.messages
    assert sim.command(f"{zone}-lights", fresh, time.time())
    assert not sim.command(f"{zone}-lights", stale, time.time())
    group = sim.groups[f"{zone}-lights"]
    assert (group.cmd_id, group.target, sim.refused) == ("b-1", 60.0, 1)
    # and once its local deadline passes, a sends nothing at all in the zone
    now[0] = 10.0
    before = len(sent_a.messages)
    asyncio.run(lights_a.apply(override(zone, "a-3", 5)))
    assert len(sent_a.messages) == before and lights_a.unheld == 1


def test_lease_time_must_leave_room_for_renewals(stores: tuple[LeaseStore, LeaseStore]) -> None:
    with pytest.raises(ValueError, match="renewal every 5 s cannot keep a 5 s lease"):
        LeaseKeeper(stores[0], "gw-a", ZONES, ttl_s=5, renew_s=5)


def test_a_lost_connection_fails_one_renewal_and_the_next_connects_again(
    stores: tuple[LeaseStore, LeaseStore], pg_url: str
) -> None:
    a = LeaseKeeper(stores[0], "gw-a", ZONES, ttl_s=10, renew_s=3)
    assert set(a.renew_once()) == set(ZONES)
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    with pytest.raises(psycopg.OperationalError):
        a.renew_once()  # the run loop counts and logs this one
    assert set(a.renew_once()) == set(ZONES)


def test_a_renewal_that_cannot_get_the_table_gives_up_within_seconds(
    stores: tuple[LeaseStore, LeaseStore], pg_url: str
) -> None:
    a = LeaseKeeper(stores[0], "gw-a", ZONES, ttl_s=10, renew_s=3)
    outcome: list[BaseException | None] = []

    def renew() -> None:
        try:
            a.renew_once()
            outcome.append(None)
        except BaseException as exc:  # collected and checked in the test thread
            outcome.append(exc)

    with psycopg.connect(pg_url) as blocker:
        # a session stuck in a transaction that holds the leases (a hung client)
        blocker.execute("LOCK TABLE zone_leases IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(target=renew, daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(LEASE_TIMEOUT_S + 5)
        waited = time.monotonic() - started
        blocker.rollback()
    # it gave up (and the run loop logs it and tries again) rather than waiting on
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.OperationalError)
    assert waited < LEASE_TIMEOUT_S + 2
