"""Promises on a real redis-server: create/dedup, get, settle once, timeouts, listeners, search,
counts, retention, and the key layout the Lua scripts really write."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
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
from redis.crc import key_slot

from lb.broker import BadInput, Keys, NotFound, TaskQueue


def test_create_then_same_id_returns_stored_record(redis_url: str, prefix: str) -> None:
    """Create stores a pending promise (created=True); creating the same id again, even with a
    different param, tags, timeout and a group, returns the stored record unchanged
    (created=False) and delivers no second task."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            created, p = await b.create(
                "p1",
                b"param-1",
                param_headers=b"h1",
                tags={"env": "prod"},
                timeout_ms=60_000,
                group=GROUP,
            )
            assert created is True
            assert (p.id, p.state, p.param, p.param_headers) == ("p1", "pending", b"param-1", b"h1")
            assert p.tags == {"env": "prod"}
            assert p.timeout_at == p.created_at + 60_000
            assert p.settled_at == 0 and p.value == b"" and p.pending and not p.settled
            assert await stream_counts(b) == (1, 0)

            again, q = await b.create(
                "p1", b"param-2", tags={"env": "dev"}, timeout_ms=5, group=GROUP, timer=True
            )
            assert again is False
            assert q == p
            assert await b.get("p1") == p
            assert await stream_counts(b) == (1, 0)  # still one task entry
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_get_missing_is_not_found(redis_url: str, prefix: str) -> None:
    """get and settle of an id never created raise NotFound (a KeyError with a plain message)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            with pytest.raises(NotFound) as info:
                await b.get("nope")
            assert isinstance(info.value, KeyError)
            assert "nope" in str(info.value) and not str(info.value).startswith('"')
            with pytest.raises(NotFound):
                await b.settle("nope", "resolved", b"v")
            assert await raw_state(b, "nope") is None  # settle created nothing
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_settle_race_exactly_one_wins(redis_url: str, prefix: str) -> None:
    """20 concurrent settles of one promise, with different values and states, from 20 separate
    Broker instances: exactly one reports changed=True and every caller gets the same stored
    record (the winner's value)."""

    async def scenario() -> None:
        setup = make_broker(redis_url, prefix)
        brokers = [make_broker(redis_url, prefix) for _ in range(20)]
        try:
            await setup.create("race")
            await asyncio.gather(*(b.ping() for b in brokers))  # connect first: a real race
            states = ["resolved", "rejected", "rejected_canceled"]
            results = await asyncio.gather(
                *(b.settle("race", states[i % 3], b"value-%d" % i) for i, b in enumerate(brokers))
            )
            winners = [i for i, (changed, _) in enumerate(results) if changed]
            assert len(winners) == 1, winners
            w = winners[0]
            stored = results[w][1]
            assert all(r == stored for _, r in results)
            assert stored.value == b"value-%d" % w and stored.state == states[w % 3]
            assert await setup.get("race") == stored
        finally:
            await shutdown(setup, *brokers)

    asyncio.run(scenario())


def test_concurrent_calls_on_one_broker_each_get_their_own_answer(
    redis_url: str, prefix: str
) -> None:
    """Calls made at the same moment on ONE Broker (sent as one auto-pipelined batch): 50
    settles of one promise -> exactly one changed; in a mixed batch a missing id raises
    NotFound for its caller only, while the creates and gets around it succeed."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            await b.create("one")
            results = await asyncio.gather(
                *(b.settle("one", "resolved", b"v%d" % i) for i in range(50))
            )
            assert sum(changed for changed, _ in results) == 1
            assert len({r.value for _, r in results}) == 1
            mixed = await asyncio.gather(
                b.create("m1"),
                b.get("missing"),
                b.get("one"),
                b.create("m2"),
                b.settle("missing", "resolved"),
                return_exceptions=True,
            )
            assert mixed[0][0] is True and mixed[3][0] is True
            assert isinstance(mixed[1], NotFound) and isinstance(mixed[4], NotFound)
            assert mixed[2].state == "resolved"
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_settle_on_settled_returns_unchanged(redis_url: str, prefix: str) -> None:
    """A second settle (any state, any value) returns changed=False and the stored record."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            await b.create("s1")
            changed, first = await b.settle("s1", "resolved", b"one", value_headers=b"vh")
            assert changed and first.state == "resolved" and first.value == b"one"
            assert first.value_headers == b"vh" and first.settled_at >= first.created_at
            for state in ("rejected", "rejected_canceled", "resolved"):
                changed, again = await b.settle("s1", state, b"two")
                assert changed is False
                assert again == first
        finally:
            await shutdown(b)

    asyncio.run(scenario())


@pytest.mark.parametrize("state", ["pending", "rejected_timedout", "bogus", "", "RESOLVED"])
def test_settle_invalid_state_is_badinput(redis_url: str, prefix: str, state: str) -> None:
    """Settling to a state that is not resolved/rejected/rejected_canceled is BadInput and the
    promise stays pending."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            await b.create("s2")
            with pytest.raises(BadInput):
                await b.settle("s2", state, b"v")
            assert (await b.get("s2")).state == "pending"
        finally:
            await shutdown(b)

    asyncio.run(scenario())


async def _wait_past(b, deadline_ms: int) -> None:  # type: ignore[no-untyped-def]
    async def past() -> bool:
        return await redis_now(b) > deadline_ms

    await eventually(past, what=f"Redis clock past {deadline_ms}")


def test_lazy_timeout_on_get(redis_url: str, prefix: str) -> None:
    """A promise created with timeout_ms=300 stays stored as pending past its deadline until
    touched; get then settles it rejected_timedout (settled_at >= timeout_at) and a later
    settle cannot change it."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            _, p = await b.create("t1", timeout_ms=300)
            assert p.timeout_at == p.created_at + 300
            await _wait_past(b, p.timeout_at)
            assert await raw_state(b, "t1") == "pending"  # nothing settles it by itself here
            got = await b.get("t1")
            assert got.state == "rejected_timedout"
            assert got.settled_at >= got.timeout_at
            changed, after = await b.settle("t1", "resolved", b"late")
            assert changed is False and after.state == "rejected_timedout"
            counts = await b.count_by_state()
            assert counts["rejected_timedout"] == 1 and counts["pending"] == 0
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_lazy_timeout_timer_resolves(redis_url: str, prefix: str) -> None:
    """A timer promise (timer=True) past its deadline resolves (durable sleep) when touched,
    including when the touch is a create of the same id (which returns created=False)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            _, p = await b.create("timer", timeout_ms=300, timer=True)
            _, q = await b.create("timer2", timeout_ms=300, timer=True)
            await _wait_past(b, max(p.timeout_at, q.timeout_at))
            got = await b.get("timer")
            assert got.state == "resolved" and got.settled_at >= got.timeout_at
            created, again = await b.create("timer2", timeout_ms=300, timer=True)
            assert created is False and again.state == "resolved"
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_listener_gets_one_inbox_message(redis_url: str, prefix: str) -> None:
    """A promise created with listener='c1' (and one more listener added by get) pushes one
    msgpack message [id, state, value, vh, settled_at] to each listener's inbox on settle;
    a second settle pushes nothing; a get on a settled promise registers no listener."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        base = b.keys.base_for("L1")
        inbox1, inbox2, inbox3 = (Keys.inbox(base, c) for c in ("c1", "c2", "c3"))
        try:
            await b.create("L1", listener="c1")
            await b.get("L1", listener="c2")
            assert await b.redis.llen(inbox1) == 0
            _, p = await b.settle("L1", "resolved", b"\x00value\xff", value_headers=b"hdr")
            await b.settle("L1", "rejected", b"other")
            await b.get("L1", listener="c3")
            for inbox in (inbox1, inbox2):
                msgs = await b.redis.lrange(inbox, 0, -1)
                assert len(msgs) == 1
                assert msgpack.unpackb(msgs[0], raw=True) == [
                    b"L1",
                    b"resolved",
                    b"\x00value\xff",
                    b"hdr",
                    p.settled_at,
                ]
                assert 0 < await b.redis.pttl(inbox) <= 600_000
            assert await b.redis.llen(inbox3) == 0
            assert await b.redis.exists(b.keys.listeners("L1")) == 0
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_search_by_state_and_tag(redis_url: str, prefix: str) -> None:
    """search finds promises by state, by tag (also non-ASCII and odd tag keys), by both, and
    pages through results with the next offset (-1 at the end)."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            for i in range(3):
                await b.create(f"prod{i}", tags={"env": "prod", "n": str(i)})
            for i in range(2):
                await b.create(f"dev{i}", tags={"env": "dév😀", "a}{:": "x=y"})
            await b.settle("prod0", "resolved")
            await b.settle("dev1", "rejected")

            def ids(res) -> set[str]:  # type: ignore[no-untyped-def]
                return {p.id for p in res[0]}

            assert ids(await b.search(tag=("env", "prod"))) == {"prod0", "prod1", "prod2"}
            assert ids(await b.search(tag=("env", "dév😀"))) == {"dev0", "dev1"}
            assert ids(await b.search(tag=("a}{:", "x=y"))) == {"dev0", "dev1"}
            assert ids(await b.search(tag=("env", "none"))) == set()
            assert ids(await b.search(state="pending")) == {"prod1", "prod2", "dev0"}
            assert ids(await b.search(state="resolved")) == {"prod0"}
            assert ids(await b.search(state="rejected")) == {"dev1"}
            assert ids(await b.search(state="pending", tag=("env", "prod"))) == {"prod1", "prod2"}

            seen: list[str] = []
            offset = 0
            pages = 0
            while offset != -1:
                page, offset = await b.search(tag=("env", "prod"), offset=offset, limit=2)
                seen += [p.id for p in page]
                pages += 1
                assert pages < 5
            assert sorted(seen) == ["prod0", "prod1", "prod2"] and pages == 2
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_count_by_state(redis_url: str, prefix: str) -> None:
    """count_by_state reports each state's number of promises from the indexes."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        try:
            for i in range(7):
                await b.create(f"c{i}")
            await b.settle("c0", "resolved")
            await b.settle("c1", "resolved")
            await b.settle("c2", "rejected")
            await b.settle("c3", "rejected_canceled")
            assert await b.count_by_state() == {
                "pending": 3,
                "resolved": 2,
                "rejected": 1,
                "rejected_canceled": 1,
                "rejected_timedout": 0,
            }
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_retention_purges_settled_promise(redis_url: str, prefix: str) -> None:
    """With retention_ms=200, a settled promise (with a task and tags) is purged by
    TaskQueue.sweep once the retention has passed: promise key, task key, state and tag index
    entries and the gc entry are gone; a pending promise is kept."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, retention_ms=200)
        tq = TaskQueue(b, GROUP, "sweeper")
        base = b.keys.base_for("gone")
        try:
            await b.create("gone", b"p", tags={"kind": "old"}, group=GROUP)
            await b.create("kept", tags={"kind": "old"})
            _, p = await b.settle("gone", "resolved", b"v")
            purge_at = await b.redis.zscore(Keys.gc(base), "gone")
            assert purge_at == p.settled_at + 200
            await tq.sweep(lease_ms=1000)
            if await redis_now(b) < purge_at:  # the sweep above ran before the retention ended
                assert await b.redis.exists(b.keys.promise("gone")) == 1

            async def purged() -> bool:
                await tq.sweep(lease_ms=1000)
                return await b.redis.exists(b.keys.promise("gone")) == 0

            await eventually(purged, what="settled promise purged")
            assert await b.redis.exists(b.keys.task("gone")) == 0
            assert await b.redis.zscore(Keys.state_index(base, "resolved"), "gone") is None
            assert await b.redis.zscore(Keys.tag_index(base, "kind", "old"), "gone") is None
            assert await b.redis.zscore(Keys.gc(base), "gone") is None
            with pytest.raises(NotFound):
                await b.get("gone")
            assert (await b.get("kept")).state == "pending"
            assert [x.id for x in (await b.search(tag=("kind", "old")))[0]] == ["kept"]
            assert (await b.count_by_state())["resolved"] == 0
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


def test_family_keys_in_redis_share_one_slot(redis_url: str, prefix: str) -> None:
    """With shards=8, a root promise with a task, tags and a listener, and its children created
    by the holder (root:1, root:1.2) end up with every Redis key written by the Lua scripts in
    one cluster slot, under exactly the names broker.keys builds."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, shards=8)
        tq = TaskQueue(b, GROUP, "w1")
        try:
            root = "family{x}*"
            await b.create(root, b"p", tags={"t": "v"}, group=GROUP, listener="c1")
            held = await claim_one(tq)
            fence = held.fence("w1")
            await b.create(f"{root}:1", fence=fence, tags={"t": "v"})
            await b.create(f"{root}:1.2", fence=fence, group=GROUP)
            assert await tq.suspend(fence, [f"{root}:1"]) == "suspended"
            base = b.keys.base_for(root)
            expected = {
                b.keys.promise(root),
                b.keys.task(root),
                b.keys.listeners(root),
                b.keys.promise(f"{root}:1"),
                b.keys.callbacks(f"{root}:1"),
                b.keys.promise(f"{root}:1.2"),
                b.keys.task(f"{root}:1.2"),
                Keys.stream(base, GROUP),
                Keys.timeouts(base),
                Keys.groups(base),
                Keys.state_index(base, "pending"),
                Keys.tag_index(base, "t", "v"),
            }
            every = {k.decode() async for k in b.redis.scan_iter(match=f"{{{prefix}:*")}
            found = {k for k in every if k.startswith(base + ":")}
            assert expected <= found, expected - found
            assert {key_slot(k.encode()) for k in found} == {key_slot(base.encode())}
            # Other shards only got their (empty) group streams and group registries.
            for k in every - found:
                assert k.endswith((f":q:{GROUP}", ":groups")), k
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


def test_a_call_created_by_an_older_version_leaves_the_counts_at_its_purge(
    redis_url: str, prefix: str
) -> None:
    """A call whose promise has no 'g' (created by a version before the field: it is removed
    by hand here) and is resolved by this version: settle names its group on the promise, so
    the purge takes it out of the call counts although its task hash went at settle."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix, retention_ms=200)
        tq = TaskQueue(b, GROUP, "sweeper")
        base = b.keys.base_for("old")
        try:
            await b.create("old", b"p", group=GROUP)
            assert await b.redis.hdel(b.keys.promise("old"), "g") == 1
            await b.settle("old", "resolved", b"v")
            assert await b.redis.exists(b.keys.task("old")) == 0
            assert await b.redis.hget(b.keys.promise("old"), "g") == GROUP.encode()
            assert int(await b.redis.hget(Keys.counts(base), "resolved") or 0) == 1

            async def purged() -> bool:
                await tq.sweep(lease_ms=1000)
                return await b.redis.exists(b.keys.promise("old")) == 0

            await eventually(purged, what="settled promise purged")
            assert int(await b.redis.hget(Keys.counts(base), "resolved") or 0) == 0
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())


@pytest.mark.parametrize("waiters", [0, 1, 2, 3, 4, 5, 6, 7])
def test_a_completion_reaches_every_kind_of_waiter(
    redis_url: str, prefix: str, waiters: int
) -> None:
    """A call's completion (the worker's ``complete``, whose reply is the state alone) reaches
    whichever of its waiters exist, in any combination: waiting clients (bit 1: an inbox
    message each), a suspended caller (bit 2: re-delivered) and a step parked until it
    settles (bit 4: retained from now on); the waiters' keys go with it. settle() finds them
    all with one EXISTS, so every subset is a different path through it."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        tq = TaskQueue(b, GROUP, "w1")
        try:
            root, caller = "R", "S"
            await b.create(root, b"p", group=GROUP, listener="c1" if waiters & 1 else None)
            held = await claim_one(tq)
            fence = held.fence("w1")
            if waiters & 4:
                await b.create(f"{root}:1", fence=fence)
                await b.settle(f"{root}:1", "resolved", b"step", fence=fence)
            if waiters & 2:
                await b.create(caller, b"q", group=GROUP)
                other = await claim_one(tq)
                assert await tq.suspend(other.fence("w1"), [root]) == "suspended"
            base = b.keys.base_for(root)
            assert await tq.complete(fence, "resolved", b"v") == "resolved"
            assert (await b.get(root)).state == "resolved"
            msgs = await b.redis.lrange(Keys.inbox(base, "c1"), 0, -1)
            assert len(msgs) == (1 if waiters & 1 else 0)
            if msgs:
                assert msgpack.unpackb(msgs[0], raw=True)[:3] == [b"R", b"resolved", b"v"]
            if waiters & 2:  # the suspended caller is delivered again
                assert await raw_state(b, caller) == "pending"
                assert (await claim_one(tq)).task_id == caller
            if waiters & 4:  # the parked step is retained with its root
                assert await b.redis.zscore(Keys.gc(base), f"{root}:1") is not None
            for key in (b.keys.listeners(root), b.keys.callbacks(root), Keys.children(base, root)):
                assert await b.redis.exists(key) == 0, key
        finally:
            await shutdown(tq, b)

    asyncio.run(scenario())
