"""A clock the test sets by hand (gateway.clock.Clock protocol): `now()` is
whatever `t` holds and `sleep()` only yields to the event loop."""

from __future__ import annotations

import asyncio


class FixedClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)

    def wall(self, seconds: float) -> float:
        return seconds
