"""Nested calls on a one-slot worker, and checkpoints that survive a kill -9."""

from __future__ import annotations

from lb.sdk import Resonate

from .support import Fleet, wait_for


def test_one_slot_worker_runs_a_parent_that_calls_its_own_group(
    fleet: Fleet, client: Resonate
) -> None:
    """A worker with ONE slot runs `parent(n)`, which calls `child` twice on the same group via
    `ctx.rpc`. The parent suspends (freeing the slot) while each child runs, so nothing
    deadlocks: the result is child(n) + child(n+1), each child ran exactly once, and the parent
    re-ran from the top after each child settled (replaying the settled one)."""
    fleet.start("solo", concurrency=1, ttl=2)
    assert client.rpc("nest", "parent", 5) == 10 + 12

    children = fleet.journal_lines("child")
    assert sorted(r[1] for r in children) == ["nest:1", "nest:2"], children
    assert len(fleet.journal_lines("parent", "nest")) == 3, fleet.journal_lines("parent")
    assert {client.promise(c).state for c in ("nest:1", "nest:2")} == {"resolved"}
    assert fleet["solo"].events("suspended", "nest"), fleet["solo"].text()


def test_run_checkpoints_are_not_repeated_after_kill_9_and_takeover(
    fleet: Fleet, client: Resonate
) -> None:
    """`steps` checkpoints step 1 and step 2 with `ctx.run`, sleeps 3 s durably, then
    checkpoints step 3. Its worker is kill -9ed during the sleep; the other worker takes the
    task over and re-runs the function with replay: steps 1 and 2 return their stored values
    and are NOT executed again (one journal line each), step 3 runs once, on the survivor."""
    fleet.start("a", concurrency=1, ttl=1, wait=False)
    fleet.start("b", concurrency=1, ttl=1, wait=False)
    fleet.wait_joined("a")
    fleet.wait_joined("b")
    h = client.begin_rpc("chk", "steps", 3.0)

    slept = wait_for(lambda: fleet.journal_lines("slept", "chk"), 30, "steps never reached sleep")
    victim = slept[0][2]
    survivor = "b" if victim == "a" else "a"
    fleet[victim].proc.kill()
    fleet[victim].proc.wait(timeout=30)

    assert h.result(timeout=60) == [10, 20, 30]
    assert fleet[survivor].events("takeover", "chk"), fleet.dump()
    steps = fleet.journal_lines("step", "chk")
    assert sorted((r[2], r[3]) for r in steps) == [
        ("1", victim),
        ("2", victim),
        ("3", survivor),
    ], steps
    assert [r[2] for r in fleet.journal_lines("slept", "chk")] == [victim, survivor]
