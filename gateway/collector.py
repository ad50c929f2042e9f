"""When CPython's cycle collector runs in the gateway, so that it never stalls the ingest.

With thousands of sensors the policy keeps one window per sensor and replaces
it on every record, so tens of thousands of objects live about a second:
long enough to outlive the youngest generation, short enough to die in the
older ones.  Left to its default schedule the collector then walks them again
and again in the middle generation (20-40 ms pauses, a few times a second) and
in full collections (60-100 ms), and at 10,000 records a second each pause
becomes a queue that takes several times as long to drain: that was the slow
tail of publish -> override.

The schedule here:

- what start-up built (config, modules, restored state) is frozen: it lives as
  long as the process, and no collection walks it;
- a *young* collection after every ingest turn (`young`), so each object is
  walked once, a turn's worth at a time (well under a millisecond), while it
  is still young;
- the older generations are never collected automatically; a *full*
  collection (`maybe_full`) runs every `full_every_s`, or sooner once the heap
  (allocated memory blocks) has grown by `growth` since the last one, which is
  how cyclic garbage would show (it is rare here: reference counting frees the
  records).  Memory stays bounded; the one long pause comes minutes apart
  instead of several times a second.

`stop` puts the process's collector back as it was.
"""

from __future__ import annotations

import gc
import logging
import sys
import time

__all__ = ["Collector"]

log = logging.getLogger("hushlight.gateway")

FULL_EVERY_S = 600.0  # a full collection at least this often (wall seconds)
CHECK_EVERY_S = 5.0  # the heap is measured this often (`sys.getallocatedblocks`, ~30 us)
GROWTH = 0.5  # ... and collected once it has grown by this share since the last time
MIN_GROWTH = 500_000  # ... and by at least this many blocks: a small site never needs it early
NEVER = 2**30  # a threshold the collection counters do not reach


class Collector:
    """The gateway's collection schedule; `start` and `stop` around the service's life."""

    def __init__(
        self,
        *,
        full_every_s: float = FULL_EVERY_S,
        check_every_s: float = CHECK_EVERY_S,
        growth: float = GROWTH,
        min_growth: int = MIN_GROWTH,
    ) -> None:
        self.full_every_s = full_every_s
        self.check_every_s = check_every_s
        self.growth = growth
        self.min_growth = min_growth
        self.full_collections = 0
        self.last_full_ms = 0.0  # how long the last full collection held everything up
        self._saved: tuple[int, int, int] | None = None
        self._last_full = 0.0
        self._last_check = 0.0
        self._blocks_after_full = 0

    @property
    def running(self) -> bool:
        return self._saved is not None

    def start(self) -> None:
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        gc.collect()  # what start-up left as garbage goes now, not frozen for ever
        gc.freeze()
        gc.set_threshold(self._saved[0], NEVER, NEVER)
        self._last_full = self._last_check = time.monotonic()
        self._blocks_after_full = sys.getallocatedblocks()

    def stop(self) -> None:
        if self._saved is None:
            return
        gc.set_threshold(*self._saved)
        gc.unfreeze()
        self._saved = None

    def young(self) -> None:
        """After an ingest turn: walk what the turn left alive while it is few."""
        if self._saved is not None:
            gc.collect(0)

    def maybe_full(self) -> bool:
        """A full collection if one is due (time, or growth of the heap); True if run."""
        if self._saved is None:
            return False
        now = time.monotonic()
        due = now - self._last_full >= self.full_every_s
        if not due and now - self._last_check >= self.check_every_s:
            self._last_check = now
            grown = sys.getallocatedblocks() - self._blocks_after_full
            due = grown >= max(self.min_growth, self.growth * self._blocks_after_full)
        if not due:
            return False
        began = time.perf_counter()
        found = gc.collect()
        self.last_full_ms = (time.perf_counter() - began) * 1000.0
        self.full_collections += 1
        self._last_full = self._last_check = time.monotonic()
        self._blocks_after_full = sys.getallocatedblocks()
        log.info("full collection: %.1f ms, %d unreachable objects freed", self.last_full_ms, found)
        return True
