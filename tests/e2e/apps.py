"""Worker apps for the e2e tests (loaded by `lb worker --app apps:register`).

The worker subprocesses get ``PYTHONPATH=<repo>/tests/e2e:<repo>`` so this module imports as
``apps``. Functions append lines to the journal file named by ``$LB_E2E_JOURNAL`` (outside
Redis, written with O_APPEND) so that tests can count real executions:
``<kind> <promise id> <worker> <attempt> <unix time>``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from lb.demo.app import register as register_demo
from lb.sdk import AsyncContext, Constant, Context, Never, Resonate


def journal(kind: str, pid: str, *rest: object) -> None:
    line = " ".join([kind, pid, *(str(r) for r in rest), f"{time.time():.3f}"]) + "\n"
    fd = os.open(os.environ["LB_E2E_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def journal_count(kind: str, pid: str) -> int:
    try:
        with open(os.environ["LB_E2E_JOURNAL"]) as f:
            return sum(1 for ln in f if ln.split()[:2] == [kind, pid])
    except FileNotFoundError:
        return 0


def record(ctx: Context, tag: str) -> str:
    """One journal line per execution; returns its tag (dedup, backlog)."""
    journal("record", ctx.id, ctx.worker, ctx.attempt)
    return tag


def grinder(ctx: Context, seconds: float) -> dict[str, Any]:
    """Blocking work in the slot (no durable step), then a result naming the worker.

    A SIGSTOPped holder that is resumed would finish this and try to settle it.
    """
    journal("start", ctx.id, ctx.worker, ctx.attempt)
    time.sleep(seconds)
    journal("finish", ctx.id, ctx.worker, ctx.attempt)
    return {"worker": ctx.worker, "attempts": ctx.attempt}


def _step(pid: str, n: int, worker: str) -> int:
    journal("step", pid, n, worker)
    return n * 10


def steps(ctx: Context, pause: float) -> list[int]:
    """Two checkpoints, a durable sleep, a third checkpoint."""
    out = [ctx.run(_step, ctx.id, 1, ctx.worker), ctx.run(_step, ctx.id, 2, ctx.worker)]
    journal("slept", ctx.id, ctx.worker, ctx.attempt)
    ctx.sleep(pause)
    out.append(ctx.run(_step, ctx.id, 3, ctx.worker))
    return out


def child(ctx: Context, n: int) -> int:
    journal("child", ctx.id, ctx.worker, ctx.attempt)
    return n * 2


def parent(ctx: Context, n: int) -> int:
    """Calls `child` twice on its own group (the worker's group)."""
    journal("parent", ctx.id, ctx.worker, ctx.attempt)
    return int(ctx.rpc("child", n)) + int(ctx.rpc("child", n + 1))


def traced(ctx: Context, n: int, group: str = "workers") -> int:
    """One of each step kind, for the tracing test: a checkpoint (which opens a span of its
    own, as user code would), a child on ``group``, a short durable sleep."""

    def inner(k: int) -> int:
        from opentelemetry import trace

        with trace.get_tracer("user").start_as_current_span("user.work"):
            return k + 1

    a = int(ctx.run(inner, n))
    # A child that outlasts the parent's suspension (a worker runs a call as soon as it reads
    # it: a no-op child could settle before the parent parks, and the parent would go on in
    # the same run instead of suspending and resuming, the shape the test follows).
    b = int(ctx.rpc("slow_child", n, target=f"poll://any@{group}"))
    ctx.sleep(0.05)
    return a + b


def slow_child(ctx: Context, n: int) -> int:
    time.sleep(0.3)
    return n * 2


def boom(ctx: Context, message: str) -> None:
    journal("boom", ctx.id, ctx.worker, ctx.attempt)
    raise ValueError(message)


def flaky(ctx: Context, failures: int) -> int:
    """Fails `failures` times (counted in the journal), then returns the number of tries."""
    tries = journal_count("flaky", ctx.id) + 1
    journal("flaky", ctx.id, ctx.worker, ctx.attempt)
    if tries <= failures:
        raise RuntimeError(f"flaky failure {tries}")
    return tries


async def async_sleeper(ctx: AsyncContext, seconds: float) -> dict[str, Any]:
    """An async def function with a durable sleep waited in the slot."""
    journal("asleep", ctx.id, ctx.worker, ctx.attempt)
    await ctx.sleep(seconds)
    journal("awake", ctx.id, ctx.worker, ctx.attempt)
    return {"worker": ctx.worker, "slept": seconds}


def ends_worker(ctx: Context, how: str) -> None:
    """Raises what would end its worker: SystemExit, KeyboardInterrupt, a bare BaseException."""
    journal("ends", ctx.id, ctx.worker, ctx.attempt)
    if how == "exit":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt
    raise BaseException("not an Exception")


def kills_worker(ctx: Context, how: str) -> None:
    """A poison call: kills the process running it (kill -9 of itself, or os._exit)."""
    journal("kills", ctx.id, ctx.worker, ctx.attempt)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


def hang(ctx: Context) -> None:
    """Never returns (a deadlock, a call with no timeout of its own)."""
    journal("hang", ctx.id, ctx.worker, ctx.attempt)
    time.sleep(3600)


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("a broken __str__")


def broken_str(ctx: Context) -> None:
    journal("broken", ctx.id, ctx.worker, ctx.attempt)
    raise BrokenStr


def register(resonate: Resonate) -> None:
    register_demo(resonate)  # compute_something, echo, fail
    for f in (record, grinder, steps, child, parent, boom):
        resonate.register(f, retry=Never())
    resonate.register(traced, retry=Never())
    resonate.register(slow_child, retry=Never())
    resonate.register(flaky, retry=Constant(0.1, 3))
    resonate.register(flaky, name="flaky_never", retry=Never())
    resonate.register(async_sleeper, retry=Never())
    resonate.register(ends_worker)  # the default retry policy: containment must not retry
    resonate.register(kills_worker)
    resonate.register(hang, retry=Never())
    resonate.register(broken_str, retry=Never())
