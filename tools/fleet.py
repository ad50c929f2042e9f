"""`hushlight fleet`: every sensor of a site at a glance, from the broker.

Each sensor keeps its latest status retained on the broker
(``.../sensors/{id}/status``), and its last will replaces it with
``{"state": "offline"}`` when it drops off.  This command subscribes to those
statuses, waits a moment for them (the retained ones arrive at once; it
listens `WAIT_S` seconds by default, less when they stop coming), joins the
zones of the site configuration and prints one row per sensor: zones,
online or offline, firmware, the state of an update (ota, its version and
reason), when it was last heard of, free heap and DSP load; then a summary
line.

A status carries no time of its own.  With ``--gateway URL`` the last-seen
column is the gateway's (its dashboard's fleet listing, the time of the
sensor's latest message of any kind); without it, the time a status arrived
while this command listened, or "retained" for one that was already there.

The functions here that talk to the broker (`BrokerLogin`, `collect`) are
also what `hushlight ota` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import topics
from tools import passwords
from tools.errors import UsageError

__all__ = [
    "HELP",
    "WAIT_S",
    "BrokerLogin",
    "Row",
    "Seen",
    "add_broker_arguments",
    "broker_login",
    "collect",
    "configure",
    "load_site",
    "rows",
    "run",
    "summary",
]

HELP = "list a site's sensors: zones, online, firmware, update state, last seen, heap, DSP load"

# seconds to listen for statuses; the retained ones come at once, so the
# listening ends QUIET_S after the last one arrived
WAIT_S = 2.0
QUIET_S = 0.5
_ID = re.compile(r"[a-z0-9-]{1,32}")
# update states that mean an update is going on
BUSY = ("staging", "staged", "trial")


# ---- the broker ----------------------------------------------------------------


@dataclass(frozen=True)
class BrokerLogin:
    """How to reach and log in to the broker: the checked command-line options."""

    url: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    username: str | None
    password: str | None
    ca: str | None = None

    def client(self, purpose: str) -> Any:
        """An `aiomqtt.Client` (not connected yet) with a fresh client id."""
        import aiomqtt

        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"hushlight-{purpose}-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            username=self.username,
            password=self.password,
            tls_context=self.tls,
        )


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """--broker, --site, --username, --password-file and --ca, as the other tools have them."""
    parser.add_argument(
        "--broker", required=True, metavar="URL", help="mqtt://HOST:PORT or mqtts://HOST:PORT"
    )
    parser.add_argument("--site", required=True, help="site id, [a-z0-9-]{1,32}")
    parser.add_argument("--username", help="MQTT user name")
    passwords.add_arguments(parser)
    parser.add_argument("--ca", metavar="FILE", help="CA certificate (PEM) for an mqtts:// broker")


def broker_login(args: argparse.Namespace) -> BrokerLogin:
    """The broker options checked; UsageError naming the bad one."""
    from gateway.mqtt import parse_broker_url

    if not _ID.fullmatch(args.site):
        raise UsageError(
            f"--site {args.site!r} is not a valid id; use 1 to 32 characters from a-z, 0-9, '-'"
        )
    try:
        address = parse_broker_url(args.broker)
    except ValueError as exc:
        raise UsageError(f"--broker {args.broker!r}: {exc}") from None
    tls = None
    if args.ca is not None:
        if not address.tls:
            raise UsageError(f"--ca is for mqtts:// brokers, but the broker is {args.broker}")
        try:
            tls = address.tls_context(args.ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--ca {args.ca}: not a readable PEM CA certificate ({exc})") from None
    elif address.tls:
        tls = address.tls_context()
    password = passwords.password(args)
    if (args.username is None) != (password is None):
        raise UsageError(
            "give --username with a password (--password-file FILE or "
            f"{passwords.PASSWORD_ENV}), or neither"
        )
    return BrokerLogin(
        args.broker, address.host, address.port, tls, args.username, password, args.ca
    )


@dataclass(frozen=True)
class Seen:
    """A sensor's latest status as this command received it."""

    status: Mapping[str, Any]  # the payload's fields ({} if it was not a JSON object)
    retained: bool  # already on the broker when we subscribed
    at: float  # when it arrived (UTC epoch s)


def status_of(payload: bytes) -> dict[str, Any]:
    """A status payload's fields; {} for one that is not a JSON object (a
    broken sensor must not stop the listing)."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def sensor_of(topic: str) -> str | None:
    """The sensor id of a ``hushlight/v1/{site}/sensors/{id}/...`` topic."""
    parts = topic.split("/")
    return parts[4] if len(parts) >= 6 and parts[3] == "sensors" else None


async def collect(login: BrokerLogin, site: str, wait_s: float = WAIT_S) -> dict[str, Seen]:
    """Every status on the broker for `site`, listening up to `wait_s`
    seconds (less once they stop coming); sensor id -> what arrived last."""
    import aiomqtt

    out: dict[str, Seen] = {}
    wildcard = topics.root(site) + "/sensors/+/status"
    try:
        async with login.client("fleet") as client:
            await client.subscribe(wildcard, qos=1)
            end = time.monotonic() + wait_s
            messages = aiter(client.messages)
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    message = await asyncio.wait_for(anext(messages), min(left, QUIET_S))
                except TimeoutError:
                    if out:
                        break  # they stopped coming
                    continue
                sensor = sensor_of(str(message.topic))
                payload = message.payload
                if sensor is None or not isinstance(payload, (bytes, bytearray)):
                    continue
                out[sensor] = Seen(status_of(bytes(payload)), bool(message.retain), time.time())
    except aiomqtt.MqttError as exc:
        raise UsageError(
            f"cannot read statuses from the broker {login.url}: {exc}; check --broker, the "
            "account (--username/--password-file) and --ca"
        ) from None
    return out


# ---- the site and the gateway ---------------------------------------------------


def load_site(path: Path | str | None, site: str) -> Mapping[str, tuple[str, ...]] | None:
    """The site config's sensor -> zone ids, or None without a config;
    UsageError for a config that cannot be read or is for another site."""
    if path is None:
        return None
    from gateway.config import load_config
    from gateway.errors import ConfigError

    try:
        config = load_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if config.site_id != site:
        raise UsageError(
            f"--config {path} is the site {config.site_id!r}, not --site {site!r}; "
            "give the config of the site you ask about"
        )
    return config.zones_of_sensor


def gateway_last_seen(url: str, token: str | None = None) -> dict[str, float]:
    """sensor id -> last seen (UTC epoch s) from the gateway's dashboard API;
    UsageError when the gateway does not answer."""
    address = url.rstrip("/") + "/api/dashboard/street"
    request = urllib.request.Request(address)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode(errors="replace")
        raise UsageError(
            f"--gateway {url}: {address} answered {exc.code} {detail}; the dashboard API "
            "is open to the site's network, elsewhere give --gateway-token-file"
        ) from None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--gateway {url}: no answer from {address} ({exc}); is the gateway running there?"
        ) from None
    out: dict[str, float] = {}
    for item in body.get("fleet", []) if isinstance(body, dict) else []:
        seen = item.get("last_seen") if isinstance(item, dict) else None
        if isinstance(seen, (int, float)) and isinstance(item.get("sensor"), str):
            out[item["sensor"]] = float(seen)
    return out


# ---- the listing (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    sensor: str
    zones: tuple[str, ...]
    online: bool
    fw: str | None
    ota: str | None
    ota_version: str | None
    ota_reason: str | None
    last_seen: float | None  # UTC epoch s, when known
    retained: bool  # the status was on the broker before we listened
    free_mem: int | None
    dsp_load: float | None
    known: bool  # a status was received at all

    def as_json(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "zones": list(self.zones),
            "online": self.online,
            "fw": self.fw,
            "ota": self.ota,
            "ota_version": self.ota_version,
            "ota_reason": self.ota_reason,
            "last_seen": self.last_seen,
            "retained": self.retained,
            "free_mem": self.free_mem,
            "dsp_load": self.dsp_load,
            "status_received": self.known,
        }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def rows(
    seen: Mapping[str, Seen],
    zones_of: Mapping[str, tuple[str, ...]] | None,
    last_seen: Mapping[str, float] | None = None,
) -> list[Row]:
    """One row per sensor (those with a status and those the site config
    names), sorted by id.  `last_seen`: the gateway's times, if asked for."""
    zones_of = zones_of or {}
    out = []
    for sensor in sorted(set(seen) | set(zones_of)):
        s = seen.get(sensor)
        st = s.status if s is not None else {}
        if last_seen is not None:
            when = last_seen.get(sensor)
        else:
            when = None if s is None or s.retained else s.at
        free = _number(st.get("free_mem"))
        out.append(
            Row(
                sensor=sensor,
                zones=zones_of.get(sensor, ()),
                online=st.get("state") == "online",
                fw=_text(st.get("fw")),
                ota=_text(st.get("ota")),
                ota_version=_text(st.get("ota_version")),
                ota_reason=_text(st.get("ota_reason")),
                last_seen=when,
                retained=s is not None and s.retained,
                free_mem=None if free is None else int(free),
                dsp_load=_number(st.get("dsp_load")),
                known=s is not None,
            )
        )
    return out


def summary(table: Sequence[Row]) -> str:
    """One line: how many online, per firmware version, updates going on."""
    online = sum(r.online for r in table)
    fws = Counter(r.fw for r in table if r.fw)
    per_fw = ", ".join(f"{n} on {fw}" for fw, n in sorted(fws.items())) or "no firmware known"
    busy = [f"{r.sensor} {r.ota} {r.ota_version or ''}".rstrip() for r in table if r.ota in BUSY]
    never = sum(not r.known for r in table)
    parts = [f"{len(table)} sensors: {online} online, {len(table) - online} offline"]
    if never:
        parts.append(f"{never} never heard of")
    parts.append(per_fw)
    parts.append(f"updates going on: {len(busy)}" + (f" ({'; '.join(busy)})" if busy else ""))
    return "; ".join(parts)


def _when(row: Row, now: float) -> str:
    if row.last_seen is not None:
        ago = max(0.0, now - row.last_seen)
        stamp = time.strftime("%H:%M:%S", time.gmtime(row.last_seen))
        return f"{stamp}Z ({ago:.0f} s ago)"
    if row.retained:
        return "retained"
    return "-"


def render(table: Sequence[Row], now: float, stream: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table()
    for column in ("sensor", "zones", "online", "fw", "update", "last seen", "free heap", "DSP"):
        out.add_column(
            column, no_wrap=column != "update", min_width=8 if column == "update" else None
        )
    for r in table:
        update = r.ota or "-"
        if r.ota_version:
            update += f" {r.ota_version}"
        if r.ota_reason:
            update += f": {r.ota_reason}"
        style = "red" if r.ota in ("refused", "rolled_back") else ""
        out.add_row(
            r.sensor,
            ",".join(r.zones) or "-",
            "[green]online[/green]"
            if r.online
            else ("[red]offline[/red]" if r.known else "[red]no status[/red]"),
            r.fw or "-",
            f"[{style}]{update}[/{style}]" if style else update,
            _when(r, now),
            "-" if r.free_mem is None else f"{r.free_mem} B",
            "-" if r.dsp_load is None else f"{r.dsp_load:.1%}",
        )
    stream = stream or sys.stdout
    # rich assumes 80 columns when the output is not a terminal: a log keeps every column
    width = None if stream.isatty() else 150
    Console(file=stream, soft_wrap=False, width=width).print(out)


# ---- the command -----------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the site config (TOML): adds each sensor's zones and lists configured "
        "sensors that have no status",
    )
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="the gateway's HTTP address (http://HOST:PORT): last seen from its records",
    )
    parser.add_argument(
        "--gateway-token-file",
        type=Path,
        metavar="FILE",
        help="file holding the gateway's http.token, when not on the site's network",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=WAIT_S,
        metavar="S",
        help=f"seconds to listen for statuses (default {WAIT_S:g}; ends sooner once they stop)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    login = broker_login(args)
    if not 0 < args.wait <= 60:
        raise UsageError(f"--wait {args.wait:g} is out of range; give 0 to 60 seconds")
    zones_of = load_site(args.config, args.site)
    token = None
    if args.gateway_token_file is not None:
        try:
            token = args.gateway_token_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"--gateway-token-file {args.gateway_token_file}: {exc}") from None
    last_seen = gateway_last_seen(args.gateway, token) if args.gateway else None
    seen = asyncio.run(collect(login, args.site, args.wait))
    table = rows(seen, zones_of, last_seen)
    line = summary(table)
    if args.json:
        print(json.dumps({"sensors": [r.as_json() for r in table], "summary": line}, indent=2))
    else:
        render(table, time.time())
        print(line)
    return 0
