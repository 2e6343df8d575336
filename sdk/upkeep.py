"""The fleet's upkeep, done by whichever worker holds the leases (a mixin of Worker).

The liveness scan (broker/liveness.py) runs on the holder of the ``scan`` lease, every
SCAN_PERIOD_S whatever the ttl; the holder of the ``scan-standby`` lease renews it on the
same cadence and takes the scanner's the moment it lapses. The scanner's worker also sweeps
(timeouts, timers, delayed redeliveries, purges; ``sweep.lua`` under its own lease),
waiting between passes until the next deadline, at most SWEEP_IDLE_S, woken at once when a
new deadline becomes the earliest. Every other worker makes no call here at all.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from lb.broker.heartbeat import Heartbeat
from lb.broker.liveness import SCAN_PERIOD_S, Scanner
from lb.broker.tasks import TaskQueue

__all__ = ["SWEEP_IDLE_S", "Upkeep"]

# The sweeper's longest wait between passes (new deadlines wake it earlier);
# = broker/lua/lib.lua SWEEP_IDLE_MS.
SWEEP_IDLE_S = 1.0


class Upkeep:
    """Scan and sweep loops; the worker provides these attributes."""

    scanner: Scanner
    queue: TaskQueue
    heartbeat: Heartbeat | None
    redis_ok_at: float
    _stopping: bool
    _emit: Callable[..., None]
    _guard: Callable[[str, BaseException], Coroutine[Any, Any, None]]

    async def _scan_loop(self) -> None:
        """The liveness scanner (broker/liveness.py): only the lease holder scans."""
        while not self._stopping:
            # Heartbeats take a lease when it is free (no extra call per worker); the scanner
            # scans every SCAN_PERIOD_S, the standby renews its lease (and takes the
            # scanner's when it lapses), the others make no call here at all.
            await asyncio.sleep(SCAN_PERIOD_S * random.uniform(0.9, 1.1))
            hb = self.heartbeat
            if not (self.scanner.role or (hb is not None and hb.scan_role)):
                continue
            try:
                found = await self.scanner.scan()
                if hb is not None and not self.scanner.role:
                    hb.scan_role = 0  # taken by others since the last beat
                self.redis_ok_at = time.monotonic()  # outages are timed from this
                for group, dead, quarantined in found:
                    self._emit("requeued", group=group, dead=dead)
                    for tid in quarantined:
                        self._emit("dead-letter", id=tid, reason="quarantined")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._guard("scan", exc)

    async def _sweep_loop(self) -> None:
        lease_ms = 2000
        while not self._stopping:
            if self.scanner.role != 1:  # the scanner's lease holder sweeps too
                await asyncio.sleep(SCAN_PERIOD_S)
                continue
            try:
                holds, nxt = await self.queue.sweep(lease_ms)
                self.redis_ok_at = time.monotonic()  # outages are timed from this
                if not holds:  # check back well within the lease
                    await asyncio.sleep(random.uniform(0.9, 1.1))
                    continue
                # The holder waits for the next deadline (at most SWEEP_IDLE_S: purges and
                # the registry), woken at once by a new earlier one.
                wait = SWEEP_IDLE_S if nxt < 0 else min(SWEEP_IDLE_S, max(0.0, nxt / 1e3))
                await self.queue.wait_sweep(wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._guard("sweep", exc)
