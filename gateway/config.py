"""The site configuration: a TOML file read once at start-up into frozen dataclasses.

Everything is checked before the gateway starts, so a typo stops it with a
sentence instead of surfacing at 03:00 as a light that never dims.  Each error
names the key path, the bad value and what is expected::

    zones[0].threshold_db: expected a number of dB between 30 and 140, got "loud"

Unknown keys are refused (with a "did you mean" hint) because a misspelt key
would otherwise silently leave its default in force.  Relative paths
(`storage.path`, `broker.ca`, `webpush.vapid_private_key`) are relative to the
configuration file.  `gateway/site.example.toml` shows every key.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import ConfigError, ScheduleError
from gateway.schedule import Schedule, parse_schedule
from protocol import brokerurl, payloads, schema
from protocol.errors import ProtocolError

__all__ = [
    "BrokerConfig",
    "HttpConfig",
    "SensorConfigs",
    "SiteConfig",
    "StorageConfig",
    "WebPushConfig",
    "ZoneConfig",
    "load_config",
    "parse_config",
]

# Ids travel in MQTT topics: the contract allows [a-z0-9-]{1,32}.
_ID = re.compile(r"^[a-z0-9-]{1,32}$")
_ID_RULE = "an id matching [a-z0-9-]{1,32} (1-32 characters a-z, 0-9 and -)"
# the nudge's text of a zone without [zones.messages]: the nudge topic and Web Push
# need one, and a zone configured without it must still reach its residents
DEFAULT_MESSAGES = {"en": "People are sleeping here. Please keep it down."}
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

Trigger = Literal["laeq", "peaks"]


@dataclass(frozen=True)
class BrokerConfig:
    """How the gateway reaches the MQTT broker."""

    url: str = "mqtt://127.0.0.1:1883"
    ca: Path | None = None  # CA bundle for mqtts://; None = system trust store
    username: str | None = None
    password: str | None = None
    client_id: str = ""  # "" = "hushlight-gateway-{site_id}", fixed for a persistent session
    keepalive: int = 60  # seconds

    @property
    def tls(self) -> bool:
        return brokerurl.parse(self.url)[3]

    @property
    def host(self) -> str:
        return brokerurl.parse(self.url)[1]

    @property
    def port(self) -> int:
        return brokerurl.parse(self.url)[2]


@dataclass(frozen=True)
class StorageConfig:
    """Where the SQLite database lives, or the PostgreSQL database gateways share."""

    path: Path = Path("hushlight.db")
    peak_threshold_db: float = 70.0  # LAFmax level counted as a peak in the minute levels
    retention_days: int = 0  # older levels and records are pruned; 0 = keep everything
    # "postgresql://...": the store several gateways share, each holding leases on some
    # zones (gateway.leases); None: the SQLite file at `path`, one gateway
    url: str | None = None
    lease_s: float = 10.0  # how long a zone lease lasts unrenewed (renewed every third of it)

    @property
    def where(self) -> str | Path:
        """What `Storage` opens: the URL, or the file."""
        return self.url or self.path


@dataclass(frozen=True)
class HttpConfig:
    """The small HTTP API (health, zones, decisions, subscriptions, metrics)."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None  # operator endpoints refuse every request while None
    # Subscriptions come from anybody's phone: a cap on how many are stored, and
    # on how often one client address may add or remove one.
    max_subscriptions: int = 100_000
    subscribe_per_minute: int = 10
    # Behind a reverse proxy on this host every request comes from the proxy: take
    # the client's address from the last X-Forwarded-For entry the proxy adds.
    trust_forwarded_for: bool = False


@dataclass(frozen=True)
class WebPushConfig:
    """Web Push (VAPID) to subscribed residents; disabled while `vapid_private_key` is None."""

    vapid_private_key: Path | None = None
    subject: str = "mailto:noise@example.org"
    ttl_s: int = 900  # a nudge older than this is useless: the push service drops it
    per_subscriber_min_interval_s: int = 1800

    @property
    def enabled(self) -> bool:
        return self.vapid_private_key is not None


@dataclass(frozen=True)
class ZoneConfig:
    """One street zone: its sensors, its lights, when and how it nudges."""

    id: str
    sensors: tuple[str, ...]
    light_groups: tuple[str, ...]
    schedule: Schedule
    threshold_db: float = 70.0
    trigger: Trigger = "laeq"
    window_s: int = 10
    min_sensors: int = 1
    peaks_needed: int = 1  # "peaks": LAFmax >= threshold this often in window_s, per sensor
    nudge_level: float = 40.0  # light level % during a nudge
    programme_level: float = 70.0  # the usual night level, to name a nudge "dim" or "brighten"
    kinds: Mapping[str, float] = field(default_factory=dict)  # kind -> level; chosen at random
    ramp_s: float = 5.0
    hold_s: int = 600
    max_hold_s: int = 1800
    renew_before_s: int = 60  # send the renewed expiry this long before the current one
    floor_level: float = 20.0  # never below, whatever is configured elsewhere
    cooldown_s: int = 300
    max_nudges_per_hour: int = 3
    control_fraction: float = 0.0
    # lang -> text; a zone that names none says DEFAULT_MESSAGES (a nudge needs a text)
    messages: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MESSAGES))

    @property
    def variants(self) -> tuple[tuple[str, float], ...]:
        """(kind, light level) pairs a trigger chooses from, levels already raised to the floor.

        Without `kinds`, one variant named after what `nudge_level` does to the
        programme level.
        """
        if self.kinds:
            pairs = sorted(self.kinds.items())
        else:
            if self.nudge_level < self.programme_level:
                kind = "dim"
            elif self.nudge_level > self.programme_level:
                kind = "brighten"
            else:
                kind = "steady"
            pairs = [(kind, self.nudge_level)]
        return tuple((k, max(level, self.floor_level)) for k, level in pairs)


@dataclass(frozen=True)
class SensorConfigs:
    """`[sensor_config]`: the remote config (`.../config` topic) the gateway gives its sensors.

    One `rev` for the whole table: the sensor applies a rev it has not applied
    yet, so any change to the defaults or to one sensor's values needs a new
    rev.  Keys a sensor's config leaves out keep the sensor's own value (its
    `hushlight calibrate` offset, say).
    """

    rev: int
    default: Mapping[str, float | int]  # CONFIG key -> value, for every sensor
    sensors: Mapping[str, Mapping[str, float | int]]  # sensor id -> its own values over those

    def values(self, sensor: str) -> dict[str, float | int]:
        """The config keys of `sensor`'s config message (without `rev`)."""
        return {**self.default, **self.sensors.get(sensor, {})}

    def payload(self, sensor: str) -> bytes:
        """`sensor`'s config message."""
        return payloads.encode_config(self.rev, **self.values(sensor))


@dataclass(frozen=True)
class SiteConfig:
    """The whole site: the gateway's configuration."""

    site_id: str
    timezone: str = "Europe/Brussels"
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    webpush: WebPushConfig = field(default_factory=WebPushConfig)
    zones: tuple[ZoneConfig, ...] = ()
    stale_after_s: int = 30  # a sensor silent this long counts as missing
    source: str = "<config>"
    sensor_config: SensorConfigs | None = None  # None: the gateway sends sensors no config

    @functools.cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @functools.cached_property
    def zones_by_id(self) -> Mapping[str, ZoneConfig]:
        return {z.id: z for z in self.zones}

    @functools.cached_property
    def zones_of_sensor(self) -> Mapping[str, tuple[str, ...]]:
        """sensor id -> ids of the zones it belongs to."""
        out: dict[str, list[str]] = {}
        for z in self.zones:
            for s in z.sensors:
                out.setdefault(s, []).append(z.id)
        return {s: tuple(ids) for s, ids in out.items()}

    @functools.cached_property
    def zones_of_group(self) -> Mapping[str, tuple[str, ...]]:
        """light group id -> ids of the zones that drive it."""
        out: dict[str, list[str]] = {}
        for z in self.zones:
            for g in z.light_groups:
                out.setdefault(g, []).append(z.id)
        return {g: tuple(ids) for g, ids in out.items()}

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"hushlight-gateway-{self.site_id}"


def load_config(path: str | Path) -> SiteConfig:
    """Read and validate a site configuration file; raise `ConfigError` if anything is wrong."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such configuration file; copy gateway/site.example.toml and edit it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(raw, source=str(p), base_dir=p.parent)


def parse_config(
    raw: Mapping[str, Any], source: str = "<config>", base_dir: Path | None = None
) -> SiteConfig:
    """Validate an already parsed TOML document; raise `ConfigError` naming the bad key.

    `base_dir` anchors relative paths (default: the current directory).
    """
    base = base_dir if base_dir is not None else Path(".")
    try:
        return _site(_Table(raw, "", source), base)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


class _Table:
    """A TOML table being read: remembers its key path and which keys were used."""

    def __init__(self, raw: Any, path: str, source: str) -> None:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path or 'the file'}: expected a table, got {_show(raw)}")
        self.raw: Mapping[str, Any] = raw
        self.path = path
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str) -> Any:
        self.used.add(name)
        return self.raw.get(name)

    def has(self, name: str) -> bool:
        return name in self.raw

    def table(self, name: str) -> _Table:
        self.used.add(name)
        return _Table(self.raw.get(name, {}), self.key(name), self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            name = unknown[0]
            hint = difflib.get_close_matches(name, sorted(self.used), n=1)
            where = f"[{self.path}]" if self.path else "the top level"
            msg = f"{self.key(name)}: unknown key in {where}"
            msg += f'; did you mean "{hint[0]}"?' if hint else f"; known keys: {_known(self.used)}"
            raise ConfigError(msg)

    # typed readers: each returns the default when the key is absent

    def string(self, name: str, default: str | None, what: str = "a string") -> str:
        value = self.get(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{self.key(name)}: missing; expected {what}")
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.key(name)}: expected {what}, got {_show(value)}")
        return value

    def opt_string(self, name: str, what: str = "a string") -> str | None:
        return self.string(name, "", what) or None

    def ident(self, name: str, default: str | None = None) -> str:
        value = self.string(name, default, _ID_RULE)
        if not _ID.match(value):
            raise ConfigError(f"{self.key(name)}: expected {_ID_RULE}, got {_show(value)}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float, unit: str) -> float:
        value = self.get(name)
        if value is None:
            return default
        what = f"a number of {unit} between {_num(lo)} and {_num(hi)}"
        if not unit:
            what = f"a number between {_num(lo)} and {_num(hi)}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self.key(name)}: expected {what}, got {_show(value)}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ConfigError(f"{self.key(name)}: expected {what}, got {_show(value)}")
        return float(value)

    def integer(
        self, name: str, default: int, lo: int, hi: int, unit: str, lo_is: str = "", hi_is: str = ""
    ) -> int:
        """`lo_is`/`hi_is` name the key a bound comes from, e.g. " (hold_s)"."""
        value = self.get(name)
        if value is None:
            return default
        what = f"a whole number of {unit} between {lo}{lo_is} and {hi}{hi_is}"
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{self.key(name)}: expected {what}, got {_show(value)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected true or false, got {_show(value)}")
        return value

    def path_value(self, name: str, default: Path | None, base: Path) -> Path | None:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.key(name)}: expected a file path, got {_show(value)}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    def id_list(self, name: str, what: str) -> tuple[str, ...]:
        value = self.get(name)
        expect = f"a non-empty list of {what} ids matching [a-z0-9-]{{1,32}}"
        if not isinstance(value, list) or not value:
            got = "nothing" if value is None else _show(value)
            raise ConfigError(f"{self.key(name)}: expected {expect}, got {got}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not _ID.match(item):
                raise ConfigError(
                    f"{self.key(name)}[{i}]: expected a {what} id matching [a-z0-9-]{{1,32}}, "
                    f"got {_show(item)}"
                )
        if len(set(value)) != len(value):
            dup = next(v for v in value if value.count(v) > 1)
            raise ConfigError(f"{self.key(name)}: {dup!r} is listed twice; list each once")
        return tuple(value)


def _site(t: _Table, base: Path) -> SiteConfig:
    site = t.table("site")
    site_id = site.ident("id")
    timezone = site.string("timezone", "Europe/Brussels", "an IANA time zone name")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f'site.timezone: expected an IANA time zone name such as "Europe/Brussels", '
            f"got {_show(timezone)}"
        ) from None
    stale = site.integer("stale_after_s", 30, 2, 3600, "seconds")
    site.finish()

    cfg = SiteConfig(
        site_id=site_id,
        timezone=timezone,
        broker=_broker(t.table("broker"), base),
        storage=_storage(t.table("storage"), base),
        http=_http(t.table("http")),
        webpush=_webpush(t.table("webpush"), base),
        zones=_zones(t, base),
        stale_after_s=stale,
        source=t.source,
        sensor_config=_sensor_config(t.table("sensor_config")) if t.has("sensor_config") else None,
    )
    t.finish()
    return cfg


def _broker(t: _Table, base: Path) -> BrokerConfig:
    url = t.string("url", BrokerConfig.url, 'a broker URL such as "mqtt://127.0.0.1:1883"')
    try:
        tls = brokerurl.parse(url)[3]
    except ProtocolError as exc:
        raise ConfigError(
            f'broker.url: expected "mqtt://HOST[:PORT]" or "mqtts://HOST[:PORT]", got {_show(url)}'
            f" ({exc})"
        ) from None
    ca = t.path_value("ca", None, base)
    if ca is not None and not tls:
        raise ConfigError(f"broker.ca: a CA file only applies to mqtts:// URLs, got {_show(url)}")
    username = t.opt_string("username")
    password = t.opt_string("password")
    if password is not None and username is None:
        raise ConfigError("broker.password: given without broker.username; set both or neither")
    client_id = t.get("client_id") or ""
    if not isinstance(client_id, str) or len(client_id) > 128:
        raise ConfigError(
            f"broker.client_id: expected an MQTT client id of at most 128 characters, "
            f"got {_show(client_id)}"
        )
    keepalive = t.integer("keepalive", 60, 5, 3600, "seconds")
    t.finish()
    return BrokerConfig(url, ca, username, password, client_id, keepalive)


def _storage(t: _Table, base: Path) -> StorageConfig:
    path = t.path_value("path", None, base) or base / StorageConfig.path
    peak = t.number("peak_threshold_db", 70.0, 30.0, 140.0, "dB")
    retention = t.integer("retention_days", 0, 0, 36500, "days")
    url = t.opt_string("url", "a postgresql:// URL")
    if url is not None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "storage.url: expected a postgresql://user@host:port/database URL, got one "
                f"starting {_show(url.split('://')[0] + '://')} (the rest not shown: it may hold "
                "a password); leave it out to keep the SQLite file of storage.path"
            )
        if t.has("path"):
            raise ConfigError(
                "storage: give storage.path (one gateway, SQLite) or storage.url (gateways "
                "sharing PostgreSQL), not both"
            )
    lease = t.number("lease_s", 10.0, 3.0, 600.0, "seconds")
    t.finish()
    return StorageConfig(path, peak, retention, url, lease)


def _http(t: _Table) -> HttpConfig:
    host = t.string("host", "127.0.0.1", "a host name or address to listen on")
    port = t.integer("port", 8080, 0, 65535, "a TCP port")
    token = t.opt_string("token", "a secret token string")
    if token is not None and len(token) < 16:
        raise ConfigError(
            "http.token: expected at least 16 characters (operator endpoints are guarded by it), "
            f"got {len(token)}"
        )
    cap = t.integer(
        "max_subscriptions", HttpConfig.max_subscriptions, 1, 10_000_000, "subscriptions"
    )
    rate = t.integer(
        "subscribe_per_minute", HttpConfig.subscribe_per_minute, 1, 10_000, "requests a minute"
    )
    forwarded = t.boolean("trust_forwarded_for", HttpConfig.trust_forwarded_for)
    t.finish()
    return HttpConfig(host, port, token, cap, rate, forwarded)


def _webpush(t: _Table, base: Path) -> WebPushConfig:
    key = t.path_value("vapid_private_key", None, base)
    subject = t.string("subject", WebPushConfig.subject, 'a "mailto:" or "https:" contact URL')
    if not subject.startswith(("mailto:", "https://")):
        raise ConfigError(
            f'webpush.subject: expected a "mailto:" or "https://" contact, got {_show(subject)}'
        )
    ttl = t.integer("ttl_s", 900, 0, 86400, "seconds")
    interval = t.integer("per_subscriber_min_interval_s", 1800, 0, 86400, "seconds")
    t.finish()
    return WebPushConfig(key, subject, ttl, interval)


def _zones(t: _Table, base: Path) -> tuple[ZoneConfig, ...]:
    raw = t.get("zones")
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        raise ConfigError("zones: write each zone as [[zones]] (double brackets), not [zones]")
    if not isinstance(raw, list):
        raise ConfigError(f"zones: expected a list of [[zones]] tables, got {_show(raw)}")
    zones = tuple(_zone(_Table(z, _zone_path(z, i), t.source)) for i, z in enumerate(raw))
    seen: dict[str, int] = {}
    lights: dict[str, str] = {}
    for i, z in enumerate(zones):
        if z.id in seen:
            # the id is what is wrong, so the position says which table
            raise ConfigError(f"zones[{i}].id: {z.id!r} is already the id of zones[{seen[z.id]}]")
        seen[z.id] = i
        for g in z.light_groups:
            # two zones on one group would release each other's overrides
            if g in lights:
                raise ConfigError(
                    f"zones[{z.id}].light_groups: {g!r} is already driven by "
                    f"zones[{lights[g]}]; give each light group to one zone"
                )
            lights[g] = z.id
    return zones


def _zone_path(raw: Any, i: int) -> str:
    """`zones[ID]` for a zone whose id is valid (what an operator knows it by), else `zones[i]`."""
    zid = raw.get("id") if isinstance(raw, Mapping) else None
    if isinstance(zid, str) and _ID.match(zid):
        return f"zones[{zid}]"
    return f"zones[{i}]"


def _zone(t: _Table) -> ZoneConfig:
    zid = t.ident("id")
    sensors = t.id_list("sensors", "sensor")
    groups = t.id_list("light_groups", "light group")
    sched_raw = t.get("schedule")
    if sched_raw is None:
        sched_raw = ["mon-sun 23:00-05:00"]
    if isinstance(sched_raw, str):
        sched_raw = [sched_raw]
    if not isinstance(sched_raw, list) or not sched_raw:
        raise ConfigError(
            f'{t.key("schedule")}: expected a list of windows such as ["mon-sun 23:00-05:00"], '
            f"got {_show(sched_raw)}"
        )
    for i, w in enumerate(sched_raw):
        try:
            parse_schedule([w])
        except ScheduleError as exc:
            raise ConfigError(f"{t.key('schedule')}[{i}]: {exc}") from None
    schedule = parse_schedule(sched_raw)

    threshold = t.number("threshold_db", 70.0, 30.0, 140.0, "dB")
    trigger = t.string("trigger", "laeq", '"laeq" or "peaks"')
    if trigger not in ("laeq", "peaks"):
        raise ConfigError(f'{t.key("trigger")}: expected "laeq" or "peaks", got {_show(trigger)}')
    window = t.integer("window_s", 10, 1, 3600, "seconds")
    min_sensors = t.integer("min_sensors", 1, 1, 1000, "sensors")
    if min_sensors > len(sensors):
        raise ConfigError(
            f"{t.key('min_sensors')}: expected at most the {len(sensors)} sensors of the zone, "
            f"got {min_sensors}"
        )
    peaks_needed = t.integer("peaks_needed", 1, 1, 100000, "peaks")
    if t.has("peaks_needed") and trigger != "peaks":
        raise ConfigError(f'{t.key("peaks_needed")}: only applies with trigger = "peaks"')
    nudge_level = t.number("nudge_level", 40.0, 0.0, 100.0, "percent")
    programme = t.number("programme_level", 70.0, 0.0, 100.0, "percent")
    floor = t.number("floor_level", 20.0, 0.0, 100.0, "percent")
    kinds = _kinds(t.table("kinds"))
    if kinds and t.has("nudge_level"):
        raise ConfigError(
            f"{t.key('nudge_level')}: give either nudge_level or [{t.key('kinds')}], not both"
        )
    # A level under the floor would be raised to it without a word, and the
    # operator would believe the lights go darker than they do.
    levels = {t.key(f"kinds.{k}"): v for k, v in kinds.items()} or {
        t.key("nudge_level"): nudge_level
    }
    for key, level in levels.items():
        if level < floor:
            raise ConfigError(
                f"{key}: {_num(level)} % is under floor_level {_num(floor)} %; the rule is "
                f"floor_level <= every nudge level, so raise it to {_num(floor)} or more, "
                "or lower floor_level"
            )
    ramp = t.number("ramp_s", 5.0, 0.0, 600.0, "seconds")
    hold = t.integer("hold_s", 600, 10, 86400, "seconds")
    max_hold = t.integer("max_hold_s", max(1800, hold), hold, 86400, "seconds", lo_is=" (hold_s)")
    renew = t.integer(
        "renew_before_s", min(60, hold // 2), 1, hold - 1, "seconds", hi_is=" (hold_s - 1)"
    )
    cooldown = t.integer("cooldown_s", 300, 0, 86400, "seconds")
    per_hour = t.integer("max_nudges_per_hour", 3, 1, 3600, "nudges")
    control = t.number("control_fraction", 0.0, 0.0, 1.0, "")
    messages = _messages(t.table("messages"))
    t.finish()
    return ZoneConfig(
        id=zid,
        sensors=sensors,
        light_groups=groups,
        schedule=schedule,
        threshold_db=threshold,
        trigger="peaks" if trigger == "peaks" else "laeq",
        window_s=window,
        min_sensors=min_sensors,
        peaks_needed=peaks_needed,
        nudge_level=nudge_level,
        programme_level=programme,
        kinds=kinds,
        ramp_s=ramp,
        hold_s=hold,
        max_hold_s=max_hold,
        renew_before_s=renew,
        floor_level=floor,
        cooldown_s=cooldown,
        max_nudges_per_hour=per_hour,
        control_fraction=control,
        messages=messages,
    )


def _kinds(t: _Table) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in sorted(t.raw):
        if not _KIND.match(name):
            raise ConfigError(
                f"{t.key(name)}: a nudge kind is 1-32 characters a-z, 0-9, _ and -, "
                f"starting with a letter; got {_show(name)}"
            )
        out[name] = t.number(name, 0.0, 0.0, 100.0, "percent")
    return out


def _messages(t: _Table) -> dict[str, str]:
    if not t.raw:
        return dict(DEFAULT_MESSAGES)
    out: dict[str, str] = {}
    for lang in sorted(t.raw):
        if not _LANG.match(lang):
            raise ConfigError(
                f'{t.key(lang)}: expected a language code such as "nl" or "en", got {_show(lang)}'
            )
        out[lang] = t.string(lang, None, "the message text")
    return out


# units of the sensor config's keys, for the error sentences
_CONFIG_UNITS = {
    "interval_s": "seconds",
    "peak_threshold_db": "dB",
    "calibration_offset_db": "dB",
    "status_interval_s": "seconds",
    "backlog_rate": "records a second",
    "sample_rate": "Hz",
}


def _sensor_config(t: _Table) -> SensorConfigs:
    if not t.has("rev"):
        raise ConfigError(
            f"{t.key('rev')}: missing; expected a whole number 0-{schema.REV_MAX}, raised "
            "whenever anything in [sensor_config] changes (a sensor applies a rev it has "
            "not applied yet)"
        )
    rev = t.get("rev")
    if isinstance(rev, bool) or not isinstance(rev, int) or not 0 <= rev <= schema.REV_MAX:
        raise ConfigError(
            f"{t.key('rev')}: expected a whole number 0-{schema.REV_MAX}, got {_show(rev)}"
        )
    default = _config_values(t)
    sensors: dict[str, dict[str, float | int]] = {}
    per_sensor = t.table("sensors")
    for sensor in sorted(per_sensor.raw):
        if not _ID.match(sensor):
            raise ConfigError(
                f"{per_sensor.key(sensor)}: expected a sensor id matching [a-z0-9-]{{1,32}} "
                f"as the table's name, got {_show(sensor)}"
            )
        one = per_sensor.table(sensor)
        if one.has("rev"):
            raise ConfigError(
                f"{one.key('rev')}: one rev covers the whole table; raise {t.key('rev')} instead"
            )
        sensors[sensor] = _config_values(one)
        one.finish()
    per_sensor.finish()
    t.finish()
    configs = SensorConfigs(rev, default, sensors)
    for sensor in ("", *sensors):
        # the encoder is what the sensor's decoder mirrors: the wire's last word
        try:
            configs.payload(sensor)
        except ProtocolError as exc:
            where = per_sensor.key(sensor) if sensor else t.path
            raise ConfigError(f"{where}.{exc.field}: {exc}") from None
    return configs


def _config_values(t: _Table) -> dict[str, float | int]:
    """The keys of `protocol.schema.CONFIG` given in table `t`, checked by the wire's limits."""
    out: dict[str, float | int] = {}
    t.used.update(str(f[schema.NAME]) for f in schema.CONFIG[1:])  # known keys, for the hint
    for f in schema.CONFIG[1:]:
        name, ftype, _required, _nullable, lo, hi, extra = f  # the order of schema.NAME..EXTRA
        if not t.has(name):
            continue
        assert lo is not None and hi is not None
        unit = _CONFIG_UNITS.get(name, "")
        if ftype == schema.T_NUM:
            value = t.number(name, 0.0, lo, hi, unit)
            assert isinstance(extra, int)
            if round(value, extra) != value:
                raise ConfigError(
                    f"{t.key(name)}: {_num(value)} has more decimals than the sensor keeps "
                    f"({extra}); write {_num(round(value, extra))}"
                )
            step = schema.STEPS.get(("config", name))
            if step is not None and (value / step) != int(value / step):
                raise ConfigError(
                    f"{t.key(name)}: expected a multiple of {_num(step)} {unit}, got {_num(value)}"
                )
            out[name] = value
        else:
            number = t.integer(name, 0, int(lo), int(hi), unit)
            if isinstance(extra, tuple) and number not in extra:
                choices = ", ".join(str(c) for c in extra)
                raise ConfigError(f"{t.key(name)}: expected one of {choices}, got {number}")
            out[name] = number
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _known(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"
