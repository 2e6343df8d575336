"""A ``def`` function's slot thread completes its own call and starts the next one.

The plain path hands a ``def`` call to a slot thread and its value back to the I/O loop,
which stores it: two wake-ups of a sleeping thread per call, the largest cost of a ``def``
call on a VM (~75-100 us of CPU: BENCHMARKS.md). Here the slot thread stores the value
itself (``fulfill.lua`` through :class:`~lb.broker.direct.SyncScripts`, the same script and
fencing as the loop's path) and, when that completion claimed the group's next waiting call
(it does when there is one and the worker wants more work), runs it at once on the same
thread. The loop learns of both in one hand-off, then keeps its books as for any call
(running, heartbeat, events, metrics): under load a ``def`` call costs one hand-off, not
two, and no event-loop round trip for its completion.

Guarantees:

* Same outcome as the loop's path: only a returned value is stored here; an exception, a
  value that cannot be encoded, or a completion that failed (Redis unavailable, fenced)
  goes to the loop's path unchanged, which retries a completion through an outage (after
  one try here, without claiming: ``settle_tried``).
* A call started here is held from that moment (the heartbeat covers it) and counted as the
  slot that the call before it freed, so the worker never runs more than its slots.
* Nothing is chained while tracing (the loop's path owns the spans), while stopping, or
  for a call that must go through the loop first: a suspect (runs alone), one that does not
  decode, is not registered here, or is an ``async def``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lb.broker.codec import encode
from lb.broker.errors import BadInput, UnknownFunction
from lb.broker.records import Claimed
from lb.broker.settings import Settings
from lb.broker.tasks import TaskQueue
from lb.sdk import tracing
from lb.sdk.context import Execution
from lb.sdk.encoding import Call
from lb.sdk.registry import Registry

if TYPE_CHECKING:
    from lb.sdk.worker import Worker

__all__ = ["SETTLED", "Chains"]

# What a slot thread hands the loop when it stored the call's value itself.
SETTLED: Any = object()


class Chains:
    """Completion and chaining on slot threads (a mixin of :class:`Worker`)."""

    settings: Settings
    queue: TaskQueue
    registry: Registry
    pid: str
    _stopping: bool
    _hold: Callable[[Claimed], None]
    _wants_next: Callable[[], bool]

    def _chaining(self) -> bool:
        return self._wants_next() and not tracing.enabled()

    def finish_on_thread(self, ex: Execution, value: Any) -> Any:
        """On ``ex``'s slot thread, with its function's return value: store it and return
        SETTLED (``ex.next_claims`` and ``ex.chained`` say what it claimed), or return
        ``value`` for the loop's path (module docstring)."""
        if ex.lost or ex.settle_tried or not self._chaining():
            return value
        try:
            data = encode(value, self.settings.max_payload, what=f"result of {ex.call.func}")
        except BadInput:
            return value  # the loop's path rejects it with this error
        ex.ending = True
        ex.settle_tried = True
        try:
            _, held, dead = self.queue.fulfill_and_claim_sync(
                ex.fence, "resolved", data, ex.claimed.base
            )
        except Exception:  # the loop's path retries it, rides out an outage, reports fenced
            ex.ending = False
            return value
        if held and self._chaining():
            try:
                ex.chained = self._start_here(held[0])
            except Exception:  # the loop starts it as any claim
                ex.chained = None
            if ex.chained is not None:
                held = held[1:]
        ex.next_claims = (held, dead)
        return SETTLED

    def _start_here(self, c: Claimed) -> Execution | None:
        """The execution of claimed call ``c`` when this thread can run it now, held."""
        if c.suspect:
            return None
        try:
            call = Call.decode(c.param, self.settings.max_payload)
            fn = self.registry.get(call.func, call.version)
        except (BadInput, UnknownFunction):
            return None
        if fn.is_async:
            return None
        worker: Worker = self  # type: ignore[assignment]
        ex = Execution(c, c.fence(self.pid), call, worker, is_async_fn=False)
        ex.adopted = asyncio.Future(loop=worker.io.loop)
        self._hold(c)
        return ex
