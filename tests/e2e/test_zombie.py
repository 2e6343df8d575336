"""A SIGSTOPped worker loses its task; once resumed it must not settle anything for it."""

from __future__ import annotations

import os
import signal

from lb.sdk import Resonate

from .support import Fleet, wait_for


def test_sigstopped_zombie_is_fenced_and_the_new_holder_settles_once(
    fleet: Fleet, client: Resonate
) -> None:
    """`zombie` (1 slot, ttl 1 s) starts `grinder` (4 s of blocking work, then a result naming
    the worker) and is SIGSTOPped mid-work. `healthy` takes the task over once the lease
    lapses (a `takeover` line naming the zombie as previous holder). Then the zombie is
    SIGCONTed: its thread finishes the work, but it is fenced. The promise settles exactly once,
    with the value of `healthy`; the zombie logs `fenced` or `lost` and never `done`."""
    zombie = fleet.start("zombie", concurrency=1, ttl=1)
    h = client.begin_rpc("z1", "grinder", 4.0)
    wait_for(lambda: zombie.events("start", "z1"), 30, lambda: "zombie never started z1")
    healthy = fleet.start("healthy", concurrency=1, ttl=1)
    wait_for(lambda: fleet.journal_lines("start", "z1"), 30, "z1 never entered the function")
    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        took = wait_for(
            lambda: healthy.events("takeover", "z1"), 30, lambda: "no takeover\n" + fleet.dump()
        )
        assert took[0].fields.get("previous") == "zombie", took[0].line
    finally:
        os.kill(zombie.pid, signal.SIGCONT)

    value = h.result(timeout=60)
    assert value["worker"] == "healthy", value
    assert value["attempts"] >= 2, value
    first = client.promise("z1")

    # The resumed zombie finishes its copy of the work (journal), then is refused.
    wait_for(
        lambda: any(r[2] == "zombie" for r in fleet.journal_lines("finish", "z1")),
        30,
        lambda: "the zombie never finished its copy\n" + fleet.dump(),
    )
    wait_for(
        lambda: zombie.events("fenced", "z1") or zombie.events("lost", "z1"),
        30,
        lambda: "zombie shows neither fenced nor lost\n" + fleet.dump(),
    )
    assert not zombie.events("done", "z1"), zombie.text()
    assert zombie.alive(), "the zombie should survive being fenced"

    # The client may be woken before the worker has logged its done line: wait for it.
    wait_for(lambda: fleet.events("done", "z1"), 30, lambda: "no done line\n" + fleet.dump())
    dones = fleet.events("done", "z1")
    assert [n for n, _ in dones] == ["healthy"], dones
    p = client.promise("z1")
    assert p.state == "resolved"
    assert (p.value, p.settled_at) == (first.value, first.settled_at), "settled twice"
    assert client.get("z1").result()["worker"] == "healthy"
