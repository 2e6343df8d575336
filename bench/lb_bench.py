"""lb's side of the benchmarks: rates, latency, recovery, false takeovers, memory, ceiling.

Each measurement starts from an empty prefix on the same Redis; workers are real ``lb worker``
subprocesses. Prints one JSON object (``--json``) or a table. Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import redis

from lb.broker.client import Broker
from lb.broker.embedded import EmbeddedRedis
from lb.broker.keys import Keys
from lb.broker.settings import Settings
from lb.broker.tasks import TaskQueue
from lb.cli.common import lb_argv
from lb.sdk.encoding import Call
from lb.sdk.resonate import Resonate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_workers(
    url: str,
    prefix: str,
    n: int,
    concurrency: int,
    ttl: float = 5.0,
    group: str = "bench",
    extra: tuple[str, ...] = (),
) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "LB_REDIS_URL": url,
        "LB_PREFIX": prefix,
        "PYTHONPATH": ROOT + os.pathsep + os.path.join(ROOT, "bench"),
    }
    procs = []
    for i in range(n):
        procs.append(
            subprocess.Popen(
                [
                    *lb_argv(),
                    "worker",
                    "--group",
                    group,
                    "--quiet",
                    "--concurrency",
                    str(concurrency),
                    "--ttl",
                    str(ttl),
                    "--name",
                    f"bw{i}",
                    "--app",
                    "bench_app:register",
                    *extra,
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = r.zcard(Keys.workers(Keys(prefix).base(0), group))
        if live >= n:
            break
        time.sleep(0.05)
    r.close()
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def resolved(url: str, prefix: str) -> int:
    r = redis.Redis.from_url(url)
    try:
        return int(r.zcard(Keys.state_index(Keys(prefix).base(0), "resolved")))
    finally:
        r.close()


def _has_otel() -> bool:
    """The otel extra is installed (the traced row needs it, in the workers too)."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def wait_resolved(
    url: str,
    prefix: str,
    n: int,
    timeout: float = 300,
    procs: list[subprocess.Popen[bytes]] | None = None,
) -> float:
    """Until ``n`` calls resolved; fails at once when every worker in ``procs`` has exited
    (a worker that could not start, e.g. ``--trace`` without the otel extra)."""
    deadline = time.monotonic() + timeout
    while resolved(url, prefix) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {resolved(url, prefix)}/{n} settled")
        if procs and all(p.poll() is not None for p in procs):
            codes = [p.returncode for p in procs]
            raise RuntimeError(f"every worker exited (codes {codes}) with {n} calls to go")
        time.sleep(0.01)
    return time.monotonic()


def enqueue(r: Resonate, n: int, tag: str, func: str = "echo") -> float:
    """Invoke ``func`` n times with the batch API (fire and forget); returns seconds taken."""
    opts = r.options(target="poll://any@bench")

    t0 = time.monotonic()
    opts.begin_rpc_many(func, [(f"{tag}-{i}", (i,)) for i in range(n)])
    return time.monotonic() - t0


def enqueue_one(r: Resonate, n: int, tag: str, func: str = "echo") -> float:
    """Invoke ``func`` n times one at a time (sync ``begin_rpc`` in a loop, as a web handler or
    a script does, and as every peer's harness sends); returns seconds taken."""
    opts = r.options(target="poll://any@bench")
    t0 = time.monotonic()
    for i in range(n):
        opts.begin_rpc(f"{tag}-{i}", func, i)
    return time.monotonic() - t0


def _proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of processes, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _redis_cpu(url: str) -> float:
    r = redis.Redis.from_url(url)
    try:
        info: Any = r.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        r.close()


def rates(url: str, n: int, concurrency: int = 8, func: str = "echo") -> dict[str, float]:
    """One configuration (worker concurrency, ``echo`` a def or ``aecho`` an async def):
    one-at-a-time enqueue, drain of that backlog by 2 fresh workers, end to end with a
    one-at-a-time client (with CPU per invocation: client, workers, Redis), and the batch
    API's enqueue and end to end."""
    out: dict[str, float] = {}
    prefix = "b" + uuid.uuid4().hex[:6]
    r = Resonate.remote(url, group="bench", prefix=prefix)
    try:
        r.options(target="poll://any@bench").begin_rpc("warm", func, 0)  # connect, check
        used0 = _used_memory(url)
        out["enqueue_one_per_s"] = n / enqueue_one(r, n, "q", func)
        # Bytes per pending call: its promise, its task, its stream entry, index entries.
        out["bytes_per_pending_promise"] = (_used_memory(url) - used0) / n
        t0 = time.monotonic()
        procs = start_workers(url, prefix, 2, concurrency)
        try:
            t1 = wait_resolved(url, prefix, n + 1, procs=procs)
            out["drain_per_s"] = n / (t1 - t0)
        finally:
            stop(procs)
        out.update(memory(url, prefix, n, used0))
    finally:
        r.stop()
    for mode in ("one", "batch"):
        prefix = "b" + uuid.uuid4().hex[:6]
        procs = start_workers(url, prefix, 2, concurrency)
        r = Resonate.remote(url, group="bench", prefix=prefix)
        try:
            r.options(target="poll://any@bench").begin_rpc("warm", func, 0)
            wait_resolved(url, prefix, 1, procs=procs)
            pids = [p.pid for p in procs]
            c0, w0, r0 = time.process_time(), _proc_cpu(pids), _redis_cpu(url)
            t0 = time.monotonic()
            secs = (enqueue_one if mode == "one" else enqueue)(r, n, "e", func)
            c1 = time.process_time()  # the client's sends only (the peers' harness: the same)
            t1 = wait_resolved(url, prefix, n + 1, procs=procs)
            out[f"e2e_{mode}_per_s"] = n / (t1 - t0)
            if mode == "batch":
                out["enqueue_batch_per_s"] = n / secs
            else:
                out["cpu_client_us"] = (c1 - c0) / n * 1e6
                out["cpu_workers_us"] = (_proc_cpu(pids) - w0) / n * 1e6
                out["cpu_redis_us"] = (_redis_cpu(url) - r0) / n * 1e6
                out["cpu_total_us"] = out["cpu_client_us"] + out["cpu_workers_us"]
                out["cpu_total_us"] += out["cpu_redis_us"]
        finally:
            r.stop()
            stop(procs)
    return out


def hot_drain(url: str, n: int, metrics: bool, concurrency: int = 8, traced: bool = False) -> float:
    """Calls per second two running workers drain from a backlog of ``n`` (enqueued while
    they were stopped, SIGSTOP: no process start in the figure), with or without their
    metrics endpoint (``--metrics-port 0``): the cost of the metrics. ``traced``: the calls
    carry a trace context and the workers trace them (spans exported to /dev/null)."""
    prefix = "b" + uuid.uuid4().hex[:6]
    extra: tuple[str, ...] = ("--metrics-port", "0") if metrics else ()
    if traced:
        extra += ("--trace", "console", "--trace-file", os.devnull)
    procs = start_workers(url, prefix, 2, concurrency, extra=extra)
    r = Resonate.remote(url, group="bench", prefix=prefix)
    try:
        opts = r.options(target="poll://any@bench")
        opts.begin_rpc("warm", "echo", 0)
        wait_resolved(url, prefix, 1, procs=procs)
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        if traced:
            from opentelemetry.sdk.trace import TracerProvider

            from lb.sdk import tracing

            tracing.enable(TracerProvider())
        try:
            opts.begin_rpc_many("echo", [(f"h-{i}", (i,)) for i in range(n)])
        finally:
            if traced:
                tracing.disable()
        t0 = time.monotonic()
        for p in procs:
            p.send_signal(signal.SIGCONT)
        return n / (wait_resolved(url, prefix, n + 1, procs=procs) - t0)
    finally:
        r.stop()
        stop(procs)


def _used_memory(url: str) -> int:
    r = redis.Redis.from_url(url)
    try:
        return int(r.info("memory")["used_memory"])
    finally:
        r.close()


def memory(url: str, prefix: str, n: int, used0: int) -> dict[str, float]:
    """After ``n`` calls settled (``used0``: Redis memory before they were made): bytes per
    settled call, kept until its retention ends (value kept, arguments dropped, task
    completed, stream entry deleted); Redis memory for a day at 1,000 calls/s, and at the
    default retention's steady state (7 days: a week of calls held)."""
    r = redis.Redis.from_url(url)
    try:
        base = Keys(prefix).base(0)
        used = int(r.info("memory")["used_memory"])
        settled = (used - used0) / n
        days = Settings().retention_ms / 86_400_000
        return {
            "used_memory_mb": used / 2**20,
            "stream_len": int(r.xlen(Keys.stream(base, "bench"))),
            "bytes_per_promise": used / n,  # with the server's own baseline (older runs)
            "bytes_per_settled_promise": settled,
            "redis_gb_per_day_at_1k_per_s": settled * 1000 * 86400 / 2**30,
            "redis_gb_steady_at_1k_per_s": settled * 1000 * 86400 * days / 2**30,
        }
    finally:
        r.close()


def latency(url: str, count: int) -> dict[str, float]:
    prefix = "b" + uuid.uuid4().hex[:6]
    procs = start_workers(url, prefix, 1, 8)
    r = Resonate.remote(url, group="bench", prefix=prefix)
    try:
        opts = r.options(target="poll://any@bench")
        for i in range(20):
            opts.rpc(f"w{i}", "echo", i)
        samples = []
        for i in range(count):
            t0 = time.perf_counter()
            opts.rpc(f"l{i}", "echo", i)
            samples.append((time.perf_counter() - t0) * 1000)
        samples.sort()
        return {
            "lat_p50_ms": statistics.median(samples),
            "lat_p99_ms": samples[int(len(samples) * 0.99) - 1],
        }
    finally:
        r.stop()
        stop(procs)


def recovery(url: str, cost: float, ttl: float) -> dict[str, float]:
    """kill -9 the worker holding a ``cost`` s sleep; time to takeover and to completion."""
    prefix = "b" + uuid.uuid4().hex[:6]
    procs = start_workers(url, prefix, 2, 4, ttl=ttl)
    r = Resonate.remote(url, group="bench", prefix=prefix)
    rc = redis.Redis.from_url(url)
    tk = Keys(prefix).task("rec")
    try:
        t0 = time.monotonic()
        h = r.options(target="poll://any@bench").begin_rpc("rec", "sleepy", cost)
        while rc.hget(tk, "state") != b"acquired":
            time.sleep(0.005)
        holder = rc.hget(tk, "pid").decode()
        time.sleep(2.0)
        victim = procs[int(holder[2:])]
        victim.kill()
        t_kill = time.monotonic()
        while rc.hget(tk, "pid") in (holder.encode(), b""):
            time.sleep(0.005)
        t_take = time.monotonic()
        h.result(timeout=cost + 120)
        t_done = time.monotonic()
        return {"takeover_s": t_take - t_kill, "total_s": t_done - t0, "uninterrupted_s": cost}
    finally:
        rc.close()
        r.stop()
        stop(procs)


def false_takeovers(url: str, ttl: float) -> dict[str, float]:
    """A CPU-bound function busy for 3x the ttl on a healthy worker: attempts must stay 1."""
    prefix = "b" + uuid.uuid4().hex[:6]
    procs = start_workers(url, prefix, 2, 2, ttl=ttl)
    r = Resonate.remote(url, group="bench", prefix=prefix)
    try:
        v = r.options(target="poll://any@bench").rpc("cpu", "burn", 3 * ttl)
        return {"cpu_attempts": float(v["attempts"])}
    finally:
        r.stop()
        stop(procs)


async def _ceiling(url: str, n: int) -> float:
    """The rate Redis itself allows for lb's lifecycle: run create, read, acquire and fulfill
    pipelined (no user code, no client overhead to speak of), then divide a second by the
    server CPU time those commands took (INFO commandstats), per invocation."""
    prefix = "c" + uuid.uuid4().hex[:6]
    b = Broker(Settings.from_url(url, prefix=prefix))
    tq = TaskQueue(b, "bench", "ceil")
    await tq.ensure_group()
    param = Call("echo", [1]).encode(1 << 20)
    base = b.keys.base(0)
    await b.redis.config_resetstat()
    batch = 200
    for start in range(0, n, batch):
        await asyncio.gather(
            *(
                b.create(f"c{i}", param, group="bench", timeout_ms=60000)
                for i in range(start, min(n, start + batch))
            )
        )
        got = await tq.read(batch, 0)
        held, _ = await tq.acquire(base, got[base])
        await asyncio.gather(*(tq.fulfill(c.fence("ceil"), "resolved", b"\x01") for c in held))
    stats = await b.redis.info("commandstats")
    usec = sum(
        float(v["usec"])
        for k, v in stats.items()
        if k in ("cmdstat_evalsha", "cmdstat_xreadgroup", "cmdstat_eval")
    )
    await tq.close()
    await b.close()
    return n / (usec / 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis-url")
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-count", type=int, default=500)
    ap.add_argument("--recovery-cost", type=float, default=10.0, help="the durable sleep killed")
    ap.add_argument("--skip-recovery", action="store_true")
    ap.add_argument("--concurrency", default="8,128", help="worker concurrencies (comma list)")
    ap.add_argument("--funcs", default="echo,aecho", help="echo (a def), aecho (an async def)")
    ap.add_argument("--json")
    a = ap.parse_args()
    server = None
    url = a.redis_url
    if not url:
        server = EmbeddedRedis(appendfsync="everysec").start()
        url = server.url
    results: list[dict[str, float]] = []
    try:
        configs = [(int(c), f) for c in a.concurrency.split(",") for f in a.funcs.split(",")]
        for _ in range(a.runs):
            res: dict[str, float] = {}
            for conc, func in configs:
                tag = "" if (conc, func) == configs[0] else f"_c{conc}_{func}"
                res.update({k + tag: v for k, v in rates(url, a.size, conc, func).items()})
                redis.Redis.from_url(url).flushall()
            res["hot_drain_per_s"] = hot_drain(url, a.size, metrics=False)
            res["hot_drain_metrics_per_s"] = hot_drain(url, a.size, metrics=True)
            if _has_otel():
                res["hot_drain_traced_per_s"] = hot_drain(url, a.size, metrics=False, traced=True)
            res.update(latency(url, a.latency_count))
            res["ceiling_per_s"] = asyncio.run(_ceiling(url, a.size))
            res["load_avg_1m"] = os.getloadavg()[0]
            redis.Redis.from_url(url).flushall()
            results.append(res)
            print(json.dumps(res), file=sys.stderr)
        med: dict[str, Any] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        med.update(
            {
                f"{k}_spread": [min(r[k] for r in results), max(r[k] for r in results)]
                for k in results[0]
                if k.endswith("_per_s")
            }
        )
        if not a.skip_recovery:
            # kill -9 at three ttls: the holder's connection is gone at once, so the takeover
            # should not wait for the ttl (recovery_ttl<N>_takeover_s); total_s: the whole
            # interrupted durable sleep of --recovery-cost seconds.
            for label, ttl in (("ttl5", 5.0), ("ttl30", 30.0), ("ttl300", 300.0)):
                recs = [recovery(url, a.recovery_cost, ttl) for _ in range(a.runs)]
                for k in recs[0]:
                    values = [rec[k] for rec in recs]
                    med[f"recovery_{label}_{k}"] = statistics.median(values)
                    med[f"recovery_{label}_{k}_spread"] = [min(values), max(values)]
            med.update(false_takeovers(url, 1.0))
        med["metrics_cost_ratio"] = med["hot_drain_metrics_per_s"] / med["hot_drain_per_s"]
        if "hot_drain_traced_per_s" in med:
            med["tracing_cost_ratio"] = med["hot_drain_traced_per_s"] / med["hot_drain_per_s"]
        else:
            print("tracing rows skipped: pip install 'lb[otel]' to measure them", file=sys.stderr)
        med["redis_version"] = redis.Redis.from_url(url).info()["redis_version"]
        print(json.dumps(med, indent=2))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(med, f, indent=2)
    finally:
        if server:
            server.cleanup()


if __name__ == "__main__":
    main()
