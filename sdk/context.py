"""The ``ctx`` a durable function receives: checkpoints, child calls, durable sleep, promises.

Replay rule: every step gets a deterministic child id from its parent and call order
(``root`` -> ``root:1`` -> ``root:1.2``). Creating a step's promise is idempotent, so when a
function re-runs (after a takeover, a suspension or a retry) a step whose promise already
settled returns the stored value and its code is not executed again.

All step mutations are fenced by the execution's (task id, version, pid): after a takeover
they raise :class:`Lost`, which unwinds the function without settling anything.

``def`` functions get a :class:`Context` (blocking methods); ``async def`` functions get an
:class:`AsyncContext` (awaitable methods). Both have the same methods and meaning.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from lb.broker.codec import decode, encode
from lb.broker.errors import BadInput, Fenced, PromiseRejected, RedisUnavailable
from lb.broker.records import Claimed, Fence, Promise
from lb.sdk.durations import seconds_to_ms
from lb.sdk.encoding import Call, decode_error, encode_error
from lb.sdk.target import parse_target

if TYPE_CHECKING:
    from lb.sdk.worker import Worker

__all__ = ["AsyncContext", "Context", "Lost", "Suspend"]


class Suspend(BaseException):
    """Unwinds a function that awaits unsettled promises; the worker suspends its task.

    A BaseException so that ``except Exception`` in user code does not swallow it.
    """

    def __init__(self, awaited: list[str]) -> None:
        super().__init__(f"waiting on {', '.join(awaited)}")
        self.awaited = awaited


class Lost(BaseException):
    """Unwinds a function whose task was taken over: nothing more may be settled for it."""


@dataclass
class Execution:
    """One attempt at one task on this worker."""

    claimed: Claimed
    fence: Fence
    call: Call
    worker: Worker
    lost: bool = False
    counter: int = 0
    task: asyncio.Task[Any] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.claimed.task_id

    def child_id(self) -> str:
        self.counter += 1
        sep = "." if self.call.parent else ":"
        return f"{self.id}{sep}{self.counter}"


def _seconds(d: float | timedelta) -> float:
    s = d.total_seconds() if isinstance(d, timedelta) else float(d)
    if s < 0 or s != s:
        raise BadInput("sleep duration must be a non-negative number of seconds")
    return s


class AsyncContext:
    """Context for ``async def`` functions (see the module docstring)."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex
        self._w = ex.worker

    @property
    def id(self) -> str:
        """The promise id of this invocation."""
        return self._ex.id

    @property
    def attempt(self) -> int:
        """How many times this task has been delivered (1 on the first run)."""
        return self._ex.claimed.attempts

    @property
    def worker(self) -> str:
        """The name of the worker running this attempt."""
        return self._w.pid

    # -- shared steps (run on the I/O loop) ---------------------------------------------
    def _check(self) -> None:
        if self._ex.lost:
            raise Lost(self.id)

    def _remaining_ms(self) -> int:
        left = self._ex.claimed.timeout_at - self._w.redis_now_ms()
        return max(1, left)

    async def _open(self, cid: str, **kw: Any) -> Promise:
        self._check()
        kw.setdefault("timeout_ms", self._remaining_ms())
        try:
            _, p = await self._w.broker.create(cid, fence=self._ex.fence, **kw)
        except Fenced:
            self._ex.lost = True
            raise Lost(self.id) from None
        return p

    async def _close(self, cid: str, ok: bool, value: Any) -> None:
        limit = self._w.settings.max_payload
        if ok:
            try:
                data, state = encode(value, limit, what=f"result of step {cid}"), "resolved"
            except BadInput as exc:
                data, state = encode_error(exc, limit), "rejected"
        else:
            data, state = encode_error(value, limit), "rejected"
        try:
            await self._w.broker.settle(cid, state, data, fence=self._ex.fence)
        except Fenced:
            self._ex.lost = True
            raise Lost(self.id) from None

    def _value(self, p: Promise) -> Any:
        limit = self._w.settings.max_payload
        if p.state == "resolved":
            return decode(p.value, limit, what=f"value of {p.id}") if p.value else None
        etype, msg = decode_error(p.value, limit)
        raise PromiseRejected(p.id, p.state, etype, msg)

    async def _rpc_open(
        self,
        func: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: str | None,
        timeout: float | None,
    ) -> Promise:
        cid = self._ex.child_id()
        group = parse_target(target) if target else self._w.group
        param = Call(func, list(args), kwargs, parent=self.id).encode(self._w.settings.max_payload)
        extra: dict[str, Any] = {"param": param, "group": group}
        if timeout is not None:
            extra["timeout_ms"] = seconds_to_ms(timeout)
        return await self._open(cid, **extra)

    async def _sleep_open(self, seconds: float) -> float | None:
        """Create the timer; seconds left to wait here, or None when it already fired."""
        cid = self._ex.child_id()
        p = await self._open(
            cid,
            timeout_ms=seconds_to_ms(seconds, "sleep"),
            timer=True,
            tags={"resonate:timer": "true"},
        )
        if p.settled:
            return None
        left = (p.timeout_at - self._w.redis_now_ms()) / 1000.0
        if left > self._w.suspend_after:
            raise Suspend([cid])
        return max(0.0, left)

    # -- public API ----------------------------------------------------------------------
    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` once as a checkpoint; after it settled, replays return its stored value.

        A failing ``fn`` settles the step rejected and raises (the original exception on the
        first run, :class:`PromiseRejected` when replayed).
        """
        cid = self._ex.child_id()
        p = await self._open(cid)
        if p.settled:
            return self._value(p)
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except (Suspend, Lost, RedisUnavailable):
            raise  # an outage is not the step's failure: leave the step open for the re-run
        except Exception as exc:
            await self._close(cid, False, exc)
            raise
        await self._close(cid, True, result)
        return result

    async def rpc(
        self,
        func: str,
        *args: Any,
        target: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``func`` on a group (default: this worker's group) and return its value.

        If the child is not settled yet, this task suspends (its slot is freed) and re-runs
        from the top once the child settles.
        """
        p = await self._rpc_open(func, args, kwargs, target, timeout)
        if p.settled:
            return self._value(p)
        raise Suspend([p.id])

    async def sleep(self, duration: float | timedelta) -> None:
        """Durable sleep: the deadline is fixed when first reached, so a re-run after a crash
        waits only what remains. Short sleeps wait in the slot; sleeps longer than the
        worker's ``suspend_after`` suspend the task instead."""
        left = await self._sleep_open(_seconds(duration))
        if left:
            await asyncio.sleep(left)
        self._check()

    async def promise(self, timeout: float | None = None) -> str:
        """Create a promise someone outside settles (``lb resolve ID``); returns its id.

        Wait for it with ``await ctx.wait(id)``.
        """
        cid = self._ex.child_id()
        kw: dict[str, Any] = {} if timeout is None else {"timeout_ms": seconds_to_ms(timeout)}
        await self._open(cid, **kw)
        return cid

    async def wait(self, promise_id: str) -> Any:
        """The value of a promise; suspends this task while it is pending."""
        self._check()
        p = await self._w.broker.get(promise_id)
        if p.settled:
            return self._value(p)
        raise Suspend([promise_id])


class Context:
    """Context for plain ``def`` functions: the same steps as :class:`AsyncContext`, blocking.

    The function runs on a thread of its own; each step's Redis work runs on the I/O loop.
    """

    def __init__(self, ex: Execution) -> None:
        self._a = AsyncContext(ex)
        self._io = ex.worker.io

    id = property(lambda self: self._a.id)
    attempt = property(lambda self: self._a.attempt)
    worker = property(lambda self: self._a.worker)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """See :meth:`AsyncContext.run`; ``fn`` runs on this thread."""
        a = self._a
        cid = a._ex.child_id()
        p = self._io.call(a._open(cid))
        if p.settled:
            return a._value(p)
        try:
            result = fn(*args, **kwargs)
        except (Suspend, Lost, RedisUnavailable):
            raise  # an outage is not the step's failure: leave the step open for the re-run
        except Exception as exc:
            self._io.call(a._close(cid, False, exc))
            raise
        self._io.call(a._close(cid, True, result))
        return result

    def rpc(
        self,
        func: str,
        *args: Any,
        target: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """See :meth:`AsyncContext.rpc`."""
        p = self._io.call(self._a._rpc_open(func, args, kwargs, target, timeout))
        if p.settled:
            return self._a._value(p)
        raise Suspend([p.id])

    def sleep(self, duration: float | timedelta) -> None:
        """See :meth:`AsyncContext.sleep`; waits on this thread, stopping early if lost."""
        left = self._io.call(self._a._sleep_open(_seconds(duration)))
        end = time.monotonic() + (left or 0.0)
        while (rest := end - time.monotonic()) > 0:
            self._a._check()
            time.sleep(min(rest, 0.25))
        self._a._check()

    def promise(self, timeout: float | None = None) -> str:
        """See :meth:`AsyncContext.promise`."""
        return self._io.call(self._a.promise(timeout))

    def wait(self, promise_id: str) -> Any:
        """See :meth:`AsyncContext.wait`."""
        return self._io.call(self._a.wait(promise_id))
