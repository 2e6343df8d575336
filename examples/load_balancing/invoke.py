"""The invoker of Resonate's load-balancing example, on lb.

python examples/load_balancing/invoke.py [--n 12] [--max-cost 10] [--wait]
"""

from __future__ import annotations

import argparse
import os
import random
import uuid

from lb.sdk import Resonate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--max-cost", type=int, default=10)
    ap.add_argument("--wait", action="store_true", help="wait and print who finished each")
    a = ap.parse_args()
    resonate = Resonate.remote(group="workers", prefix=os.environ.get("LB_PREFIX"))
    try:
        opts = resonate.options(target="poll://any@workers")
        handles = []
        for _ in range(a.n):
            pid = f"job-{uuid.uuid4().hex[:8]}"
            cost = random.randint(1, a.max_cost)
            handles.append(opts.begin_rpc(pid, "compute_something", pid, cost))
            print(f"invoked {pid} (cost {cost}s)")
        if a.wait:
            for h in handles:
                v = h.result()
                print(f"{v['id']}: worker={v['worker']} attempts={v['attempts']}")
    finally:
        resonate.stop()


if __name__ == "__main__":
    main()
