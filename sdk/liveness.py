"""Proof that a worker's event loop makes progress, for an honest heartbeat.

A task on the loop stamps the monotonic time every ``period``; the heartbeat thread reads the
stamp (:attr:`LoopWatch.tick`) and renews nothing once the loop has not ticked for
``stall_after`` seconds, calling :meth:`LoopWatch.stalled`, which logs one loud line per stall
naming the async functions running. So a blocking call inside an ``async def`` costs its worker
the tasks it holds (they are taken over like a dead worker's), never a task held for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LoopWatch"]

log = logging.getLogger("lb.worker")


class LoopWatch:
    """The loop's heartbeat of its own; ``running_async`` names the async functions running
    (read from the heartbeat thread while the loop is stuck, so it must not need the loop)."""

    def __init__(
        self,
        worker: str,
        period: float,
        stall_after: float,
        running_async: Callable[[], list[str]],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.worker = worker
        self.period = period
        self.stall_after = stall_after
        self.running_async = running_async
        self.on_event = on_event
        self.tick = time.monotonic()
        self._reported = False

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Stamp the loop's progress until ``stopping()``; runs on the watched loop."""
        self.tick = time.monotonic()
        while not stopping():
            now = time.monotonic()
            if self._reported and now - self.tick < self.period * 4:
                self._reported = False
                log.warning("worker %s: event loop running again", self.worker)
            self.tick = now
            await asyncio.sleep(self.period)

    def stalled(self, seconds: float) -> None:
        """Called by the heartbeat thread while the loop is blocked: one loud line per stall."""
        if self._reported:
            return
        self._reported = True
        try:
            names = sorted(set(self.running_async()))
        except RuntimeError:  # the dict changed under us: the names are a courtesy
            names = []
        msg = (
            f"event loop blocked for {seconds:.1f} s (a blocking call in an async def? "
            f"running async functions: {', '.join(names) or 'none'}); heartbeats stop renewing "
            "its tasks, which other workers will take over"
        )
        log.error("worker %s: %s", self.worker, msg)
        if self.on_event is not None:
            self.on_event("stalled", {"worker": self.worker, "error": msg})
