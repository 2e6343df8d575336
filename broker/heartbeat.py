"""The heartbeat, run on its own thread with its own synchronous connection.

Why a thread: user code may hold the GIL in short slices (CPU-bound ``def``); a dedicated
thread keeps heartbeating through that, so a healthy but busy worker never loses its tasks to
a false takeover. A heartbeat must also be honest: given ``progress`` (the monotonic time the
worker's event loop last ticked), the thread renews nothing while the loop has not ticked for
``stall_after`` seconds (a blocking call inside ``async def`` holds it), so the tasks of a
worker whose loop no longer progresses are taken over like those of a dead one.

Cadence: every ``interval`` (ttl/5) while the worker holds tasks, every ``idle_interval``
(half the live window: 1.5 ttl) while it holds none - an idle fleet's beats are most of its
Redis cost, and an idle worker's beat only keeps it listed as live (for 3 ttl).
:meth:`Heartbeat.nudge` (the worker took its first task) brings the next beat forward to
``interval`` from now, so a held task is always renewed within ttl/5 of its delivery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.exceptions as rexc

from lb.broker.keys import Keys
from lb.broker.scripts import script_source
from lb.broker.settings import Settings

# The liveness scanner's lease, taken and renewed by heartbeats (broker/liveness.py).
SCAN_LEASE_MS = 500  # = broker/liveness.py LEASE_MS

__all__ = ["Heartbeat"]


class Heartbeat(threading.Thread):
    """Renews ``held()`` every ``interval`` s; calls ``on_lost([(task id, version)])`` for tasks
    lost.

    ``held`` returns (base, task id, version) triples and is called from this thread, so it
    must be thread-safe (a snapshot of a dict is enough). Redis errors are retried on the next
    beat; they never stop the thread.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        pid: str,
        interval: float,
        held: Callable[[], list[tuple[str, str, str]]],
        on_lost: Callable[[list[tuple[str, str]]], None],
        progress: Callable[[], float] | None = None,
        stall_after: float = float("inf"),
        on_stall: Callable[[float], None] | None = None,
        idle_interval: float | None = None,
    ) -> None:
        super().__init__(name=f"lb-heartbeat-{pid}", daemon=True)
        self.settings = settings
        self.group = group
        self.pid = pid
        self.interval = interval
        self.idle_interval = max(interval, idle_interval or interval)
        self._wake = threading.Event()
        # The monotonic time of the next beat; inf during a beat (a nudge then is kept for the
        # wait that follows it). Read by nudge() on other threads.
        self._due = float("inf")
        self.held = held
        self.on_lost = on_lost
        self.progress = progress
        self.stall_after = stall_after
        self.on_stall = on_stall
        self.stopping = threading.Event()
        self.client = redis.Redis.from_url(
            settings.url,
            client_name=Keys.conn_name(settings.prefix, pid),
            socket_connect_timeout=settings.connect_timeout,
            socket_timeout=max(1.0, interval * 2),
            **settings.tls_kwargs(),
        )
        self.script = self.client.register_script(script_source("heartbeat"))
        self.beats = 0
        self.failures = 0  # beats that did not reach Redis (lb_heartbeats_total{outcome})
        # The liveness scanner's lease this worker held at its last beat: 1 the scanner's,
        # 2 the standby's, 0 neither (broker/lua/lease.lua).
        self.scan_role = 0
        self.on_silent: Callable[[], None] | None = None  # the scanner flagged silent work

    def beat(self) -> list[str]:
        """One heartbeat for every shard; returns the task ids no longer held."""
        by_base: dict[str, list[str]] = {
            b: [] for b in Keys(self.settings.prefix, self.settings.shards).all_bases()
        }
        self.versions: dict[str, str] = {}
        for base, tid, version in self.held():
            by_base.setdefault(base, []).extend([tid, version])
            self.versions[tid] = version
        lost: list[str] = []
        info_ttl = self.settings.live_ms
        base0 = Keys(self.settings.prefix, self.settings.shards).base(0)
        for base, pairs in by_base.items():
            args: list[Any] = [
                base,
                self.settings.retention_ms,
                self.pid,
                self.group,
                info_ttl,
                SCAN_LEASE_MS if base == base0 else "",
                *pairs,
            ]
            res = self.script(keys=[Keys.stream(base, self.group)], args=args)
            if base == base0:
                self.scan_role = int(res[0])
            if int(res[1]) == 1 and self.on_silent is not None:
                self.on_silent()
            lost += [x.decode() if isinstance(x, bytes) else str(x) for x in res[2:]]
        self.beats += 1
        return lost

    def nudge(self) -> None:
        """The worker now holds a task: beat within ``interval``, not ``idle_interval``.

        Costs nothing when the next beat is already that close (a busy worker: no thread
        wake-up per call)."""
        if self._due - time.monotonic() > self.interval:
            self._wake.set()

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, cut to ``interval`` from a nudge, ended by stop()."""
        deadline = time.monotonic() + seconds
        self._due = deadline
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._wake.wait(left):
                self._wake.clear()
                deadline = min(deadline, time.monotonic() + self.interval)
                self._due = deadline

    def run(self) -> None:
        while not self.stopping.is_set():
            self._due = float("inf")
            if self.progress is not None:
                stalled = time.monotonic() - self.progress()
                if stalled > self.stall_after:
                    if self.on_stall is not None:
                        self.on_stall(stalled)
                    self._wait(self.interval)
                    continue
            try:
                lost = self.beat()
                if lost:
                    # With the version each was held at, so that a task re-acquired since
                    # (a new execution) is never mistaken for the lost one.
                    self.on_lost([(tid, self.versions.get(tid, "")) for tid in lost])
            except (rexc.RedisError, OSError):
                self.failures += 1  # Redis down or restarting: again next beat (fenced)
            self._wait(self.interval if self.held() else self.idle_interval)

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout=5)
        self.client.close()
