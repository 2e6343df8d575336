"""Liveness at any ttl (the operations issue, item 11): ``python -m bench.liveness``.

Prints, on one Redis (AOF everysec; ``--redis-url`` or an embedded one; set
``LB_REDIS_SERVER`` for a system binary):

* kill -9 of the worker holding a call, to the call held again by the other worker (the
  moment its task names a new holder), at ttl 5, 30 and 300 s: median of ``--runs``;
* false takeovers: a CPU-bound plain ``def`` busy for 10 x ttl on a live worker (ttl 1 s)
  must finish on its first attempt;
* Redis CPU spent on liveness with ``--idle`` idle workers (in a few processes): the share of
  one core, from INFO's used_cpu_user + used_cpu_sys over ``--window`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import redis

from bench.lb_bench import ROOT, start_workers, stop
from lb.broker.embedded import EmbeddedRedis
from lb.broker.keys import Keys
from lb.sdk.resonate import Resonate


def recovery(url: str, ttl: float, scanner: bool) -> float:
    """Seconds from kill -9 of a call's holder to the call held by the other worker. The
    victim is the liveness scanner (its standby then takes over the scan first) or not:
    calls are sent until one is held by such a worker."""
    prefix = "l" + uuid.uuid4().hex[:6]
    procs = start_workers(url, prefix, 2, 4, ttl=ttl)
    r = Resonate.remote(url, group="bench", prefix=prefix)
    rc = redis.Redis.from_url(url)
    keys = Keys(prefix)
    try:
        for n in range(3):  # 2 workers x 4 slots: the survivor keeps a free slot
            tk = keys.task(f"rec{n}")
            r.options(target="poll://any@bench").begin_rpc(f"rec{n}", "sleepy", 30.0)
            while rc.hget(tk, "state") != b"acquired":
                time.sleep(0.002)
            holder = rc.hget(tk, "pid")
            if (rc.get(Keys.scan_lease(keys.base(0))) == holder) == scanner:
                break
        else:
            return recovery(url, ttl, scanner)  # none landed on the wanted victim: again
        time.sleep(1.0)
        procs[int(holder.decode()[2:])].kill()
        t_kill = time.monotonic()
        while True:
            state, pid = rc.hmget(tk, "state", "pid")
            if state == b"acquired" and pid not in (holder, b""):
                return time.monotonic() - t_kill
            if time.monotonic() - t_kill > 3 * ttl + 60:
                raise TimeoutError(f"no recovery after {3 * ttl + 60} s at ttl {ttl}")
            time.sleep(0.002)
    finally:
        rc.close()
        r.stop()
        stop(procs)


def cpu_bound_attempts(url: str, ttl: float = 1.0) -> int:
    prefix = "l" + uuid.uuid4().hex[:6]
    procs = start_workers(url, prefix, 2, 2, ttl=ttl)
    r = Resonate.remote(url, group="bench", prefix=prefix)
    try:
        v = r.options(target="poll://any@bench").rpc("cpu", "burn", 10 * ttl)
        return int(v["attempts"])
    finally:
        r.stop()
        stop(procs)


_IDLE = """
import sys, threading
from lb.broker.settings import Settings
from lb.sdk.resonate import Resonate
url, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ws = []
for i in range(n):
    r = Resonate(Settings.from_url(url, prefix=prefix, ttl_ms=5000), "idle",
                 pid=f"idle-{sys.argv[4]}-{i}", concurrency=1)
    r.register(lambda ctx: None, name="noop")
    r.start()
    ws.append(r)
print("up", flush=True)
threading.Event().wait()
"""


def _cpu(rc: redis.Redis) -> float:
    info: Any = rc.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def idle_cost(url: str, workers: int, window: float) -> dict[str, float]:
    prefix = "l" + uuid.uuid4().hex[:6]
    per = 50
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _IDLE, url, prefix, str(min(per, workers - k)), str(k)],
            env=env,
            stdout=subprocess.PIPE,
        )
        for k in range(0, workers, per)
    ]
    rc = redis.Redis.from_url(url)
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == b"up"
        time.sleep(5.0)  # let start-up settle
        c0, t0 = _cpu(rc), time.monotonic()
        time.sleep(window)
        used = _cpu(rc) - c0
        return {
            "idle_workers": float(workers),
            "redis_cpu_pct": 100.0 * used / (time.monotonic() - t0),
        }
    finally:
        rc.close()
        for p in procs:
            p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis-url")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ttls", default="5,30,300")
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--json")
    a = ap.parse_args()
    server = None
    url = a.redis_url
    if not url:
        server = EmbeddedRedis(appendfsync="everysec").start()
        url = server.url
    out: dict[str, Any] = {"redis_version": redis.Redis.from_url(url).info()["redis_version"]}
    try:
        for ttl in (float(x) for x in a.ttls.split(",")):
            by = {was: [recovery(url, ttl, was) for _ in range(a.runs)] for was in (True, False)}
            runs = by[True] + by[False]
            out[f"kill9_to_resumed_ttl{ttl:g}_p50_s"] = round(statistics.median(runs), 3)
            for kind, was in (("scanner", True), ("other", False)):
                key = f"kill9_to_resumed_ttl{ttl:g}_{kind}_p50_s"
                out[key] = round(statistics.median(by[was]), 3)
            out[f"kill9_to_resumed_ttl{ttl:g}_runs_s"] = [round(x, 3) for x in runs]
            print(json.dumps({f"ttl {ttl:g}": by}), file=sys.stderr, flush=True)
        out["cpu_bound_10x_ttl_attempts"] = cpu_bound_attempts(url)
        if a.idle:
            out.update(idle_cost(url, a.idle, a.window))
        print(json.dumps(out, indent=2))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2)
    finally:
        if server:
            server.cleanup()


if __name__ == "__main__":
    main()
