"""Zone ownership when several gateways share a city: one lease per zone in PostgreSQL.

A lease has an owner, an expiry and an epoch that grows at every change of
owner.  Each gateway renews its leases every few seconds (`LeaseKeeper`); the
renewal also takes zones nobody holds, up to a fair share (zones / live
gateways), and hands back what is over that share, so two gateways on one
store split the zones and a gateway that dies leaves its zones to the others
once its leases expire.

The expiry is the store's clock (one clock for every gateway); a gateway
counts its own lease as lost at its local deadline, the time it *sent* the
renewal plus the lease time less a margin, which is never later than the
expiry in the store: so a gateway stops commanding a zone before another may
take it.  Commands still in flight are fenced by the epoch (``lease_epoch`` in
the ``set`` message): a controller refuses one older than the newest it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg

from gateway.errors import StorageError
from gateway.storage.postgres import SCHEMA_LOCK, safe_url

__all__ = ["LEASE_SCHEMA", "LEASE_TIMEOUT_S", "LeaseKeeper", "LeaseStore"]

log = logging.getLogger("hushlight.leases")

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS zone_leases (
    zone TEXT PRIMARY KEY,
    owner TEXT,                     -- NULL: handed back, free to take
    epoch BIGINT NOT NULL,          -- grows by one at each change of owner
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_gateways (
    owner TEXT PRIMARY KEY,         -- a live gateway, for the fair share
    expires_at TIMESTAMPTZ NOT NULL
);
"""

# seconds taken off the local deadline, for clocks that run at slightly different rates
_DRIFT_MARGIN_S = 0.5
# A lease statement gives up after this long (a lock held by a stuck session, a server
# gone silent) so that the next renewal tries again; leases already held lapse by
# themselves at their deadline meanwhile.
LEASE_TIMEOUT_S = 3


class LeaseStore:
    """The leases in a PostgreSQL database, on a connection of their own.

    Calls block (they are short transactions): call them from a worker thread.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
            with self._db.transaction():
                self._db.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
                self._db.execute(LEASE_SCHEMA)
        except psycopg.Error as exc:
            raise StorageError(
                f"{safe_url(url)}: cannot open the lease tables ({exc}); check that PostgreSQL "
                "runs there and the database exists, or fix storage.url"
            ) from exc

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        ms = LEASE_TIMEOUT_S * 1000
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=5,
            options=f"-c lock_timeout={ms} -c statement_timeout={ms}",
            # a server that stops answering (a cut network) ends the wait too
            tcp_user_timeout=ms,
            keepalives=1,
            keepalives_idle=1,
            keepalives_interval=1,
            keepalives_count=LEASE_TIMEOUT_S,
        )

    def _conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection, opened again if it was lost (a restart of PostgreSQL)."""
        if self._db.closed or self._db.broken:
            self._db = self._connect()
        return self._db

    def renew(self, owner: str, zones: Sequence[str], ttl_s: float) -> dict[str, int]:
        """Renew `owner`'s leases, take free zones up to a fair share, hand back the excess;
        return the zones `owner` holds now with their epochs."""
        with self._lock, self._conn().transaction():
            db = self._db
            # one renewal at a time: two gateways taking the same free zone would both
            # read it free; the table lock is held for a few ms every few seconds
            db.execute("LOCK TABLE zone_leases IN EXCLUSIVE MODE")
            ttl = f"{ttl_s} seconds"
            db.execute(
                """INSERT INTO lease_gateways (owner, expires_at)
                   VALUES (%s, now() + %s::interval)
                   ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at""",
                (owner, ttl),
            )
            db.execute(
                """INSERT INTO zone_leases (zone, owner, epoch, expires_at)
                   SELECT z, NULL, 0, '-infinity' FROM unnest(%s::text[]) AS z
                   ON CONFLICT (zone) DO NOTHING""",
                (list(zones),),
            )
            row = db.execute(
                "SELECT count(*) FROM lease_gateways WHERE expires_at > now()"
            ).fetchone()
            live = max(1, int(row[0]) if row else 1)
            rows = db.execute(
                """SELECT zone, owner, epoch, expires_at > now() FROM zone_leases
                   WHERE zone = ANY(%s) ORDER BY zone""",
                (list(zones),),
            ).fetchall()
            share = math.ceil(len(zones) / live)
            mine = [(z, e) for z, o, e, alive in rows if o == owner and alive]
            free = [(z, e) for z, o, e, alive in rows if o is None or not alive]
            keep, give_back = mine[:share], mine[share:]
            take = free[: max(0, share - len(keep))]
            if give_back:
                db.execute(
                    """UPDATE zone_leases SET owner = NULL, expires_at = now()
                       WHERE zone = ANY(%s) AND owner = %s""",
                    ([z for z, _ in give_back], owner),
                )
            if keep:
                db.execute(
                    """UPDATE zone_leases SET expires_at = now() + %s::interval
                       WHERE zone = ANY(%s) AND owner = %s""",
                    (ttl, [z for z, _ in keep], owner),
                )
            if take:
                db.execute(
                    """UPDATE zone_leases
                       SET owner = %s, epoch = epoch + 1, expires_at = now() + %s::interval
                       WHERE zone = ANY(%s)""",
                    (owner, ttl, [z for z, _ in take]),
                )
            held = dict(keep)
            held.update((z, e + 1) for z, e in take)
            return held

    def release(self, owner: str) -> None:
        """Hand back every lease of `owner` at once (a clean stop: no wait for the expiry)."""
        with self._lock, self._conn().transaction():
            self._db.execute(
                "UPDATE zone_leases SET owner = NULL, expires_at = now() WHERE owner = %s",
                (owner,),
            )
            self._db.execute("DELETE FROM lease_gateways WHERE owner = %s", (owner,))

    def owners(self) -> dict[str, tuple[str | None, int, bool]]:
        """zone -> (owner, epoch, whether the lease is in force): for reports and tests."""
        with self._lock, self._conn().transaction():
            rows = self._db.execute(
                "SELECT zone, owner, epoch, expires_at > now() FROM zone_leases"
            ).fetchall()
        return {z: (o, int(e), bool(alive)) for z, o, e, alive in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class LeaseKeeper:
    """One gateway's leases: renewed every `renew_s`, each good for `ttl_s`.

    `epoch(zone)` is what the gateway asks before it commands a zone's lights:
    the lease epoch, or None once the local deadline has passed without a
    renewal (the store unreachable, the event loop stalled): the gateway then
    goes quiet in that zone at once.
    """

    def __init__(
        self,
        store: LeaseStore,
        owner: str,
        zones: Sequence[str],
        *,
        ttl_s: float = 10.0,
        renew_s: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_s < ttl_s - _DRIFT_MARGIN_S:
            raise ValueError(
                f"lease renewal every {renew_s} s cannot keep a {ttl_s} s lease: renew at "
                f"least {_DRIFT_MARGIN_S} s before it runs out (for example every ttl/3)"
            )
        self.store = store
        self.owner = owner
        self.zones = tuple(zones)
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.monotonic = monotonic
        self.renewals_failed = 0
        self._held: dict[str, int] = {}
        self._deadline = -math.inf
        self.paused = False  # renewals stop (tests: a gateway that hangs)

    def epoch(self, zone: str) -> int | None:
        """This gateway's lease epoch on `zone`, or None if it does not hold it now."""
        if self.monotonic() >= self._deadline:
            return None
        return self._held.get(zone)

    def held(self) -> Mapping[str, int]:
        """The zones held now, with their epochs."""
        if self.monotonic() >= self._deadline:
            return {}
        return dict(self._held)

    def renew_once(self) -> Mapping[str, int]:
        """Renew now (blocking); return the zones held."""
        sent = self.monotonic()
        held = self.store.renew(self.owner, self.zones, self.ttl_s)
        before = set(self.held())
        self._held = held
        self._deadline = sent + self.ttl_s - _DRIFT_MARGIN_S
        gained, lost = set(held) - before, before - set(held)
        if gained or lost:
            log.info(
                "leases of %s: took %s, gave up %s; holds %s",
                self.owner,
                ", ".join(f"{z} (epoch {held[z]})" for z in sorted(gained)) or "none",
                ", ".join(sorted(lost)) or "none",
                ", ".join(sorted(held)) or "no zone",
            )
        return held

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Renew every `renew_s` until cancelled or `stop` is set; then hand the leases back."""
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                if not self.paused:
                    try:
                        await asyncio.to_thread(self.renew_once)
                    except (psycopg.Error, OSError) as exc:
                        # the leases lapse at their deadline by themselves; try again
                        self.renewals_failed += 1
                        log.error("leases of %s: renewal failed: %s", self.owner, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.renew_s)
        finally:
            self._deadline = -math.inf
            if not self.paused:
                try:
                    await asyncio.to_thread(self.store.release, self.owner)
                except (psycopg.Error, OSError) as exc:
                    log.warning("leases of %s: not handed back (%s); they expire", self.owner, exc)
