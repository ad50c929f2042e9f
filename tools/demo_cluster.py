"""`hushlight demo --cluster`: the demo's night on a three-node broker cluster, two gateways
sharing the street, and in the middle of the night a broker node and a gateway die.

What runs, beside the seven virtual sensors of `tools.demo`:

- three RabbitMQ nodes with the MQTT plugin (`tools.rabbit_cluster`, in the
  demo's work folder, anonymous: the demo has no accounts to provision);
- a fresh PostgreSQL database, ``hushlight_demo_<random>``, made on the server
  of ``--postgres`` (this machine's 127.0.0.1:5432 by default) and dropped at
  the end unless ``--keep``;
- two gateways, ``a`` on node 1 and ``b`` on node 2, each with its own client
  id, both keeping their data in that database and sharing the two zones
  through zone leases (`gateway.leases`) of `LEASE_S` seconds;
- the simulated lights and the demo's own listener on node 3;
- the sensors spread over the nodes, most of them on the node of the gateway
  that holds the street's first zone (collegeberg, where the night's first
  nudge comes).

Half way through the night, or earlier, ten seconds into the first nudge, the
gateway that holds the nudged zone (else the most zones) is killed with
SIGKILL, and so is the node it is connected to (a machine that dies): the
other gateway takes the zone over with its lights overridden.
Meanwhile the zone leases are read every `POLL_S` seconds.  At the end the
demo counts what went wrong, if anything: records the sensors made that did
not reach the shared store, nudges sent twice (the same nudge on the wire or
recorded twice, or two gateways' overrides for different episodes in force
on one light group at once), the longest time a zone had no owner, the
sensors running the config their zone's gateway sent them (`[sensor_config]`
in the cluster's site file), and overrides that ran out in the middle of their
episode during the takeover.  It exits 1 if a record was lost or a nudge sent
twice.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from protocol import payloads, topics
from protocol.errors import ProtocolError
from tools import scenes
from tools.broker import free_port
from tools.demo import (
    PROGRAMME_LEVEL,
    SITE,
    Child,
    Demo,
    _tool_errors,
    config_text,
    hushlight_command,
)
from tools.demo_view import clock
from tools.errors import ToolError, UsageError

# A zone lease lasts this long unrenewed (renewed every third of it): short, as in the
# lease tests, so that a takeover fits a compressed night.
LEASE_S = 3.0
POLL_S = 0.25  # real seconds between two readings of the zone leases
SERVER = "postgresql://127.0.0.1:5432/postgres"
KILL_AT = 0.5  # the share of the night after which a node and a gateway die
KILL_AFTER_NUDGE_S = 10.0  # or this many site seconds into the first nudge, if earlier
GATEWAYS = {"a": 0, "b": 1}  # gateway -> index of the node it connects to
WATCH_NODE = 2  # the lights and the demo's listener: a node that is never killed
# the node each sensor connects to first, counted from the node of the gateway that holds
# the street's first zone: most sensors there, two on each other node
SENSOR_SPREAD = (0, 1, 0, 2, 0, 1, 2)
# where the demo's config names its SQLite file, replaced by the shared store's URL
_DATABASE_MARK = "@database@"
CONFIG_REV = 1  # the rev of the sensors' config the gateways send
GATEWAY_BOOT_S = 6.0  # real seconds the gateways get before the night's clock starts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="play the night on a three-node RabbitMQ cluster with two gateways sharing the "
        "zones through PostgreSQL leases; half way through (or during the first nudge), a "
        "broker node and a gateway die",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=SERVER,
        help=f"with --cluster: the PostgreSQL server to make the night's database on "
        f"(default {SERVER})",
    )


def cluster_config_text(broker: str, store: str, http_port: int, run: str, token: str) -> str:
    """One gateway's site file: the demo's (`tools/demo_config.toml`), its SQLite file
    replaced by the shared PostgreSQL store and a lease time."""
    text = config_text(broker, _DATABASE_MARK, http_port, run, token)
    line = f'path = "{_DATABASE_MARK}"'
    if text.count(line) != 1:
        raise ToolError(f"the demo's site file no longer has one line {line!r} under [storage]")
    text = text.replace(line, f'url = "{store}"\nlease_s = {LEASE_S:g}')
    # each sensor's config, sent by the gateway holding its zone when the sensor comes
    # online (again after a failover): the demo's own values, a new rev
    return text + f"\n[sensor_config]\nrev = {CONFIG_REV}\ninterval_s = 1.0\n"


# ---- the night's database ----------------------------------------------------


def database_url(server: str, name: str) -> str:
    return urlsplit(server)._replace(path="/" + name).geturl()


def check_server(server: str) -> None:
    if not server.startswith(("postgresql://", "postgres://")):
        raise UsageError(
            f"--postgres {server!r} is not a postgresql:// URL; give one such as {SERVER}"
        )


def create_database(server: str) -> str:
    """Make ``hushlight_demo_<random>`` on `server`; its name."""
    import psycopg

    from gateway.storage.postgres import safe_url

    name = "hushlight_demo_" + secrets.token_hex(4)
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"PostgreSQL at {safe_url(server)} is not reachable ({reason}). The cluster demo "
            "keeps the gateways' data and zone leases there: start PostgreSQL (on Debian "
            "`apt-get install postgresql`; the README's section on running at scale says how "
            "to set up a user), or give another server with --postgres "
            "postgresql://USER@HOST:PORT/postgres"
        ) from None
    except psycopg.Error as exc:
        raise UsageError(
            f"could not create the demo's database on {safe_url(server)}: {exc}; the user "
            "of --postgres must be allowed to create databases (CREATEDB)"
        ) from None
    return name


def drop_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- what the demo counts (pure) ------------------------------------------------


# a light command the demo heard: (site time it arrived, group, the set message)
LightSet = tuple[float, str, Mapping[str, Any]]


@dataclass
class OwnerWatch:
    """Zone owners read every `POLL_S` s: how long each zone was without an owner in force.

    A zone counts from the first time it had an owner; `sample` takes what
    `LeaseStore.owners()` returned at monotonic time `now`.
    """

    longest: dict[str, float] = field(default_factory=dict)  # zone -> longest gap, s
    owner: dict[str, str | None] = field(default_factory=dict)  # zone -> owner now
    _since: dict[str, float] = field(default_factory=dict)  # zone -> when it lost its owner
    taken: dict[str, tuple[float, str]] = field(default_factory=dict)  # zone -> (when, by whom)

    def sample(self, owners: Mapping[str, tuple[str | None, int, bool]], now: float) -> None:
        for zone, (owner, _epoch, in_force) in owners.items():
            holder = owner if in_force else None
            if zone not in self.owner and holder is None:
                continue  # not yet taken at start-up
            before = self.owner.get(zone)
            self.owner[zone] = holder
            if holder is None:
                self._since.setdefault(zone, now)
                self.longest.setdefault(zone, 0.0)
            else:
                began = self._since.pop(zone, None)
                gap = 0.0 if began is None else now - began
                self.longest[zone] = max(self.longest.get(zone, 0.0), gap)
                if holder != before:
                    self.taken[zone] = (now, holder)

    def finish(self, now: float) -> None:
        """Close the gaps still open."""
        for zone, began in self._since.items():
            self.longest[zone] = max(self.longest.get(zone, 0.0), now - began)
        self._since.clear()


@dataclass
class Tally:
    """What the demo heard on the site's topics, for the counts of the summary."""

    # sensor -> seq -> UTC epoch s of the record's minute
    records: dict[str, dict[int, int]] = field(default_factory=dict)
    nudges: collections.Counter[str] = field(default_factory=collections.Counter)
    config_rev: dict[str, int | None] = field(default_factory=dict)  # sensor -> its latest
    # (site time it arrived, group, the set message)
    sets: list[LightSet] = field(default_factory=list)
    bad: int = 0

    def on_message(self, topic: str, payload: bytes, now: float) -> None:
        try:
            _site, kind, ident, leaf = topics.parse(topic)
            if kind == "sensors" and leaf == "levels":
                rec = payloads.decode_levels(payload)
                minute = int(rec["t0"] / 1000 // 60) * 60  # as the gateway folds it
                self.records.setdefault(ident, {})[rec["seq"]] = minute
            elif kind == "sensors" and leaf == "status":
                status = payloads.decode_status(payload)
                if status["state"] == "online":
                    self.config_rev[ident] = status.get("config_rev")
            elif kind == "zones" and leaf == "nudge":
                self.nudges[payloads.decode_nudge(payload)["nudge_id"]] += 1
            elif kind == "lights" and leaf == "set":
                self.sets.append((now, ident, dict(payloads.decode_light_set(payload))))
        except ProtocolError:
            self.bad += 1


def episode_of(cmd_id: str) -> str:
    """The episode (its nudge id) of a light command: ``{episode}.{n}``, or ``{...}.r``."""
    head = cmd_id[:-2] if cmd_id.endswith(".r") else cmd_id
    return head.rsplit(".", 1)[0]


def taken(sets: Iterable[LightSet]) -> Iterator[LightSet]:
    """The sets the lights take, in order: one with a lease epoch older than the group's
    newest is refused (the fence, as `tools.lights_sim` applies it)."""
    newest: dict[str, int] = {}
    for item in sets:
        _now, group, msg = item
        epoch = msg.get("lease_epoch")
        if epoch is not None and group in newest and epoch < newest[group]:
            continue
        if epoch is not None:
            newest[group] = epoch
        yield item


def doubled_overrides(sets: Iterable[LightSet]) -> list[tuple[str, str]]:
    """Overrides that the lights took from two owners for one zone at once.

    Counted: the same command taken with two epochs (sent by two gateways), and
    an override of another episode taken under another epoch while the
    previous one is still in force.  Each as (the later command's episode, what
    happened).
    """
    active: dict[str, tuple[int | None, str, str, float]] = {}  # epoch, episode, cmd, expiry
    epochs: dict[str, set[int | None]] = {}
    found: list[tuple[str, str]] = []
    for now, group, msg in taken(sets):
        epoch = msg.get("lease_epoch")
        cmd = str(msg["cmd_id"])
        seen = epochs.setdefault(cmd, set())
        episode = episode_of(cmd)
        if seen and epoch not in seen:
            epochs_seen = ", ".join(sorted(map(str, seen)))
            found.append(
                (episode, f"{cmd} on {group} under lease epochs {epochs_seen} and {epoch}")
            )
        seen.add(epoch)
        if msg.get("level") is None:
            active.pop(group, None)
            continue
        old = active.get(group)
        if old is not None and old[3] > now and old[0] != epoch and old[1] != episode:
            found.append(
                (episode, f"{group}: {cmd} (epoch {epoch}) while {old[2]} (epoch {old[0]}) held")
            )
        active[group] = (epoch, episode, cmd, float(msg["expires_at"]))
    return found


def lapses(sets: Iterable[LightSet]) -> list[float]:
    """Site seconds a group spent back on its programme in the middle of an episode: its
    override ran out before the next override of the same episode came."""
    last: dict[str, tuple[str, float]] = {}  # group -> (episode, expiry) of its override
    found: list[float] = []
    for now, group, msg in taken(sets):
        episode = episode_of(str(msg["cmd_id"]))
        before = last.pop(group, None)
        if msg.get("level") is None:
            continue
        if before is not None and before[0] == episode and now > before[1]:
            found.append(now - before[1])
        last[group] = (episode, float(msg["expires_at"]))
    return found


def count_records(
    made: Mapping[str, int],
    heard: Mapping[str, Mapping[int, int]],
    stored: Mapping[tuple[str, int], int],
) -> tuple[int, int, int]:
    """(records lost, records stored twice, records stored), matched per sensor and minute.

    The store keeps minute rows (a count of records per sensor and minute),
    not the records themselves: a record is in the store if its minute row
    counts it.  `made` is each sensor's own count, `heard` each record the
    demo heard (seq -> minute), `stored` the count of each minute row.
    """
    lost = twice = kept = 0
    for sensor in sorted(set(made) | set(heard)):
        expected = collections.Counter(heard.get(sensor, {}).values())
        reached = 0
        for minute, n in expected.items():
            have = stored.get((sensor, minute), 0)
            reached += min(n, have)
            twice += max(0, have - n)
        twice += sum(n for (s, m), n in stored.items() if s == sensor and m not in expected)
        total = max(made.get(sensor, 0), len(heard.get(sensor, {})))
        lost += total - reached
        kept += reached
    return lost, twice, kept


# ---- the demo ---------------------------------------------------------------------


class ClusterDemo(Demo):
    def __init__(self, args: argparse.Namespace, work: Path, cluster: Any, store: str) -> None:
        super().__init__(args, work)
        self.cluster = cluster
        self.store = store
        self.broker_url = cluster.urls[WATCH_NODE]  # the lights and the demo's listener
        self.gateways: dict[str, Child] = {}
        self.ports: dict[str, int] = {}
        self.client_ids: dict[str, str] = {}
        self.tally = Tally()
        self.owners = OwnerWatch()
        # sensor -> seqs it skipped when a restart had to kill it (sensor_killed)
        self.seq_gaps: dict[str, int] = {}
        self.events: list[str] = []
        self.killed: tuple[str, int, float, tuple[str, ...]] | None = None
        self.poll_errors = 0
        self.sensor_nodes: tuple[int, ...] = SENSOR_SPREAD  # set again once the zones are shared

    def sensor_broker(self, sensor: str) -> str:
        """Every node, beginning with the sensor's own (`sensor_nodes`): it fails over in turn."""
        urls = list(self.cluster.urls)
        first = self.sensor_nodes[scenes.SENSORS.index(sensor)]
        return ",".join(urls[first:] + urls[:first])

    def on_message(self, topic: str, payload: bytes) -> None:
        super().on_message(topic, payload)
        self.tally.on_message(topic, payload, self.site_now())

    def event(self, text: str) -> None:
        line = f"{clock(self.site_now())} {text}"
        self.events.append(line)
        self.say(line)

    def _frame(self, note: str) -> Any:
        if self.events:
            note = "\n".join([*self.events[-3:], note])
        return super()._frame(note)

    async def start_pieces(self, broker: str) -> None:
        """The gateways first, so that their sessions take the sensors' first records;
        then the lights and the sensors."""
        # the night's clock starts once the gateways are up
        self.start = time.time() + GATEWAY_BOOT_S
        run = uuid.uuid4().hex[:8]
        timing = ["--time-scale", f"{self.speed:g}", "--time-origin", f"{self.first:.3f}"]
        timing += ["--time-start", f"{self.start:.3f}"]
        for name, node in GATEWAYS.items():
            port = free_port()
            path = self.work / f"gateway-{name}.toml"
            path.write_text(
                cluster_config_text(
                    self.cluster.urls[node], self.store, port, f"{name}-{run}", self.token
                )
            )
            self.ports[name] = port
            self.client_ids[name] = f"hushlight-gateway-demo-{name}-{run}"
            child = Child(
                f"gateway-{name}",
                ["gateway", "--config", str(path), "--on-stop", "release", *timing],
                self.work,
            )
            self.gateways[name] = child
            self.children.append(child)
        lights = ["lights-sim", "--broker", broker, "--site", SITE]
        lights += ["--groups", "ns-lamps-1,ns-lamps-2", "--programme-level", f"{PROGRAMME_LEVEL:g}"]
        lights += ["--client-id", f"hushlight-lights-demo-{run}", *timing]
        self.children.append(Child("lights-sim", lights, self.work))
        for name, port in self.ports.items():
            await self.wait_for(
                f"gateway {name} connecting", lambda port=port: self.gateway_up(port)
            )
        self.http_port = self.ports["b"]
        zones = len(self.street.zones)
        await self.wait_for(
            "the gateways sharing the zones",
            lambda: (
                len([o for o in self.owners.owner.values() if o]) == zones
                and len({o for o in self.owners.owner.values() if o}) == len(GATEWAYS)
            ),
            limit_s=6 * LEASE_S,
        )
        where = ", ".join(
            f"gateway {n} on node {i + 1} ({', '.join(self.zones_of(n)) or 'no zone'})"
            for n, i in GATEWAYS.items()
        )
        self.say(f"{where}; leases of {LEASE_S:g} s")
        busy = GATEWAYS[self.first_zone_holder()]
        size = len(self.cluster.urls)
        self.sensor_nodes = tuple((k + busy) % size for k in SENSOR_SPREAD)
        spread = collections.Counter(self.sensor_nodes)
        self.say(
            "sensors per node: "
            + ", ".join(f"node {i + 1} {spread[i]}" for i in range(len(self.cluster.urls)))
            + f"; the lights and this view on node {WATCH_NODE + 1}"
        )
        self.say(
            "dashboards: "
            + ", ".join(f"http://127.0.0.1:{p}/ (gateway {n})" for n, p in self.ports.items())
        )
        self.start_sensors()
        for sensor in self.pcm:
            self.start_feeder(sensor)

    def first_zone_holder(self) -> str:
        """The gateway that holds the street's first zone (of the site file), else "a"."""
        first = next(iter(self.street.zones))
        return next((n for n in GATEWAYS if first in self.zones_of(n)), "a")

    def zones_of(self, gateway: str) -> list[str]:
        ident = self.client_ids[gateway]
        return sorted(z for z, o in self.owners.owner.items() if o == ident)

    async def night(self, broker: str) -> None:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.watch_owners(stop), name="owners")
            chaos = group.create_task(self.chaos(), name="chaos")
            try:
                await super().night(broker)
            finally:
                stop.set()
                chaos.cancel()
        self.owners.finish(time.monotonic())

    async def watch_owners(self, stop: asyncio.Event) -> None:
        """Read the zone leases every `POLL_S` s until `stop`."""
        import psycopg

        from gateway.errors import StorageError
        from gateway.leases import LeaseStore

        try:
            store = await asyncio.to_thread(LeaseStore, self.store)
        except StorageError as exc:
            raise ToolError(f"the zone leases cannot be read: {exc}") from None
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    owners = await asyncio.to_thread(store.owners)
                except (psycopg.Error, OSError):
                    self.poll_errors += 1
                else:
                    self.owners.sample(owners, time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, began + POLL_S - time.monotonic()))
        finally:
            store.close()

    async def chaos(self) -> None:
        """SIGKILL a gateway and the broker node it is connected to: half way through the
        night, or earlier, `KILL_AFTER_NUDGE_S` into the first nudge, so that a zone is taken
        over with its lights overridden.  The gateway killed holds that zone (else the
        most zones)."""
        half = self.origin + KILL_AT * self.seconds
        nudged: str | None = None
        while True:
            await asyncio.sleep(0.1)
            if self.start is None or not self.sensors:
                continue
            now = self.site_now()
            first = self.street.nudges[0] if self.street.nudges else None
            if first is not None and now >= first.at + KILL_AFTER_NUDGE_S:
                nudged = first.zone
                break
            if now >= half:
                break
        held = {n: self.zones_of(n) for n in GATEWAYS}
        busy = self.first_zone_holder()
        victim = max(GATEWAYS, key=lambda n: (nudged in held[n], len(held[n]), n == busy))
        node = GATEWAYS[victim]
        on_node = sum(1 for i in self.sensor_nodes if i == node)
        child = self.gateways[victim]
        child.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        self.children.remove(child)  # its exit is no failure now
        await asyncio.to_thread(self.cluster.kill, node)
        self.killed = (victim, node, killed_at, tuple(held[victim]))
        during = f" and {nudged}'s nudge in force" if nudged in held[victim] else ""
        self.event(
            f"KILLED gateway {victim} (SIGKILL; it held {', '.join(held[victim]) or 'no zone'}"
            f"{during}) and broker node {node + 1} ({on_node} of {len(self.sensor_nodes)} sensors "
            f"and gateway {victim} on it)"
        )
        survivor = next(n for n in GATEWAYS if n != victim)
        self.http_port = self.ports[survivor]
        await asyncio.to_thread(child.proc.wait)
        # say when the survivor has taken the zones over
        while True:
            await asyncio.sleep(POLL_S)
            mine = self.zones_of(survivor)
            if len(mine) == len(self.street.zones):
                self.event(
                    f"gateway {survivor} holds {', '.join(mine)}: taken over "
                    f"{self.takeover_s():.1f} s after the kill"
                )
                return

    def takeover_s(self) -> float | None:
        """Seconds from the kill until the last of the victim's zones had another owner."""
        if self.killed is None:
            return None
        victim, _node, at, zones = self.killed
        ident = self.client_ids[victim]
        times = []
        for zone in zones:
            taken = self.owners.taken.get(zone)
            if taken is None or taken[1] == ident or taken[0] < at:
                return None
            times.append(taken[0] - at)
        return max(times, default=0.0)

    # ---- the counts ---------------------------------------------------------

    def sensor_killed(self, sensor: str) -> None:
        """Note the seqs the killed firmware had reserved but not used: from the last
        record heard from it to the seq in its state file, where the next one starts."""
        path = self.work / "sensors" / sensor / "seq.json"
        try:
            start = int(json.loads(path.read_text())["levels"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        heard = max(self.tally.records.get(sensor, {-1: 0})) + 1
        self.seq_gaps[sensor] = self.seq_gaps.get(sensor, 0) + max(0, start - heard)

    def made(self) -> dict[str, int]:
        """Each sensor's own count of level records: the next seq it wrote at its clean
        stop, less the seqs it skipped if a restart had to kill it."""
        counts = {}
        for sensor in scenes.SENSORS:
            path = self.work / "sensors" / sensor / "seq.json"
            try:
                levels = int(json.loads(path.read_text())["levels"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            counts[sensor] = levels - self.seq_gaps.get(sensor, 0)
        return counts

    def stored(self) -> tuple[dict[tuple[str, int], int], list[str]]:
        """The minute rows' counts, and the nudges recorded or sent twice, from the store."""
        import psycopg

        with psycopg.connect(self.store, connect_timeout=5) as db:
            rows = db.execute("SELECT sensor, minute, n FROM levels_minute").fetchall()
            twice = db.execute(
                """SELECT nudge_id FROM notifications WHERE channel = 'mqtt'
                   GROUP BY nudge_id HAVING count(*) > 1
                   UNION
                   SELECT episode FROM decisions WHERE type = 'Nudge'
                   GROUP BY episode HAVING count(*) > 1"""
            ).fetchall()
        return {(str(s), int(m)): int(n) for s, m, n in rows}, [str(r[0]) for r in twice]

    def cluster_summary(self) -> tuple[list[str], bool]:
        """The summary's lines about the cluster, and whether all went well."""
        made = self.made()
        stored, twice_stored = self.stored()
        lost, twice_records, kept = count_records(made, self.tally.records, stored)
        on_wire = sorted(n for n, c in self.tally.nudges.items() if c > 1)
        lights = doubled_overrides(self.tally.sets)
        twice = set(on_wire) | set(twice_stored) | {episode for episode, _ in lights}
        lines = ["the cluster's night:"]
        lines += [f"  {e}" for e in self.events]
        # a sensor that made nothing would make "0 lost" say nothing
        silent = [s for s in scenes.SENSORS if not made.get(s) and not self.tally.records.get(s)]
        if silent:
            lines.append(
                f"  no records from {', '.join(silent)}: the sensor did not run (its log is "
                "in the work folder; --keep keeps it), so the counts below are incomplete"
            )
        if self.killed is None:
            lines.append("  the night ended before the node and the gateway were killed")
        total = sum(max(made.get(s, 0), len(self.tally.records.get(s, {}))) for s in scenes.SENSORS)
        lines.append(
            f"  records made by the sensors: {total}; in the shared store: {kept} (it keeps "
            "minute rows, so each sensor's records are matched minute by minute)"
        )
        configured = sorted(s for s, r in self.tally.config_rev.items() if r == CONFIG_REV)
        lines.append(
            f"  sensors running config rev {CONFIG_REV} from the gateway holding their zone: "
            f"{len(configured)} of {len(scenes.SENSORS)}"
        )
        lines.append(f"records lost: {lost}")
        lines.append(f"records stored twice: {twice_records}")
        lines.append(f"nudges sent twice: {len(twice)}")
        for _, line in lights:
            lines.append(f"  the lights took {line}")
        for nudge in sorted(set(on_wire) | set(twice_stored)):
            lines.append(f"  nudge {nudge}: sent or recorded more than once")
        if self.owners.longest:
            zone, gap = max(self.owners.longest.items(), key=lambda kv: kv[1])
            lines.append(
                f"longest time a zone had no owner: {gap:.2f} s ({zone}; leases of "
                f"{LEASE_S:g} s, renewed every {LEASE_S / 3:g} s, read every {POLL_S:g} s)"
            )
            if self.poll_errors:
                lines.append(f"  readings of the leases that failed: {self.poll_errors}")
        else:
            lines.append("longest time a zone had no owner: - (the leases were never read)")
        takeover = self.takeover_s()
        if takeover is not None:
            lines.append(f"zones taken over after the gateway was killed: {takeover:.2f} s")
        gaps = lapses(self.tally.sets)
        if gaps:
            lines.append(
                f"  overrides that ran out in the middle of their episode before the next came: "
                f"{len(gaps)} (the lights on their programme for up to {max(gaps):.0f} s of "
                "the night; holds are short in this compressed night)"
            )
        return lines, lost == 0 and not twice and not silent and self.killed is not None


def cluster_steps(prog: str, work: Path, store: str, kept: bool) -> list[str]:
    """The commands to try after the cluster demo, each with what it shows."""
    if kept:
        steps = [
            (f"{prog} report --db {store} --minutes 1", "both gateways' nudges against controls"),
            (f"less {work / 'gateway-b.log'}", "a gateway's log (the others' beside it)"),
        ]
    else:
        steps = [(f"{prog} demo --cluster --keep", "again, keeping the logs and the database")]
    steps.append((f"{prog} cluster --help", "run the broker cluster yourself"))
    width = max(len(command) for command, _ in steps) + 2
    return [f"{command:<{width}}{why}" for command, why in steps]


def run(args: argparse.Namespace) -> int:
    """`hushlight demo --cluster`."""
    import psycopg

    from tools.rabbit_cluster import RabbitCluster

    if args.broker is not None:
        raise UsageError("--cluster runs its own brokers; leave out --broker")
    check_server(args.postgres)
    name = create_database(args.postgres)
    store = database_url(args.postgres, name)
    print(f"PostgreSQL database {name} for the night's data and zone leases", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hushlight-demo-cluster-"))
    cluster: RabbitCluster | None = None
    demo: ClusterDemo | None = None
    ok = False
    try:
        cluster = RabbitCluster(folder=work / "rabbit", anonymous=True)
        print("starting three RabbitMQ nodes (about 15-20 s) ...", flush=True)
        began = time.monotonic()
        cluster.start()
        print(
            f"broker cluster up in {time.monotonic() - began:.0f} s: "
            + ", ".join(f"node {i + 1} {u}" for i, u in enumerate(cluster.urls)),
            flush=True,
        )
        demo = ClusterDemo(args, work, cluster, store)
        asyncio.run(demo.night(demo.broker_url or ""))
    except (ToolError, BaseExceptionGroup) as exc:
        found = _tool_errors(exc)
        if not found:
            raise
        for message in found:
            print(f"hushlight demo: {message}", file=sys.stderr)
        if not args.keep:
            print(f"(run with --keep to keep the logs in {work})", file=sys.stderr)
        return 1
    else:
        ok = True
    finally:
        summary: list[str] = []
        good = False
        if demo is not None:
            demo.stop_all()  # the gateways write what they hold before the store is read
            if ok:
                try:
                    summary, good = demo.cluster_summary()
                except psycopg.Error as exc:
                    summary = [f"the shared store could not be read: {exc}"]
        if cluster is not None:
            if args.keep:
                cluster.stop()  # its logs stay in the work folder
            else:
                cluster.close()
        if not args.keep:
            try:
                drop_database(args.postgres, name)
            except psycopg.Error as exc:
                print(
                    f"warning: the database {name} was not dropped ({exc}); "
                    f"drop it with: psql -c 'DROP DATABASE \"{name}\"' {args.postgres}",
                    file=sys.stderr,
                )
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    assert demo is not None
    print()
    print("summary of the night")
    if args.keep:
        print(f"logs are kept in {work}, the data in {store}")
    for line in demo.street.summary(cluster_steps(hushlight_command(), work, store, args.keep)):
        print(line)
    for line in summary:
        print(line)
    return 0 if good else 1
