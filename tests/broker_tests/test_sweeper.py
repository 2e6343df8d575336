"""The sweeper on a real redis-server: timers resolve and deadlines expire with no one touching
the promise, suspended awaiters wake, and only the lease holder sweeps."""

from __future__ import annotations

import asyncio

from broker_helpers import (
    GROUP,
    claim_one,
    eventually,
    make_broker,
    raw_state,
    redis_now,
    shutdown,
    stream_counts,
)

from lb.broker import Keys, TaskQueue


async def _sweep_until_settled(b, tq: TaskQueue, pid: str, timeout_at: int):  # type: ignore[no-untyped-def]
    """Sweep every 50 ms (only the sweeper writes); return (state, Redis time seen settled).

    The state is read with HGET, so no lazy timeout can be what settles it.
    """
    while True:
        await tq.sweep(lease_ms=2000)
        state = await raw_state(b, pid)
        now = await redis_now(b)
        if state != "pending":
            return state, now
        assert now <= timeout_at + 2000, "the sweeper did not settle the promise"
        await asyncio.sleep(0.05)


def test_timer_resolves_on_time_by_sweep_alone(redis_url: str, prefix: str) -> None:
    """A timer promise (500 ms) is resolved by a sweep loop alone, not before its deadline and
    within deadline + 300 ms; its settled_at is >= its timeout_at."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        tq = TaskQueue(b, GROUP, "sweeper")
        try:
            _, p = await b.create("sleep", timeout_ms=500, timer=True)
            state, seen_at = await _sweep_until_settled(b, tq, "sleep", p.timeout_at)
            assert state == "resolved"
            assert seen_at <= p.timeout_at + 300, seen_at - p.timeout_at
            stored = await b.get("sleep")
            assert stored.settled_at >= stored.timeout_at
            assert stored.settled_at <= seen_at
            assert await b.redis.zscore(Keys.timeouts(b.keys.base(0)), "sleep") is None
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


def test_non_timer_times_out_by_sweep_and_wakes_awaiter(redis_url: str, prefix: str) -> None:
    """A plain promise (400 ms) is settled rejected_timedout by the sweep loop alone, and a task
    suspended on it is delivered again (a worker acquires it at version 2)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        tq = TaskQueue(b, GROUP, "sweeper")
        try:
            await b.create("parent", group=GROUP)
            c = await claim_one(tq)
            _, child = await b.create("parent:1", timeout_ms=400, fence=c.fence("sweeper"))
            assert await tq.suspend(c.fence("sweeper"), ["parent:1"]) == "suspended"
            assert await stream_counts(b) == (0, 0)
            state, seen_at = await _sweep_until_settled(b, tq, "parent:1", child.timeout_at)
            assert state == "rejected_timedout"
            assert seen_at <= child.timeout_at + 300
            assert (await b.get("parent:1")).settled_at >= child.timeout_at
            again = await claim_one(tq)
            assert (again.task_id, again.version) == ("parent", "2")
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


def test_only_lease_holder_sweeps(redis_url: str, prefix: str) -> None:
    """Two workers sweep: the first takes the lease; the second returns without sweeping (an
    expired promise stays stored pending) until the lease lapses, then it sweeps."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        one, two = TaskQueue(b, GROUP, "w-one"), TaskQueue(b, GROUP, "w-two")
        lease = Keys.sweep_lease(b.keys.base(0))
        try:
            _, p = await b.create("soon", timeout_ms=100)
            holds, nxt = await one.sweep(lease_ms=1500)
            assert holds and 0 <= nxt <= 100  # ms until the next deadline
            assert await b.redis.get(lease) == b"w-one"

            async def past() -> bool:
                return await redis_now(b) > p.timeout_at

            await eventually(past, what="deadline passed")
            assert await two.sweep(lease_ms=1500) == (False, -1)
            assert await raw_state(b, "soon") == "pending"  # two did not sweep
            assert await b.redis.get(lease) == b"w-one"

            async def two_sweeps() -> bool:
                await two.sweep(lease_ms=1500)
                return await raw_state(b, "soon") == "rejected_timedout"

            await eventually(two_sweeps, what="second worker sweeps after the lease lapsed")
            assert await b.redis.get(lease) == b"w-two"
            # The holder keeps renewing its lease; the other one still stays out.
            await one.sweep(lease_ms=1500)
            assert await b.redis.get(lease) == b"w-two"
        finally:
            await shutdown(one, two, b)

    asyncio.run(scenario())


def test_a_new_earliest_deadline_wakes_the_waiting_sweeper(redis_url: str, prefix: str) -> None:
    """The sweeper waits on the sweep-wake list until the deadline it knew (an idle one for a
    long while); a new promise whose deadline is now the earliest ends that wait at once, and
    one that is not the earliest leaves it alone (and the list holds one token at most)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        tq = TaskQueue(b, GROUP, "sweeper")
        wake = Keys.sweep_wake(b.keys.base(0))
        try:
            await b.create("far", timeout_ms=3_600_000)
            await tq.sweep(lease_ms=2000)
            await b.redis.delete(wake)
            waiting = asyncio.create_task(tq.wait_sweep(60.0))
            await b.create("later", timeout_ms=7_200_000)  # not the earliest: no wake
            await asyncio.sleep(0.3)
            assert not waiting.done() and await b.redis.llen(wake) == 0
            await b.create("soon", timeout_ms=200, timer=True)  # the earliest: wakes it
            await asyncio.wait_for(waiting, 10)
            for i in range(3):  # no sweeper waiting: still one token at most
                await b.create(f"sooner{i}", timeout_ms=100 - i * 10, timer=True)
            assert await b.redis.llen(wake) == 1
            holds, nxt = await tq.sweep(lease_ms=2000)
            assert holds and 0 <= nxt <= 200
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())
