"""Per-peer measurement runner; executed with the peer venv's python.

    <venv>/bin/python -m bench.peers.runner --peer celery --redis-url URL ...

Prints one line ``LBRESULT {json}`` on stdout (the orchestrator parses it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.peers.common import (
    ENV_URL,
    RESULT_PREFIX,
    Driver,
    Resp,
    Workers,
    group_cpu,
    redis_cpu,
)

READY_TIMEOUT = 90.0


def wait_done(
    driver: Driver, conn: Resp, keys: list[str], timeout: float, workers: Workers
) -> tuple[float, int, float]:
    """Poll Redis until every key's result is stored.

    Returns (time of first observed completion, completions seen at that time,
    time of last completion). Checks the oldest pending keys first, in chunks.
    """
    pending = list(keys)
    done = 0
    first_t: float | None = None
    first_n = 0
    deadline = time.perf_counter() + timeout
    chunk_size = 1000
    while pending:
        chunk = pending[:chunk_size]
        replies = conn.pipeline([driver.done_cmd(k) for k in chunk])
        still = [k for k, r in zip(chunk, replies, strict=True) if not driver.is_done(r)]
        newly = len(chunk) - len(still)
        now = time.perf_counter()
        if newly:
            done += newly
            if first_t is None:
                first_t, first_n = now, done
        pending = still + pending[chunk_size:]
        if still:
            if now > deadline:
                workers.check_alive()
                raise TimeoutError(f"only {done}/{len(keys)} results after {timeout:.0f}s")
            time.sleep(0.002 if first_t is None else 0.005)
    end = time.perf_counter()
    return (first_t if first_t is not None else end), first_n, end


def wait_ready(driver: Driver, workers: Workers, count: int) -> None:
    """Block until ``count`` distinct worker processes have executed a task."""
    seen: set[int] = set()
    deadline = time.monotonic() + READY_TIMEOUT
    while len(seen) < count:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)}/{count} workers ready")
        seen.update(driver.whoami(2 * count))
        if len(seen) < count:
            time.sleep(0.05)


def fresh(driver: Driver, conn: Resp) -> None:
    conn.call("FLUSHALL")
    driver.after_flush()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def one_run(
    driver: Driver, conn: Resp, n: int, lat_n: int, logdir: Path, tag: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    timeout = max(120.0, n / 50)
    two = [driver.worker_cmd(0), driver.worker_cmd(1)]

    # 1+2: enqueue a backlog, then drain it with 2 freshly started workers
    fresh(driver, conn)
    start = time.perf_counter()
    keys = driver.enqueue(n)
    out["enqueue_per_s"] = n / (time.perf_counter() - start)
    with Workers(two, logdir, f"{tag}-drain") as workers:
        first_t, first_n, end = wait_done(driver, conn, keys, timeout, workers)
    # timed from the first stored result, so worker boot time is excluded
    if n > first_n and end > first_t:
        out["drain_per_s"] = (n - first_n) / (end - first_t)

    # 3: end-to-end with 2 ready workers
    fresh(driver, conn)
    with Workers(two, logdir, f"{tag}-e2e") as workers:
        wait_ready(driver, workers, 2)
        groups = [p.pid for p in workers.procs]  # each worker leads its own process group
        w0, r0 = group_cpu(groups), redis_cpu(conn)
        start = time.perf_counter()
        c0 = time.process_time()
        keys = driver.enqueue(n)
        client = time.process_time() - c0  # the sends only, as lb's bench counts its client
        _, _, end = wait_done(driver, conn, keys, timeout, workers)
        out["e2e_per_s"] = n / (end - start)
        out["cpu_client_us"] = client / n * 1e6
        out["cpu_workers_us"] = (group_cpu(groups) - w0) / n * 1e6
        out["cpu_redis_us"] = (redis_cpu(conn) - r0) / n * 1e6
        out["cpu_total_us"] = out["cpu_client_us"] + out["cpu_workers_us"] + out["cpu_redis_us"]

    # 4: sequential round trips against 1 idle worker
    fresh(driver, conn)
    with Workers([driver.worker_cmd(0)], logdir, f"{tag}-lat") as workers:
        wait_ready(driver, workers, 1)
        driver.latencies(min(20, lat_n))  # warm-up, discarded
        lats = driver.latencies(lat_n)
    out["lat_p50_ms"] = percentile(lats, 50) * 1000
    out["lat_p99_ms"] = percentile(lats, 99) * 1000
    return out


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pkg in packages:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.peers.runner")
    parser.add_argument("--peer", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lat-n", type=int, default=500)
    parser.add_argument("--recovery", action="store_true")
    parser.add_argument("--logdir", type=Path, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    os.environ[ENV_URL] = args.redis_url  # read by the peer module at import
    args.logdir.mkdir(parents=True, exist_ok=True)

    result: dict[str, Any] = {"runs": []}
    driver: Driver | None = None
    try:
        module = importlib.import_module(f"bench.peers.{args.peer}_peer")
        driver = module.DRIVER(args.redis_url)
        result["versions"] = versions(driver.packages)
        result["config"] = driver.config
        driver.open()
        conn = Resp(args.redis_url)
        for i in range(args.runs):
            run = one_run(driver, conn, args.n, args.lat_n, args.logdir, f"{args.peer}-r{i}")
            print(f"{args.peer} run {i + 1}: {json.dumps(run)}", file=sys.stderr, flush=True)
            result["runs"].append(run)
        if args.recovery:
            from bench.peers.recovery import measure_recovery

            result["recovery"] = measure_recovery(driver, conn, args.logdir, args.peer)
        conn.call("FLUSHALL")
    except BaseException as exc:  # report, never hang the orchestrator
        traceback.print_exc(file=sys.stderr)
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        if driver is not None:
            try:
                driver.close()
            except Exception as exc:
                print(f"close failed: {exc!r}", file=sys.stderr)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
