"""Poison calls: a call whose holder keeps dying is quarantined, not handed from worker to
worker until the fleet is gone. ``deaths`` counts takeovers of a task that was acquired (its
holder went silent while running it) since its last suspension; at ``max_deaths`` (default 2)
the call is dead-lettered with type Quarantined. Against the session's real redis-server."""

from __future__ import annotations

import asyncio

import msgpack
from broker_helpers import GROUP, base0, claim_one, make_broker, shutdown, task_hash, wait_idle

from lb.broker import Keys, TaskQueue


def _error(value: bytes) -> dict[str, str]:
    out: dict[str, str] = msgpack.unpackb(value)
    return out


def test_second_death_in_a_row_quarantines_the_call(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq, cq = (TaskQueue(b, GROUP, w) for w in ("A", "B", "C"))
        try:
            assert b.settings.max_deaths == 2
            await b.create("poison", group=GROUP)
            ca = await claim_one(a)
            await wait_idle(b, ca.entry_id, 100)
            held, _ = await bq.takeover(min_idle_ms=100, count=10)  # A died: 1st death
            assert [h.task_id for h in held] == ["poison"]  # claimed at once
            await wait_idle(b, held[0].entry_id, 100)
            held_c, dead = await cq.takeover(min_idle_ms=100, count=10)  # B died: 2nd
            assert held_c == [] and dead == ["poison"]
            p = await b.get("poison")
            assert p.state == "rejected"
            err = _error(p.value)
            assert err["type"] == "Quarantined"
            assert "holder died 2 times" in err["message"]
            rows = await b.redis.xrange(Keys.dead_letters(base0(b), GROUP))
            assert len(rows) == 1
        finally:
            await shutdown(a, bq, cq, b)

    asyncio.run(scenario())


def test_a_suspension_resets_the_death_count(redis_url: str, prefix: str) -> None:
    """Deaths in a row: a delivery that made progress (suspended) starts the count again,
    so a long workflow that outlives several unrelated crashes is never quarantined."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await b.create("wf", group=GROUP)
            for _ in range(3):
                c = await claim_one(a)
                await wait_idle(b, c.entry_id, 100)
                held, dead = await bq.takeover(min_idle_ms=100, count=10)
                assert dead == [] and [h.task_id for h in held] == ["wf"]
                await b.create("wf:child", fence=held[0].fence("B"))
                assert await bq.suspend(held[0].fence("B"), ["wf:child"]) == "suspended"
                assert (await task_hash(b, "wf"))["deaths"] == "0"
                await b.settle("wf:child", "resolved", b"")  # resumes wf: a new entry
                await b.redis.delete(f"{base0(b)}:p:wf:child")
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_later_deaths_wait_before_redelivery(redis_url: str, prefix: str) -> None:
    """With max_deaths=3 the second death does not hand the call straight to the next worker:
    it waits in 'delayed' (ttl x 2^0 here) and goes back on the stream for any worker."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, max_deaths=3, ttl_ms=1000)
        a, bq, cq = (TaskQueue(b, GROUP, w) for w in ("A", "B", "C"))
        try:
            await b.create("p", group=GROUP)
            ca = await claim_one(a)
            await wait_idle(b, ca.entry_id, 100)
            held, _ = await bq.takeover(min_idle_ms=100, count=10)
            await wait_idle(b, held[0].entry_id, 100)
            held_c, dead = await cq.takeover(min_idle_ms=100, count=10)
            assert held_c == [] and dead == []
            t = await task_hash(b, "p")
            assert (t["state"], t["deaths"], t["pid"]) == ("delayed", "2", "")
            due = await b.redis.zscore(f"{base0(b)}:delayed", "p")
            assert due is not None
            assert (await b.get("p")).state == "pending"
        finally:
            await shutdown(a, bq, cq, b)

    asyncio.run(scenario())
