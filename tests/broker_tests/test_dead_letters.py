"""Poison and dead letters on a real redis-server: failed releases, garbage stream entries and
tasks delivered too often end in the dead-letter stream with their promise rejected."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from broker_helpers import (
    GROUP,
    base0,
    claim,
    claim_one,
    make_broker,
    shutdown,
    stream,
    stream_counts,
    task_hash,
    wait_idle,
)

from lb.broker import Fenced, Keys, TaskQueue


async def _dlq(b) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    rows = await b.redis.xrange(Keys.dead_letters(base0(b), GROUP))
    return [{k.decode(): v.decode("utf-8", "replace") for k, v in f.items()} for _, f in rows]


def test_failed_release_dead_letters_at_max_failures(redis_url: str, prefix: str) -> None:
    """Failed releases (max_failures=3): the first two re-queue, the third returns 'dead', the
    promise is rejected with a DeadLettered value naming the reason, the dead-letter stream
    holds the entry and the group stream is empty."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a = TaskQueue(b, GROUP, "A")
        try:
            assert b.settings.max_failures == 3
            await b.create("job", group=GROUP)
            outcomes = []
            for _ in range(3):
                c = await claim_one(a)
                outcomes.append(await a.release(c.fence("A"), failed=True, reason="bad params"))
            assert outcomes == ["released", "released", "dead"]
            p = await b.get("job")
            assert p.state == "rejected"
            err = msgpack.unpackb(p.value)
            assert err["type"] == "DeadLettered" and "bad params" in err["message"]
            dlq = await _dlq(b)
            assert len(dlq) == 1 and dlq[0]["t"] == "job" and "bad params" in dlq[0]["reason"]
            assert await stream_counts(b) == (0, 0)
            assert (await task_hash(b, "job"))["state"] == "fulfilled"  # kept: a post-mortem
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_garbage_entries_dead_lettered_by_acquire(redis_url: str, prefix: str) -> None:
    """Entries XADDed raw (no 't' field, a 't' naming no task, undecodable bytes) are
    dead-lettered by acquire next to a real task, which is still acquired normally."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a = TaskQueue(b, GROUP, "A")
        try:
            await a.ensure_group()
            q = stream(b)
            await b.redis.xadd(q, {"x": "1"})
            await b.redis.xadd(q, {"t": "nope"})
            await b.redis.xadd(q, {"t": b"\xff\xfe"})
            await b.create("plain", b"untouched")  # a promise with no task
            await b.redis.xadd(q, {"t": "plain"})
            await b.create("real", group=GROUP)
            held, dead = await claim(a, 10)
            assert [h.task_id for h in held] == ["real"]
            assert sorted(dead) == ["", "", "nope", "plain"]
            dlq = await _dlq(b)
            assert len(dlq) == 4 and all(d["reason"] == "entry names no task" for d in dlq)
            plain = await b.get("plain")  # naming a promise in garbage does not settle it
            assert (plain.state, plain.param) == ("pending", b"untouched")
            assert await stream_counts(b) == (1, 1)  # only the real task's entry is left
            await a.fulfill(held[0].fence("A"), "resolved", b"")
            assert await stream_counts(b) == (0, 0)
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_a_stale_entry_of_a_resolved_call_is_dropped_not_dead_lettered(
    redis_url: str, prefix: str
) -> None:
    """A resolved call keeps no task hash: a leftover entry naming it (XADDed by hand here)
    is dropped without a dead letter, and the call stays resolved; an entry naming a pending
    call whose task hash is gone (lost by hand) is still a dead letter."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a = TaskQueue(b, GROUP, "A")
        try:
            await a.ensure_group()
            await b.create("done", group=GROUP)
            c = await claim_one(a)
            await a.fulfill(c.fence("A"), "resolved", b"v")
            await b.create("lost", group=GROUP)
            await b.redis.delete(b.keys.task("lost"))
            await b.redis.xadd(stream(b), {"t": "done"})
            held, dead = await claim(a, 10)
            assert held == [] and dead == ["lost"]
            assert [d["t"] for d in await _dlq(b)] == ["lost"]
            assert (await b.get("done")).state == "resolved"
            assert await stream_counts(b) == (0, 0)
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_garbage_and_unacquired_entries_via_takeover(redis_url: str, prefix: str) -> None:
    """A reads a garbage entry and a real call's first entry, then goes silent; B's takeover
    dead-letters the garbage and takes the call over from A. A worker runs a first delivery
    from the read on (the fast path, no acquire), so it was A's: version 2 (A's run was 1),
    previous holder A, one lapse."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await a.ensure_group()
            await b.redis.xadd(stream(b), {"t": "nope"})
            await b.create("real", group=GROUP)
            read = await a.read(10, 100)
            eids = [e.eid for e in read[base0(b)]]
            assert len(eids) == 2
            for eid in eids:
                await wait_idle(b, eid, 100)
            held, dead = await bq.takeover(min_idle_ms=100, count=10)
            assert dead == ["nope"]
            assert [(h.task_id, h.version, h.previous_holder, h.lapses) for h in held] == [
                ("real", "2", "A", 1)
            ]
            assert len(await _dlq(b)) == 1
            assert await stream_counts(b) == (1, 1)
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_max_deliveries_dead_letters_on_repeated_takeover(redis_url: str, prefix: str) -> None:
    """With max_deliveries=2: A acquires (1), B takes over (2), C's takeover is delivery 3, so
    the task is dead-lettered: promise rejected, entry in the dead-letter stream, group stream
    empty, and B is fenced."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, max_deliveries=2, max_deaths=10)
        a, bq, cq = (TaskQueue(b, GROUP, w) for w in ("A", "B", "C"))
        try:
            await b.create("job", group=GROUP)
            ca = await claim_one(a)
            await wait_idle(b, ca.entry_id, 100)
            held, _ = await bq.takeover(min_idle_ms=100, count=10)
            assert [(h.version, h.strikes) for h in held] == [("2", 2)]
            await wait_idle(b, ca.entry_id, 100)
            held_c, dead = await cq.takeover(min_idle_ms=100, count=10)
            assert held_c == [] and dead == ["job"]
            p = await b.get("job")
            assert p.state == "rejected"
            assert (
                "deliveries in a row ended without a completion"
                in msgpack.unpackb(p.value)["message"]
            )
            dlq = await _dlq(b)
            assert [d["t"] for d in dlq] == ["job"]
            assert await stream_counts(b) == (0, 0)
            with pytest.raises(Fenced):
                await bq.fulfill(held[0].fence("B"), "resolved", b"late")
        finally:
            await shutdown(a, bq, cq, b)

    asyncio.run(scenario())
