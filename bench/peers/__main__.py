"""Benchmark peer task queues on Redis.

    python -m bench.peers [--peers celery,arq] [--size 20000] [--runs 3]
                          [--redis-url redis://127.0.0.1:6399/0] [--json PATH]

Peers run in their own venvs (``--venv``, default ``.bench-venv``) and are never
imported here: this process only orchestrates subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.peers.common import (
    ENV_CONCURRENCY,
    ENV_PIDFILE,
    RESULT_PREFIX,
    ROOT,
    read_pidfile,
    reap_groups,
    redis_version,
)
from bench.peers.infra import PEERS, RedisServer, ensure_venv, machine_info

METRICS = (
    "enqueue_per_s",
    "drain_per_s",
    "e2e_per_s",
    "lat_p50_ms",
    "lat_p99_ms",
    "cpu_client_us",
    "cpu_workers_us",
    "cpu_redis_us",
    "cpu_total_us",
)


def run_peer(
    peer: str, python: Path, url: str, n: int, args: argparse.Namespace, logdir: Path
) -> dict[str, Any]:
    """Run one peer's runner in its venv; always reap its processes."""
    pidfile = logdir / f"{peer}.pids"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env[ENV_PIDFILE] = str(pidfile)
    if args.concurrency:
        env[ENV_CONCURRENCY] = str(args.concurrency)
    cmd = [
        str(python),
        "-m",
        "bench.peers.runner",
        "--peer",
        peer,
        "--redis-url",
        url,
        "--n",
        str(n),
        "--runs",
        str(args.runs),
        "--lat-n",
        str(args.lat_n),
        "--logdir",
        str(logdir),
    ]
    if args.recovery:
        cmd.append("--recovery")
    errlog = logdir / f"{peer}.runner.log"
    with errlog.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        pgids = [proc.pid]
        try:
            out, _ = proc.communicate(timeout=args.peer_timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                out, _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            error = {"error": f"timed out after {args.peer_timeout}s"}
            out = (out or b"") + f"\n{RESULT_PREFIX}{json.dumps(error)}\n".encode()
        finally:
            pgids += read_pidfile(pidfile)
            reap_groups(pgids, str(python.parent.parent))
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(RESULT_PREFIX):
            return dict(json.loads(line[len(RESULT_PREFIX) :]))
    tail = errlog.read_text(errors="replace")[-800:]
    return {"error": f"runner exited {proc.returncode} without a result: {tail}"}


def summarize(raw: dict[str, Any], n: int, runs: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "version": raw.get("versions", {}),
        "config": raw.get("config", {}),
        "n": n,
        "runs": runs,
    }
    done = raw.get("runs", [])
    for metric in METRICS:
        values = [r[metric] for r in done if metric in r]
        entry[metric] = round(statistics.median(values), 2) if values else None
    entry["recovery"] = raw.get("recovery")
    entry["raw_runs"] = done
    if "error" in raw:
        entry["error"] = raw["error"]
    return entry


def fmt(value: object, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    head = ("peer", "N", "enqueue/s", "drain/s", "e2e/s", "p50 ms", "p99 ms", "version")
    rows = [head]
    for peer, e in results.items():
        main_pkg = e["version"].get(peer) or e["version"].get("saq") or ""
        rows.append(
            (
                peer,
                fmt(e["n"]),
                fmt(e["enqueue_per_s"]),
                fmt(e["drain_per_s"]),
                fmt(e["e2e_per_s"]),
                fmt(e["lat_p50_ms"], 2),
                fmt(e["lat_p99_ms"], 2),
                main_pkg,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for peer, e in results.items():
        if e.get("error"):
            lines.append(f"{peer}: ERROR {e['error'][:300]}")
        if e.get("recovery"):
            lines.append(f"{peer} recovery: {json.dumps(e['recovery'])}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=20000,
        help="tasks per throughput phase (slow peers use a fraction)",
    )
    parser.add_argument(
        "--full-size", action="store_true", help="use --size for every peer (no per-peer reduction)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--lat-n",
        type=int,
        help="latency round trips (default 500, scaled down with --size below 20000, min 50)",
    )
    parser.add_argument("--redis-url", help="use this Redis (it is FLUSHALLed!)")
    parser.add_argument(
        "--venv",
        type=Path,
        default=ROOT / ".bench-venv",
        help="directory holding one venv per peer",
    )
    parser.add_argument("--json", type=Path, help="write results here")
    parser.add_argument(
        "--recovery", action="store_true", help="also measure kill -9 recovery (slow)"
    )
    parser.add_argument("--peer-timeout", type=float, default=900.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="worker concurrency of every peer (dramatiq threads, taskiq async tasks); "
        "default: each peer's as before (dramatiq 8, taskiq 100)",
    )
    parser.add_argument("--logdir", type=Path, help="worker logs (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.lat_n is None:
        args.lat_n = min(500, max(50, args.size * 500 // 20000))
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        sys.exit(f"unknown peers: {unknown}; known: {list(PEERS)}")
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="lb-bench-logs-"))
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"logs: {logdir}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        url = args.redis_url
        if not url:
            url = stack.enter_context(RedisServer()).url
        rversion = redis_version(url)
        meta = {**machine_info(), "redis_version": rversion, "redis_url": url}
        print("machine: " + json.dumps(meta), flush=True)
        for peer in peers:
            info = PEERS[peer]
            n = args.size if args.full_size else max(1, int(args.size * info.scale))
            started = time.monotonic()
            try:
                python = ensure_venv(args.venv, peer, logdir / f"{peer}.pip.log")
                raw = run_peer(peer, python, url, n, args, logdir)
            except Exception as exc:
                raw = {"error": f"{type(exc).__name__}: {exc}"}
            entry = summarize(raw, n, args.runs)
            entry["redis_version"] = rversion
            entry["nproc"] = meta["nproc"]
            if n != args.size:
                entry["note"] = f"N reduced to {n} (scale {info.scale}) to fit the time budget"
            results[peer] = entry
            status = "ERROR " + entry["error"][:200] if entry.get("error") else "ok"
            print(f"{peer}: {status} ({time.monotonic() - started:.0f}s)", flush=True)
    print()
    print(table(results))
    reduced = [f"{p}={e['n']}" for p, e in results.items() if e.get("note")]
    if reduced:
        print(f"note: N reduced for slow peers ({', '.join(reduced)}); --full-size disables")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
