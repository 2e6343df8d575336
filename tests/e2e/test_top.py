"""`lb top`, `lb status` and `lb forget` against real workers killed for real (issue 13 item 5):
the spread as running counts and shares, short ids at 80 columns, a kill -9 shown as dead
from the scanner's own signal and listed as a takeover, user calls only in the counts, gone
workers pruned and forgotten, and an outage that does not end the view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from lb.broker import EmbeddedRedis
from lb.cli.common import lb_argv
from lb.sdk import Resonate

from .conftest import Lb
from .support import ROOT, Fleet, base_env, wait_for

WIDTH = {"COLUMNS": "80"}


def _top(lb: Lb) -> str:
    res = lb("top", "--once", **WIDTH)
    assert res.code == 0 and "Traceback" not in res.err, res
    return res.out


def _row(text: str, worker: str) -> list[str]:
    rows = [ln.split() for ln in text.splitlines() if ln.split()[:1] == [worker]]
    assert len(rows) == 1, text
    return rows[0]


def _top_until(lb: Lb, pred: Any, timeout: float, why: Any) -> str:
    """The first `lb top --once` frame for which ``pred(frame)`` holds."""
    return str(wait_for(lambda: (lambda t: t if pred(t) else None)(_top(lb)), timeout, why))


def _status(lb: Lb) -> dict[str, Any]:
    res = lb("status", "--json")
    assert res.code == 0, res
    return dict(json.loads(res.out))


def test_top_shows_the_spread_and_a_kill_as_dead_and_a_takeover(
    fleet: Fleet, client: Resonate, lb: Lb
) -> None:
    """a (1 slot) runs one call, b (3 slots) two: top shows 1 / 33% and 2 / 67% with the held
    ids short (a uuid as its first 8 digits), every line within 80 columns. After kill -9 of
    a, top shows it dead and lists the takeover (a -> b, connection gone); b has run it."""
    fleet.start("a", concurrency=1)
    first = str(uuid.uuid4())
    client.begin_rpc(first, "grinder", 30)
    wait_for(lambda: fleet.journal_lines("start", first), 30, fleet.dump)
    fleet.start("b", concurrency=3)
    for pid in ("top-2", "top-3"):
        client.begin_rpc(pid, "grinder", 30)
    wait_for(lambda: len(fleet.journal_lines("start")) == 3, 30, fleet.dump)
    text = _top_until(lb, lambda t: _line(t, "b").split()[2:3] == ["2"], 30, lambda: _top(lb))
    assert all(len(ln) <= 80 for ln in text.splitlines()), text
    a, b = _row(text, "a"), _row(text, "b")
    assert a[1:4] == ["alive", "1", "33%"], text
    assert b[1:4] == ["alive", "2", "67%"], text
    assert first[:8] in a and first not in text, text
    assert "top-2" in b and "top-3" in b, text
    assert _status(lb)["calls"]["pending"] == 3

    os.kill(fleet["a"].pid, signal.SIGKILL)
    _top_until(lb, lambda t: _row(t, "a")[1] == "dead", 10, fleet.dump)
    wait_for(lambda: len(fleet.journal_lines("start", first)) == 2, 30, fleet.dump)
    text = _top_until(lb, lambda t: "connection gone" in t, 10, fleet.dump)
    event = next(ln.split() for ln in text.splitlines() if "connection gone" in ln)
    assert event[2:5] == [first[:8], "a", "b"], text
    assert _row(text, "b")[6] == "1", text  # b took one over
    snap = _status(lb)
    taken = snap["groups"]["workers"]["takeovers"]
    assert [(e["id"], e["from"], e["to"], e["cause"]) for e in taken] == [(first, "a", "b", "gone")]


def _line(text: str, worker: str) -> str:
    return next((ln for ln in text.splitlines() if ln.startswith(worker + " ")), "")


def test_counts_are_of_calls_not_steps_or_timers(fleet: Fleet, client: Resonate, lb: Lb) -> None:
    """A call waiting in a durable sleep has a timer promise (and settled ctx.run steps)
    besides its own: `lb status` counts 2 pending promises but 1 pending call; once it
    ends, 1 resolved call and nothing pending."""
    fleet.start("w")
    h = client.begin_rpc("counted", "steps", 3.0)
    wait_for(lambda: _status(lb)["promises"]["pending"] >= 2, 30, fleet.dump)
    snap = _status(lb)
    assert snap["calls"]["pending"] == 1, snap
    h.result(timeout=60)
    snap = _status(lb)
    assert snap["calls"]["pending"] == 0 and snap["calls"]["resolved"] == 1, snap
    assert "calls: pending 0  settled 1 (resolved 1, rejected 0)" in _top(lb)


def test_forget_drops_gone_workers_and_refuses_live_ones(fleet: Fleet, lb: Lb) -> None:
    """A killed worker holding nothing is dead in top, then `lb forget --gone` drops it (top
    no longer lists it); naming a live worker is refused with exit 2 and changes nothing;
    an unknown name is an error."""
    fleet.start("keep")
    fleet.start("gone")
    os.kill(fleet["gone"].pid, signal.SIGKILL)
    wait_for(lambda: _row(_top(lb), "gone")[1] == "dead", 10, fleet.dump)
    res = lb("forget", "keep")
    assert res.code == 2 and "alive" in res.err and "Traceback" not in res.err, res
    res = lb("forget", "--gone")
    assert res.code == 0 and res.out.strip() == "forgot 1 worker(s): gone", res
    text = _top(lb)
    assert _line(text, "gone") == "" and _row(text, "keep")[1] == "alive", text
    res = lb("forget", "nobody")
    assert res.code == 2 and "no such worker: nobody" in res.err, res
    assert lb("forget").code == 2


def test_top_keeps_running_through_an_outage(tmp_path: Path) -> None:
    """Redis stops under a running `lb top`: it does not exit; Redis comes back on the same
    port; Ctrl-C ends it with exit 0 and its last frame shows live data, no banner."""
    server = EmbeddedRedis().start()
    out = (tmp_path / "top.out").open("w")
    env = {**base_env(server.url, "topo"), **WIDTH}
    proc = subprocess.Popen(
        [*lb_argv(), "top", "--interval", "0.1"], cwd=ROOT, env=env, stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        server.stop()
        time.sleep(2.0)
        assert proc.poll() is None, (tmp_path / "top.out").read_text()
        server.start()  # the same port and directory
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, (tmp_path / "top.out").read_text()
        text = (tmp_path / "top.out").read_text()
        assert "Traceback" not in text and "lb top" in text, text
        assert "reconnecting" not in text.splitlines()[-3:][0], text
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
        server.cleanup()
