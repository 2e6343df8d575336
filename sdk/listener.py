"""Client-side waiting: one inbox per client, filled by the settle scripts.

A waiting client registers itself as a listener of the promise (in the same script that
creates or reads it); when the promise settles, the settle script pushes the record to the
client's inbox list and one BLPOP loop here wakes the waiter - no polling. As a safety net
(an inbox lost in a Redis crash), waits older than a few seconds are re-checked with a GET, by
a task of its own and in pipelined chunks: the re-check never delays a push wake-up, however
many waiters there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import msgpack

from lb.broker.client import Broker, make_redis, translate_errors
from lb.broker.errors import LbError, NotFound, RedisUnavailable, Timeout
from lb.broker.keys import Keys
from lb.broker.records import Promise

__all__ = ["READ_PATIENCE_S", "Listener"]

READ_PATIENCE_S = 15.0  # how long a wait's first read rides out a Redis outage
RECHECK_CHUNK = 256  # GETs per pipelined chunk of the safety-net re-check
RECHECK_PAUSE_S = 0.1  # pause between chunks: at most ~2,500 re-check reads a second
RECHECK_FIRST_S = 2.0  # a wait is first re-checked this long after it began
RECHECK_MAX_S = 4.0  # longest interval between two re-checks of one wait
DEADLINE_SLACK_S = 0.005  # read a pending promise this long after its deadline
MAX_TIMER_S = 7 * 86400.0  # no deadline timer beyond a week (the re-checks cover those)


def _secs(seconds: float | None) -> str:
    """``0.999 s``, not ``0.9986104260000275s``."""
    return "no time" if seconds is None else f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"


class Listener:
    """Wakes coroutines waiting on promises; lives on the I/O loop."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.client_id = uuid.uuid4().hex
        self.inboxes = [Keys.inbox(b, self.client_id) for b in broker.keys.all_bases()]
        self.waiters: dict[str, list[tuple[asyncio.Future[Promise], float]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._rechecker: asyncio.Task[None] | None = None
        self._next_check: dict[str, tuple[float, float]] = {}  # id -> (due, interval)
        self._armed: set[asyncio.Future[Promise]] = set()  # waits whose promise was seen
        self._redis = make_redis(broker.settings, 2)

    def expect(self, promise_id: str) -> asyncio.Future[Promise]:
        """Register interest before the call that may settle the promise (no lost wake-up)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop())
        if self._rechecker is None or self._rechecker.done():
            self._rechecker = loop.create_task(self._recheck_loop())
        fut: asyncio.Future[Promise] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(promise_id, []).append((fut, time.monotonic()))
        return fut

    def arm(self, fut: asyncio.Future[Promise], p: Promise) -> None:
        """The promise of this wait exists (its create or first read returned ``p``): from now
        on a re-check that finds it gone ends the wait with :class:`NotFound` (a wait whose
        create is still in flight is never ended so). A pending ``p`` is also read again right
        at its deadline, so the wait ends then even if no worker or sweeper runs anywhere."""
        self._armed.add(fut)
        fut.add_done_callback(self._armed.discard)
        if p.pending and p.read_at:
            left = max(0.0, (p.timeout_at - p.read_at) / 1000.0) + DEADLINE_SLACK_S
            if left < MAX_TIMER_S:
                loop = asyncio.get_running_loop()
                loop.call_later(left, lambda: loop.create_task(self._recheck(p.id)))

    def forget(self, promise_id: str, fut: asyncio.Future[Promise]) -> None:
        lst = self.waiters.get(promise_id)
        if lst:
            lst[:] = [w for w in lst if w[0] is not fut]
            if not lst:
                del self.waiters[promise_id]

    def _deliver(self, p: Promise) -> None:
        for fut, _ in self.waiters.pop(p.id, []):
            if not fut.done():
                fut.set_result(p)

    async def wait(self, promise_id: str, timeout: float | None = None) -> Promise:
        """The settled promise; raises :class:`Timeout` after ``timeout`` s (promise untouched).

        A Redis outage (or the stale pooled connection a restart leaves behind) is ridden out
        for up to ``READ_PATIENCE_S`` or the timeout, whichever is first; past that the wait
        raises :class:`RedisUnavailable`. Once registered, the wait survives outages of any
        length (the inbox loop reconnects and re-checks by GET)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fut = self.expect(promise_id)
        try:
            p = await self._read(promise_id, deadline)
            if p.settled:
                return p
            self.arm(fut, p)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            return await self.until(promise_id, fut, left, asked=timeout)
        finally:
            self.forget(promise_id, fut)

    async def _read(self, promise_id: str, deadline: float | None) -> Promise:
        """GET + listener registration, retried through an outage (the read is idempotent)."""
        since = time.monotonic()
        delay = 0.05
        while True:
            try:
                return await self.broker.get(promise_id, listener=self.client_id)
            except RedisUnavailable:
                now = time.monotonic()
                if now - since > READ_PATIENCE_S or (deadline is not None and now >= deadline):
                    raise
                await asyncio.sleep(delay if deadline is None else min(delay, deadline - now))
                delay = min(1.0, delay * 2)

    async def until(
        self,
        promise_id: str,
        fut: asyncio.Future[Promise],
        timeout: float | None,
        asked: float | None = None,
    ) -> Promise:
        """Wait ``timeout`` s for ``fut``; the Timeout names ``asked`` (the caller's whole
        timeout, of which ``timeout`` is what is left), else ``timeout``."""
        try:
            async with asyncio.timeout(timeout):  # a cancel is never lost (3.11's wait_for
                return await asyncio.shield(fut)  # returned a value that came as it arrived)
        except TimeoutError:
            shown = _secs(asked if asked is not None else timeout)
            raise Timeout(f"promise {promise_id!r} not settled within {shown}") from None

    async def _loop(self) -> None:
        """The push path: BLPOP on this client's inboxes, nothing else."""
        while self.waiters:
            try:
                async with translate_errors():
                    item = await self._redis.blpop(self.inboxes, timeout=1)
                if item is not None:
                    rec = msgpack.unpackb(item[1], raw=True)
                    self._deliver(_from_inbox(rec))
            except asyncio.CancelledError:
                raise
            except (LbError, ValueError, msgpack.UnpackException):
                await asyncio.sleep(0.2)
        self._task = None

    async def _recheck_loop(self) -> None:
        """The safety net, beside the push path: a wait is read again (GET) 2 s after it
        began, then every RECHECK_MAX_S (so a vanished promise ends its waits with NotFound
        within a few seconds); at most RECHECK_CHUNK reads go out
        per RECHECK_PAUSE_S, pipelined, so 20,000 waiters cost Redis little."""
        while self.waiters:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            due = []
            for pid, lst in list(self.waiters.items()):
                if not lst:
                    continue
                first = min(t for _, t in lst) + RECHECK_FIRST_S
                at, every = self._next_check.get(pid, (first, 2.0))
                if at <= now:
                    due.append(pid)
                    every = min(RECHECK_MAX_S, every * 2)
                    at = now + every
                self._next_check[pid] = (at, every)
            for i in range(0, len(due), RECHECK_CHUNK):
                await asyncio.gather(
                    *(self._recheck(pid) for pid in due[i : i + RECHECK_CHUNK]),
                    return_exceptions=True,
                )
                await asyncio.sleep(RECHECK_PAUSE_S)
            for pid in [p for p in self._next_check if p not in self.waiters]:
                del self._next_check[pid]
        self._rechecker = None

    async def _recheck(self, pid: str) -> None:
        if pid not in self.waiters:
            return
        try:
            p = await self.broker.get(pid, listener=self.client_id)
        except NotFound:
            self._gone(pid)
            return
        except LbError:
            return
        if p.settled:
            self._deliver(p)

    def _gone(self, pid: str) -> None:
        """The promise of armed waits no longer exists: they end with NotFound."""
        lst = self.waiters.get(pid, [])
        for fut, _ in [w for w in lst if w[0] in self._armed]:
            if not fut.done():
                fut.set_exception(
                    NotFound(
                        f"promise {pid!r} no longer exists (Redis lost it: a restart without "
                        "persistence, a failover, eviction) or was purged after its retention"
                    )
                )
            self.forget(pid, fut)

    async def close(self) -> None:
        for task in (self._task, self._rechecker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self._redis.aclose(close_connection_pool=True)


def _from_inbox(rec: list[Any]) -> Promise:
    pid = rec[0].decode("utf-8", "surrogateescape")
    return Promise(
        id=pid,
        state=rec[1].decode(),
        param=b"",
        param_headers=b"",
        value=rec[2],
        value_headers=rec[3],
        tags={},
        timeout_at=0,
        created_at=0,
        settled_at=int(rec[4]),
    )
