"""Recovery end to end: real `lb worker` subprocesses, killed and stopped for real.

Scenarios from the SDK/CLI issue's "done when": kill -9 mid-sleep (work finishes elsewhere after
about the remaining time), a SIGSTOPped zombie that is resumed (settles nothing it lost), the
same id twice (runs once), a backlog with no workers (drained later), a one-slot worker whose
function calls its own group (finishes), checkpoints not re-run after a takeover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sdk import Resonate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


class Fleet:
    """Worker subprocesses with logs, all killed at the end of the test."""

    def __init__(self, url: str, prefix: str, tmp: Path) -> None:
        self.url, self.prefix, self.tmp = url, prefix, tmp
        self.journal = tmp / "journal.txt"
        self.journal.touch()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "LB_REDIS_URL": self.url,
            "LB_PREFIX": self.prefix,
            "LB_TEST_JOURNAL": str(self.journal),
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        }
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "worker",
                "--group",
                "g",
                "--name",
                name,
                "--app",
                "recovery_app:register",
                *args,
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = p
        wait_for(lambda: " joined " in self.log(name), 30, f"{name} did not start")
        return p

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def lines(self, kind: str) -> list[list[str]]:
        return [ln.split() for ln in self.journal.read_text().splitlines() if ln.startswith(kind)]

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait()


def wait_for(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(0.05)


@pytest.fixture
def fleet(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(redis_url, prefix, tmp_path)
    yield f
    f.stop_all()


@pytest.fixture
def client(redis_url: str, prefix: str) -> Iterator[Resonate]:
    r = Resonate.remote(redis_url, group="g", prefix=prefix)
    yield r
    r.stop()


def test_kill_9_mid_sleep_finishes_elsewhere_after_the_remaining_time(
    fleet: Fleet, client: Resonate
) -> None:
    """3 workers, 12 calls of 2-4 s; the busiest worker is kill -9ed mid-sleep. All settle; the
    taken-over calls finish on another worker about `cost` after they first started (only the
    remaining sleep is waited), not `cost` after the takeover."""
    for i in range(3):
        fleet.start(f"w{i}", "--concurrency", "2", "--ttl", "2")
    costs = {f"k{i}": 2 + i % 3 for i in range(12)}
    handles = {pid: client.begin_rpc(pid, "napper", cost) for pid, cost in costs.items()}
    wait_for(lambda: len(fleet.lines("start")) >= 6, 20, "work did not spread")
    time.sleep(0.5)
    per_worker: dict[str, int] = {}
    for ln in fleet.lines("start"):
        per_worker[ln[2]] = per_worker.get(ln[2], 0) + 1
    victim = max(per_worker, key=lambda k: per_worker[k])
    held = {ln[1] for ln in fleet.lines("start") if ln[2] == victim}
    held -= {ln[1] for ln in fleet.lines("done")}
    fleet.procs[victim].kill()
    results = {pid: h.result(timeout=60) for pid, h in handles.items()}
    assert len(results) == 12
    taken = [pid for pid in held if results[pid]["attempts"] > 1]
    assert taken, f"nothing held by {victim} was taken over: held={held}, results={results}"
    for pid in taken:
        assert results[pid]["worker"] != victim
        starts = [float(ln[4]) for ln in fleet.lines("start") if ln[1] == pid]
        done = [float(ln[4]) for ln in fleet.lines("done") if ln[1] == pid]
        span = max(done) - min(starts)
        assert span < costs[pid] + 2 * 2 + 3, f"{pid}: cost {costs[pid]} s but took {span:.1f} s"
        assert len(done) == 1, f"{pid} finished {len(done)} times"


def test_sigstopped_zombie_settles_nothing_it_lost(fleet: Fleet, client: Resonate) -> None:
    """A worker SIGSTOPped past its ttl loses its task to another worker; once resumed it
    finishes the function but its result is fenced: the promise holds the new holder's value."""
    z = fleet.start("zombie", "--concurrency", "1", "--ttl", "1")
    h = client.begin_rpc("z1", "grinder", 3.0)
    wait_for(lambda: fleet.lines("start"), 15, "zombie did not start the task")
    os.kill(z.pid, signal.SIGSTOP)
    fleet.start("healthy", "--concurrency", "1", "--ttl", "1")
    wait_for(lambda: any(ln[2] == "healthy" for ln in fleet.lines("start")), 20, "no takeover")
    os.kill(z.pid, signal.SIGCONT)
    value = h.result(timeout=30)
    assert value["worker"] == "healthy"
    wait_for(lambda: any(ln[2] == "zombie" for ln in fleet.lines("finish")), 15, "zombie idle")
    time.sleep(0.5)
    log = fleet.log("zombie")
    assert "done      id=z1" not in log, log
    assert ("fenced" in log) or ("lost" in log), log
    assert client.promise("z1").state == "resolved"
    assert client.get("z1").result()["worker"] == "healthy"


def test_same_id_twice_runs_once(
    fleet: Fleet, client: Resonate, redis_url: str, prefix: str
) -> None:
    """The same id through the SDK and through `lb invoke --id` runs once."""
    fleet.start("w0")
    assert client.rpc("dup", "once", "first") == "first"
    env = {**os.environ, "LB_REDIS_URL": redis_url, "LB_PREFIX": prefix}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "invoke",
            "--id",
            "dup",
            "--func",
            "once",
            "--args",
            '["second"]',
            "--target",
            "poll://any@g",
            "--wait",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dup", '"first"']
    assert len(fleet.lines("once")) == 1


def test_backlog_with_no_worker_drains_later(fleet: Fleet, client: Resonate) -> None:
    """Invocations made while no worker runs wait in the stream and complete once one starts."""
    handles = [client.begin_rpc(f"b{i}", "once", str(i)) for i in range(20)]
    time.sleep(0.3)
    assert not any(h.done() for h in handles)
    fleet.start("late", "--concurrency", "4")
    assert [h.result(timeout=30) for h in handles] == [str(i) for i in range(20)]


def test_one_slot_worker_calling_its_own_group(fleet: Fleet, client: Resonate) -> None:
    """--concurrency 1: the parent suspends on each child, freeing the slot; no deadlock."""
    fleet.start("solo", "--concurrency", "1")
    assert client.rpc("par", "parent", 5) == 10 + 12


def test_checkpoints_not_rerun_after_takeover(fleet: Fleet, client: Resonate) -> None:
    """Steps 1-2 settle, the worker dies during the sleep; the new holder replays 1-2 (no
    second execution) and runs only step 3."""
    a = fleet.start("a", "--concurrency", "1", "--ttl", "1")
    h = client.begin_rpc("s1", "steps")
    wait_for(lambda: len(fleet.lines("step")) >= 2, 15, "steps did not run")
    time.sleep(0.3)
    a.kill()
    fleet.start("b", "--concurrency", "1", "--ttl", "1")
    assert h.result(timeout=30) == [1, 2, 3]
    steps = fleet.lines("step")
    assert sorted(int(s[2]) for s in steps) == [1, 2, 3], steps
    assert [s[3] for s in steps if s[2] == "3"] == ["b"]


def test_sigterm_hands_work_back_at_once(fleet: Fleet, client: Resonate) -> None:
    """SIGTERM on a worker holding a long task: another worker starts it well before the ttl."""
    first = fleet.start("first", "--concurrency", "1", "--ttl", "30")
    h = client.begin_rpc("t1", "napper", 1.0)
    wait_for(lambda: fleet.lines("start"), 15, "not started")
    fleet.start("second", "--concurrency", "1", "--ttl", "30")
    t0 = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0
    assert h.result(timeout=20)["worker"] == "second"
    assert time.monotonic() - t0 < 15, "waited for the ttl instead of a clean hand-back"
