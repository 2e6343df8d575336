"""The `lb` command line against a real Redis and real workers."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from lb.sdk import PromiseRejected, Resonate

from .conftest import Lb
from .support import CliResult, Fleet, wait_for

UNREACHABLE = "redis://127.0.0.1:1"


def assert_one_line_error(res: CliResult, code: int | None = None) -> None:
    assert res.code != 0, res
    if code is not None:
        assert res.code == code, res
    lines = res.err.splitlines()
    assert len(lines) == 1, res
    assert lines[0].startswith("error: "), res
    assert "Traceback" not in res.err + res.out, res


def test_invoke_wait_get_status_with_a_live_worker(fleet: Fleet, lb: Lb) -> None:
    """With one worker alive: `lb invoke --wait --func echo --args '[5]'` prints 5 alone (so
    `| jq` works), `--json` one object with the id, no --wait the id alone;
    `lb get ID --json` shows it resolved with value 5; `lb status --json` lists the group and
    the live worker; invoking a function no live worker serves is refused (one error line)."""
    fleet.start("cli-w", concurrency=2, ttl=2)

    res = lb("invoke", "--wait", "--func", "echo", "--args", "[5]", "--id", "e1")
    assert res.code == 0, res
    assert res.out.splitlines() == ["5"], res
    res = lb("invoke", "--wait", "--json", "--func", "echo", "--args", "[5]")
    assert res.code == 0, res
    obj = json.loads(res.out)
    assert obj["value"] == 5 and len(obj["id"]) == 36, res  # a uuid was chosen
    res = lb("invoke", "--func", "echo", "--args", "[6]", "--id", "e2")
    assert res.code == 0 and res.out.splitlines() == ["e2"], res

    res = lb("get", "e1", "--json")
    assert res.code == 0, res
    rec = json.loads(res.out)
    assert rec["id"] == "e1" and rec["state"] == "resolved" and rec["value"] == 5, rec
    assert rec["settled_at"] >= rec["created_at"] > 0, rec

    res = lb("status", "--json")
    assert res.code == 0, res
    snap = json.loads(res.out)
    assert "workers" in snap["groups"], snap
    workers = snap["groups"]["workers"]["workers"]
    assert workers.get("cli-w", {}).get("alive") is True, snap
    assert workers["cli-w"]["done"] >= 2, snap

    res = lb("invoke", "--func", "no_such_function", "--args", "[]")
    assert_one_line_error(res, code=3)
    assert "no_such_function" in res.err
    assert res.out == "", res

    res = lb("invoke", "--wait", "--func", "fail", "--args", '["bad news"]', "--id", "f1")
    assert_one_line_error(res, code=8)  # PromiseRejected
    assert res.out == "" and "f1" in res.err, res
    assert "RuntimeError: bad news" in res.err, res


def test_cancel_resolve_reject_pending_promises(lb: Lb, client: Resonate) -> None:
    """With no worker, invocations stay pending; `lb cancel`, `lb resolve --value '{"a":1}'`
    and `lb reject` settle them (`lb get --json` shows the state and value); settling an
    already settled promise changes nothing; settling a missing id is an error."""
    for pid in ("c1", "r1", "j1"):
        res = lb("invoke", "--id", pid, "--func", "echo", "--args", "[1]")
        assert res.code == 0 and res.out.strip() == pid, res
        assert json.loads(lb("get", pid, "--json").out)["state"] == "pending"

    res = lb("cancel", "c1")
    assert res.code == 0 and res.out.strip() == "c1 rejected_canceled", res
    res = lb("resolve", "r1", "--value", '{"a":1}')
    assert res.code == 0 and res.out.strip() == "r1 resolved", res
    res = lb("reject", "j1", "--value", '"nope"')
    assert res.code == 0 and res.out.strip() == "j1 rejected", res

    assert json.loads(lb("get", "c1", "--json").out)["state"] == "rejected_canceled"
    rec = json.loads(lb("get", "r1", "--json").out)
    assert rec["state"] == "resolved" and rec["value"] == {"a": 1}, rec
    assert client.get("r1").result() == {"a": 1}
    rec = json.loads(lb("get", "j1", "--json").out)
    assert rec["state"] == "rejected" and "error" in rec, rec

    res = lb("resolve", "c1", "--value", "2")  # already settled: unchanged
    assert res.code == 0 and res.out.strip() == "c1 rejected_canceled", res
    assert json.loads(lb("get", "c1", "--json").out)["state"] == "rejected_canceled"

    assert_one_line_error(lb("cancel", "never-created"))

    res = lb(
        "invoke", "--wait", "--timeout", "0.5", "--func", "echo", "--args", "[1]", "--id", "t1"
    )
    assert_one_line_error(res, code=6)  # Timeout; the promise itself is untouched
    assert res.out == "" and "t1" in res.err and "0.5 s" in res.err, res
    assert json.loads(lb("get", "t1", "--json").out)["state"] == "pending"


def test_cancel_of_a_running_call_fences_its_worker(fleet: Fleet, lb: Lb, client: Resonate) -> None:
    """`lb cancel` on a call a worker is running (`grinder`, 3 s): the promise is canceled at
    once; when the function returns, its worker is refused (`fenced`/`lost`, never `done`),
    the promise stays canceled, and the worker goes on serving."""
    w = fleet.start("busy", concurrency=1, ttl=2)
    h = client.begin_rpc("run1", "grinder", 3.0)
    wait_for(lambda: fleet.journal_lines("start", "run1"), 30, "run1 never started")
    res = lb("cancel", "run1")
    assert res.code == 0 and res.out.strip() == "run1 rejected_canceled", res
    with pytest.raises(PromiseRejected) as info:
        h.result(timeout=30)
    assert info.value.state == "rejected_canceled"
    wait_for(lambda: fleet.journal_lines("finish", "run1"), 30, "grinder never returned")
    wait_for(
        lambda: w.events("fenced", "run1") or w.events("lost", "run1"),
        30,
        lambda: "worker neither fenced nor lost\n" + fleet.dump(),
    )
    assert not w.events("done", "run1"), w.text()
    assert client.promise("run1").state == "rejected_canceled"
    assert client.rpc("after-cancel", "echo", 3) == 3


LONG = "x" * 10_000
BAD_INPUTS = {
    "target-empty-group": ["invoke", "--func", "echo", "--args", "[1]", "--target", "poll://any@"],
    "target-http": ["invoke", "--func", "echo", "--args", "[1]", "--target", "http://x"],
    "target-dotdot": ["invoke", "--func", "echo", "--args", "[1]", "--target", "../x"],
    "target-10k": ["invoke", "--func", "echo", "--args", "[1]", "--target", LONG],
    "target-uni": ["invoke", "--func", "echo", "--target", "poll://uni@workers/p1"],
    "args-malformed": ["invoke", "--func", "echo", "--args", "[1,"],
    "args-not-list": ["invoke", "--func", "echo", "--args", '{"a": 1}'],
    "value-malformed": ["resolve", "x", "--value", "{bad"],
    "func-hostile": ["invoke", "--func", "../../etc", "--args", "[]"],
    "id-newline": ["invoke", "--func", "echo", "--args", "[1]", "--id", "a\nb"],
    "id-1000-chars": ["invoke", "--func", "echo", "--args", "[1]", "--id", "i" * 1000],
    "id-600-bytes": ["invoke", "--func", "echo", "--args", "[1]", "--id", "\u00e9" * 300],
    "id-10k": ["invoke", "--func", "echo", "--args", "[1]", "--id", LONG],
    "get-missing": ["get", "missing-id"],
    "get-missing-json": ["get", "missing-id", "--json"],
    "get-newline": ["get", "a\nb"],
    "redis-down-invoke": ["invoke", "--func", "echo", "--args", "[1]", "--redis", UNREACHABLE],
    "redis-down-get": ["get", "x", "--redis", UNREACHABLE],
    "redis-down-status": ["status", "--json", "--redis", UNREACHABLE],
    "redis-down-cancel": ["cancel", "x", "--redis", UNREACHABLE],
    "redis-bad-scheme": ["get", "x", "--redis", "http://127.0.0.1:1"],
    # click.FloatRange lets "nan" through (every comparison with NaN is false): found by chaos
    "timeout-nan": ["invoke", "--func", "echo", "--args", "[1]", "--wait", "--timeout", "nan"],
    "timeout-inf": ["invoke", "--func", "echo", "--args", "[1]", "--wait", "--timeout", "inf"],
    "cost-nan": ["invoke", "--cost", "nan"],
}


URL_BUG = JSON_BUG = ()
BAD_INPUTS_BUGGY = {
    "redis-url-bad-port": (["get", "x", "--redis", "redis://127.0.0.1:notaport"], URL_BUG),
    "redis-url-port-range": (["get", "x", "--redis", "redis://127.0.0.1:99999"], URL_BUG),
    "redis-url-bad-ipv6": (["get", "x", "--redis", "redis://[::1"], URL_BUG),
    "redis-url-bad-query": (["status", "--redis", "redis://127.0.0.1:1?socket_timeout=x"], URL_BUG),
    "args-deep-nesting": (
        ["invoke", "--func", "echo", "--args", "[" * 30_000 + "]" * 30_000],
        JSON_BUG,
    ),
    "args-huge-int": (["invoke", "--func", "echo", "--args", "[" + "7" * 5000 + "]"], JSON_BUG),
    "value-deep-nesting": (["resolve", "x", "--value", "[" * 30_000 + "]" * 30_000], JSON_BUG),
}


@pytest.mark.parametrize(
    "args",
    [
        *BAD_INPUTS.values(),
        *(pytest.param(a, marks=m, id=k) for k, (a, m) in BAD_INPUTS_BUGGY.items()),
    ],
    ids=[*BAD_INPUTS, *BAD_INPUTS_BUGGY],
)
def test_bad_input_gives_one_error_line(lb: Lb, args: list[str]) -> None:
    """Bad targets, malformed JSON, hostile names and ids, a missing id and an unreachable
    Redis: exactly one stderr line starting with `error:`, a non-zero exit, no traceback,
    and nothing printed on stdout (no id of a half-made invocation)."""
    res = lb(*args)
    assert_one_line_error(res)
    assert res.out == "", res


def test_id_limits(lb: Lb) -> None:
    """An id of exactly 512 bytes (multi-byte UTF-8 too) is accepted and readable back; one
    byte more is refused."""
    ok = "\u00e9" * 256  # 512 bytes
    res = lb("invoke", "--func", "echo", "--args", "[1]", "--id", ok)
    assert res.code == 0 and res.out.strip() == ok, res
    assert json.loads(lb("get", ok, "--json").out)["id"] == ok
    assert_one_line_error(lb("invoke", "--func", "echo", "--args", "[1]", "--id", ok + "x"), 2)


def test_invoke_with_a_step_like_id_is_refused(lb: Lb) -> None:
    """`lb invoke --id job:1` could be resolved by the first step of call `job`: refused with
    exit 2 and one line that names the ':' rule, before anything is stored."""
    res = lb("invoke", "--func", "echo", "--args", "[1]", "--id", "job:1")
    assert_one_line_error(res, 2)
    assert "':'" in res.err, res
    assert lb("get", "job:1").code == 4


def test_sigterm_hands_a_long_task_back_at_once(fleet: Fleet, client: Resonate) -> None:
    """`first` (ttl 30 s) holds a 30 s `grinder` call; `second` is idle. SIGTERM to `first`
    hands the task back at once: `first` logs `released` and exits cleanly, and `second`
    starts the call within a few seconds - well before the 30 s lease would have lapsed."""
    first = fleet.start("first", concurrency=1, ttl=30)
    client.begin_rpc("long", "grinder", 30.0)
    wait_for(lambda: first.events("start", "long"), 30, "first never started the call")
    second = fleet.start("second", concurrency=1, ttl=30)

    t0 = time.time()
    os.kill(first.pid, signal.SIGTERM)
    got = wait_for(
        lambda: second.events("start", "long"), 25, lambda: "not handed over\n" + fleet.dump()
    )
    handover = got[0].at - t0
    assert handover < 10, f"hand-over took {handover:.1f}s (ttl 30 s)"
    assert first.proc.wait(timeout=30) == 0, first.text()
    assert first.events("released", "long"), first.text()
    assert not first.events("done", "long")
    assert client.promise("long").state == "pending"
