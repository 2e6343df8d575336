"""Pure logic of the status views: the worker state rules, and `lb top`'s frame at a fixed
width (80 columns) for shapes a real fleet rarely shows on demand: long worker names, dozens
of uuid ids held, many takeovers, a Redis outage."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from rich.console import Console

from lb.broker.status import GONE_SHOW_MS, worker_state
from lb.cli.top import render, short_id

TTL, LIVE = 2000, 6000


@pytest.mark.parametrize(
    ("connected", "age", "holding", "idle", "want"),
    [
        (True, 0, 0, 0, "alive"),
        (True, 50_000, 0, 0, "alive"),  # idle workers beat rarely: the connection decides
        (True, 100, 3, TTL - 1, "alive"),
        (True, 100, 3, TTL, "stalled"),  # what the scanner hands to others
        (False, 100, 0, 0, "dead"),  # kill -9: the connection is the signal
        (False, GONE_SHOW_MS + 1, 2, 0, "dead"),  # holds work: never hidden
        (False, GONE_SHOW_MS + 1, 0, 0, "gone"),
        (None, LIVE - 1, 0, 0, "alive"),  # no CLIENT LIST: the heartbeat decides
        (None, LIVE + 1, 1, 0, "dead"),
        (None, LIVE + GONE_SHOW_MS + 1, 0, 0, "gone"),
    ],
)
def test_worker_state_rules(
    connected: bool | None, age: int, holding: int, idle: int, want: str
) -> None:
    assert worker_state(connected, age, holding, idle, TTL, LIVE) == want


def test_short_ids() -> None:
    u = str(uuid.uuid4())
    assert short_id(u) == u[:8]
    assert short_id("job-12") == "job-12"
    assert short_id("a-very-long-call-id") == "a-very-lo…"


def _worker(**kw: Any) -> dict[str, Any]:
    base = {"state": "alive", "alive": True, "running": 0, "held": [], "done": 0,
            "takeovers": 0, "takeover_age_ms": None, "taken_from_age_ms": None}  # fmt: skip
    return {**base, **kw}


def _snap() -> dict[str, Any]:
    held = [str(uuid.uuid4()) for _ in range(40)]
    now = 1_800_000_000_000
    workers = {
        "a-worker-name-that-is-far-too-long-for-a-column": _worker(
            running=40, held=held, done=12345, takeover_age_ms=500, takeovers=3
        ),
        "b": _worker(state="dead", alive=False, done=7, taken_from_age_ms=500),
    }
    events = [
        {"at_ms": now - i, "age_ms": i, "id": held[i], "from": "b", "to": "a", "cause": "gone"}
        for i in range(12)
    ]
    return {
        "redis": "redis://127.0.0.1:6379/0", "prefix": "lb", "now_ms": now,
        "connections_known": True,
        "calls": {"pending": 40, "resolved": 12000, "rejected": 352, "rejected_canceled": 0,
                  "rejected_timedout": 0},
        "groups": {"workers": {"backlog": 9, "in_flight": 40, "dead_letters": 1,
                               "workers": workers, "takeovers": events, "hidden": 2}},
    }  # fmt: skip


def _text(frame: Any, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(frame)
    return out.getvalue()


def test_a_busy_frame_fits_80_columns() -> None:
    snap = _snap()
    text = _text(render(snap))
    assert all(len(ln) <= 80 for ln in text.splitlines()), text
    held = snap["groups"]["workers"]["workers"]["a-worker-name-that-is-far-too-long-for-a-column"]
    row = next(ln for ln in text.splitlines() if ln.startswith("a-worker"))
    assert " 40 " in row and "100%" in row and held["held"][0][:8] in row, text
    assert held["held"][0] not in text  # never a whole uuid
    assert "calls: pending 40  settled 12352 (resolved 12000, rejected 352)" in text
    assert "2 gone: lb forget --gone" in text
    assert text.count("connection gone") == 5, text  # the last five takeovers


def test_an_outage_keeps_the_last_frame_under_a_banner() -> None:
    text = _text(render(_snap(), down_since=1_800_000_000.0, error="Redis is unreachable"))
    assert text.splitlines()[0].startswith("reconnecting to Redis since"), text
    assert "Redis is unreachable" in text and "a-worker" in text
    first = _text(render(None, down_since=1_800_000_000.0, error="refused"))
    assert "reconnecting" in first and "waiting for the first answer" in first
