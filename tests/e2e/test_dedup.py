"""The same promise id invoked twice (SDK and CLI) runs once."""

from __future__ import annotations

from lb.sdk import Resonate

from .conftest import Lb
from .support import Fleet


def test_same_id_from_sdk_and_cli_runs_once(fleet: Fleet, client: Resonate, lb: Lb) -> None:
    """`record` journals one line per execution. With no worker running, id `dup` is invoked
    via the SDK ("first") and via `lb invoke --id dup` ("second"): one promise, one task.
    A worker then runs it once; the value is the first caller's. A third invocation after it
    settled (`lb invoke --id dup --wait`) returns the stored value without running again."""
    h = client.begin_rpc("dup", "record", "first")
    res = lb("invoke", "--id", "dup", "--func", "record", "--args", '["second"]')
    assert res.code == 0, res
    assert res.out.strip() == "dup", res

    fleet.start("w0", concurrency=2)
    assert h.result(timeout=60) == "first"

    res = lb("invoke", "--id", "dup", "--func", "record", "--args", '["third"]', "--wait")
    assert res.code == 0, res
    assert res.out.splitlines() == ['"first"'], res
    assert client.rpc("dup", "record", "fourth") == "first"

    runs = fleet.journal_lines("record", "dup")
    assert len(runs) == 1, runs
    assert len(fleet["w0"].events("start", "dup")) == 1
