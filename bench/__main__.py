"""``python -m bench``: lb and its Redis peers, same machine, same Redis, one table.

Runs ``bench.lb_bench`` and ``bench.peers`` (which installs the peers into its own virtual
environment, never into lb's) against one redis-server, then prints each figure with the ratio
lb / peer (for latencies peer / lb, so > 1 always means lb is better).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from bench.peers.infra import PEERS
from lb.broker.embedded import EmbeddedRedis, find_redis_server, server_version

# (lb's key, the peers' key, label, higher is better). The headline: every system sends one
# call at a time (the peers' harness uses each one's idiomatic single send; lb a sync
# begin_rpc in a loop), workers at concurrency 8 (the peers' default thread count).
ROWS = [
    ("enqueue_one_per_s", "enqueue_per_s", "enqueue, one at a time /s", True),
    ("drain_per_s", "drain_per_s", "drain /s (2 workers)", True),
    ("e2e_one_per_s", "e2e_per_s", "end to end, 1-at-a-time /s", True),
    ("lat_p50_ms", "lat_p50_ms", "invoke->result p50 ms", False),
    ("lat_p99_ms", "lat_p99_ms", "invoke->result p99 ms", False),
    # CPU per invocation in the end-to-end run (client: its sends; workers: their process
    # groups, from /proc; Redis: INFO cpu), lower is better.
    ("cpu_client_us", "cpu_client_us", "CPU/call client us", False),
    ("cpu_workers_us", "cpu_workers_us", "CPU/call workers us", False),
    ("cpu_redis_us", "cpu_redis_us", "CPU/call Redis us", False),
    ("cpu_total_us", "cpu_total_us", "CPU/call total us", False),
]
# lb's own rows, printed apart: its batch API (no peer row: the peers' harness sends one at a
# time), other concurrencies and an async def, and CPU per invocation.
LB_ONLY = (
    "enqueue_batch_per_s",
    "e2e_batch_per_s",
    "hot_drain_per_s",
    "hot_drain_metrics_per_s",
    "metrics_cost_ratio",
    "hot_drain_traced_per_s",
    "tracing_cost_ratio",
    "bytes_per_pending_promise",
    "bytes_per_settled_promise",
    "redis_gb_per_day_at_1k_per_s",
    "redis_gb_steady_at_1k_per_s",
)


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=False)


def load(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError):
        return {}


def table(lb: dict[str, Any], peers: dict[str, Any]) -> str:
    names = [p for p in peers if isinstance(peers[p], dict)]
    head = f"{'figure':<28}{'lb':>10}" + "".join(f"{n:>18}" for n in names)
    lines = [
        f"Redis {lb.get('redis_version', '?')}, load average (1 min) during lb's runs "
        f"{_fmt(lb.get('load_avg_1m'))}; medians of each system's runs, lb's spread below",
        "",
        head,
        "-" * len(head),
    ]
    for key, peer_key, label, higher in ROWS:
        mine = lb.get(key)
        row = f"{label:<28}{_fmt(mine):>10}"
        for n in names:
            theirs = peers[n].get(peer_key)
            ratio = ""
            if isinstance(mine, int | float) and isinstance(theirs, int | float) and theirs > 0:
                r = mine / theirs if higher else theirs / mine
                ratio = f" ({r:.1f}x)"
            row += f"{_fmt(theirs) + ratio:>18}"
        lines.append(row)
    lines.append("")
    lines.append("ratios: lb/peer for rates, peer/lb for latencies (>1 = lb better)")
    lines.append("")
    lines.append("lb only (batch API, CPU per invocation at concurrency 8, other configurations):")
    shown = {k for k, _, _, _ in ROWS}
    for key in [*LB_ONLY, *sorted(k for k in lb if k not in LB_ONLY)]:
        if key in lb and key not in shown:
            lines.append(f"  lb {key}: {_fmt(lb[key])}")
    for n in names:
        if peers[n].get("error"):
            lines.append(f"{n}: error: {peers[n]['error']}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if v >= 100 else f"{v:.2f}"
    return "-" if v is None else str(v)


def pick_server() -> str:
    """$LB_REDIS_SERVER if set; else a system redis-server of version 7 or later (streaq needs
    Redis 7 FUNCTIONs); else whatever lb's embedded lookup finds."""
    if os.environ.get("LB_REDIS_SERVER"):
        return find_redis_server()
    for path in ("/usr/local/bin/redis-server", "/usr/bin/redis-server"):
        if os.access(path, os.X_OK) and _major(server_version(path)) >= 7:
            return path
    return find_redis_server()


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--peers", default=None, help="comma list (default: all)")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-recovery", action="store_true")
    ap.add_argument("--out", default="bench/last_run.json")
    ap.add_argument(
        "--peer-concurrency",
        default="",
        help="also run the peers at these worker concurrencies (comma list, e.g. 128: "
        "dramatiq threads, taskiq async tasks), each compared with lb's def at the same",
    )
    ap.add_argument(
        "--redis-server",
        default=None,
        help="redis-server binary (default: a system Redis 7 when installed, else the embedded)",
    )
    a = ap.parse_args()
    extra = [int(c) for c in a.peer_concurrency.split(",") if c.strip().isdigit()]
    tmp = tempfile.mkdtemp(prefix="lb-bench-")
    lb_json, peers_json = os.path.join(tmp, "lb.json"), os.path.join(tmp, "peers.json")
    server = EmbeddedRedis(appendfsync="everysec", binary=a.redis_server or pick_server())
    peer_list = a.peers.split(",") if a.peers else list(PEERS)
    skipped: dict[str, str] = {}
    if _major(server.version()) < 7 and "streaq" in peer_list:
        peer_list.remove("streaq")
        skipped["streaq"] = (
            f"skipped: streaq 7 loads Redis FUNCTIONs, Redis {server.version()} has none "
            "(install redis-server 7 or pass --redis-server)"
        )
    with server:
        cmd = [
            sys.executable,
            "-m",
            "bench.lb_bench",
            "--redis-url",
            server.url,
            "--size",
            str(a.size),
            "--runs",
            str(a.runs),
            "--json",
            lb_json,
        ]
        if a.skip_recovery:
            cmd.append("--skip-recovery")
        run(cmd)
        if not a.skip_peers:
            cmd = [
                sys.executable,
                "-m",
                "bench.peers",
                "--redis-url",
                server.url,
                "--size",
                str(a.size),
                "--runs",
                str(a.runs),
                "--json",
                peers_json,
            ]
            cmd += ["--peers", ",".join(peer_list)]
            run(cmd)
            for n in extra:
                run([*cmd, "--concurrency", str(n), "--json", f"{peers_json}.{n}"])
    lb, peers = load(lb_json), load(peers_json)
    for name, why in skipped.items():
        peers[name] = {"error": why}
    print(table(lb, peers))
    out: dict[str, Any] = {"lb": lb, "peers": peers}
    for n in extra:
        at_n = load(f"{peers_json}.{n}")
        out[f"peers_c{n}"] = at_n
        print(f"\nevery system at concurrency {n} (lb: def):")
        print(table(at_concurrency(lb, n), at_n))
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


def at_concurrency(lb: dict[str, Any], n: int) -> dict[str, Any]:
    """lb's figures for a def at concurrency ``n`` under the headline's (unsuffixed) keys."""
    if n == 8:
        return lb
    tag = f"_c{n}_echo"
    view = {k: v for k, v in lb.items() if not re.search(r"_c\d+_", k) and "_per_s" not in k}
    view.update({k[: -len(tag)]: v for k, v in lb.items() if k.endswith(tag)})
    return view


if __name__ == "__main__":
    main()
