"""The worker of Resonate's load-balancing example, on lb.

Run several copies (three terminals):  python examples/load_balancing/worker.py
Redis comes from $LB_REDIS_URL (default redis://127.0.0.1:6379/0; `lb server` gives you one).
"""

from __future__ import annotations

import os
from typing import Any

from lb.sdk import Context, Resonate

resonate = Resonate.remote(group="workers", prefix=os.environ.get("LB_PREFIX"))


@resonate.register
def compute_something(ctx: Context, id: str, cost: float) -> dict[str, Any]:
    print(f"[{ctx.worker}] starting {id} (cost {cost}s, attempt {ctx.attempt})", flush=True)
    ctx.sleep(cost)  # durable: if this worker dies, another one waits only what remains
    print(f"[{ctx.worker}] finished {id}", flush=True)
    return {"id": id, "cost": cost, "worker": ctx.worker, "attempts": ctx.attempt}


if __name__ == "__main__":
    resonate.serve()  # until Ctrl-C / SIGTERM; unfinished tasks are handed back at once
