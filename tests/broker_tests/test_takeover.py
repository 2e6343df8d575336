"""Heartbeats, takeover and fencing on a real redis-server: what a heartbeat renews, when a
silent holder's task is taken over (XAUTOCLAIM after the ttl, at once for a consumer whose
connections are gone), and that the old holder is fenced from that moment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from broker_helpers import (
    GROUP,
    base0,
    claim,
    claim_one,
    idle_ms,
    make_broker,
    shutdown,
    stream,
    stream_counts,
    task_hash,
    wait_idle,
    xpending_rows,
)

from lb.broker import Broker, Claimed, Fenced, Keys, NotFound, TaskQueue
from lb.broker.heartbeat import Heartbeat


def _hb(b, pid: str, held: list[tuple[str, str, str]]) -> Heartbeat:  # type: ignore[no-untyped-def]
    """A heartbeat driven by hand (``beat()``), never started as a thread."""
    return Heartbeat(b.settings, GROUP, pid, 0.1, lambda: list(held), lambda ids: None)


def test_heartbeat_renews_only_held_and_reports_lost(redis_url: str, prefix: str) -> None:
    """Worker A holds two tasks; B takes one over. A's beat renews the one it still holds
    (idle time reset), leaves B's entry with B, and reports the taken one and an unknown id as
    lost; B's beat at the new version loses nothing."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        hb_a = hb_b = None
        try:
            await b.create("t1", group=GROUP)
            await b.create("t2", group=GROUP)
            held, _ = await claim(a, 2)
            assert sorted(h.task_id for h in held) == ["t1", "t2"]
            for h in held:
                await wait_idle(b, h.entry_id, 200)
            taken, _ = await bq.takeover(min_idle_ms=200, count=1)
            assert len(taken) == 1 and taken[0].version == "2"
            lost_id = taken[0].task_id
            kept = next(h for h in held if h.task_id != lost_id)
            base = base0(b)
            hb_a = _hb(
                b, "A", [(base, h.task_id, h.version) for h in held] + [(base, "ghost", "1")]
            )
            assert sorted(hb_a.beat()) == sorted([lost_id, "ghost"])
            assert await idle_ms(b, kept.entry_id) < 200
            owners = {r["message_id"]: r["consumer"] for r in await xpending_rows(b)}
            assert owners == {kept.entry_id: "A", taken[0].entry_id: "B"}
            hb_b = _hb(b, "B", [(base, lost_id, "2")])
            assert hb_b.beat() == []
            assert await b.redis.zscore(Keys.workers(base, GROUP), "A") is not None
        finally:
            for hb in (hb_a, hb_b):
                if hb is not None:
                    hb.client.close()
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_takeover_after_silence_fences_old_holder(redis_url: str, prefix: str) -> None:
    """A acquires and goes silent; after 300 ms idle B's takeover gets the task at version 2
    with previous_holder A. Every later mutation of A (fulfill, suspend, release, fenced
    create/settle, heartbeat) is refused and the promise stays pending; B's fulfill works."""

    async def scenario() -> None:
        ba, bb = make_broker(redis_url, prefix), make_broker(redis_url, prefix)
        a, bq = TaskQueue(ba, GROUP, "A"), TaskQueue(bb, GROUP, "B")
        hb = None
        try:
            await ba.create("job", b"p", group=GROUP)
            ca = await claim_one(a)
            assert ca.version == "1"
            await wait_idle(ba, ca.entry_id, 300)
            held, dead = await bq.takeover(min_idle_ms=300, count=10)
            assert dead == [] and len(held) == 1
            cb = held[0]
            assert (cb.task_id, cb.version, cb.previous_holder, cb.strikes) == ("job", "2", "A", 2)
            assert cb.param == b"p" and cb.entry_id == ca.entry_id

            fa = ca.fence("A")
            with pytest.raises(Fenced):
                await a.fulfill(fa, "resolved", b"stale")
            with pytest.raises(Fenced):
                await a.suspend(fa, ["job:1"])
            with pytest.raises(Fenced):
                await a.release(fa)
            with pytest.raises(Fenced):
                await ba.create("job:1", fence=fa)
            with pytest.raises(Fenced):
                await ba.settle("job", "resolved", b"stale", fence=fa)
            hb = _hb(ba, "A", [(base0(ba), "job", "1")])
            assert hb.beat() == ["job"]
            with pytest.raises(NotFound):
                await ba.get("job:1")
            assert (await ba.get("job")).state == "pending"
            rows = await xpending_rows(ba)
            assert [(r["message_id"], r["consumer"]) for r in rows] == [(ca.entry_id, "B")]

            p = await bq.fulfill(cb.fence("B"), "resolved", b"fresh")
            assert (p.state, p.value) == ("resolved", b"fresh")
            assert await stream_counts(ba) == (0, 0)
        finally:
            if hb is not None:
                hb.client.close()
            await shutdown(a, bq, ba, bb)

    asyncio.run(scenario())


async def _held_by_a_then_taken_by_b(
    b: Broker,
    a: TaskQueue,
    bq: TaskQueue,
    before: Callable[[Claimed], Awaitable[None]] | None = None,
) -> tuple[Claimed, Claimed]:
    """Task "job": A acquires it (``before`` runs then), goes silent for 100 ms, and B's
    takeover gets it. Returns (A's claim, B's claim)."""
    await b.create("job", group=GROUP)
    ca = await claim_one(a)
    if before is not None:
        await before(ca)
    await wait_idle(b, ca.entry_id, 100)
    (cb,), _ = await bq.takeover(min_idle_ms=100, count=1)
    return ca, cb


def test_stale_and_fresh_fulfill_in_one_batch(redis_url: str, prefix: str) -> None:
    """After a takeover, the old holder's and the new holder's fulfill sent at the same moment
    on one Broker (one pipeline): the stale one is Fenced, the fresh one settles the promise."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            ca, cb = await _held_by_a_then_taken_by_b(b, a, bq)
            stale, fresh = await asyncio.gather(
                a.fulfill(ca.fence("A"), "resolved", b"stale"),
                bq.fulfill(cb.fence("B"), "resolved", b"fresh"),
                return_exceptions=True,
            )
            assert isinstance(stale, Fenced)
            assert not isinstance(fresh, BaseException) and fresh.value == b"fresh"
            assert (await b.get("job")).value == b"fresh"
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_one_slot_takeover_reaches_a_silent_entry_behind_many_live_ones(
    redis_url: str, prefix: str
) -> None:
    """Regression (chaos seed 7: a SIGSTOPped worker's tasks were not taken over during a
    3.5 s stall while the group was saturated). Live worker A holds 40 fresh entries; silent S
    holds one entry queued after them. With one free slot, B's single takeover pass must take
    S's entry: XAUTOCLAIM COUNT 1 scans only ~10 pending entries per call, so the script scans
    on within the same step instead of leaving it to later passes."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, s, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "S"), TaskQueue(b, GROUP, "B")
        try:
            for i in range(40):
                await b.create(f"live{i}", group=GROUP)
            live, _ = await claim(a, 40)
            assert len(live) == 40
            await b.create("orphan", group=GROUP)
            orphan = await claim_one(s)
            await wait_idle(b, orphan.entry_id, 300)
            # A is alive: its heartbeat resets the idle time of everything it holds.
            await b.redis.xclaim(stream(b), "lb", "A", 0, [h.entry_id for h in live], justid=True)
            held, dead = await bq.takeover(min_idle_ms=300, count=1)
            assert dead == [] and [h.task_id for h in held] == ["orphan"]
            assert held[0].previous_holder == "S" and held[0].version == "2"
        finally:
            await shutdown(a, s, bq, b)

    asyncio.run(scenario())


def test_holds_answers_for_one_execution_after_a_takeover(redis_url: str, prefix: str) -> None:
    """holds() is what a worker asks before re-running an execution that waited out a Redis
    outage (its heartbeat thread may not have caught up): after B took the task over, A's
    fence is no longer held and B's is; a fulfilled task is held by nobody."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            base = base0(b)

            async def a_holds(ca: Claimed) -> None:
                assert await a.holds(base, ca.fence("A"))

            ca, cb = await _held_by_a_then_taken_by_b(b, a, bq, before=a_holds)
            assert not await a.holds(base, ca.fence("A"))
            assert await bq.holds(base, cb.fence("B"))
            await bq.fulfill(cb.fence("B"), "resolved", b"v")
            assert not await bq.holds(base, cb.fence("B"))
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_takeover_before_min_idle_gets_nothing(redis_url: str, prefix: str) -> None:
    """Right after A acquires, B's takeover with min idle 300 ms gets nothing and A still holds
    the task at version 1 (control: once idle long enough, the same call takes it)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await b.create("job", group=GROUP)
            ca = await claim_one(a)
            held, dead = await bq.takeover(min_idle_ms=300, count=10)
            assert await idle_ms(b, ca.entry_id) < 300  # the call really ran before the idle time
            assert (held, dead) == ([], [])
            t = await task_hash(b, "job")
            assert (t["v"], t["pid"], t["state"]) == ("1", "A", "acquired")
            await wait_idle(b, ca.entry_id, 300)
            held, _ = await bq.takeover(min_idle_ms=300, count=10)
            assert [h.version for h in held] == ["2"]
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_heartbeaten_task_not_taken_over(redis_url: str, prefix: str) -> None:
    """A beats every 100 ms for well over the 300 ms idle time; B's takeovers in between get
    nothing and A can still fulfill at version 1."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        hb = None
        try:
            await b.create("job", group=GROUP)
            ca = await claim_one(a)
            hb = _hb(b, "A", [(base0(b), "job", ca.version)])
            start = time.monotonic()
            rounds = 0
            while time.monotonic() - start < 0.9:
                assert hb.beat() == []
                await asyncio.sleep(0.1)  # the heartbeat interval
                assert await bq.takeover(min_idle_ms=300, count=10) == ([], [])
                rounds += 1
            assert rounds >= 5
            assert (await task_hash(b, "job"))["v"] == "1"
            p = await a.fulfill(ca.fence("A"), "resolved", b"ok")
            assert p.state == "resolved"
        finally:
            if hb is not None:
                hb.client.close()
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_takeover_survives_entry_deleted_while_pending(redis_url: str, prefix: str) -> None:
    """Entries deleted from the stream (XDEL by an operator) while in a dead worker's pending
    list are dropped by takeover, by idle time and by the dead-consumer path, and a real task
    pending behind them is still taken over."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await a.ensure_group()
            q = stream(b)
            gone1 = (await b.redis.xadd(q, {"t": "x"})).decode()
            await b.create("real", group=GROUP)
            read = await a.read(10, 100)
            assert len(read[base0(b)]) == 2
            await b.redis.xdel(q, gone1)
            await wait_idle(b, gone1, 50)
            held, _ = await bq.takeover(min_idle_ms=50, count=10)
            assert [h.task_id for h in held] == ["real"]
            gone2 = (await b.redis.xadd(q, {"t": "y"})).decode()
            await a.read(10, 100)
            await b.redis.xdel(q, gone2)
            assert await bq.takeover(min_idle_ms=60_000, count=10, dead=["A"]) == ([], [])
            assert [r["message_id"] for r in await xpending_rows(b)] == [held[0].entry_id]
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_heartbeat_stop_before_start(redis_url: str, prefix: str) -> None:
    """stop() on a heartbeat that was never started (a worker failing during startup) returns
    quietly."""
    b = make_broker(redis_url, prefix)
    hb = _hb(b, "A", [])
    try:
        hb.stop()
    finally:
        hb.client.close()
        asyncio.run(shutdown(b))
