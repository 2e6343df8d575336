"""Riding out Redis outages inside running executions (a mixin of :class:`Worker`).

Guarantees: an outage is never taken for the function's failure while lb's own Redis is
silent (its retry budget is untouched and its promise is not rejected); a re-run after an
outage happens only after Redis confirmed this execution still holds its task; a finished
function's value is held and its completion retried through an outage (up to
OUTAGE_PATIENCE_S, or however long Redis refuses writes: out of memory, read-only), so it is
not run again for want of one write.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from lb.broker.errors import RedisUnavailable
from lb.broker.tasks import TaskQueue
from lb.sdk import tracing
from lb.sdk.context import Execution
from lb.sdk.outage import OutageLog, refusing

__all__ = ["OUTAGE_PATIENCE_S", "RidesOutages", "backoff", "redis_down"]

# How long a running execution waits out a Redis outage (retrying its steps and its completion)
# before it is abandoned to the takeover path.
OUTAGE_PATIENCE_S = 30.0


class RidesOutages:
    """Outage handling of a worker; the worker provides these attributes."""

    queue: TaskQueue
    outage: OutageLog
    redis_ok_at: float
    completed: int
    _emit: Callable[..., None]
    _wants_next: Callable[[], bool]
    _backlog: bool

    async def _ride_out(self, ex: Execution, exc: BaseException, outage: list[float]) -> str:
        """Wait out a Redis outage met by ``ex``. Returns ``"rerun"`` (re-run it from the top:
        settled steps replay), ``"stop"`` (taken over meanwhile - Redis is asked before any
        re-run - or abandoned to the takeover path after OUTAGE_PATIENCE_S while lb's Redis
        is still silent) or ``"fail"`` (the failure lasted OUTAGE_PATIENCE_S while lb's Redis
        answered the sweeper: the function's own, e.g. another Redis it uses is down; the
        normal retry policy applies). ``outage`` is [start, steps reached at the last
        failure]; the clock restarts only when a re-run got further than the last one did, so
        failures at the same point can never re-run it forever."""
        now = time.monotonic()
        self.outage.seen(exc)
        if ex.counter > outage[1]:
            outage[0] = now  # progress since the last failure (or the first one): a new outage
        outage[1] = ex.counter
        if now - outage[0] > OUTAGE_PATIENCE_S and not refusing(exc):
            if self.redis_ok_at > outage[0] + OUTAGE_PATIENCE_S / 2:
                return "fail"
            self._emit("error", id=ex.id, error=f"abandoned: {exc}")
            return "stop"
        self._emit("redis-wait", id=ex.id, error=str(exc))
        await asyncio.sleep(backoff(now - outage[0]))
        if not await self._still_held(ex):
            self._emit("lost", id=ex.id)  # taken over meanwhile: never re-run it here
            return "stop"
        return "rerun"

    async def _still_held(self, ex: Execution) -> bool:
        """Ask Redis (not the heartbeat thread, which may not have caught up after an outage)
        whether this execution still holds its task; False, and ``ex`` marked lost, if not.
        While Redis is still unreachable the answer is True: the next step will fail again."""
        if ex.lost:
            return False
        try:
            held = await self.queue.holds(ex.claimed.base, ex.fence)
        except RedisUnavailable:
            return True
        self.redis_ok_at = time.monotonic()
        if not held:
            ex.lost = True
        return held

    async def _settle_traced(self, ex: Execution, state: str, data: bytes) -> str:
        """``_settle`` under an ``lb.settle`` span (while tracing); returns ``state``."""
        with tracing.child(ex.span, "lb.settle", state=state):
            await self._settle(ex, state, data)
        return state

    async def _settle(self, ex: Execution, state: str, data: bytes) -> None:
        """Fulfill, retrying through a Redis outage of up to OUTAGE_PATIENCE_S (so a finished
        function is not run again for want of one write). A retry after a fulfill whose reply
        was lost gets FENCED (the task is already fulfilled): reported as fenced, and safe."""
        since = time.monotonic()
        first = True
        while True:
            if ex.lost:
                self._emit("fenced", id=ex.id)
                return
            try:
                if first and self._wants_next():
                    # The slot this frees takes the group's next waiting call in the same
                    # round trip (begun by _end). Only on the first try: after a lost reply
                    # a claimed call would be left to the ttl, so retries claim nothing.
                    _, held, dead = await self.queue.fulfill_and_claim(
                        ex.fence, state, data, ex.claimed.base
                    )
                    ex.next_claims = (held, dead)
                    self._backlog = bool(held or dead)  # more waited (sdk/handoff.py)
                else:
                    await self.queue.complete(ex.fence, state, data)
                break
            except RedisUnavailable as exc:
                # A Redis that refuses writes (full, read-only) is waited out however long:
                # the value is held here until it can be stored.
                if time.monotonic() - since > OUTAGE_PATIENCE_S and not refusing(exc):
                    raise
                first = False
                self.outage.seen(exc)
                self._emit("redis-wait", id=ex.id, error=str(exc))
                await asyncio.sleep(backoff(time.monotonic() - since))
        self.outage.over()
        self._done_booked(ex, state)

    def _done_booked(self, ex: Execution, state: str, at: float | None = None) -> None:
        """A completion stored (at ``at``, monotonic; default now): counted and reported
        (the ``done`` event)."""
        at = time.monotonic() if at is None else at
        self.completed += 1
        self._emit(
            "done",
            id=ex.id,
            func=ex.call.func,
            state=state,
            attempt=1 + ex.claimed.lapses + ex.retries,
            duration_ms=round((at - ex.began) * 1000, 1),
            settle_s=round(ex.claimed.waited_s + at - ex.began, 4),
        )


def redis_down(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from, is lb's RedisUnavailable (user
    code that wraps a failed step in its own exception still counts as an outage)."""
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, RedisUnavailable):
            return True
        # ``raise X from None`` means the code chose to hide the cause: respect that.
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


def backoff(waited: float) -> float:
    """0.1 s, doubling with the time already waited, at most 2 s; jittered."""
    return min(2.0, max(0.1, waited)) * random.uniform(0.8, 1.2)
