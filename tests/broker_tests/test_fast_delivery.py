"""The fast path on a real redis-server: a call's first stream entry carries the call, so the
worker that reads it runs it at once, with no acquire; the delivery is acquired by the holder's
first fenced write or heartbeat (lib.lua held()). These tests try to break what that must keep:
only the reader of that very entry can hold it, a stale reader is fenced after a takeover, a
requeue or a release, a kill counts as the death it was, and a call that is not a plain first
delivery (params too big to carry, deadline near, an entry not lb's) still goes the slow way."""

from __future__ import annotations

import asyncio

import pytest
from broker_helpers import GROUP, base0, make_broker, shutdown, stream, task_hash

from lb.broker import Broker, Claimed, Fence, Fenced, TaskQueue
from lb.broker.lookup import lookup
from lb.broker.records import Entry


async def _read_fast(tq: TaskQueue, n: int = 1) -> list[Claimed]:
    """Read ``n`` entries and hold them as the worker's claim loop does (no acquire)."""
    got: list[Claimed] = []
    for _ in range(40):
        for base, entries in (await tq.read(n - len(got), block_ms=50)).items():
            held, dead = await tq.claim(base, entries)
            assert dead == []
            got += held
        if len(got) >= n:
            return got
    raise AssertionError(f"read {len(got)} of {n}")


def _queues(b: Broker, *names: str) -> list[TaskQueue]:
    return [TaskQueue(b, GROUP, n) for n in names]


def test_a_first_delivery_runs_unacquired_and_its_first_write_acquires_it(
    redis_url: str, prefix: str
) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, c = _queues(b, "A", "C")
        try:
            await a.ensure_group()
            await b.create("job", b"args", group=GROUP)
            (h,) = await _read_fast(a)
            assert (h.task_id, h.version, h.param, h.strikes) == ("job", "~" + h.entry_id,
                                                                  b"args", 1)  # fmt: skip
            t = await task_hash(b, "job")
            assert (t["state"], t["v"], t["pid"]) == ("pending", "0", "")  # no round trip
            # Only the reader holds it: the same fence under another name is refused, and
            # changes nothing.
            with pytest.raises(Fenced):
                await c.fulfill(h.fence("C"), "resolved", b"zombie")
            assert (await task_hash(b, "job"))["state"] == "pending"
            # A fenced step by the holder acquires the delivery (version 1, strike 1).
            await b.create("job:1", fence=h.fence("A"), timeout_ms=60_000)
            t = await task_hash(b, "job")
            assert (t["state"], t["v"], t["pid"], t["strikes"]) == ("acquired", "1", "A", "1")
            p = await a.fulfill(h.fence("A"), "resolved", b"done")
            assert (p.state, p.value) == ("resolved", b"done")
            assert await b.redis.xlen(stream(b)) == 0
        finally:
            await shutdown(a, c, b)

    asyncio.run(scenario())


def test_a_heartbeat_acquires_a_fast_delivery_and_a_foreign_entry_id_is_refused(
    redis_url: str, prefix: str
) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        (a,) = _queues(b, "A")
        try:
            await a.ensure_group()
            await b.create("one", group=GROUP)
            await b.create("two", group=GROUP)
            one, two = await _read_fast(a, 2)
            # Another task's entry id in the fence: not this task's delivery.
            assert not await a.holds(base0(b), Fence("one", two.version, "A"))
            assert (await task_hash(b, "one"))["state"] == "pending"
            assert await a.holds(base0(b), one.fence("A"))  # the heartbeat's own check
            t = await task_hash(b, "one")
            assert (t["state"], t["v"], t["pid"]) == ("acquired", "1", "A")
            assert await a.holds(base0(b), one.fence("A"))  # and again, now acquired
            assert (await a.fulfill(one.fence("A"), "resolved", b"")).state == "resolved"
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["takeover", "requeue", "release"])
def test_a_stale_fast_holder_is_fenced(redis_url: str, prefix: str, how: str) -> None:
    """After its delivery ended by a takeover (silent), a requeue (dead) or its own clean
    release, the '~' fence of the first reader is refused, whether or not it had acquired."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, c = _queues(b, "A", "C")
        try:
            await a.ensure_group()
            await b.create("job", group=GROUP)
            (h,) = await _read_fast(a)
            if how == "takeover":
                held, _ = await c.takeover(0, 1)
                assert [(x.version, x.previous_holder, x.lapses) for x in held] == [("2", "A", 1)]
            elif how == "requeue":
                res = await b.script(
                    "requeue", [stream(b)], ["A", GROUP, 2, 1000, b.settings.max_deliveries]
                )
                assert res[0] == 1
                t = await task_hash(b, "job")
                assert (t["state"], t["deaths"], t["dead"]) == ("pending", "1", "A")
            else:
                assert await a.release(h.fence("A")) == "released"
                assert (await task_hash(b, "job"))["strikes"] == "0"  # not a strike
            with pytest.raises(Fenced):
                await a.fulfill(h.fence("A"), "resolved", b"late")
            assert not await a.holds(base0(b), h.fence("A"))
            assert (await b.get("job")).state == "pending"
        finally:
            await shutdown(a, c, b)

    asyncio.run(scenario())


def test_calls_that_are_not_plain_first_deliveries_are_acquired(
    redis_url: str, prefix: str
) -> None:
    """Params too big to carry, a deadline too near, a re-delivery, an entry lb did not write:
    each is acquired (a version, not a '~' fence); an expired one is never handed out."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        (a,) = _queues(b, "A")
        try:
            await a.ensure_group()
            await b.create("big", b"x" * 5000, group=GROUP)
            await b.create("near", group=GROUP, timeout_ms=500)
            await b.create("gone", group=GROUP, timeout_ms=1)
            await b.redis.xadd(stream(b), {"t": "odd", "p": "x", "d": "soon"})
            await b.create("odd", group=GROUP)  # its own entry is the fast one
            await asyncio.sleep(0.01)
            read = await a.read(10, block_ms=100)
            entries = read[base0(b)]
            assert [e.param is None for e in entries] == [True, False, False, True, False]
            fast, slow = a.split(base0(b), entries)
            assert [h.task_id for h in fast] == ["odd"]
            assert [e.tid for e in slow] == ["big", "near", "gone", "odd"]
            held, dead = await a.claim(base0(b), entries)
            by_id = {h.task_id: h.version for h in held}
            assert by_id == {"odd": "~" + entries[4].eid, "big": "1", "near": "1"}
            assert dead == []
            assert (await b.get("gone")).state == "rejected_timedout"
            # A re-delivery (released: a fresh entry naming the task only) is acquired.
            big = next(h for h in held if h.task_id == "big")
            await a.release(big.fence("A"))
            (again,) = (await a.read(1, block_ms=100))[base0(b)]
            assert again == Entry(again.eid, "big")
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_the_lookup_shows_a_fast_delivery_held_by_its_reader(redis_url: str, prefix: str) -> None:
    """`lb`'s lookup (the dashboard's call view) shows a call run straight from its entry as
    held by the worker that read it, before any write acquires it; a re-delivery read but not
    acquired is not shown as held."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        (a,) = _queues(b, "A")
        try:
            await a.ensure_group()
            await b.create("job", group=GROUP)
            (h,) = await _read_fast(a)
            assert (await task_hash(b, "job"))["state"] == "pending"
            view = await lookup(b, "job")
            assert (view["task"]["state"], view["task"]["pid"]) == ("acquired", "A")
            await a.release(h.fence("A"))
            await a.read(1, block_ms=100)  # the fresh entry, read, not acquired
            view = await lookup(b, "job")
            assert (view["task"]["state"], view["task"]["pid"]) == ("pending", "")
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_a_clean_stop_hands_back_first_deliveries_it_read_but_never_started(
    redis_url: str, prefix: str
) -> None:
    """A stop that cuts a read short after Redis served it leaves entries under the worker's
    name that it never saw. Handed back at the stop (a clean release: no strike), they are not
    later blamed as a death by the liveness scanner's requeue; a re-delivery read the same way
    is left to the requeue, which hands it back unblamed as ever."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        (a,) = _queues(b, "A")
        try:
            await a.ensure_group()
            await b.create("first", group=GROUP)
            await b.create("again", group=GROUP)
            (h,) = await _read_fast(a)  # "again" as a re-delivery: released once
            assert h.task_id == "first"
            await b.create("lost", group=GROUP)
            (again,) = await _read_fast(a)
            assert await a.release(again.fence("A")) == "released"
            got = await a.read(10, block_ms=100)  # read, never seen: the stop cut it short
            assert sorted(e.tid for e in got[base0(b)]) == ["again", "lost"]
            assert await a.release(h.fence("A")) == "released"  # the stop's own hand-back
            assert await a.release_unread() == 1  # "lost"; "again" is not a first delivery
            t = await task_hash(b, "lost")
            assert (t["state"], t["strikes"]) == ("pending", "0")
            res = await b.script(
                "requeue", [stream(b)], ["A", GROUP, 2, 1000, b.settings.max_deliveries]
            )
            assert res[0] == 1  # "again" only, unblamed
            for tid in ("lost", "again"):
                assert "deaths" not in await task_hash(b, tid)
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())
