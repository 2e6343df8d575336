"""The load-balancing demo function, as in Resonate's load-balancing examples.

``compute_something(ctx, id, cost)`` sleeps ``cost`` seconds durably (a worker killed
mid-sleep is replaced by one that waits only the remaining time) and returns which worker
finished it and on which attempt. The worker's log shows each start and finish (one line
each: ``lb worker``'s start and done events), so the function prints nothing itself.
"""

from __future__ import annotations

from typing import Any

from lb.sdk import Context, Never, Resonate


def compute_something(ctx: Context, id: str, cost: float) -> dict[str, Any]:
    ctx.sleep(float(cost))
    return {"id": id, "cost": cost, "worker": ctx.worker, "attempts": ctx.attempt}


def echo(ctx: Context, *args: Any) -> Any:
    """Returns its arguments (a single argument as itself): the no-op of the benchmarks."""
    return args[0] if len(args) == 1 else list(args)


def fail(ctx: Context, message: str = "boom") -> None:
    raise RuntimeError(message)


def register(resonate: Resonate) -> None:
    resonate.register(compute_something)
    resonate.register(echo, retry=Never())
    resonate.register(fail, retry=Never())
