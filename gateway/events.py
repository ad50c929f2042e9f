"""What the gateway takes in: the events the policy steps on and the records it stores.

Ingest makes them from MQTT messages, the policy reads the events, storage
folds the level records and keeps the summaries.  They are plain values,
defined once here, so that neither side imports the other for a type.
Times are UTC epoch seconds (the wire's milliseconds / 1000).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol import schema

__all__ = [
    "SUMMARY_FIELDS",
    "Event",
    "LevelEvent",
    "LightStateEvent",
    "StatusEvent",
    "SummaryRecord",
    "Tick",
]


@dataclass(frozen=True)
class LevelEvent:
    """One interval record from a sensor; times are UTC epoch seconds (the wire's ms / 1000)."""

    sensor: str
    seq: int
    t0: float
    t1: float
    laeq: float
    lafmax: float
    lceq: float
    flags: tuple[str, ...] = ()
    received_at: float = 0.0


@dataclass(frozen=True)
class StatusEvent:
    """A sensor's retained status (or its last will): online or offline since `at`."""

    sensor: str
    online: bool
    at: float


@dataclass(frozen=True)
class Tick:
    """The clock moved on: ends holds, renews overrides, notices silent sensors."""

    now: float


@dataclass(frozen=True)
class LightStateEvent:
    """What a light group reports: its level, the command it applies, programme or override."""

    group: str
    level: float | None
    cmd_id: str | None
    source: str  # "programme" or "override"
    at: float


Event = LevelEvent | StatusEvent | Tick | LightStateEvent

# The stored fields of a sensor's minute summary, in wire order: those of
# `protocol.schema.SUMMARY` but the flags, which the summary table does not keep.
SUMMARY_FIELDS: tuple[str, ...] = tuple(
    name for name, _type, *_ in schema.SUMMARY if name != "flags"
)
# wire fields in epoch milliseconds, kept in seconds like every other time here
_SUMMARY_TIMES = frozenset(name for name, ftype, *_ in schema.SUMMARY if ftype == schema.T_TIME_MS)


@dataclass(frozen=True)
class SummaryRecord:
    """A sensor's own one-minute summary (``.../summary`` topic): `sensor`, then `SUMMARY_FIELDS`.

    A test checks that the fields after `sensor` are `SUMMARY_FIELDS`, in order.
    """

    sensor: str
    seq: int
    t0: float
    t1: float
    laeq: float
    lafmax: float
    lamin: float
    l10: float
    l50: float
    l90: float
    lceq: float
    peaks: int

    @classmethod
    def from_wire(cls, sensor: str, message: Mapping[str, Any]) -> SummaryRecord:
        """The record of a decoded summary message (`protocol.payloads.decode("summary", ...)`)."""
        values = {
            name: message[name] / 1000.0 if name in _SUMMARY_TIMES else message[name]
            for name in SUMMARY_FIELDS
        }
        return cls(sensor=sensor, **values)
