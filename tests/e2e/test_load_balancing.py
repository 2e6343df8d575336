"""Load balancing and crash takeover with real `lb worker` processes and a real kill -9."""

from __future__ import annotations

import time
from collections import Counter

from lb.sdk import Resonate

from .support import Fleet, wait_for

TTL = 2.0


def test_burst_spreads_and_kill_9_mid_sleep_waits_only_the_remaining_time(
    fleet: Fleet, client: Resonate
) -> None:
    """Three workers (2 slots, ttl 2 s) get 12 `compute_something` calls of 1-4 s from one SDK
    client. Once every worker has started something, the worker holding the most tasks is
    kill -9ed mid-sleep. All 12 resolve; the tasks it held finish on another worker with
    attempts >= 2, and each finishes about `cost` after it FIRST started (the durable sleep's
    deadline survives the crash: only the remaining time is waited), not cost after the
    takeover. No worker ran more than 8 of the 12 before the kill (capacity-based claiming).

    The long calls are sent first so that the 4 surviving slots drain the short backlog quickly
    and the takeover delay stays within the bound (takeovers only use free slots)."""
    for i in range(3):
        fleet.start(f"w{i}", concurrency=2, ttl=TTL, wait=False)
    for i in range(3):
        fleet.wait_joined(f"w{i}")

    costs = {f"lb-{i:02d}": c for i, c in enumerate([4, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1])}
    handles = {
        pid: client.begin_rpc(pid, "compute_something", pid, cost) for pid, cost in costs.items()
    }

    wait_for(
        lambda: all(fleet[f"w{i}"].events("start") for i in range(3)),
        30,
        lambda: "not every worker started something\n" + fleet.dump(),
    )
    time.sleep(0.3)  # let the held calls get into their sleep

    held: dict[str, set[str]] = {}
    started_before_kill: Counter[str] = Counter()
    for name, w in fleet.workers.items():
        started = {e.id for e in w.events("start")}
        started_before_kill[name] = len(started)
        held[name] = started - {e.id for e in w.events("done")}
    victim = max(held, key=lambda n: len(held[n]))
    victim_held = set(held[victim])
    assert victim_held, f"no worker holds anything: {held}"
    fleet[victim].proc.kill()
    fleet[victim].proc.wait(timeout=30)

    assert max(started_before_kill.values()) <= 8, f"burst not spread: {started_before_kill}"

    results = {pid: h.result(timeout=120) for pid, h in handles.items()}
    states = {pid: client.promise(pid).state for pid in costs}
    assert set(states.values()) == {"resolved"}, states
    assert {pid: r["id"] for pid, r in results.items()} == {pid: pid for pid in costs}

    report = []
    for pid in sorted(victim_held):
        r = results[pid]
        assert r["worker"] != victim, f"{pid} was settled by the killed worker: {r}"
        assert r["attempts"] >= 2, f"{pid} held by {victim} but not taken over: {r}"
        assert not fleet[victim].events("done", pid), f"killed worker finished {pid}"
        first_start = min(e.at for _, e in fleet.events("start", pid))
        dones = fleet.events("done", pid)
        assert len(dones) == 1, f"{pid} done {len(dones)} times: {dones}"
        finisher, done = dones[0]
        assert finisher == r["worker"]
        span, cost = done.at - first_start, costs[pid]
        report.append(
            f"{pid}: cost={cost}s span={span:.2f}s by {finisher} attempts={r['attempts']}"
        )
        assert span < cost + TTL * 2 + 3, f"takeover waited more than the remaining time: {report}"
        assert span > cost - 0.5, f"durable sleep cut short: {report}"
    print("\n".join([f"victim={victim} held={sorted(victim_held)}", *report]))
