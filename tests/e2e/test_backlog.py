"""Invocations made while no worker runs wait in the group's stream and drain later."""

from __future__ import annotations

import json

from lb.sdk import Resonate

from .conftest import Lb
from .support import Fleet


def test_backlog_made_with_no_worker_completes_once_a_worker_starts(
    fleet: Fleet, client: Resonate, lb: Lb
) -> None:
    """Eight calls (SDK and CLI) are made with no worker alive; they stay pending. A worker
    started afterwards runs each exactly once and all eight resolve."""
    ids = [f"bk-{i}" for i in range(8)]
    handles = {pid: client.begin_rpc(pid, "record", pid) for pid in ids[:6]}
    for pid in ids[6:]:
        res = lb("invoke", "--id", pid, "--func", "record", "--args", json.dumps([pid]))
        assert res.code == 0, res
    for pid in ids:
        assert client.promise(pid).state == "pending"

    fleet.start("late", concurrency=3)
    for pid, h in handles.items():
        assert h.result(timeout=60) == pid
    for pid in ids[6:]:
        assert client.get(pid).result(timeout=60) == pid
    assert sorted(r[1] for r in fleet.journal_lines("record")) == sorted(ids)
