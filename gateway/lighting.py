"""Lighting adapters: how a policy decision reaches the street lights.

The policy decides *what* (an `Override` with a level, a ramp and an expiry,
or a `Release` back to the programme); an adapter decides *how* it reaches a
controller.  Renewing an override before it expires is the policy's job: an
adapter sends exactly what it is given, and every override it sends carries
its expiry so the lights return to their programme by themselves if the
gateway dies.

`MqttLighting` speaks the TALQ-style contract of DESIGN.md on
``hushlight/v1/{site}/lights/{group}/set``.  Another controller plugs in by
implementing the two coroutines, for example a DALI bus through python-dali::

    class DaliLighting:
        def __init__(self, driver, addresses: dict[str, GroupAddress]) -> None:
            ...
        async def apply(self, override: Override) -> None:
            # DALI has no expiry of its own: keep a per-group timer that sends
            # the programme level at override.expires_at, and map level % to
            # the arc power 0-254 (logarithmic curve) before sending DAPC.
            await self.driver.send(DAPC(self.addresses[override.group], arc(override.level)))
        async def release(self, release: Release) -> None:
            await self.driver.send(GoToScene(self.addresses[release.group], PROGRAMME_SCENE))

and a TALQ 2 central management system by POSTing the same fields to its
override endpoint.  Adapters must not block the event loop: run a blocking
driver in a thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from gateway.policy import Override, Release
from protocol import payloads, topics

__all__ = ["LightingAdapter", "MqttLighting", "Publisher", "release_payload", "set_payload"]


class Publisher(Protocol):
    """Where MQTT messages go out (the service's outbox)."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue one message; it is sent once the broker connection is up."""


class LightingAdapter(Protocol):
    async def apply(self, override: Override) -> None:
        """Set `override.group` to `override.level` % over `ramp_s`, until `expires_at`."""

    async def release(self, release: Release) -> None:
        """Hand `release.group` back to its programme."""


# A release ramps back gently rather than jumping, whatever the override used.
RELEASE_RAMP_S = 5.0


def set_payload(override: Override, lease_epoch: int | None = None) -> bytes:
    """The ``set`` message of `override`; `lease_epoch` fences it when gateways share leases."""
    return payloads.encode(
        "light_set",
        {
            "cmd_id": override.cmd_id,
            "level": override.level,
            "ramp_s": override.ramp_s,
            # whole seconds on the wire: round down, so the lights never stay
            # overridden past what the policy decided
            "expires_at": math.floor(override.expires_at),
            "reason": override.reason,
            "zone": override.zone,
            "lease_epoch": lease_epoch,
        },
    )


def release_payload(release: Release, lease_epoch: int | None = None) -> bytes:
    return payloads.encode(
        "light_set",
        {
            "cmd_id": release.cmd_id,
            "level": None,
            "ramp_s": RELEASE_RAMP_S,
            # the contract wants an expiry on every command; a release ends now
            "expires_at": math.floor(release.at),
            "reason": release.reason,
            "zone": release.zone,
            "lease_epoch": lease_epoch,
        },
    )


class MqttLighting:
    """Overrides as QoS 1 messages on ``lights/{group}/set`` (not retained: a
    retained override would be replayed to a controller after its expiry).

    `lease_epoch`, when gateways share the city, gives this gateway's lease epoch
    on a zone, or None when it does not hold the zone now: then nothing is sent
    (the zone's owner commands its lights) and `unheld` counts it.
    """

    def __init__(
        self,
        site: str,
        publisher: Publisher,
        lease_epoch: Callable[[str], int | None] | None = None,
    ) -> None:
        self.site = site
        self.publisher = publisher
        self.lease_epoch = lease_epoch
        self.unheld = 0

    def topic(self, group: str) -> str:
        return topics.light_set(self.site, group)

    async def apply(self, override: Override) -> None:
        held, epoch = self._epoch(override.zone)
        if held:
            self.publisher.publish(self.topic(override.group), set_payload(override, epoch), qos=1)

    async def release(self, release: Release) -> None:
        held, epoch = self._epoch(release.zone)
        if held:
            self.publisher.publish(
                self.topic(release.group), release_payload(release, epoch), qos=1
            )

    def _epoch(self, zone: str) -> tuple[bool, int | None]:
        """(whether to send, the lease epoch to send with)."""
        if self.lease_epoch is None:
            return True, None
        epoch = self.lease_epoch(zone)
        if epoch is None:
            self.unheld += 1
            return False, None
        return True, epoch
