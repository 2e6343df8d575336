"""The worker: claims tasks of one group, runs registered functions, keeps them alive.

Guarantees:

* Capacity-based claiming: it reads at most its free slots per XREADGROUP (no prefetch), so a
  burst spreads over the group.
* Heartbeats run on their own thread every ttl/5; user code cannot starve them.
* Liveness is the one scanner's of the Redis (a lease; broker/liveness.py): a worker whose
  Redis connections are all gone is found within about half a second at any ttl, one silent
  past its ttl soon after; either's work goes back on the stream (its holder fenced), where
  any free slot reads it at once.
* A function that awaits an unsettled promise suspends and frees its slot.
* ``stop()`` (and SIGTERM in ``lb worker``) stops claiming, hands every running task back at once
  (a clean release, not a failure) and returns; a stalled function's late result is fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from lb.broker.client import Broker, translate_errors
from lb.broker.codec import encode
from lb.broker.direct import DirectFulfiller
from lb.broker.errors import (
    BadInput,
    Fenced,
    FunctionAborted,
    LbError,
    RedisUnavailable,
    UnknownFunction,
)
from lb.broker.heartbeat import Heartbeat
from lb.broker.liveness import Scanner
from lb.broker.records import Claimed
from lb.broker.settings import Settings
from lb.broker.tasks import TaskQueue
from lb.sdk import tracing
from lb.sdk.context import Execution, Lost, Suspend
from lb.sdk.encoding import Call, encode_error, safe_str
from lb.sdk.handoff import HandsBack, Settled
from lb.sdk.health import Health
from lb.sdk.invoke import invoke
from lb.sdk.isolation import Isolation
from lb.sdk.liveness import LoopWatch
from lb.sdk.loop import IoLoop
from lb.sdk.metrics import WorkerMetrics
from lb.sdk.outage import OutageLog
from lb.sdk.registry import Registry
from lb.sdk.riding import RidesOutages, redis_down
from lb.sdk.threads import DaemonPool
from lb.sdk.upkeep import Upkeep

__all__ = ["Worker", "worker_name"]

log = logging.getLogger("lb.worker")

# An idle worker's blocking read returns this often (new work wakes it at once).
READ_BLOCK_MS = 5000
# How long a call for a function this worker does not have waits before its next delivery.
PASS_ON_DELAY_MS = 1000
# The event loop must tick at least this often (fraction of the ttl) for heartbeats to renew.
LOOP_STALL_FRACTION = 0.5


def worker_name() -> str:
    return f"{socket.gethostname()[:20]}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class Worker(RidesOutages, Health, Upkeep, HandsBack):
    def __init__(
        self,
        settings: Settings,
        io: IoLoop,
        registry: Registry,
        group: str,
        pid: str | None = None,
        concurrency: int = 8,
        suspend_after: float = 60.0,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        metrics: bool = False,
    ) -> None:
        self.settings = settings
        self.io = io
        self.registry = registry
        self.group = group
        self.pid = pid or worker_name()
        self.slots = max(1, concurrency)
        self.suspend_after = suspend_after
        self.on_event = on_event
        self.metrics = WorkerMetrics(group, self.pid, self._metrics_state) if metrics else None
        self.broker = Broker(settings, client_name=self.pid)
        self.queue = TaskQueue(self.broker, group, self.pid)
        self.scanner = Scanner(self.broker, self.pid, self._take_silent)
        self.isolation = Isolation()
        self.running: dict[str, Execution] = {}
        self._held_lock = threading.Lock()
        self._held: dict[str, tuple[str, str, str]] = {}
        self._free = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._takeover_due = False  # the scanner flagged silent work of this group
        self.redis_ok_at = 0.0  # monotonic time of the last sweep Redis answered
        self.watch = LoopWatch(
            self.pid,
            self.settings.ttl_ms / 10000.0,
            self.settings.ttl_ms / 1000.0 * LOOP_STALL_FRACTION,
            lambda: [ex.call.func for ex in list(self.running.values()) if ex.is_async_fn],
            on_event,
        )
        self.heartbeat: Heartbeat | None = None
        self.outage = OutageLog(self._emit)
        self.died: BaseException | None = None
        self.on_death: Callable[[BaseException], None] | None = None
        self.completed = 0
        self.abandoned = 0  # threads of functions that outlived their call (see _mark_lost)
        self.pool = DaemonPool(self.slots)
        self._init_handback()

    def _emit(self, kind: str, **data: Any) -> None:
        if self.metrics is not None:
            self.metrics.event(kind, data)
        if self.on_event is None and not log.isEnabledFor(logging.INFO):
            return
        data.setdefault("worker", self.pid)
        if self.on_event:
            self.on_event(kind, data)  # the receiver reports it (the CLI: one log line)
        else:
            log.info("%s %s", kind, data)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the group and start claiming (returns at once; work happens on the loop).
        Refuses an evicting Redis (:class:`UnsafeRedisConfig`); every Redis failure here is
        one of lb's typed errors."""
        async with translate_errors():
            await self._join()

    async def _join(self) -> None:
        await self.broker.check_server()
        self._direct = DirectFulfiller(self.settings)  # slot threads' completions (handoff)
        await self.queue.ensure_group()
        for tid in await self.queue.requeue_own():  # a previous process of this name died
            self._emit("dead-letter", id=tid, reason="quarantined")
        sec, usec = await self.broker.redis.time()  # the Redis clock: lb keeps no clock of its own
        await self.queue.register(
            {
                "host": socket.gethostname(),
                "pid": str(os.getpid()),
                "slots": str(self.slots),
                "started": str(int(sec) * 1000 + int(usec) // 1000),
                "funcs": ",".join(self.registry.names()),
                "ttl": str(self.settings.ttl_ms),  # the scanner judges its silence by it
            },
            self.settings.ttl_ms,
        )
        self.heartbeat = Heartbeat(
            self.settings,
            self.group,
            self.pid,
            self.settings.ttl_ms / 5000.0,
            self._held_snapshot,
            self._lost_from_thread,
            progress=lambda: self.watch.tick,
            stall_after=self.watch.stall_after,
            on_stall=self.watch.stalled,
            idle_interval=self.settings.live_ms / 2000.0,  # two beats per live window
        )
        self.heartbeat.on_silent = self._silent_from_thread
        self.heartbeat.beat()
        self.heartbeat.start()
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self.watch.run(lambda: self._stopping)),
            loop.create_task(self._claim_loop()),
            loop.create_task(self._sweep_loop()),
            loop.create_task(self._scan_loop()),
            loop.create_task(self._done_ticker()),
        ]
        for t in self._loops:
            t.add_done_callback(self._loop_ended)
        self._emit("joined", group=self.group, slots=self.slots)

    async def stop(self) -> None:
        """Stop claiming, hand running tasks back at once, close connections."""
        self._stopping = True
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._take_done():  # calls settled by their slot threads: booked, not released
            await asyncio.sleep(0)
        for ex in list(self.running.values()):
            ex.lost = True
            try:
                await self.queue.release(ex.fence)
                self._emit("released", id=ex.id)
            except LbError:
                pass
            if ex.task is not None:
                ex.task.cancel()
        for c in list(self.isolation.parked):
            self.isolation.drop(c.task_id)
            with contextlib.suppress(LbError):
                await self.queue.release(c.fence(self.pid))
        with contextlib.suppress(LbError):  # a first delivery read but never started
            await self.queue.release_unread()
        with contextlib.suppress(LbError):  # consumers stay bounded by live workers
            await self.queue.forget_self()  # (kept if a hand-back failed)
        if self.heartbeat:
            await asyncio.to_thread(self.heartbeat.stop)  # its join must not block the loop
        self.pool.shutdown()
        if self._direct is not None:
            self._direct.close()
        await self.queue.close()
        await self.broker.close()

    # -- bookkeeping ----------------------------------------------------------------------
    def _held_snapshot(self) -> list[tuple[str, str, str]]:
        with self._held_lock:
            return list(self._held.values())

    def _hold(self, c: Claimed) -> None:
        """Record a held task for the heartbeat; the first one brings its next beat forward
        (an idle worker beats only every 1.5 ttl)."""
        with self._held_lock:
            first = not self._held
            self._held[c.task_id] = (c.base, c.task_id, c.version)
        if first and self.heartbeat is not None:
            self.heartbeat.nudge()

    @property
    def free(self) -> int:
        return 0 if self.isolation.blocks_claims else self.slots - len(self.running)

    # -- loops ----------------------------------------------------------------------------
    async def _guard(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, RedisUnavailable):
            self.outage.seen(exc)
        else:
            log.exception("%s failed", what)
        await asyncio.sleep(0.5)

    def _threads_busy(self) -> bool:
        return any(not ex.is_async_fn for ex in self.running.values())

    async def _claim_loop(self) -> None:
        while not self._stopping:
            if self._take_done():  # calls settled by slot threads free their slots first
                await asyncio.sleep(0)
            if self.free <= 0:
                if self._set_starved(True):
                    continue  # an outcome came in meanwhile
                self._free.clear()
                try:
                    await self._free.wait()
                finally:
                    self._set_starved(False)
                continue
            try:
                if self._takeover_due:
                    self._takeover_due = False
                    asked = self.free
                    if await self._take_silent(self.group, self.settings.ttl_ms) >= asked:
                        self._takeover_due = True  # every free slot went to it: maybe more
                    if self.free <= 0:
                        continue
                asked = self.free
                got = await self.queue.read(asked, block_ms=READ_BLOCK_MS)
                self.outage.answered()
                # Whether calls wait unread (sdk/handoff.py): a read that got fewer than it
                # asked for left none; one that got all of two or more probably left some. A
                # read for one slot (the others busy) tells nothing either way.
                n = sum(len(e) for e in got.values())
                if n < asked or asked > 1:
                    self._backlog = n >= asked
                for base, entries in got.items():
                    # A call's first deliveries start at once (no round trip), before the
                    # rest are acquired: a failed acquire cannot strand them unrun.
                    fast, slow = self.queue.split(base, entries)
                    self._took(fast, [])
                    if slow:
                        held, dead = await self.queue.acquire(base, slow)
                        self.outage.over()
                        self._took(held, dead)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the loop die
                await self._guard("claim", exc)

    def _took(self, held: list[Claimed], dead: list[str], silent: bool = False) -> None:
        """Start what a claim brought: a read, a completion's next claim, or (``silent``) a
        takeover pass, whose every task is a takeover of a holder silent past its ttl."""
        for tid in dead:
            self._emit("dead-letter", id=tid, reason="dead-lettered")
        for c in held:
            if silent:
                self._emit_takeover(c, "lapsed")
            elif c.previous_holder:  # requeued after its holder died (its connection was gone)
                self._emit_takeover(c, "gone")
            self._begin(c)
        self._run_alone()

    def _metrics_state(self) -> dict[str, Any]:
        """Scrape-time numbers (sdk/metrics.py), read from the metrics server's thread."""
        busy = len(self.running)
        hb = self.heartbeat
        return {
            "busy": busy,
            "free": max(0, self.slots - busy),
            "beats": hb.beats if hb else 0,
            "beat_failures": hb.failures if hb else 0,
            "redis_errors": self.outage.errors.copy(),
        }

    def _wants_next(self) -> bool:
        """Whether a completion should claim the next waiting call for the slot it frees:
        not while stopping, while silent work waits to be taken first, or while a suspect
        call must run alone (the claim loop decides those)."""
        return not self._stopping and not self._takeover_due and not self.isolation.blocks_claims

    def _emit_takeover(self, c: Claimed, cause: str) -> None:
        self._emit(
            "takeover", id=c.task_id, previous=c.previous_holder, attempt=1 + c.lapses,
            cause=cause,
        )  # fmt: skip

    def _silent_from_thread(self) -> None:
        self.io.loop.call_soon_threadsafe(self._on_silent)

    def _on_silent(self) -> None:
        """The scanner flagged silent work in this group: the claim loop takes what fits
        before it reads new work, now or as soon as a slot frees (orphans first)."""
        self._takeover_due = True
        self._free.set()

    async def _take_silent(self, group: str, ttl_ms: int) -> int:
        """The scanner found a silent holder: take its work of this group into free slots."""
        if group != self.group or self.free <= 0:
            return 0
        held, dead_ids = await self.queue.takeover(ttl_ms, self.free)
        self._took(held, dead_ids, silent=True)
        return len(held)

    # -- execution ------------------------------------------------------------------------
    def _begin(self, c: Claimed, alone: bool = False) -> None:
        if c.suspect and not alone:
            # Its last worker died running it beside others: it runs alone (sdk/isolation).
            self.isolation.park(c)
            self._hold(c)
            self._emit("isolated", id=c.task_id)
            return
        fence = c.fence(self.pid)
        try:
            call = Call.decode(c.param, self.settings.max_payload)
        except BadInput as exc:
            asyncio.get_running_loop().create_task(self._refuse(c, str(exc)))
            return
        try:
            fn = self.registry.get(call.func, call.version)
        except UnknownFunction:
            # Not this worker's function (a rolling deploy: old and new workers share a
            # group). Not a failure of the call: hand it back for a later delivery, which
            # another worker may serve; it waits at most until its promise's deadline.
            asyncio.get_running_loop().create_task(self._pass_on(c, call))
            return
        if self.metrics is not None:
            self.metrics.claimed(call.func, c.waited_s)
        ex = Execution(c, fence, call, self, is_async_fn=fn.is_async)
        if tracing.enabled():
            ex.tc = tracing.claimed(call.tc, c.task_id, self.pid, c.waited_s, c.previous_holder)
        self.running[c.task_id] = ex
        self._hold(c)
        if not fn.is_async:
            self._busy.set()  # its outcome may be queued for the loop (sdk/handoff.py)
        ex.task = asyncio.get_running_loop().create_task(self._execute(ex, fn.is_async))

    async def _pass_on(self, c: Claimed, call: Call) -> None:
        delay_ms = int(PASS_ON_DELAY_MS * random.uniform(0.8, 1.2))
        func = call.func + (f"@v{call.version}" if call.version else "")
        try:
            await self.queue.release(c.fence(self.pid), delay_ms=delay_ms)
            self._emit("passed-on", id=c.task_id, func=func, reason="not registered here")
        except LbError as exc:
            self._emit("passed-on", id=c.task_id, func=func, outcome=str(exc))

    async def _refuse(self, c: Claimed, reason: str) -> None:
        try:
            res = await self.queue.release(c.fence(self.pid), failed=True, reason=reason)
            self._emit("refused", id=c.task_id, reason=reason, outcome=res)
        except LbError as exc:
            self._emit("refused", id=c.task_id, reason=reason, outcome=str(exc))

    def _end(self, ex: Execution) -> None:
        if self.running.get(ex.id) is ex:  # a newer execution of the same task stays tracked
            del self.running[ex.id]
            with self._held_lock:
                self._held.pop(ex.id, None)
        self.isolation.ended(ex.id)
        if ex.next_claims is not None:
            self._took(*ex.next_claims)  # the slot just freed, refilled in the same trip
        self._run_alone()
        self._free.set()

    def _run_alone(self) -> None:
        """Start a parked suspect once nothing else runs here (never while stopping: stop()
        hands the parked ones back)."""
        if self._stopping:
            return
        while (c := self.isolation.next_alone(len(self.running))) is not None:
            self._begin(c, alone=True)
            if c.task_id in self.running:
                return
            self.isolation.ended(c.task_id)  # refused or passed on: the next one

    async def _invoke(self, ex: Execution, is_async: bool) -> Any:
        fn = self.registry.get(ex.call.func, ex.call.version).fn
        return await invoke(ex, fn, is_async, self.pool)

    def _booked(self, ex: Execution, s: Settled) -> str:
        """Book a call its slot thread settled (or was fenced settling): its outcome."""
        if s.fenced:
            self._emit("fenced", id=ex.id)
            return "fenced"
        self.outage.over()
        self._done_booked(ex, s.state, s.at)
        return s.state

    async def _execute(self, ex: Execution, is_async: bool) -> None:
        func = self.registry.get(ex.call.func, ex.call.version)
        attempt = 1 + ex.claimed.lapses
        self._emit("start", id=ex.id, func=ex.call.func, attempt=attempt)
        outcome = "error"
        retries = 0
        outage = [0.0, -1.0]  # [start, steps reached at the last failure] of this outage
        try:
            if ex.tc is not None:
                ex.span = tracing.start_run(ex.tc, ex.id, ex.call.func, self.pid, attempt)
            while True:
                try:
                    value = await self._invoke(ex, is_async)
                except Suspend as s:
                    ex.ending = True
                    try:
                        outcome = await self.queue.suspend(ex.fence, s.awaited)
                    except RedisUnavailable as exc:
                        ex.ending = False
                        # Nothing was parked: ride the outage out and re-run to this point.
                        if await self._ride_out(ex, exc, outage) == "rerun":
                            continue
                        return
                    if outcome in ("ready", "missing"):
                        ex.ending = False
                        # ready: an awaited promise settled meanwhile. missing: one is gone
                        # (purged, or never existed); the re-run meets it at its ctx call,
                        # which raises NotFound there.
                        continue
                    self._emit("suspended", id=ex.id, on=s.awaited)
                    outcome = "suspended"
                    return
                except (Lost, asyncio.CancelledError):
                    if not self._stopping and not ex.lost:  # _mark_lost told it already
                        ex.lost = True
                        self._emit("lost", id=ex.id)
                    outcome = "lost"
                    return
                except Exception as exc:
                    if redis_down(exc) and not ex.lost:
                        # A durable step could not reach Redis: not the function's failure, so
                        # its retry budget is untouched and its promise is not rejected...
                        verdict = await self._ride_out(ex, exc, outage)
                        if verdict == "rerun":
                            continue
                        if verdict == "stop":
                            return
                        # ...unless it persists while lb's Redis answers: the function's own.
                    retries += 1
                    # A step's final outcome (retried where it happened, or a rejected child)
                    # would only be replayed by a function retry: it ends the call.
                    final = any(exc is f for f in ex.final) or isinstance(exc, FunctionAborted)
                    delay = None if final else func.retry.delay(retries)
                    if delay is None or ex.lost:
                        ex.ending = True
                        data = encode_error(exc, self.settings.max_payload)
                        outcome = await self._settle_traced(ex, "rejected", data)
                        return
                    error = f"{type(exc).__name__}: {safe_str(exc)}"
                    self._emit("retry", id=ex.id, error=error, delay=delay)
                    await asyncio.sleep(delay)
                    ex.retries = retries
                    continue
                if type(value) is Settled:  # its slot thread settled it (sdk/handoff.py)
                    outcome = self._booked(ex, value)
                    return
                try:
                    data = encode(
                        value, self.settings.max_payload, what=f"result of {ex.call.func}"
                    )
                    state = "resolved"
                except Exception as exc:  # BadInput, or a value that fails as it is read
                    if not isinstance(exc, BadInput):
                        why = f"{type(exc).__name__}: {safe_str(exc)}"
                        exc = BadInput(f"result of {ex.call.func} cannot be encoded ({why})")
                    data, state = encode_error(exc, self.settings.max_payload), "rejected"
                ex.ending = True
                outcome = await self._settle_traced(ex, state, data)
                return
        except Fenced:
            outcome = "fenced"
            self._emit("fenced", id=ex.id)
        except LbError as exc:
            self._emit("error", id=ex.id, error=str(exc))
        finally:
            tracing.end(ex.span, outcome=outcome)
            self._end(ex)
