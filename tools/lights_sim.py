"""`hushlight lights-sim`: a simulated street-lighting controller.

It behaves like the controller the gateway talks to in the field: it takes
overrides on ``lights/{group}/set``, ramps to the new level over ``ramp_s``,
and falls back to its programme level *by itself* at ``expires_at`` even if
nobody tells it to (that is the fail-safe the gateway relies on).  It
publishes a retained ``lights/{group}/state`` (level, cmd_id, source) on
every change and every half second while a ramp runs.  An override without a
valid expiry, or one already expired, is refused: a controller must never be
left on an override that nothing will end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import ssl
from collections.abc import Sequence

import aiomqtt

from gateway.clock import Clock, add_clock_arguments, clock_from_args, iso_time
from gateway.mqtt import Backoff, parse_broker_url
from protocol import payloads, topics
from protocol.errors import ProtocolError
from tools import passwords
from tools.errors import UsageError

__all__ = ["HELP", "GroupState", "LightsSim", "configure", "run"]

HELP = "run a simulated lighting controller that honours ramp and expiry (tests, demo)"

log = logging.getLogger("hushlight.lights_sim")

_ID = re.compile(r"^[a-z0-9-]{1,32}$")
PASSWORD_ENV = passwords.PASSWORD_ENV
PROGRAMME = "programme"
OVERRIDE = "override"
TICK_S = 0.05  # wall seconds between checks of expiry and ramp progress
RAMP_PUBLISH_S = 0.5  # wall seconds between state messages while ramping


class GroupState:
    """One light group: a linear ramp from `start` to `target` from `t_start` over `ramp_s`."""

    def __init__(self, name: str, programme_level: float, now: float) -> None:
        self.name = name
        self.programme_level = programme_level
        self.start = programme_level
        self.target = programme_level
        self.t_start = now
        self.ramp_s = 0.0
        self.cmd_id: str | None = None
        self.source = PROGRAMME
        self.expires_at: float | None = None
        self.epoch: int | None = None  # newest lease epoch a command carried

    def level(self, now: float) -> float:
        if self.ramp_s <= 0 or now >= self.t_start + self.ramp_s:
            return self.target
        frac = max(0.0, (now - self.t_start) / self.ramp_s)
        return self.start + (self.target - self.start) * frac

    def ramping(self, now: float) -> bool:
        return self.ramp_s > 0 and now < self.t_start + self.ramp_s

    def go(self, target: float, ramp_s: float, now: float) -> None:
        self.start = self.level(now)
        self.target = target
        self.ramp_s = ramp_s
        self.t_start = now

    def payload(self, now: float) -> bytes:
        return json.dumps(
            {
                "level": round(self.level(now), 1),
                "cmd_id": self.cmd_id,
                "source": self.source,
                "at": round(now, 3),
            },
            separators=(",", ":"),
        ).encode()


class LightsSim:
    """The controller's logic, without I/O: `command` and `tick` say which groups changed."""

    def __init__(
        self, site: str, groups: Sequence[str], programme_level: float, clock: Clock
    ) -> None:
        self.site = site
        self.clock = clock
        now = clock.now()
        self.groups = {g: GroupState(g, programme_level, now) for g in groups}
        self.refused = 0

    def set_topic(self, group: str) -> str:
        return topics.light_set(self.site, group)

    def state_topic(self, group: str) -> str:
        return topics.light_state(self.site, group)

    def command(self, group: str, payload: bytes, now: float) -> bool:
        """Apply one ``set`` message; False (and a log line) when it is refused."""
        state = self.groups.get(group)
        if state is None:
            return False
        try:
            msg = payloads.decode("light_set", payload)
        except ProtocolError as exc:
            return self._refuse(group, f"{exc.reason}: {exc}")
        fenced = self._fence(state, msg.get("lease_epoch"))
        if fenced:
            return self._refuse(group, f"{msg['cmd_id']}: {fenced}")
        cmd_id = msg["cmd_id"]
        ramp_s = msg["ramp_s"]
        level = msg.get("level")
        if level is None:
            state.cmd_id = cmd_id
            state.source = PROGRAMME
            state.expires_at = None
            state.go(state.programme_level, ramp_s, now)
            log.info(
                "lights %s: release %s, back to programme %g %% over %g s (%s)",
                group,
                cmd_id,
                state.programme_level,
                ramp_s,
                msg.get("reason") or "no reason given",
            )
            return True
        expires_at = float(msg["expires_at"])
        if expires_at <= now:
            return self._refuse(
                group,
                f"expires_at {iso_time(expires_at)} is already past (now {iso_time(now)})",
            )
        state.cmd_id = cmd_id
        state.source = OVERRIDE
        state.expires_at = expires_at
        state.go(float(level), ramp_s, now)
        log.info(
            "lights %s: override %s, %g %% over %g s until %s (%s, zone %s)",
            group,
            cmd_id,
            float(level),
            ramp_s,
            iso_time(expires_at),
            msg.get("reason") or "no reason given",
            msg.get("zone") or "-",
        )
        return True

    @staticmethod
    def _fence(state: GroupState, epoch: int | None) -> str:
        """Why a command with this lease epoch is refused ("" if it is not), noting the epoch.

        Gateways that share a city each hold a lease per zone, whose epoch grows at
        every change of owner; a command with an older epoch than one already seen
        comes from a gateway that lost the zone and must not undo its successor's.
        Once a group has seen an epoch, a command without one cannot be ordered
        against it and is refused as well.
        """
        if epoch is None:
            if state.epoch is None:
                return ""
            return (
                f"no lease_epoch, but this group follows leases (epoch {state.epoch} seen); "
                "a gateway that shares the city must send its lease epoch"
            )
        if state.epoch is not None and epoch < state.epoch:
            return (
                f"lease_epoch {epoch} is older than epoch {state.epoch} already seen for this "
                "group: the sender no longer holds the zone"
            )
        state.epoch = epoch
        return ""

    def _refuse(self, group: str, why: str) -> bool:
        self.refused += 1
        log.warning("lights %s: refused a command: %s", group, why)
        return False

    def tick(self, now: float) -> list[str]:
        """Groups whose override just expired (they head back to their programme)."""
        expired = []
        for state in self.groups.values():
            if state.expires_at is not None and now >= state.expires_at:
                log.info(
                    "lights %s: override %s expired, back to programme", state.name, state.cmd_id
                )
                state.source = PROGRAMME
                state.expires_at = None
                state.go(state.programme_level, max(state.ramp_s, 1.0), now)
                expired.append(state.name)
        return expired

    async def run(
        self,
        url: str,
        stop: asyncio.Event,
        *,
        client_id: str | None = None,
        ca: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """Serve until `stop` is set, reconnecting to the broker as needed.

        `ca`: the CA bundle for an ``mqtts://`` broker (default: the system's);
        `username` and `password`: the controller's MQTT account.
        """
        address = parse_broker_url(url)
        tls = address.tls_context(ca)
        backoff = Backoff()
        ident = client_id or f"hushlight-lights-sim-{self.site}"
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    address.host,
                    address.port,
                    identifier=ident,
                    clean_session=True,
                    username=username,
                    password=password,
                    tls_context=tls,
                ) as client:
                    backoff.reset()
                    wildcard = topics.lights_wildcard(self.site, "set")
                    await client.subscribe(wildcard, qos=1)
                    log.info(
                        "lights-sim: connected to %s as %s; listening on %s for %s "
                        "(programme %g %%)",
                        url,
                        ident,
                        wildcard,
                        ", ".join(self.groups),
                        next(iter(self.groups.values())).programme_level,
                    )
                    now = self.clock.now()
                    for group in self.groups.values():
                        await self._publish(client, group.name, now)
                    await self._serve(client, stop)
            except aiomqtt.MqttError as exc:
                delay = backoff.next()
                log.warning("lights-sim: broker %s: %s; retrying in %.1f s", url, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _publish(self, client: aiomqtt.Client, group: str, now: float) -> None:
        await client.publish(
            self.state_topic(group), self.groups[group].payload(now), qos=1, retain=True
        )

    async def _serve(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._listen(client), name="lights-sim-listen")
                tg.create_task(self._ticker(client, stop), name="lights-sim-tick")
        except* _Stopped:
            pass  # the ticker saw `stop`; cancelling the listener is the way out
        except* aiomqtt.MqttError as group:
            raise group.exceptions[0] from None

    async def _listen(self, client: aiomqtt.Client) -> None:
        prefix = topics.root(self.site) + "/lights/"
        async for message in client.messages:
            topic = message.topic.value
            group = topic[len(prefix) : -len("/set")]
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            now = self.clock.now()
            if self.command(group, bytes(payload), now):
                await self._publish(client, group, now)

    async def _ticker(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        last_ramp_publish: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        was_ramping: set[str] = set()
        while not stop.is_set():
            now = self.clock.now()
            for name in self.tick(now):
                await self._publish(client, name, now)
            wall = loop.time()
            for name, state in self.groups.items():
                if state.ramping(now):
                    was_ramping.add(name)
                    if wall - last_ramp_publish.get(name, 0.0) >= RAMP_PUBLISH_S:
                        last_ramp_publish[name] = wall
                        await self._publish(client, name, now)
                elif name in was_ramping:
                    # the ramp just ended: publish the final level
                    was_ramping.discard(name)
                    await self._publish(client, name, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
        raise _Stopped


class _Stopped(Exception):
    """Raised by the ticker to end its task group (and so the listener) on stop."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="broker URL, e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--site", required=True, help="site id, e.g. leuven")
    parser.add_argument(
        "--groups", required=True, help="comma-separated light groups, e.g. ns-lamps-1,ns-lamps-2"
    )
    parser.add_argument(
        "--programme-level",
        type=float,
        default=80.0,
        help="level %% of the normal programme (default 80)",
    )
    parser.add_argument("--client-id", default=None, help="MQTT client id (default from site)")
    parser.add_argument(
        "--ca", default=None, metavar="FILE", help="CA bundle of an mqtts:// broker (PEM)"
    )
    parser.add_argument("--username", default=None, help="MQTT user name")
    passwords.add_arguments(parser)
    add_clock_arguments(parser)


def _check_args(args: argparse.Namespace) -> tuple[list[str], Clock, str | None]:
    """(light groups, clock, MQTT password) from the arguments; `UsageError` if any is wrong."""
    if not _ID.match(args.site):
        raise UsageError(f"--site {args.site!r} must be 1-32 of a-z, 0-9 and '-'")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [g for g in groups if not _ID.match(g)]
    if not groups or bad:
        raise UsageError(
            f"--groups {args.groups!r}: each group must be 1-32 of a-z, 0-9 and '-', "
            "separated by commas"
        )
    if not 0 <= args.programme_level <= 100:
        raise UsageError(f"--programme-level {args.programme_level} must be 0-100")
    try:
        address = parse_broker_url(args.broker)
        clock = clock_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.ca is not None:
        if not address.tls:
            raise UsageError(f"--ca is for mqtts:// brokers; --broker {args.broker!r} is plain")
        try:
            address.tls_context(args.ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--ca {args.ca}: not a readable PEM CA bundle ({exc})") from None
    password = passwords.password(args)
    if password is not None and args.username is None:
        raise UsageError(
            f"a password was given (--password-file or {PASSWORD_ENV}) but no --username"
        )
    return groups, clock, password


async def _main(
    args: argparse.Namespace, groups: list[str], clock: Clock, password: str | None
) -> None:
    sim = LightsSim(args.site, groups, args.programme_level, clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.run(
        args.broker,
        stop,
        client_id=args.client_id,
        ca=args.ca,
        username=args.username,
        password=password,
    )


def run(args: argparse.Namespace) -> int:
    groups, clock, password = _check_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_main(args, groups, clock, password))
    return 0
