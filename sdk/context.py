"""The ``ctx`` a durable function receives: checkpoints, child calls, durable sleep, promises.

Replay rule: every step gets a deterministic child id from its parent and call order
(``root`` -> ``root:1`` -> ``root:1.2``). Creating a step's promise is idempotent, so when a
function re-runs (after a takeover, a suspension or a retry) a step whose promise already
settled returns the stored value and its code is not executed again.

Retry rule: transient failures are retried where they happen. A ``ctx.run`` step retries its
own code under its own policy (default :class:`Exponential`; pass ``ctx.options(retry=...)``
as the last argument) and stores only its final outcome. A step outcome that is final (a step
that exhausted its retries, or a settled child or promise that was rejected) ends the function
without a function-level retry, since a retry would only replay it; the function's own retry
policy covers failures of its own code between steps.

Time rule: deadlines come from Redis. A step's deadline is capped at its call's; remaining
sleep time is computed from the Redis clock returned by the script and waited on the monotonic
clock, so a worker whose wall clock jumps neither cuts a sleep short nor stretches it.

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
from lb.sdk import tracing
from lb.sdk.durations import seconds_to_ms
from lb.sdk.encoding import Call, decode_error, encode_error
from lb.sdk.retry import Exponential, RetryPolicy
from lb.sdk.target import parse_target

if TYPE_CHECKING:
    from lb.sdk.worker import Worker

__all__ = ["AsyncContext", "Context", "Lost", "StepOptions", "Suspend"]


@dataclass(frozen=True)
class StepOptions:
    """Options of one ``ctx.run`` step, passed as its last positional argument
    (``ctx.run(fn, x, ctx.options(retry=Never()))``, as in Resonate's SDKs)."""

    retry: RetryPolicy = field(default_factory=Exponential)


def _split_options(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], StepOptions]:
    if args and isinstance(args[-1], StepOptions):
        return args[:-1], args[-1]
    return args, StepOptions()


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
    retries: int = 0  # function-level retries in this delivery
    is_async_fn: bool = False
    # The function has returned (or suspended) and its final write (fulfill, suspend) is on
    # its way: a heartbeat that finds the task no longer held is reporting that very write,
    # not a takeover, so the worker leaves the execution to the write's own reply.
    ending: bool = False
    # What its completion claimed for the slot it freed (tasks held, ids dead-lettered):
    # begun by the worker once this execution has ended.
    next_claims: tuple[list[Claimed], list[str]] | None = field(default=None, repr=False)
    began: float = field(default_factory=time.monotonic)  # for the done line's duration
    # Final step outcomes raised in this delivery (kept as objects: an id() could be reused).
    final: list[BaseException] = field(default_factory=list, repr=False)
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    span: Any = field(default=None, repr=False)  # its lb.run span while tracing (sdk/tracing)
    tc: dict[str, str] | None = field(default=None, repr=False)  # the trace its spans join

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
        """Which try of the function this is: 1 on the first run, +1 for each retry after a
        failure (its own retry policy) and for each earlier delivery that ended in nothing
        (the worker died or stalled). Resumes after a suspension and clean hand-backs do not
        count."""
        return 1 + self._ex.claimed.lapses + self._ex.retries

    def options(self, retry: RetryPolicy | None = None) -> StepOptions:
        """Options for one ``ctx.run`` step, passed as its last positional argument."""
        return StepOptions(retry=retry or Exponential())

    @property
    def worker(self) -> str:
        """The name of the worker running this attempt."""
        return self._w.pid

    # -- shared steps (run on the I/O loop) ---------------------------------------------
    def _check(self) -> None:
        if self._ex.lost:
            raise Lost(self.id)

    async def _open_at(self, cid: str, **kw: Any) -> tuple[Promise, int]:
        """Create (or find) step ``cid``; returns it and the Redis clock (ms) of the call."""
        self._check()
        try:
            return await self._w.broker.open_step(
                cid, self._ex.fence, self._ex.claimed.timeout_at, **kw
            )
        except Fenced:
            self._ex.lost = True
            raise Lost(self.id) from None

    async def _open(self, cid: str, **kw: Any) -> Promise:
        return (await self._open_at(cid, **kw))[0]

    def _final(self, exc: BaseException) -> BaseException:
        """Mark ``exc`` as a step's final outcome: the function is not retried for it."""
        self._ex.final.append(exc)
        return exc

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
        raise self._final(PromiseRejected(p.id, p.state, etype, msg))

    async def _rpc_open(
        self,
        cid: str,
        func: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: str | None,
        timeout: float | None,
        span: Any,
    ) -> Promise:
        group = parse_target(target) if target else self._w.group
        call = Call(func, list(args), kwargs, parent=self.id, tc=tracing.carrier(span))
        param = call.encode(self._w.settings.max_payload)
        extra: dict[str, Any] = {"param": param, "group": group}
        if timeout is not None:
            extra["timeout_ms"] = seconds_to_ms(timeout)
        return await self._open(cid, **extra)

    async def _sleep_open(self, cid: str, seconds: float) -> float | None:
        """Create the timer; seconds left to wait here, or None when it already fired."""
        p, now = await self._open_at(
            cid,
            timeout_ms=seconds_to_ms(seconds, "sleep"),
            timer=True,
            tags={"resonate:timer": "true"},
        )
        if p.settled:
            return None
        left = (p.timeout_at - now) / 1000.0  # both on the Redis clock
        if left > self._w.suspend_after:
            raise Suspend([cid])
        return max(0.0, left)

    # -- public API ----------------------------------------------------------------------
    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` as a checkpoint; once it settled, replays return its stored outcome.

        A failing ``fn`` is retried here under the step's policy (``ctx.options(retry=...)``
        as the last argument; default :class:`Exponential`); only the final outcome is stored.
        A final failure raises (the original exception on the first run,
        :class:`PromiseRejected` when replayed) and is not retried at the function level.
        """
        args, opts = _split_options(args)
        cid = self._ex.child_id()
        with tracing.step(self._ex.span, "run", cid) as span:
            return await self._run(cid, span, opts, fn, args, kwargs)

    async def _run(
        self,
        cid: str,
        span: Any,
        opts: StepOptions,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        p = await self._open(cid)
        if p.settled:
            tracing.mark(span, replayed=True)
            return self._value(p)
        tries = 0
        while True:
            try:
                with tracing.current(span):
                    result = fn(*args, **kwargs)
                    if inspect.isawaitable(result):
                        result = await result
            except (Suspend, Lost, RedisUnavailable):
                raise  # an outage is not the step's failure: leave the step open for the re-run
            except Exception as exc:
                tries += 1
                delay = opts.retry.delay(tries)
                if delay is None:
                    await self._close(cid, False, exc)
                    self._final(exc)
                    raise
                await asyncio.sleep(delay)
                self._check()
                continue
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
        cid = self._ex.child_id()
        with tracing.step(self._ex.span, "rpc", cid) as span:
            p = await self._rpc_open(cid, func, args, kwargs, target, timeout, span)
            if p.settled:
                tracing.mark(span, replayed=True)
                return self._value(p)
            raise Suspend([p.id])

    async def sleep(self, duration: float | timedelta) -> None:
        """Durable sleep: the deadline is fixed when first reached, so a re-run after a crash
        waits only what remains. Short sleeps wait in the slot; sleeps longer than the
        worker's ``suspend_after`` suspend the task instead."""
        cid = self._ex.child_id()
        with tracing.step(self._ex.span, "sleep", cid) as span:
            left = await self._sleep_open(cid, _seconds(duration))
            tracing.mark(span, replayed=left is None)
            if left:
                await asyncio.sleep(left)
            self._check()

    async def promise(self, timeout: float | None = None) -> str:
        """Create a promise someone outside settles (``lb resolve ID``); returns its id.

        Wait for it with ``await ctx.wait(id)``.
        """
        cid = self._ex.child_id()
        kw: dict[str, Any] = {} if timeout is None else {"timeout_ms": seconds_to_ms(timeout)}
        with tracing.step(self._ex.span, "promise", cid):
            await self._open(cid, **kw)
        return cid

    async def wait(self, promise_id: str) -> Any:
        """The value of a promise; suspends this task while it is pending.

        Raises :class:`~lb.broker.errors.NotFound` when no such promise exists, and
        :class:`~lb.broker.errors.BadInput` for a promise kept in another shard than this
        call (its settlement could not wake this task)."""
        self._check()
        keys = self._w.broker.keys
        if keys.shard_of(promise_id) != keys.shard_of(self.id):
            raise BadInput(
                f"cannot wait on {promise_id!r} from {self.id!r}: they live in different shards "
                "(a call can wait on its own steps and on promises with its root's id prefix)"
            )
        with tracing.step(self._ex.span, "wait", promise_id) as span:
            p = await self._w.broker.get(promise_id)
            if p.settled:
                tracing.mark(span, replayed=True)
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

    def options(self, retry: RetryPolicy | None = None) -> StepOptions:
        """See :meth:`AsyncContext.options`."""
        return self._a.options(retry)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """See :meth:`AsyncContext.run`; ``fn`` runs on this thread."""
        a = self._a
        args, opts = _split_options(args)
        cid = a._ex.child_id()
        with tracing.step(a._ex.span, "run", cid) as span:
            return self._run(cid, span, opts, fn, args, kwargs)

    def _run(
        self,
        cid: str,
        span: Any,
        opts: StepOptions,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        a = self._a
        p = self._io.call(a._open(cid))
        if p.settled:
            tracing.mark(span, replayed=True)
            return a._value(p)
        tries = 0
        while True:
            try:
                with tracing.current(span):
                    result = fn(*args, **kwargs)
            except (Suspend, Lost, RedisUnavailable):
                raise  # an outage is not the step's failure: leave the step open for the re-run
            except Exception as exc:
                tries += 1
                delay = opts.retry.delay(tries)
                if delay is None:
                    self._io.call(a._close(cid, False, exc))
                    a._final(exc)
                    raise
                self._wait(delay)
                continue
            self._io.call(a._close(cid, True, result))
            return result

    def _wait(self, seconds: float) -> None:
        """Wait on this thread's monotonic clock, stopping early if the task was lost."""
        end = time.monotonic() + seconds
        while (rest := end - time.monotonic()) > 0:
            self._a._check()
            time.sleep(min(rest, 0.25))
        self._a._check()

    def rpc(
        self,
        func: str,
        *args: Any,
        target: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """See :meth:`AsyncContext.rpc`."""
        a = self._a
        cid = a._ex.child_id()
        with tracing.step(a._ex.span, "rpc", cid) as span:
            p = self._io.call(a._rpc_open(cid, func, args, kwargs, target, timeout, span))
            if p.settled:
                tracing.mark(span, replayed=True)
                return a._value(p)
            raise Suspend([p.id])

    def sleep(self, duration: float | timedelta) -> None:
        """See :meth:`AsyncContext.sleep`; waits on this thread, stopping early if lost."""
        cid = self._a._ex.child_id()
        with tracing.step(self._a._ex.span, "sleep", cid) as span:
            left = self._io.call(self._a._sleep_open(cid, _seconds(duration)))
            tracing.mark(span, replayed=left is None)
            self._wait(left or 0.0)

    def promise(self, timeout: float | None = None) -> str:
        """See :meth:`AsyncContext.promise`."""
        return self._io.call(self._a.promise(timeout))

    def wait(self, promise_id: str) -> Any:
        """See :meth:`AsyncContext.wait`."""
        return self._io.call(self._a.wait(promise_id))
