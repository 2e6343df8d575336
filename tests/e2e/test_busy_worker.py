"""A healthy worker under load is never told it lost its own completed calls.

The heartbeat thread renews a snapshot of the held tasks; a task completed (or suspended) by
the worker between that snapshot and the heartbeat script is no longer held in Redis, and the
reply lists it as lost. The worker took that for a takeover: it logged `lost`, cancelled the
execution awaiting its own completion's reply and counted an `abandoned` thread (lb status
showed abandoned=N on a fleet with nothing wrong). Found by profiling a busy worker."""

from __future__ import annotations

from lb.sdk import Resonate

from .support import Fleet, run_cli, wait_for


def test_fast_calls_under_frequent_heartbeats_are_never_lost(
    fleet: Fleet, client: Resonate
) -> None:
    """ttl 0.2 s (a heartbeat every 40 ms while busy), 8 slots, 6,000 instant calls: every
    call resolves once, and the worker logs no `lost` and no `abandoned`."""
    w = fleet.start("busy", concurrency=8, ttl=0.2, app="lb.demo.app:register")
    n = 6000
    opts = client.options(target="poll://any@workers")
    for start in range(0, n, 500):
        opts.begin_rpc_many("echo", [(f"fast-{i}", (i,)) for i in range(start, start + 500)])

    def settled() -> bool:
        res = run_cli(fleet.redis_url, fleet.prefix, "status", "--json")
        return '"pending": 0' in res.out and f'"resolved": {n}' in res.out

    wait_for(settled, 180, w.text)
    bad = w.events("lost") + w.events("abandoned")
    assert not bad, [f"{e.kind} {e.id}" for e in bad[:10]]
    assert [client.get(f"fast-{i}").result(timeout=10) for i in (0, n - 1)] == [0, n - 1]
