"""Poison calls (requeue.lua): a call whose worker keeps dying while it runs alone is
quarantined, not handed from worker to worker until the fleet is gone; calls that merely
shared a dying worker with it are never blamed (they come back as suspects, run alone).
Against the session's real redis-server; a "death" is a consumer whose connections are gone,
requeued as the liveness scanner does."""

from __future__ import annotations

import asyncio

import msgpack
from broker_helpers import GROUP, base0, claim_one, make_broker, shutdown, task_hash

from lb.broker import Broker, Keys, TaskQueue
from lb.broker.records import Claimed


async def _die(b: Broker, consumer: str) -> list[str]:
    """The scanner found ``consumer`` dead: hand its work back; returns quarantined ids."""
    stream = Keys.stream(base0(b), GROUP)
    s = b.settings
    res = await b.script(
        "requeue", [stream], [consumer, GROUP, s.max_deaths, s.ttl_ms, s.max_deliveries]
    )
    return [x.decode() for x in res[1]]


async def _claim_all(tq: TaskQueue, n: int) -> list[Claimed]:
    got: list[Claimed] = []
    for _ in range(50):
        if len(got) >= n:
            break
        read = await tq.read(n - len(got), block_ms=50)
        for base, entries in read.items():
            held, _ = await tq.acquire(base, entries)
            got += held
    return got


def test_second_death_alone_quarantines_the_call(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            assert b.settings.max_deaths == 2
            await b.create("poison", group=GROUP)
            await claim_one(a)
            assert await _die(b, "A") == []  # 1st death: back on the stream at once
            c = await claim_one(bq)
            assert (c.task_id, c.previous_holder, c.suspect) == ("poison", "A", False)
            assert await _die(b, "B") == ["poison"]  # 2nd death, alone again
            p = await b.get("poison")
            err = msgpack.unpackb(p.value)
            assert (p.state, err["type"]) == ("rejected", "Quarantined")
            assert "died 2 times" in err["message"]
            assert len(await b.redis.xrange(Keys.dead_letters(base0(b), GROUP))) == 1
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_calls_that_shared_a_dying_worker_are_suspects_not_blamed(
    redis_url: str, prefix: str
) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            for i in range(3):
                await b.create(f"c{i}", group=GROUP)
            assert len(await _claim_all(a, 3)) == 3
            for _ in range(3):  # three deaths of workers running all three: nobody blamed
                assert await _die(b, a.pid) == []
                again = await _claim_all(bq, 3)
                assert sorted(c.task_id for c in again) == ["c0", "c1", "c2"]
                assert all(c.suspect for c in again)
                a, bq = bq, a
            for i in range(3):
                t = await task_hash(b, f"c{i}")
                assert (t.get("deaths", "0"), t["suspect"]) == ("0", "1")
                assert (await b.get(f"c{i}")).state == "pending"
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_a_suspension_resets_the_death_count(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await b.create("wf", group=GROUP)
            for n in range(3):
                await claim_one(a)
                assert await _die(b, "A") == []
                c = await claim_one(bq)
                await b.create(f"wf:{n}", fence=c.fence("B"))
                assert await bq.suspend(c.fence("B"), [f"wf:{n}"]) == "suspended"
                assert (await task_hash(b, "wf"))["deaths"] == "0"
                await b.settle(f"wf:{n}", "resolved", b"")  # resumes wf: a fresh entry
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_later_deaths_wait_before_redelivery(redis_url: str, prefix: str) -> None:
    """With max_deaths=3 the second death does not hand the call straight to the next worker:
    it waits in 'delayed' (ttl x 2^0 here) and goes back on the stream for any worker."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, max_deaths=3, ttl_ms=1000)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await b.create("p", group=GROUP)
            await claim_one(a)
            await _die(b, "A")
            await claim_one(bq)
            assert await _die(b, "B") == []
            t = await task_hash(b, "p")
            assert (t["state"], t["deaths"], t["pid"]) == ("delayed", "2", "")
            assert await b.redis.zscore(f"{base0(b)}:delayed", "p") is not None
            assert (await b.get("p")).state == "pending"
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())
