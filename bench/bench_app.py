"""Functions the benchmark workers serve."""

from __future__ import annotations

import time
from typing import Any

from lb.sdk import Context, Never, Resonate


def echo(ctx: Context, x: Any) -> Any:
    return x


async def aecho(ctx: Context, x: Any) -> Any:
    return x


def sleepy(ctx: Context, cost: float) -> dict[str, Any]:
    ctx.sleep(cost)
    return {"worker": ctx.worker, "attempts": ctx.attempt}


def burn(ctx: Context, seconds: float) -> dict[str, Any]:
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += sum(range(1000))
    return {"worker": ctx.worker, "attempts": ctx.attempt}


def register(resonate: Resonate) -> None:
    resonate.register(echo, retry=Never())
    resonate.register(aecho, retry=Never())
    resonate.register(sleepy)
    resonate.register(burn, retry=Never())
