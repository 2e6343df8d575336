"""Tests of the chaos harness: the linearizability checker on known histories (pure logic, no
Redis), the schedule's determinism, and one short end-to-end chaos run as a subprocess."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.checks import check_liveness
from chaos.history import Invocation
from chaos.linearizability import HOp, check_history, check_promise, hidden_ops
from chaos.schedule import ALL_KINDS, make_schedule
from lb.broker.records import Promise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INF = float("inf")
A = json.dumps(["echo", [1]])
B = json.dumps(["echo", [2]])


def create(arg: str, call: float, ret: float = INF, *result: str) -> HOp:
    return HOp("create", arg, call, ret, tuple(result) if result else None)


def get(call: float, ret: float, *result: str) -> HOp:
    return HOp("get", "", call, ret, tuple(result))


def settle(state: str, call: float, ret: float = INF, *result: str) -> HOp:
    return HOp("settle", state, call, ret, tuple(result) if result else None)


def echo_compatible(args: str, state: str, value: str) -> bool:
    """The value of an echo names its arguments: "v1" for A, "v2" for B."""
    return state != "resolved" or value == {A: "v1", B: "v2"}[args]


def ok(ops: list[HOp]) -> bool:
    return check_promise(ops + hidden_ops(ops), echo_compatible).ok


# -- histories that must pass ----------------------------------------------------------------
def test_create_then_reads_is_linearizable() -> None:
    h = [
        create(A, 0, 1, "pending"),
        get(2, 3, "pending"),
        get(4, 5, "settled", "resolved", "v1"),
        get(6, 7, "settled", "resolved", "v1"),
    ]
    assert ok(h)


def test_timed_out_create_may_or_may_not_have_happened() -> None:
    assert ok([create(A, 0), get(1, 2, "notfound")])
    assert ok([create(A, 0), get(1, 2, "settled", "resolved", "v1")])
    assert ok([create(A, 0), get(1, 2, "notfound"), get(3, 4, "pending")])


def test_retry_with_same_id_attaches() -> None:
    h = [
        create(A, 0),  # timed out
        create(A, 1, 2, "pending"),
        create(A, 3, 4, "settled", "resolved", "v1"),
        get(5, 6, "settled", "resolved", "v1"),
    ]
    assert ok(h)


def test_concurrent_creates_either_may_win() -> None:
    h = [
        create(A, 0, 3, "pending"),
        create(B, 1, 2, "pending"),
        get(4, 5, "settled", "resolved", "v2"),
    ]
    assert ok(h)


def test_cancel_racing_the_worker() -> None:
    won = [
        create(A, 0, 1, "pending"),
        settle("rejected_canceled", 2, 3, "settled", "rejected_canceled", ""),
        get(4, 5, "settled", "rejected_canceled", ""),
    ]
    lost = [
        create(A, 0, 1, "pending"),
        settle("rejected_canceled", 2, 3, "settled", "resolved", "v1"),
        get(4, 5, "settled", "resolved", "v1"),
    ]
    assert ok(won) and ok(lost)


def test_open_cancel_may_explain_a_canceled_read() -> None:
    assert ok(
        [
            create(A, 0, 1, "pending"),
            settle("rejected_canceled", 2),
            get(3, 4, "settled", "rejected_canceled", ""),
        ]
    )


# -- histories that must fail ------------------------------------------------------------------
def test_value_changing_between_reads_is_caught() -> None:
    h = [
        create(A, 0, 1, "pending"),
        get(2, 3, "settled", "resolved", "v1"),
        get(4, 5, "settled", "rejected", "x"),
    ]
    assert not ok(h)


def test_settled_promise_reading_pending_again_is_caught() -> None:
    h = [create(A, 0, 1, "pending"), get(2, 3, "settled", "resolved", "v1"), get(4, 5, "pending")]
    assert not ok(h)


def test_acknowledged_create_then_not_found_is_caught() -> None:
    assert not ok([create(A, 0, 1, "pending"), get(2, 3, "notfound")])


def test_second_arguments_winning_after_first_was_acknowledged_is_caught() -> None:
    h = [
        create(A, 0, 1, "pending"),
        create(B, 2, 3, "pending"),
        get(4, 5, "settled", "resolved", "v2"),
    ]
    assert not ok(h)


def test_cancel_changing_an_already_read_value_is_caught() -> None:
    h = [
        create(A, 0, 1, "pending"),
        get(2, 3, "settled", "resolved", "v1"),
        settle("rejected_canceled", 4, 5, "settled", "rejected_canceled", ""),
    ]
    assert not ok(h)


def test_canceled_without_any_cancel_is_caught() -> None:
    assert not ok([create(A, 0, 1, "pending"), get(2, 3, "settled", "rejected_canceled", "")])


def test_create_answering_settled_before_anything_settled_is_caught() -> None:
    h = [create(A, 0, 1, "settled", "resolved", "v1"), get(2, 3, "pending")]
    assert not ok(h)


def test_check_history_splits_per_promise() -> None:
    good = [create(A, 0, 1, "pending"), get(2, 3, "settled", "resolved", "v1")]
    bad = [create(A, 0, 1, "pending"), get(2, 3, "notfound")]
    failures = check_history({"g": good, "b": bad}, lambda pid: echo_compatible)
    assert set(failures) == {"b"}
    assert "no linearization" in failures["b"].reason


def test_reads_racing_a_settle_may_see_either_side() -> None:
    h = [
        create(A, 0, 1, "pending"),
        get(2, 10, "settled", "resolved", "v1"),
        get(3, 9, "pending"),
    ]
    assert ok(h)
    h2 = [*h[:1], get(2, 4, "settled", "resolved", "v1"), get(5, 6, "pending")]
    assert not ok(h2)


# -- the schedule -----------------------------------------------------------------------------
def test_schedule_is_seeded_and_covers_every_fault_in_a_long_run() -> None:
    a = make_schedule(7, 90, False, ["cw0", "cw1", "cw2"])
    assert a == make_schedule(7, 90, False, ["cw0", "cw1", "cw2"])
    assert a != make_schedule(8, 90, False, ["cw0", "cw1", "cw2"])
    assert {f.kind for f in a} == set(ALL_KINDS)
    assert all(x.end < y.start for x, y in itertools.pairwise(a))


# -- one short run, end to end -----------------------------------------------------------------
@pytest.mark.timeout(180)
def test_short_chaos_run_passes(tmp_path: Path) -> None:
    out = str(tmp_path / "chaos.json")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos",
            "--seed",
            "1",
            "--duration",
            "20",
            "--short",
            "--json",
            out,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    tail = (p.stdout + p.stderr)[-4000:]
    verdict = [ln for ln in tail.splitlines() if ln.startswith("RESULT")]
    assert p.returncode == 0, "\n".join(verdict) + "\n" + tail
    with open(out) as fh:
        res = json.load(fh)
    assert res["invocations"]["acked"] > 500, tail
    assert res["faults"], tail
    assert res["corpus"]["kinds"] >= 30, tail


# -- the liveness rule ----------------------------------------------------------------------
def _promise(created: float, settled: float) -> Promise:
    return Promise(
        "p", "resolved", b"", b"", b"", b"", {}, 0, int(created * 1000), int(settled * 1000)
    )


def _late(
    settled: float, windows: list[tuple[float, float]], samples: list[tuple[float, int, int]]
) -> int:
    invs = {"p": Invocation("p", "echo", [1], 100.0, acked_at=100.0)}
    res = check_liveness(invs, {"p": _promise(100.0, settled)}, windows, 2.0, samples)
    return int(res["late"])


def test_liveness_counts_from_the_last_heal_the_promise_lived_through() -> None:
    assert _late(106.0, [], []) == 0
    assert _late(108.0, [], []) == 1  # no fault: due within ttl + 5 s of its creation
    assert _late(109.0, [(101.0, 103.0)], []) == 0
    assert _late(111.0, [(101.0, 103.0)], []) == 1
    # a fault that starts after the deadline passed does not excuse a stuck promise
    assert _late(125.0, [(101.0, 103.0), (115.0, 120.0)], []) == 1
    # one that starts before it does
    assert _late(125.0, [(101.0, 103.0), (109.0, 120.0)], []) == 0


def test_liveness_does_not_count_time_queued_behind_a_backlog() -> None:
    busy = [(100.0 + i, 50, 24) for i in range(10)] + [(110.0, 0, 10)]
    assert _late(115.0, [], busy) == 0
    assert _late(118.0, [], busy) == 1
