"""Liveness of the worker process itself, for container probes: ``lb worker --alive-file F``
and ``lb alive --file F``.

A liveness probe that asks Redis (``lb status``) fails on every pod at once when Redis is down
for a minute, and the restarted workers then have nothing to join; a worker rides out an
outage by itself. So the worker writes the time to ``F`` every second for as long as its
event loop makes progress (the same signal its honest heartbeat uses) and its machinery is
running, whatever Redis does; ``lb alive`` checks that file's age and touches no network.
Readiness (can this pod take work now?) is ``lb status``, which does need Redis.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import click

__all__ = ["alive", "keep_alive_file"]

PERIOD_S = 1.0


def keep_alive_file(resonate: Any, path: str) -> threading.Thread:
    """Write ``time.time()`` to ``path`` every PERIOD_S while ``resonate``'s worker lives and
    its loop ticks (atomically: a probe never reads half a file)."""

    def run() -> None:
        tmp = f"{path}.tmp"
        while not resonate._stopped.is_set():
            w = resonate.worker
            # Not joined yet (waiting for Redis, by design) counts as live; once joined, live
            # while the loop ticks.
            if w is None or time.monotonic() - w.watch.tick < w.watch.stall_after:
                try:
                    with open(tmp, "w") as f:
                        f.write(f"{time.time():.3f}\n")
                    os.replace(tmp, path)
                except OSError:
                    pass  # a full or read-only disk: the probe will say so
            resonate._stopped.wait(PERIOD_S)

    t = threading.Thread(target=run, name="lb-alive-file", daemon=True)
    t.start()
    return t


@click.command()
@click.option("--file", "path", default="/tmp/lb-alive", show_default=True, envvar="LB_ALIVE_FILE")
@click.option(
    "--max-age",
    type=click.FloatRange(1, 3600),
    default=15.0,
    show_default=True,
    help="Seconds: older than this, the worker is not live.",
)
def alive(path: str, max_age: float) -> None:
    """Exit 0 when the worker writing --file (lb worker --alive-file) is live; no Redis."""
    try:
        with open(path) as f:
            written = float(f.read().strip() or 0)
    except (OSError, ValueError) as exc:
        click.echo(f"not live: cannot read {path} ({exc})", err=True)
        sys.exit(1)
    age = time.time() - written
    if age > max_age:
        click.echo(f"not live: {path} is {age:.0f} s old (max {max_age:g} s)", err=True)
        sys.exit(1)
    click.echo(f"live ({age:.1f} s ago)")
