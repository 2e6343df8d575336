"""What a worker does when it loses an execution, or its own machinery (a mixin of Worker).

Guarantees: an execution the heartbeat reports lost (its task was taken over, or its
promise settled elsewhere: timed out, canceled) is marked lost and cancelled; a plain
``def`` that cannot be interrupted gives its slot back at once and its thread is abandoned
(left to finish, fenced), replaced, counted and logged with the function's name. A worker
loop that ends before ``stop()`` makes the worker dead: heartbeats stop at once (its tasks
are taken over) and ``on_death`` is told (``lb worker`` then exits 14).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from lb.broker.errors import LbError, WorkerDied
from lb.broker.heartbeat import Heartbeat
from lb.broker.settings import Settings
from lb.broker.tasks import TaskQueue
from lb.sdk.context import Execution
from lb.sdk.encoding import safe_str
from lb.sdk.isolation import Isolation
from lb.sdk.loop import IoLoop
from lb.sdk.threads import DaemonPool

__all__ = ["Health"]

log = logging.getLogger("lb.worker")


class Health:
    """Loss and death handling of a worker; the worker provides these attributes."""

    pid: str
    io: IoLoop
    settings: Settings
    queue: TaskQueue
    pool: DaemonPool
    isolation: Isolation
    running: dict[str, Execution]
    heartbeat: Heartbeat | None
    died: BaseException | None
    on_death: Callable[[BaseException], None] | None
    abandoned: int
    _stopping: bool
    _held_lock: threading.Lock
    _held: dict[str, tuple[str, str, str]]
    _free: asyncio.Event
    _emit: Callable[..., None]

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A worker loop must run until stop(): if one ends otherwise, the worker is dead.
        Its heartbeats stop at once (its tasks are taken over) and ``on_death`` is told, so
        that ``serve()`` / ``lb worker`` exit non-zero instead of holding tasks forever."""
        if self._stopping or self.died is not None:
            return
        exc = None if task.cancelled() else task.exception()
        self.died = WorkerDied(
            f"worker {self.pid}: its {getattr(task.get_coro(), '__qualname__', '?')} loop ended "
            f"({type(exc).__name__ if exc else 'cancelled'}: {safe_str(exc)})"
        )
        log.critical("%s", self.died)
        self._emit("died", error=str(self.died))
        if self.heartbeat:
            self.heartbeat.stopping.set()
        if self.on_death is not None:
            self.on_death(self.died)

    def _lost_from_thread(self, lost: list[tuple[str, str]]) -> None:
        self.io.loop.call_soon_threadsafe(self._mark_lost, lost)

    def _mark_lost(self, lost: list[tuple[str, str]]) -> None:
        for tid, version in lost:
            parked = self.isolation.drop(tid)
            if parked is not None:
                with self._held_lock:
                    self._held.pop(tid, None)
                self._emit("lost", id=tid)
                self._free.set()
            ex = self.running.get(tid)
            if ex is not None and not ex.lost and not ex.ending and ex.fence.version == version:
                ex.lost = True
                self._emit("lost", id=tid)
                if ex.task is None:
                    continue
                ex.task.cancel()
                if not ex.is_async_fn:
                    # A plain def cannot be interrupted: its slot is freed now (its promise
                    # settled elsewhere - timed out, canceled - or it was taken over), the
                    # thread is left to finish on its own, fenced, and is replaced.
                    self.pool.abandon()
                    self.abandoned += 1
                    self._emit("abandoned", id=tid, func=ex.call.func, total=self.abandoned)
                    self.io.loop.create_task(self._note_abandoned())

    async def _note_abandoned(self) -> None:
        with contextlib.suppress(LbError):
            await self.queue.register({"abandoned": str(self.abandoned)}, self.settings.ttl_ms)
