"""``lb demo``: the load-balancing demo, end to end, on an embedded Redis.

Three worker subprocesses join group ``workers``; a dozen invocations of random cost go to
``poll://any@workers``; once work is spread, the worker holding the most tasks is killed with
SIGKILL. Every invocation must still settle: the demo ends with a summary line and exits 0 only
when nothing was lost.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import click
import redis

from lb.broker.embedded import EmbeddedRedis
from lb.broker.errors import LbError
from lb.broker.keys import Keys
from lb.cli.common import Seconds, handle_errors, lb_argv, settings_from
from lb.sdk.resonate import Resonate

__all__ = ["demo"]


def _pump(proc: subprocess.Popen[str], sink: list[str], quiet: threading.Event) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sink.append(line)
        if not quiet.is_set():
            click.echo("    " + line.rstrip())


@click.command()
@click.option("--workers", default=3, show_default=True, type=click.IntRange(2, 16))
@click.option("--calls", default=12, show_default=True, type=click.IntRange(1, 1000))
@click.option("--max-cost", default=8, show_default=True, type=click.IntRange(1, 60))
@click.option("--ttl", default=5.0, show_default=True, type=Seconds(0.5, 60))
@click.option("--seed", default=None, type=int, help="Seed for the costs.")
@click.option("--no-kill", is_flag=True, help="Do not kill a worker.")
@handle_errors
def demo(
    workers: int, calls: int, max_cost: int, ttl: float, seed: int | None, no_kill: bool
) -> None:
    """Run the load-balancing demo on an embedded Redis, kill a worker mid-task, check nothing
    was lost."""
    rng = random.Random(seed)
    server = EmbeddedRedis().start()
    name = os.path.basename(server.binary)  # redis-server, or valkey-server (lb[embedded])
    click.echo(f"embedded {name} {server.version()} at {server.url}")
    procs: list[subprocess.Popen[str]] = []
    lines: list[str] = []
    env = {**os.environ, "LB_REDIS_URL": server.url, "PYTHONUNBUFFERED": "1"}
    r: Resonate | None = None
    summary: str | None = None
    quiet = threading.Event()
    try:
        for i in range(workers):
            p = subprocess.Popen(
                [
                    *lb_argv(),
                    "worker",
                    "--group",
                    "workers",
                    "--concurrency",
                    "4",
                    "--ttl",
                    str(ttl),
                    "--name",
                    f"worker-{i + 1}",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append(p)
            threading.Thread(target=_pump, args=(p, lines, quiet), daemon=True).start()
        r = Resonate(settings_from(server.url), "workers")
        _wait_joined(lines, workers)
        t0 = time.monotonic()
        handles = []
        for n in range(calls):
            cost = rng.randint(1, max_cost)
            pid = f"demo-{n + 1}"
            handles.append((pid, cost, r.begin_rpc(pid, "compute_something", pid, cost)))
            click.echo(f"invoked {pid} cost={cost}s")
        pids = [pid for pid, _, _ in handles]
        killed = None if no_kill else _kill_busiest(procs, server.url, pids)
        results: dict[str, Any] = {}
        lost = []
        for pid, _cost, h in handles:
            try:
                results[pid] = h.result(timeout=max_cost + 6 * ttl + 30)
            except LbError as exc:
                lost.append(pid)
                click.echo(f"LOST {pid}: {exc}")
        elapsed = time.monotonic() - t0
        taken = [v for v in results.values() if int(v.get("attempts", 1)) > 1]
        spread: dict[str, int] = {}
        for v in results.values():
            spread[v["worker"]] = spread.get(v["worker"], 0) + 1
        click.echo("")
        for pid, v in results.items():
            click.echo(
                f"  {pid:<8} cost={v['cost']}s worker={v['worker']} attempts={v['attempts']}"
            )
        click.echo(f"spread at the end (completions): {_fmt_spread(spread)}")
        summary = (
            f"summary: completed={len(results)} taken_over={len(taken)} lost={len(lost)} "
            f"killed={killed or '-'} elapsed={elapsed:.1f}s"
        )
    finally:
        if r is not None:
            r.stop()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        server.cleanup()
        quiet.set()  # the workers' last lines are in: the summary is the last line
    if summary:
        click.echo(summary)
    if summary is None or "lost=0" not in summary:
        sys.exit(1)


def _wait_joined(lines: list[str], n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(" joined " in x for x in lines) < n:
        if time.monotonic() > deadline:
            raise LbError("workers did not start within 30 s:\n" + "".join(lines[-10:]))
        time.sleep(0.05)


def _holders(url: str, pids: list[str]) -> dict[str, str]:
    """Which worker holds each call right now, from Redis (the task's holder), not from logs."""
    keys = Keys(settings_from(url).prefix)
    r = redis.Redis.from_url(url)
    try:
        pipe = r.pipeline(transaction=False)
        for pid in pids:
            pipe.hmget(keys.task(pid), "state", "pid")
        rows: list[Any] = pipe.execute()
    finally:
        r.close()
    return {
        pid: row[1].decode()
        for pid, row in zip(pids, rows, strict=True)
        if row[0] == b"acquired" and row[1]
    }


def _fmt_spread(counts: dict[str, int]) -> str:
    return ", ".join(f"{w}={n}" for w, n in sorted(counts.items())) or "-"


def _kill_busiest(procs: list[subprocess.Popen[str]], url: str, pids: list[str]) -> str | None:
    """Wait until work has spread, then SIGKILL the worker holding the most calls."""
    counts = {f"worker-{i + 1}": 0 for i in range(len(procs))}
    deadline = time.monotonic() + 10
    held: dict[str, str] = {}
    while time.monotonic() < deadline:  # until every call is held (or 10 s)
        time.sleep(0.3)
        held = _holders(url, pids)
        if len(held) >= min(len(pids), 4 * len(procs)):
            break
    for w in held.values():
        counts[w] = counts.get(w, 0) + 1
    click.echo(f"spread at the kill (calls held): {_fmt_spread(counts)}")
    name = max(counts, key=lambda k: counts[k])
    proc = procs[int(name.split("-")[1]) - 1]
    proc.kill()
    click.echo(f"*** killed {name} (kill -9) while it held {counts[name]} call(s) ***")
    return name
