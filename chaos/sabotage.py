"""Self-test of the checkers: corrupt a drained system on purpose (``--sabotage``).

Each corruption is one a broken broker could produce; a run with ``--sabotage`` must end with
the matching figures non-zero (and exit 1), which shows the checkers can see them at all.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack
import redis

from chaos.history import Invocation
from chaos.journal import ENV, append
from lb.broker.keys import Keys

__all__ = ["sabotage"]


def sabotage(url: str, prefix: str, journal: str, invs: dict[str, Invocation]) -> dict[str, Any]:
    keys = Keys(prefix)
    cl = redis.Redis.from_url(url)
    done: dict[str, Any] = {}
    try:
        acked = [i for i in invs.values() if i.acked_at and not i.canceled]
        echo = next(i for i in acked if i.func == "echo")
        fake = msgpack.packb({"echo": [999_999], "w": "cw9", "a": 1}, use_bin_type=True)
        cl.hset(keys.promise(echo.pid), "value", fake)  # a value no execution produced
        done["wrong_value"] = echo.pid
        effect = next(i for i in acked if i.func == "effect")
        cl.delete(keys.promise(effect.pid))  # an acknowledged invocation vanishes
        done["deleted"] = effect.pid
        chain = next((i for i in acked if i.func == "chain"), None)
        if chain is not None:  # step 2 runs again long after its checkpoint settled
            import os

            os.environ[ENV] = journal
            now = f"{time.time():.6f}"
            append("step", chain.pid, 2, "cw9", 99, now, now)
            done["step_rerun"] = f"{chain.pid}:2"
    finally:
        cl.close()
    return done
