"""Functions served by the worker subprocesses of the recovery tests.

Each appends a line to the journal file named by ``$LB_TEST_JOURNAL`` (outside Redis) so the
tests can count real executions.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sdk import Context, Never, Resonate


def journal(*parts: object) -> None:
    line = " ".join(str(p) for p in parts) + "\n"
    fd = os.open(os.environ["LB_TEST_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def napper(ctx: Context, cost: float) -> dict[str, Any]:
    """Durable sleep, like the demo's compute_something."""
    journal("start", ctx.id, ctx.worker, ctx.attempt, f"{time.time():.3f}")
    ctx.sleep(cost)
    journal("done", ctx.id, ctx.worker, ctx.attempt, f"{time.time():.3f}")
    return {"worker": ctx.worker, "attempts": ctx.attempt}


def grinder(ctx: Context, seconds: float) -> dict[str, Any]:
    """Blocking work in the slot (no durable step), then a result: a zombie would finish it."""
    journal("start", ctx.id, ctx.worker, ctx.attempt, f"{time.time():.3f}")
    time.sleep(seconds)
    journal("finish", ctx.id, ctx.worker, ctx.attempt, f"{time.time():.3f}")
    return {"worker": ctx.worker, "attempts": ctx.attempt}


def once(ctx: Context, tag: str) -> str:
    journal("once", ctx.id, tag)
    return tag


def steps(ctx: Context) -> list[Any]:
    """Three checkpoints around a durable sleep: a takeover must not re-run settled ones."""
    out = []
    for n in (1, 2):
        out.append(ctx.run(_step, ctx.id, n, ctx.worker))
    ctx.sleep(3)
    out.append(ctx.run(_step, ctx.id, 3, ctx.worker))
    return out


def _step(pid: str, n: int, worker: str) -> int:
    journal("step", pid, n, worker)
    return n


def leaf(ctx: Context, n: int) -> int:
    return n * 2


def parent(ctx: Context, n: int) -> int:
    return int(ctx.rpc("leaf", n)) + int(ctx.rpc("leaf", n + 1))


def register(resonate: Resonate) -> None:
    for f in (napper, grinder, once, steps, leaf, parent):
        resonate.register(f, retry=Never())
