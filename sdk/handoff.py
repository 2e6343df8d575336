"""How a ``def`` function's outcome gets back from its slot thread (a mixin of :class:`Worker`).

A round trip between the worker's loop and a slot thread costs more CPU than a no-op call
(futex and GIL hand-offs across CPUs: BENCHMARKS.md). So the slot thread does the common
ending itself and does not wake the loop for it:

* A function that returned a value (and is not traced) is fulfilled by its slot thread, over
  its own connection (broker/direct.py), with the execution's fence: the same script and the
  same rule as the loop's completion. Anything else (an exception, a suspension, a value that
  does not encode, a Redis that does not answer the thread) goes to the loop as before, which
  settles it with its retries and outage riding.
* The outcome is queued for the loop, which takes it at its next turn (a read that returns,
  or DONE_TICK_S later), not at once: nothing waits for it but the bookkeeping (the ``done``
  event, the slot counted free).
* Under load the thread leaves the completion to the loop as before: when the loop waits
  for a free slot (every slot busy: always so on a one-slot worker), which must wake for it
  anyway, and when calls wait unread (a backlog: the loop's last read for two or more slots
  got all it asked for, or its last completion claimed a next call). There the completion
  claims the group's next call in the same round trip and shares one write with others.

Guarantees: each outcome reaches its execution exactly once (a future set once, on the loop);
an outcome queued while the loop waits for a slot wakes it (the check and the queueing are
one step under ``_done_lock``, so no wake is lost); a fulfill from the thread is fenced
exactly as the loop's (FENCED: reported as fenced, nothing written).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lb.broker.codec import encode
from lb.broker.direct import DirectFulfiller
from lb.broker.errors import Fenced
from lb.broker.settings import Settings
from lb.sdk.context import Execution
from lb.sdk.outage import OutageLog

__all__ = ["DONE_TICK_S", "HandsBack", "Settled"]

# How long a call its slot thread settled may wait for the loop's bookkeeping (its ``done``
# event, its slot counted free) when nothing else wakes the loop sooner.
DONE_TICK_S = 0.01


@dataclass(frozen=True)
class Settled:
    """A slot thread's outcome for a call it fulfilled itself at ``at`` (monotonic clock: the
    ``done`` event's durations end there, not at the booking); ``fenced``: its fence no
    longer held the task, nothing was written."""

    state: str
    at: float
    fenced: bool = False


class HandsBack:
    """The hand-back of a worker; the worker provides these attributes."""

    settings: Settings
    io: Any
    _held_lock: threading.Lock
    _held: dict[str, tuple[str, str, str]]
    _wants_next: Callable[[], bool]
    outage: OutageLog

    def _init_handback(self) -> None:
        self._done_lock = threading.Lock()
        self._done: deque[tuple[asyncio.Future[Any], Any, BaseException | None]] = deque()
        self._starved = False  # the loop waits for a slot: wake it for every outcome
        # Calls wait unread: the last read for two or more slots got all it asked for, or the
        # last completion claimed a next one. The loop's completions then claim and batch.
        self._backlog = False
        self._direct: DirectFulfiller | None = None
        self.thread_settled = 0  # calls fulfilled by their slot threads
        self.thread_fenced = 0  # and refused as FENCED there
        self._busy = asyncio.Event()  # a def started (created on the loop: see Worker.start)

    def _settle_in_thread(self, ex: Execution, value: Any) -> Settled | None:
        """On the slot thread: fulfill ``ex`` with ``value`` (module docstring), or None when
        the loop must settle it."""
        if self._starved or self._backlog or self.outage.on or ex.lost or ex.span is not None:
            return None
        if self._direct is None:
            return None
        try:
            data = encode(value, self.settings.max_payload, what=f"result of {ex.call.func}")
        except Exception:  # BadInput, or a value that fails as it is read (mutated meanwhile)
            return None  # the loop encodes it again, and stores the error if it fails again
        # The write is on its way: a heartbeat that finds the task gone reports this write.
        # It stays set if the write fails: the loop's completion takes over from here (its
        # retry of a write that did commit is refused as FENCED, as the loop's own would be).
        ex.ending = True
        try:
            self._direct.fulfill(ex.fence, "resolved", data)
        except Fenced:
            with self._held_lock:
                self.thread_fenced += 1
            return Settled("resolved", time.monotonic(), fenced=True)
        except Exception:
            return None  # unreachable, full, refused...: the loop's completion rides it out
        with self._held_lock:
            self._held.pop(ex.id, None)  # no heartbeat for a task that is gone
            self.thread_settled += 1
        return Settled("resolved", time.monotonic())

    def _hand_back(
        self, fut: asyncio.Future[Any], value: Any, exc: BaseException | None = None
    ) -> None:
        """On the slot thread: give an outcome to the loop. Anything the loop must still act
        on goes at once (one wake-up); only a call the thread settled itself is queued for
        the loop's next turn (DONE_TICK_S at most while nothing else wakes it), and wakes it
        too if it waits for a slot."""
        try:
            if not isinstance(value, Settled):
                self.io.loop.call_soon_threadsafe(_deliver, fut, value, exc)
                return
            with self._done_lock:
                self._done.append((fut, value, None))
                if not self._starved:
                    return
            self.io.loop.call_soon_threadsafe(self._take_done)
        except RuntimeError:  # the loop closed: the worker has stopped
            pass

    def _take_done(self) -> bool:
        """On the loop: deliver the queued outcomes to their executions; True if there were."""
        with self._done_lock:
            done, self._done = self._done, deque()
        for fut, value, exc in done:
            _deliver(fut, value, exc)
        return bool(done)

    def _threads_busy(self) -> bool:
        raise NotImplementedError

    async def _done_ticker(self) -> None:
        """On the loop: take queued outcomes every DONE_TICK_S while a ``def`` runs; idle
        otherwise (``_busy`` is set when one starts)."""
        while True:
            if not self._threads_busy():
                self._take_done()
                self._busy.clear()
                await self._busy.wait()
                continue
            await asyncio.sleep(DONE_TICK_S)
            self._take_done()

    def _set_starved(self, starved: bool) -> bool:
        """On the loop: mark whether it is about to wait for a slot. Returns True (and stays
        not starved) when outcomes are already queued: take them instead of waiting."""
        with self._done_lock:
            if starved and self._done:
                return True
            self._starved = starved
        return False


def _deliver(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():  # cancelled meanwhile (lost, stopping)
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)
