"""Tasks and the group queue on a real redis-server: delivery, capacity-based reads, acquire,
fulfill, suspend/resume, cancel, release, backlog and closing. Heartbeats, takeover and
fencing are in test_takeover.py; poison and dead letters in test_dead_letters.py."""

from __future__ import annotations

import asyncio

import pytest
from broker_helpers import (
    GROUP,
    base0,
    claim,
    claim_one,
    eventually,
    make_broker,
    raw_state,
    shutdown,
    stream,
    stream_counts,
    task_hash,
    xpending_rows,
)

from lb.broker import BadInput, Fenced, Keys, TaskQueue
from lb.broker.heartbeat import Heartbeat


def _hb(b, pid: str, held: list[tuple[str, str, str]]) -> Heartbeat:  # type: ignore[no-untyped-def]
    """A heartbeat driven by hand (``beat()``), never started as a thread."""
    return Heartbeat(b.settings, GROUP, pid, 0.1, lambda: list(held), lambda ids: None)


async def _dlq(b) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    rows = await b.redis.xrange(Keys.dead_letters(base0(b), GROUP))
    return [{k.decode(): v.decode("utf-8", "replace") for k, v in f.items()} for _, f in rows]


def test_create_with_group_delivers_one_entry(redis_url: str, prefix: str) -> None:
    """A create with a group adds exactly one stream entry naming the task and carrying the
    call (its params and deadline: a worker may run it straight from the entry); the task is
    pending at version 0 with that entry id, and the group is registered."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            await b.create("job", b"params", group=GROUP)
            entries = await b.redis.xrange(stream(b))
            assert len(entries) == 1
            eid, fields = entries[0]
            p = await b.get("job")
            assert fields == {b"t": b"job", b"p": b"params", b"d": str(p.timeout_at).encode()}
            t = await task_hash(b, "job")
            assert (t["state"], t["v"], t["eid"], t["group"], t["strikes"]) == (
                "pending",
                "0",
                eid.decode(),
                GROUP,
                "0",
            )
            assert await b.redis.sismember(Keys.groups(base0(b)), GROUP)
            await b.create("plain")  # no group: no task, no entry
            assert await b.redis.exists(b.keys.task("plain")) == 0
            assert (await stream_counts(b))[0] == 1
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_read_and_acquire_gives_claimed_version_1(redis_url: str, prefix: str) -> None:
    """read + acquire returns Claimed at version '1' with the params, and the task is recorded
    as acquired by that worker, its entry in that worker's pending list."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        tq = TaskQueue(b, GROUP, "w1")
        try:
            _, p = await b.create("job", b"params", param_headers=b"ph", group=GROUP)
            c = await claim_one(tq)
            assert (c.task_id, c.version, c.strikes) == ("job", "1", 1)
            assert (c.param, c.param_headers, c.timeout_at) == (b"params", b"ph", p.timeout_at)
            assert (c.base, c.group, c.previous_holder) == (base0(b), GROUP, None)
            t = await task_hash(b, "job")
            assert (t["state"], t["v"], t["pid"], t["eid"]) == ("acquired", "1", "w1", c.entry_id)
            rows = await xpending_rows(b)
            assert [(r["message_id"], r["consumer"]) for r in rows] == [(c.entry_id, "w1")]
            assert c.fence("w1").args() == ["job", "1", "w1"]
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


def test_read_count_is_capacity(redis_url: str, prefix: str) -> None:
    """12 tasks queued: a worker asking for 3 gets exactly 3, the next worker the next 3 (no
    one takes the whole batch)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, c = TaskQueue(b, GROUP, "wa"), TaskQueue(b, GROUP, "wc")
        try:
            for i in range(12):
                await b.create(f"job{i}", group=GROUP)
            got_a = await a.read(3, 100)
            got_c = await c.read(3, 100)
            ids_a = [e.tid for e in got_a[base0(b)]]
            ids_c = [e.tid for e in got_c[base0(b)]]
            assert ids_a == ["job0", "job1", "job2"]
            assert ids_c == ["job3", "job4", "job5"]
            held, dead = await a.acquire(base0(b), got_a[base0(b)])
            assert [h.task_id for h in held] == ids_a and dead == []
            assert await stream_counts(b) == (12, 6)
        finally:
            await shutdown(a, c, b)

    asyncio.run(scenario())


def test_fulfill_settles_and_empties_stream(redis_url: str, prefix: str) -> None:
    """The holder's fulfill resolves the promise and acks+deletes the entry in the same step
    (XLEN 0, XPENDING 0); a second fulfill with the same fence is Fenced."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        tq = TaskQueue(b, GROUP, "w1")
        try:
            await b.create("job", group=GROUP)
            c = await claim_one(tq)
            assert await stream_counts(b) == (1, 1)
            p = await tq.fulfill(c.fence("w1"), "resolved", b"result", b"vh")
            assert (p.state, p.value, p.value_headers) == ("resolved", b"result", b"vh")
            assert await stream_counts(b) == (0, 0)
            assert await task_hash(b, "job") == {}  # a settled call is its promise alone
            with pytest.raises(Fenced):
                await tq.fulfill(c.fence("w1"), "rejected", b"again")
            assert (await b.get("job")).value == b"result"
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


def test_suspend_on_pending_child_then_resume(redis_url: str, prefix: str) -> None:
    """The holder suspends on a pending child: 'suspended', the entry is gone from the stream
    and no worker can read or take it; settling the child re-delivers the parent (one new
    entry) and a worker acquires it at version 2; the old fence is refused."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await b.create("parent", b"pp", group=GROUP)
            ca = await claim_one(a)
            fence = ca.fence("A")
            created, _ = await b.create("parent:1", fence=fence)
            assert created
            assert await a.suspend(fence, ["parent:1"]) == "suspended"
            assert await stream_counts(b) == (0, 0)
            t = await task_hash(b, "parent")
            assert (t["state"], t["eid"], t["pid"]) == ("suspended", "", "")
            assert await b.redis.smembers(b.keys.callbacks("parent:1")) == {b"parent"}
            assert await bq.read(5, 50) == {}
            assert await bq.takeover(min_idle_ms=0, count=10) == ([], [])
            with pytest.raises(Fenced):
                await a.fulfill(fence, "resolved", b"x")

            await b.settle("parent:1", "resolved", b"child value")
            assert await stream_counts(b) == (1, 0)
            assert (await task_hash(b, "parent"))["state"] == "pending"
            cb = await claim_one(bq)
            assert (cb.task_id, cb.version, cb.param) == ("parent", "2", b"pp")
            assert cb.entry_id != ca.entry_id
            p = await bq.fulfill(cb.fence("B"), "resolved", b"done")
            assert p.state == "resolved" and await stream_counts(b) == (0, 0)
        finally:
            await shutdown(a, bq, b)

    asyncio.run(scenario())


def test_suspend_on_settled_child_is_ready(redis_url: str, prefix: str) -> None:
    """Suspending on an already settled child returns 'ready' and the task stays held (entry
    still pending, fulfill works); on a missing id it returns 'missing' and changes nothing."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a = TaskQueue(b, GROUP, "A")
        try:
            await b.create("parent", group=GROUP)
            ca = await claim_one(a)
            fence = ca.fence("A")
            await b.create("parent:1", fence=fence)
            await b.settle("parent:1", "resolved", b"v", fence=fence)
            assert await a.suspend(fence, ["parent:1"]) == "ready"
            assert await a.suspend(fence, ["parent:nope"]) == "missing"
            t = await task_hash(b, "parent")
            assert (t["state"], t["pid"], t["v"]) == ("acquired", "A", "1")
            assert await stream_counts(b) == (1, 1)
            assert (await a.fulfill(fence, "resolved", b"ok")).state == "resolved"
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_cancel_fences_reader_and_holder(redis_url: str, prefix: str) -> None:
    """A client cancels promises whose tasks were read-but-not-acquired and acquired: the
    entries leave the stream at once, the read one is skipped by acquire (not held, not
    dead-lettered), the holder's fulfill is Fenced and its heartbeat reports the task lost."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a = TaskQueue(b, GROUP, "A")
        hb = None
        try:
            await b.create("held", group=GROUP)
            ch = await claim_one(a)
            await b.create("read", group=GROUP)
            read = await a.read(10, 100)
            assert [e.tid for e in read[base0(b)]] == ["read"]
            for pid in ("held", "read"):
                changed, p = await b.settle(pid, "rejected_canceled", b"")
                assert changed and p.state == "rejected_canceled"
            assert await stream_counts(b) == (0, 0)
            assert await a.acquire(base0(b), read[base0(b)]) == ([], [])
            assert await stream_counts(b) == (0, 0) and await _dlq(b) == []
            with pytest.raises(Fenced):
                await a.fulfill(ch.fence("A"), "resolved", b"late")
            hb = _hb(b, "A", [(base0(b), "held", ch.version)])
            assert hb.beat() == ["held"]
            assert (await b.get("held")).state == "rejected_canceled"
        finally:
            if hb is not None:
                hb.client.close()
            await shutdown(a, b)

    asyncio.run(scenario())


def test_clean_release_counts_no_attempt(redis_url: str, prefix: str) -> None:
    """With max_deliveries=2, five acquire + clean release rounds never dead-letter: each
    acquisition is attempt 1 at a growing version, the task is back on the stream each time,
    and the previous fence is refused."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, max_deliveries=2)
        a = TaskQueue(b, GROUP, "A")
        try:
            await b.create("job", group=GROUP)
            previous = None
            for i in range(5):
                c = await claim_one(a)
                assert (c.version, c.strikes) == (str(i + 1), 1)
                if previous is not None:
                    with pytest.raises(Fenced):
                        await a.fulfill(previous.fence("A"), "resolved", b"stale")
                assert await a.release(c.fence("A")) == "released"
                assert await stream_counts(b) == (1, 0)
                assert (await task_hash(b, "job"))["state"] == "pending"
                previous = c
            assert (await b.get("job")).state == "pending"
            assert await _dlq(b) == []
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_backlog_drained_by_late_worker(redis_url: str, prefix: str) -> None:
    """50 tasks created while no worker exists wait in the stream; a worker started afterwards
    (reading 8 at a time) drains and completes all of them."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        w = None
        try:
            for i in range(50):
                await b.create(f"job{i}", str(i).encode(), group=GROUP)
            assert await stream_counts(b) == (50, 0)
            w = TaskQueue(b, GROUP, "late")
            done: set[str] = set()

            async def drain() -> bool:
                held, dead = await claim(w, 8, 100)
                assert dead == [] and len(held) <= 8
                for h in held:
                    await w.fulfill(h.fence("late"), "resolved", h.param)
                    done.add(h.task_id)
                return len(done) == 50

            await eventually(drain, what="backlog drained")
            assert await stream_counts(b) == (0, 0)
            assert (await b.count_by_state())["resolved"] == 50
            assert (await b.get("job49")).value == b"49"
        finally:
            await shutdown(*(x for x in (w, b) if x is not None))

    asyncio.run(scenario())


def test_close_drops_every_connection(redis_url: str, prefix: str) -> None:
    """After Broker.close() and TaskQueue.close() no connection of that client is left open
    on the server (so a cleanly stopped worker really disconnects)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, client_name="wclose")
        tq = TaskQueue(b, GROUP, "wclose")
        obs = make_broker(redis_url, prefix)
        try:
            await b.ping()
            await tq.read(1, 10)

            async def names() -> list[str]:
                return [c["name"] for c in await obs.redis.client_list()]

            assert Keys.conn_name(prefix, "wclose") in await names()
            await tq.close()
            await b.close()

            async def gone() -> bool:
                return Keys.conn_name(prefix, "wclose") not in await names()

            await eventually(gone, timeout=2.0, what="wclose connections closed by close()")
        finally:
            await shutdown(tq, b, obs)

    asyncio.run(scenario())


@pytest.mark.parametrize("state", ["pending", "bogus"])
def test_fulfill_refuses_invalid_state(redis_url: str, prefix: str, state: str) -> None:
    """fulfill with a state that is not a settled state is BadInput; the task stays held and
    the promise pending (with its deadline still tracked)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a = TaskQueue(b, GROUP, "A")
        try:
            await b.create("job", group=GROUP)
            c = await claim_one(a)
            try:
                with pytest.raises(BadInput):
                    await a.fulfill(c.fence("A"), state, b"v")
            finally:
                t = await task_hash(b, "job")
                timeouts = Keys.timeouts(base0(b))
                assert (t["state"], await raw_state(b, "job")) == ("acquired", "pending")
                assert await b.redis.zscore(timeouts, "job") is not None
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())


def test_fulfill_refuses_oversized_value(redis_url: str, prefix: str) -> None:
    """With max_payload=64, fulfill with a 65-byte value is refused and nothing is stored."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, max_payload=64)
        a = TaskQueue(b, GROUP, "A")
        try:
            await b.create("job", group=GROUP)
            c = await claim_one(a)
            try:
                with pytest.raises(BadInput):
                    await a.fulfill(c.fence("A"), "resolved", b"x" * 65)
            finally:
                assert await raw_state(b, "job") == "pending"
        finally:
            await shutdown(a, b)

    asyncio.run(scenario())
