"""The functions the chaos workers serve (``--app chaos.app:register``).

Every function journals its start (``begin``) and returns who ran it (``w``) on which attempt
(``a``), so the checkers can tie a promise's value to a real execution.
"""

from __future__ import annotations

import os
import time
from typing import Any

from chaos.clock import install_jumps, real_time
from chaos.journal import append
from lb.sdk import AsyncContext, Constant, Context, Never, Resonate

__all__ = ["register"]


def _begin(ctx: Context, func: str) -> None:
    append("begin", ctx.id, func, ctx.attempt, ctx.worker, f"{real_time():.6f}")


def echo(ctx: Context, *args: Any) -> dict[str, Any]:
    """Returns its arguments: the value must always reflect the first accepted arguments."""
    _begin(ctx, "echo")
    return {"echo": list(args), "w": ctx.worker, "a": ctx.attempt}


def nap(ctx: Context, ms: int) -> dict[str, Any]:
    """Sleeps ``ms`` milliseconds in the slot (not durably)."""
    _begin(ctx, "nap")
    time.sleep(max(0, int(ms)) / 1000.0)
    return {"nap": ms, "w": ctx.worker, "a": ctx.attempt}


def effect(ctx: Context, token: int) -> dict[str, Any]:
    """A side effect outside Redis: one journal line naming (id, attempt, worker)."""
    _begin(ctx, "effect")
    append("eff", ctx.id, ctx.attempt, ctx.worker, f"{real_time():.6f}")
    return {"token": token, "w": ctx.worker, "a": ctx.attempt}


def _step(pid: str, n: int, worker: str, attempt: int) -> int:
    t0 = real_time()
    time.sleep(0.002)
    append("step", pid, n, worker, attempt, f"{t0:.6f}", f"{real_time():.6f}")
    return n


def chain(ctx: Context, token: int) -> dict[str, Any]:
    """Three checkpoints, a durable sleep and a child call on the group."""
    _begin(ctx, "chain")
    total = 0
    for n in (1, 2, 3):
        total += ctx.run(_step, ctx.id, n, ctx.worker, ctx.attempt)
    ctx.sleep(0.2)
    child = ctx.rpc("echo", token)
    return {"steps": total, "child": child.get("echo"), "w": ctx.worker, "a": ctx.attempt}


_FAILED_ONCE: set[str] = set()


def _flaky(pid: str) -> int:
    """Fails the first time this process runs it for ``pid``, then succeeds (a transient
    failure the step's own retry policy must absorb)."""
    if pid not in _FAILED_ONCE:
        _FAILED_ONCE.add(pid)
        raise ConnectionError(f"transient failure of {pid}")
    return 1


def saga(ctx: Context, token: int) -> dict[str, Any]:
    """The shapes the lifecycle review found: 20 sequential children (20 suspensions), 20
    durable sleeps, a step that fails and then succeeds, and a nested workflow (chain)."""
    _begin(ctx, "saga")
    total = 0
    for i in range(20):
        total += int(ctx.rpc("echo", i)["echo"][0])
    for _ in range(20):
        ctx.sleep(0.005)
    total += int(ctx.run(_flaky, ctx.id, ctx.options(retry=Constant(0.01, 3))))
    nested = ctx.rpc("chain", token)
    return {"saga": total, "nested": nested.get("steps"), "w": ctx.worker, "a": ctx.attempt}


LINGER_RETENTION = 2.0  # seconds: the per-call retention the load gives every linger call


def linger(ctx: Context, token: int) -> dict[str, Any]:
    """A workflow that outlives its own short retention (the load invokes it with
    ``retention=LINGER_RETENTION``): step 1 settles, then a child call of 3 s suspends the
    root, and the re-run after it must find step 1 still stored (a step is kept while its
    root is pending). ``slept`` marks each run that got past the child."""
    _begin(ctx, "linger")
    first = ctx.run(_step, ctx.id, 1, ctx.worker, ctx.attempt)
    ctx.rpc("nap", int(LINGER_RETENTION * 1500))
    append("slept", ctx.id, ctx.attempt, f"{real_time():.6f}")
    second = ctx.run(_step, ctx.id, 2, ctx.worker, ctx.attempt)
    return {"linger": first + second, "w": ctx.worker, "a": ctx.attempt}


async def hog(ctx: AsyncContext, token: int) -> dict[str, Any]:
    """Blocking code inside ``async def``: on its first try it holds the worker's event loop
    for 1.5 s (time.sleep, not asyncio.sleep). The worker must stop renewing what it holds
    (its loop does not progress), other workers take those tasks over, and nothing is lost."""
    append("begin", ctx.id, "hog", ctx.attempt, ctx.worker, f"{real_time():.6f}")
    if ctx.attempt == 1:
        time.sleep(1.5)  # blocks the loop on purpose: the point of this function
    await ctx.sleep(0.05)
    return {"hog": token, "w": ctx.worker, "a": ctx.attempt}


POISON_EXIT = 17  # the exit code of a worker a poison call killed (the harness restarts it)


def poison(ctx: Context, token: int) -> None:
    """A call that kills every worker that runs it (os._exit: a crash in native code, the
    OOM killer): it must be quarantined after max_deaths (2) deaths, not kill the fleet."""
    _begin(ctx, "poison")
    os._exit(POISON_EXIT)


def sink(ctx: Context, *args: Any, **kwargs: Any) -> int:
    """Accepts anything, returns a small value (used by the size-limit corpus cases)."""
    _begin(ctx, "sink")
    return len(args) + len(kwargs)


def register(resonate: Resonate) -> None:
    install_jumps()
    resonate.register(echo, retry=Never())
    resonate.register(nap, retry=Never())
    resonate.register(effect, retry=Never())
    resonate.register(chain)
    resonate.register(saga)
    resonate.register(linger)
    resonate.register(hog, retry=Never())
    resonate.register(sink, retry=Never())
    resonate.register(poison, retry=Never())
