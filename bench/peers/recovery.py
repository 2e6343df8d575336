"""Optional kill -9 recovery measurement (``python -m bench.peers --recovery``).

Two workers run; one ``sleeper`` task starts (it RPUSHes its pid to
``lbbench:starts``); the worker process group holding it is SIGKILLed; we time
until a task start is recorded again (another worker resumed it).

Peer defaults all redeliver after a minute or more, or never, so their
"default" entry reports the documented behaviour; the "aggressive" entry is
measured with the most aggressive documented knobs (set by each peer module
when ``LB_BENCH_RECOVERY=aggressive``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.peers.common import ENV_RECOVERY, STARTS_KEY, Driver, Resp, Workers
from bench.peers.runner import fresh, wait_ready

CAP_S = 45.0
SLEEP_S = 2.0


def _wait_start(conn: Resp, count: int, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if conn.call("LLEN", STARTS_KEY) >= count:
            return True
        time.sleep(0.01)
    return False


def one_recovery(driver: Driver, conn: Resp, logdir: Path, tag: str, cap: float) -> float | None:
    """Seconds from SIGKILL to the task starting again; None if not within ``cap``."""
    fresh(driver, conn)
    cmds = [driver.worker_cmd(0), driver.worker_cmd(1)]
    with Workers(cmds, logdir, tag) as workers:
        wait_ready(driver, workers, 2)
        driver.enqueue_sleeper(SLEEP_S, aggressive=os.environ[ENV_RECOVERY] == "aggressive")
        if not _wait_start(conn, 1, 30):
            raise TimeoutError("sleeper task never started")
        pid = int(conn.call("LINDEX", STARTS_KEY, 0))
        index = workers.group_of(pid)
        if index is None:
            raise RuntimeError(f"pid {pid} is not in a worker process group")
        killed_at = time.perf_counter()
        workers.kill(index)
        if _wait_start(conn, 2, cap):
            return time.perf_counter() - killed_at
        return None


def measure_recovery(driver: Driver, conn: Resp, logdir: Path, peer: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("default", "aggressive"):
        spec = driver.recovery.get(mode, {})
        entry: dict[str, Any] = {"settings": spec.get("settings", "?")}
        if not spec.get("measure", False):
            entry["documented"] = spec.get("documented", "?")
            entry["mark"] = "documented"
            out[mode] = entry
            continue
        os.environ[ENV_RECOVERY] = mode
        try:
            cap = float(spec.get("cap", CAP_S))
            seconds = one_recovery(driver, conn, logdir, f"{peer}-recovery-{mode}", cap)
            if seconds is None:
                entry["seconds"] = None
                entry["note"] = f"not resumed within {cap:.0f} s"
                entry["documented"] = spec.get("documented", "?")
            else:
                entry["seconds"] = round(seconds, 2)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            del os.environ[ENV_RECOVERY]
        out[mode] = entry
    return out
