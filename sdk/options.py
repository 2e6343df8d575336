"""How a call is made: per-call options (target, timeout, version, retention), the sync and
async invocations, and the handle of a call in flight.

Guarantees: an invocation is a durable promise keyed by the caller's id; invoking an id that
exists attaches to it (never a second execution). ``begin_rpc`` returns once the promise is
stored in Redis (or raises a typed error: nothing half-sent); a sync ``begin_rpc`` creates on
the caller's own thread once the first call has checked the server. In-flight calls per
client are bounded; a burst waits for room instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lb.broker.codec import decode
from lb.broker.errors import BadInput, PromiseRejected
from lb.broker.keys import check_root_id
from lb.broker.records import Promise
from lb.sdk import tracing
from lb.sdk.durations import check_seconds, seconds_to_ms
from lb.sdk.encoding import Call, decode_error
from lb.sdk.target import parse_target

if TYPE_CHECKING:
    from lb.sdk.resonate import Resonate

__all__ = ["Handle", "Options", "name_of", "value_of"]


def name_of(func: str | Callable[..., Any]) -> str:
    """The registered name of ``func`` (a name, or a registered function object)."""
    return func if isinstance(func, str) else str(getattr(func, "name", func.__name__))


def value_of(p: Promise, max_payload: int) -> Any:
    """The value of a settled promise, or :class:`PromiseRejected` for the rejected states."""
    if p.state == "resolved":
        return decode(p.value, max_payload, what=f"value of {p.id}") if p.value else None
    etype, msg = decode_error(p.value, max_payload)
    raise PromiseRejected(p.id, p.state, etype, msg)


class Handle:
    """A durable invocation in flight; ``result()`` may be called from any process."""

    def __init__(self, resonate: Resonate, promise_id: str, promise: Promise | None = None):
        self.id = promise_id
        self._r = resonate
        self._p = promise if promise and promise.settled else None

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the value; raises the function's error as :class:`PromiseRejected`."""
        timeout = check_seconds(timeout)
        if self._p is None:
            self._p = self._r._io.call(self._r._listener.wait(self.id, timeout))
        return value_of(self._p, self._r.settings.max_payload)

    async def aresult(self, timeout: float | None = None) -> Any:
        timeout = check_seconds(timeout)
        if self._p is None:
            self._p = await self._r._io.wrap(self._r._listener.wait(self.id, timeout))
        return value_of(self._p, self._r.settings.max_payload)

    def done(self) -> bool:
        if self._p is None:
            p = self._r._io.call(self._r._broker.get(self.id))
            if p.settled:
                self._p = p
        return self._p is not None

    def __repr__(self) -> str:
        return f"Handle({self.id!r})"


class Options:
    """Per-call options: ``target`` (``poll://any@<group>``), ``timeout`` (seconds),
    ``version`` (of the function: None runs the highest version the worker has; a number runs
    exactly that one, and the call waits, until its timeout, for a worker that has it) and
    ``retention`` (seconds the settled call and its steps are kept; default: the settings')."""

    def __init__(
        self,
        resonate: Resonate,
        target: str | None,
        timeout: float | None,
        version: int | None = None,
        retention: float | None = None,
    ):
        self._r = resonate
        self.group = parse_target(target) if target else resonate.group
        self.timeout = check_seconds(timeout)
        ret = check_seconds(retention, "retention")
        self.retention_ms = None if ret is None else round(ret * 1000)
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 1
        ):
            raise BadInput(f"version must be a positive integer, not {version!r}")
        self.version = version or 0

    def begin_rpc(
        self, promise_id: str, func: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Handle:
        """Invoke and return at once, the call durably stored. On the caller's own thread
        (broker/direct.py) once the first call has checked the server; else on the I/O loop."""
        with tracing.invoking(promise_id, name_of(func), self.group, False) as tc:
            direct = self._r._direct()
            if direct is None:
                begin = self._begin(promise_id, func, args, kwargs, wait=False, tc=tc)
                return self._r._io.call(begin)[0]
            _, p = direct.create(
                promise_id,
                self._param(promise_id, func, args, kwargs, tc),
                group=self.group,
                timeout_ms=None if self.timeout is None else seconds_to_ms(self.timeout),
                retention_ms=self.retention_ms,
            )
            return Handle(self._r, promise_id, p)

    def _param(
        self,
        promise_id: str,
        func: str | Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tc: dict[str, str] | None = None,
    ) -> bytes:
        check_root_id(promise_id)
        call = Call(name_of(func), list(args), kwargs, self.version, tc=tc)
        return call.encode(self._r.settings.max_payload)

    def rpc(
        self, promise_id: str, func: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        with tracing.invoking(promise_id, name_of(func), self.group, True) as tc:
            return self._r._io.call(self._rpc(promise_id, func, args, kwargs, tc)).result()

    def begin_rpc_many(
        self, func: str | Callable[..., Any], calls: Iterable[tuple[str, Sequence[Any]]]
    ) -> list[Handle]:
        """Invoke ``func`` once per ``(id, args)`` in one hop: the creates are pipelined.

        Returns the handles in order once every promise is stored. Each id follows the usual
        rule (an existing id attaches). Bounded like single calls: a huge batch waits for room.
        """
        items = list(calls)
        with tracing.invoking(f"{len(items)} calls", name_of(func), self.group, False) as tc:
            return self._r._io.call(self._begin_many(func, items, tc))

    async def _begin_many(
        self,
        func: str | Callable[..., Any],
        calls: list[tuple[str, Sequence[Any]]],
        tc: dict[str, str] | None,
    ) -> list[Handle]:
        r = self._r
        name = name_of(func)
        limit = r.settings.max_payload
        items = [
            (check_root_id(pid), Call(name, list(args), version=self.version, tc=tc).encode(limit))
            for pid, args in calls
        ]
        timeout_ms = None if self.timeout is None else seconds_to_ms(self.timeout)
        async with r._inflight:
            created = await r._broker.create_many(
                self.group, items, timeout_ms, retention_ms=self.retention_ms
            )
        return [Handle(r, p.id, p) for _, p in created]

    async def abegin_rpc(
        self, promise_id: str, func: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Handle:
        with tracing.invoking(promise_id, name_of(func), self.group, False) as tc:
            begin = self._begin(promise_id, func, args, kwargs, False, tc)
            return (await self._r._io.wrap(begin))[0]

    async def arpc(
        self, promise_id: str, func: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        with tracing.invoking(promise_id, name_of(func), self.group, True) as tc:
            return (await self._r._io.wrap(self._rpc(promise_id, func, args, kwargs, tc))).result()

    async def _rpc(
        self,
        promise_id: str,
        func: str | Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tc: dict[str, str] | None = None,
    ) -> Handle:
        """Create and wait in one coroutine on the I/O loop (one thread hop per call)."""
        handle, fut = await self._begin(promise_id, func, args, kwargs, True, tc)
        if fut is not None:
            handle._p = await self._until(promise_id, fut)
        return handle

    async def _until(self, promise_id: str, fut: asyncio.Future[Promise]) -> Promise:
        try:
            return await self._r._listener.until(promise_id, fut, None)
        finally:
            self._r._listener.forget(promise_id, fut)

    async def _begin(
        self,
        promise_id: str,
        func: str | Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: bool,
        tc: dict[str, str] | None = None,
    ) -> tuple[Handle, asyncio.Future[Promise] | None]:
        r = self._r
        param = self._param(promise_id, func, args, kwargs, tc)
        timeout_ms = None if self.timeout is None else seconds_to_ms(self.timeout)
        fut = r._listener.expect(promise_id) if wait else None
        try:
            async with r._inflight:
                _, p = await r._broker.create(
                    promise_id,
                    param,
                    group=self.group,
                    timeout_ms=timeout_ms,
                    listener=r._listener.client_id if wait else None,
                    retention_ms=self.retention_ms,
                )
        except BaseException:
            if fut is not None:
                r._listener.forget(promise_id, fut)
            raise
        if p.settled and fut is not None:
            r._listener.forget(promise_id, fut)
            fut = None
        if fut is not None:
            r._listener.arm(fut, p)
        return Handle(r, promise_id, p), fut
