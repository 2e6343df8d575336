"""Tasks and the group queue on a real redis-server: delivery, capacity-based reads, acquire,
fulfill, heartbeats, takeover and fencing, suspend/resume, release, dead letters, backlog and
dead-consumer detection."""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest
from broker_helpers import (
    GROUP,
    base0,
    claim,
    claim_one,
    eventually,
    idle_ms,
    make_broker,
    raw_state,
    shutdown,
    stream,
    stream_counts,
    task_hash,
    wait_idle,
    xpending_rows,
)

from broker import BadInput, Fenced, Keys, NotFound, TaskQueue
from broker.heartbeat import Heartbeat


def _hb(b, pid: str, held: list[tuple[str, str, str]]) -> Heartbeat:  # type: ignore[no-untyped-def]
    """A heartbeat driven by hand (``beat()``), never started as a thread."""
    return Heartbeat(b.settings, GROUP, pid, 0.1, lambda: list(held), lambda ids: None)


async def _dlq(b) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    rows = await b.redis.xrange(Keys.dead_letters(base0(b), GROUP))
    return [{k.decode(): v.decode("utf-8", "replace") for k, v in f.items()} for _, f in rows]


def test_create_with_group_delivers_one_entry(redis_url: str, prefix: str) -> None:
    """A create with a group adds exactly one stream entry naming the task; the task is pending
    at version 0 with that entry id, and the group is registered."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            await b.create("job", b"params", group=GROUP)
            entries = await b.redis.xrange(stream(b))
            assert len(entries) == 1
            eid, fields = entries[0]
            assert fields == {b"t": b"job"}
            t = await task_hash(b, "job")
            assert (t["state"], t["v"], t["eid"], t["group"], t["attempts"]) == (
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
            assert (c.task_id, c.version, c.attempts) == ("job", "1", 1)
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
            ids_a = [tid for _, tid in got_a[base0(b)]]
            ids_c = [tid for _, tid in got_c[base0(b)]]
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
            assert (await task_hash(b, "job"))["state"] == "fulfilled"
            with pytest.raises(Fenced):
                await tq.fulfill(c.fence("w1"), "rejected", b"again")
            assert (await b.get("job")).value == b"result"
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


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
            assert (cb.task_id, cb.version, cb.previous_holder, cb.attempts) == ("job", "2", "A", 2)
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


def test_stale_and_fresh_fulfill_in_one_batch(redis_url: str, prefix: str) -> None:
    """After a takeover, the old holder's and the new holder's fulfill sent at the same moment
    on one Broker (one pipeline): the stale one is Fenced, the fresh one settles the promise."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await b.create("job", group=GROUP)
            ca = await claim_one(a)
            await wait_idle(b, ca.entry_id, 100)
            held, _ = await bq.takeover(min_idle_ms=100, count=1)
            stale, fresh = await asyncio.gather(
                a.fulfill(ca.fence("A"), "resolved", b"stale"),
                bq.fulfill(held[0].fence("B"), "resolved", b"fresh"),
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
            await b.create("job", group=GROUP)
            ca = await claim_one(a)
            base = base0(b)
            assert await a.holds(base, ca.fence("A"))
            await wait_idle(b, ca.entry_id, 200)
            (cb,), _ = await bq.takeover(min_idle_ms=200, count=1)
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
            assert [tid for _, tid in read[base0(b)]] == ["read"]
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
                assert (c.version, c.attempts) == (str(i + 1), 1)
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
            assert (await task_hash(b, "job"))["state"] == "fulfilled"
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


def test_garbage_and_unacquired_entries_via_takeover(redis_url: str, prefix: str) -> None:
    """A reads a garbage entry and a real one but dies before acquire; B's takeover
    dead-letters the garbage and takes the real task at version 1 with no previous holder."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        a, bq = TaskQueue(b, GROUP, "A"), TaskQueue(b, GROUP, "B")
        try:
            await a.ensure_group()
            await b.redis.xadd(stream(b), {"t": "nope"})
            await b.create("real", group=GROUP)
            read = await a.read(10, 100)
            eids = [eid for eid, _ in read[base0(b)]]
            assert len(eids) == 2
            for eid in eids:
                await wait_idle(b, eid, 100)
            held, dead = await bq.takeover(min_idle_ms=100, count=10)
            assert dead == ["nope"]
            assert [(h.task_id, h.version, h.previous_holder) for h in held] == [
                ("real", "1", None)
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
        b = make_broker(redis_url, prefix, max_deliveries=2)
        a, bq, cq = (TaskQueue(b, GROUP, w) for w in ("A", "B", "C"))
        try:
            await b.create("job", group=GROUP)
            ca = await claim_one(a)
            await wait_idle(b, ca.entry_id, 100)
            held, _ = await bq.takeover(min_idle_ms=100, count=10)
            assert [(h.version, h.attempts) for h in held] == [("2", 2)]
            await wait_idle(b, ca.entry_id, 100)
            held_c, dead = await cq.takeover(min_idle_ms=100, count=10)
            assert held_c == [] and dead == ["job"]
            p = await b.get("job")
            assert p.state == "rejected"
            assert "max deliveries" in msgpack.unpackb(p.value)["message"]
            dlq = await _dlq(b)
            assert [d["t"] for d in dlq] == ["job"]
            assert await stream_counts(b) == (0, 0)
            with pytest.raises(Fenced):
                await bq.fulfill(held[0].fence("B"), "resolved", b"late")
        finally:
            await shutdown(a, bq, cq, b)

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


def test_dead_consumer_detected_on_second_call_and_taken_at_once(
    redis_url: str, prefix: str
) -> None:
    """Worker 'wdead' acquires a task and then all its connections close. dead_consumers()
    reports it only once it was seen gone on calls at least ttl/10 apart - not on a second call
    made at once (passes can run back to back; a reconnect must not look like a death) - and
    a live worker holding a task never; takeover with a 60 s min idle but dead=['wdead'] takes
    its task at once (version 2)."""

    async def scenario() -> None:
        bd = make_broker(redis_url, prefix, client_name="wdead")
        bl = make_broker(redis_url, prefix, client_name="walive")
        bo = make_broker(redis_url, prefix, client_name="obs", ttl_ms=1000)
        dq, lq, oq = TaskQueue(bd, GROUP, "wdead"), TaskQueue(bl, GROUP, "walive"), None
        try:
            oq = TaskQueue(bo, GROUP, "obs")
            await bd.create("doomed", group=GROUP)
            cd = await claim_one(dq)
            await bl.create("alive", group=GROUP)
            await claim_one(lq)
            await shutdown(dq, bd)  # every connection of wdead is gone now

            async def wdead_gone() -> bool:
                return "wdead" not in {c["name"] for c in await bo.redis.client_list()}

            await eventually(wdead_gone, what="wdead's connections closed")
            assert await oq.dead_consumers() == []
            t_first = time.monotonic()
            assert await oq.dead_consumers() == []  # seen gone again, but too soon

            async def confirmed() -> bool:
                return await oq.dead_consumers() == ["wdead"]  # type: ignore[union-attr]

            await eventually(confirmed, what="wdead confirmed dead after ttl/10")
            assert time.monotonic() - t_first >= 0.08
            held, dead = await oq.takeover(min_idle_ms=60_000, count=10, dead=["wdead"])
            assert dead == []
            assert [(h.task_id, h.version, h.previous_holder) for h in held] == [
                ("doomed", "2", "wdead")
            ]
            assert await idle_ms(bo, cd.entry_id) < 60_000
            assert await oq.dead_consumers() == []  # nothing pending for wdead any more
            assert (await task_hash(bo, "alive"))["pid"] == "walive"
        finally:
            await shutdown(dq, bd, lq, bl, bo, *([oq] if oq else []))

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

            assert "wclose" in await names()
            await tq.close()
            await b.close()

            async def gone() -> bool:
                return "wclose" not in await names()

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
