"""The load generator: a steady rate of invocations through the SDK client, fully recorded.

Each invocation ``c-<seed>-<n>`` draws its function and arguments from ``Random((seed, n))``,
so the workload is the same for the same seed whatever the timing. A create that times out or
fails is recorded open-ended and retried with the same id (and the same arguments) until one
is acknowledged. Some invocations are also re-sent with the same id and *different* arguments
(they must attach to the first execution), some are read back mid-flight, some canceled, and
some waited on through the listener.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from chaos.app import LINGER_RETENTION
from chaos.history import History, Invocation, Op, Outcome, args_key
from lb.broker.errors import LbError, NotFound, PromiseRejected
from lb.broker.records import Promise
from lb.sdk import Resonate

__all__ = ["Load", "outcome_of"]

CREATE_TIMEOUT = 2.0
GET_TIMEOUT = 5.0
GIVE_UP_AFTER = 60.0
MAX_LIVE = 3000


def outcome_of(p: Promise) -> Outcome:
    if p.pending:
        return ("pending",)
    return ("settled", p.state, p.value.hex())


def choose(seed: int, n: int) -> tuple[str, list[Any], random.Random]:
    """Function and arguments of invocation ``n`` (and its own random stream)."""
    rng = random.Random(f"inv-{seed}-{n}")
    r = rng.random()
    if r < 0.35:
        return "echo", [n, rng.randrange(1000)], rng
    if r < 0.55:
        return "nap", [rng.randint(50, 500)], rng
    if r < 0.85:
        return "effect", [n], rng
    if r < 0.975:
        return "chain", [n], rng
    if r < 0.985:
        return "linger", [n], rng
    if r < 0.995:
        return "saga", [n], rng
    if r < 0.9995:
        return "hog", [n], rng
    return "poison", [n], rng


class Load:
    def __init__(
        self,
        resonate: Resonate,
        seed: int,
        rate: float,
        history: History,
        short_timeouts: threading.Event,
    ) -> None:
        self.r = resonate
        self.seed = seed
        self.rate = rate
        self.h = history
        self.short_timeouts = short_timeouts
        self.opts = resonate.options(target="poll://any@chaos")
        self.linger_opts = resonate.options(target="poll://any@chaos", retention=LINGER_RETENTION)
        self.pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="chaos-get")
        self.stop = threading.Event()
        self.issued = 0
        self._live: set[asyncio.Task[None]] = set()

    # -- driving --------------------------------------------------------------------------
    def run(self, duration: float) -> None:
        """Issue invocations for ``duration`` seconds, then wait for every task to finish."""
        asyncio.run(self._main(duration))

    async def _main(self, duration: float) -> None:
        t0 = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = t0 + n / self.rate
            now = time.monotonic()
            if now - t0 >= duration:
                break
            if due > now:
                await asyncio.sleep(due - now)
                continue
            if len(self._live) < MAX_LIVE:
                task = asyncio.get_running_loop().create_task(self._invoke(n))
                self._live.add(task)
                task.add_done_callback(self._live.discard)
                self.issued += 1
            n += 1
        if self._live:
            await asyncio.gather(*list(self._live), return_exceptions=True)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one invocation -------------------------------------------------------------------
    async def _invoke(self, n: int) -> None:
        func, args, rng = choose(self.seed, n)
        pid = f"c-{self.seed}-{n}"
        inv = self.h.invocation(Invocation(pid, func, args, time.time()))
        if not await self._create_until_acked(inv, args, rng):
            return
        if func == "linger":  # purged soon after it settles: observe its outcome now
            await self._observe(inv)
            return
        if rng.random() < 0.05:  # fault 6: a client that retries although it was answered
            inv.retried_same_id += 1
            await self._create(inv, args, CREATE_TIMEOUT)
        if func in ("echo", "effect") and rng.random() < 0.06:  # same id, different args
            alt = [*args[:-1], -1 - rng.randrange(1000)] if func == "echo" else [-n - 1]
            inv.alt_args.append(alt)
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            await self._create(inv, alt, CREATE_TIMEOUT)
        if func in ("echo", "nap") and rng.random() < 0.03:
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            inv.canceled = True
            await self._sync_op(pid, "settle", "rejected_canceled", self._cancel)
        if rng.random() < 0.10:
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await self._sync_op(pid, "get", "", self.r.promise)
        if rng.random() < 0.03:
            await self._wait(pid)

    async def _create_until_acked(
        self, inv: Invocation, args: list[Any], rng: random.Random
    ) -> bool:
        deadline = time.monotonic() + GIVE_UP_AFTER
        while time.monotonic() < deadline:
            timeout = rng.uniform(0.001, 0.05) if self.short_timeouts.is_set() else CREATE_TIMEOUT
            if await self._create(inv, args, timeout):
                inv.acked_at = time.time()
                return True
            await asyncio.sleep(rng.uniform(0.05, 0.3))
        return False

    async def _create(self, inv: Invocation, args: list[Any], timeout: float) -> bool:
        inv.creates += 1
        op = Op(inv.pid, "create", args_key(inv.func, args), time.time())
        try:
            opts = self.linger_opts if inv.func == "linger" else self.opts
            handle = await asyncio.wait_for(opts.abegin_rpc(inv.pid, inv.func, *args), timeout)
        except (TimeoutError, LbError) as exc:
            op.error = f"{type(exc).__name__}: {exc}"[:200]
            self.h.add(op)
            return False
        except Exception as exc:  # an untyped error out of the SDK is a finding
            op.error = f"{type(exc).__name__}: {exc}"[:200]
            self.h.add(op)
            self.h.untyped(f"create {inv.pid}: {op.error}")
            return False
        op.end = time.time()
        # The record create returned: Handle keeps it only when it was already settled.
        p: Promise | None = getattr(handle, "_p", None)
        op.outcome = outcome_of(p) if p is not None else ("pending",)
        self.h.add(op)
        return True

    def _cancel(self, pid: str) -> Promise:
        return self.r.settle(pid, "rejected_canceled")

    async def _sync_op(
        self, pid: str, kind: str, arg: str, fn: Callable[[str], Promise]
    ) -> Outcome | None:
        op = Op(pid, kind, arg, time.time())
        loop = asyncio.get_running_loop()
        try:
            p = await asyncio.wait_for(loop.run_in_executor(self.pool, fn, pid), GET_TIMEOUT)
        except LbError as exc:
            if type(exc).__name__ == "NotFound":
                op.end, op.outcome = time.time(), ("notfound",)
            else:
                op.error = f"{type(exc).__name__}: {exc}"[:200]
            self.h.add(op)
            return op.outcome
        except (TimeoutError, concurrent.futures.CancelledError, RuntimeError) as exc:
            op.error = f"{type(exc).__name__}: {exc}"[:200]
            self.h.add(op)
            return None
        except Exception as exc:
            op.error = f"{type(exc).__name__}: {exc}"[:200]
            self.h.add(op)
            self.h.untyped(f"{kind} {pid}: {op.error}")
            return None
        op.end, op.outcome = time.time(), outcome_of(p)
        self.h.add(op)
        return op.outcome

    async def _wait(self, pid: str) -> None:
        """Wait through the listener (push); record whether the wake-up came."""
        t0 = time.time()
        rec: dict[str, Any] = {"pid": pid, "start": t0}
        try:
            await asyncio.wait_for(self._aresult(pid), 15.0)
            rec["outcome"] = "value"
        except LbError as exc:
            rec["outcome"] = type(exc).__name__
        except TimeoutError:
            rec["outcome"] = "timeout"
        except Exception as exc:
            rec["outcome"] = type(exc).__name__
            self.h.untyped(f"wait {pid}: {type(exc).__name__}: {exc}")
        rec["end"] = time.time()
        self.h.waits.append(rec)

    async def _observe(self, inv: Invocation) -> None:
        """Wait for the outcome of a call that will not outlive the drain (``linger``): the
        push of its settlement is the record the checkers get (``inv.observed``). Never
        re-creates: a purged id would run again."""
        loop = asyncio.get_running_loop()
        # No deadline of its own: under an overload a call may settle minutes later, and a
        # wait that gave up would see it purged (and count it lost) by the drain.
        while not self.stop.is_set():
            try:
                handle = await loop.run_in_executor(self.pool, self.r.get, inv.pid)
                await handle.aresult(timeout=30.0)
                inv.observed = "resolved"
                return
            except PromiseRejected as exc:
                inv.observed = f"rejected:{exc}"[:120]
                return
            except NotFound:
                inv.observed = "gone"  # purged before this client saw it settle
                return
            except LbError:
                pass
            except Exception as exc:
                self.h.untyped(f"observe {inv.pid}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)

    async def _aresult(self, pid: str) -> Any:
        loop = asyncio.get_running_loop()
        handle = await loop.run_in_executor(self.pool, self.r.get, pid)
        return await handle.aresult(timeout=12.0)
