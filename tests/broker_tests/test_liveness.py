"""The liveness scanner (broker/liveness.py) against the session's real redis-server: a dead
consumer's work goes back on the stream after two sightings CONFIRM_S apart, at any ttl; a
live one is never touched; only the lease holder scans."""

from __future__ import annotations

import asyncio

from broker_helpers import GROUP, claim_one, make_broker, shutdown, task_hash

from lb.broker import Fenced, Keys, TaskQueue
from lb.broker.liveness import CONFIRM_S, Scanner


def test_a_dead_consumers_work_is_requeued_at_any_ttl(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix, ttl_ms=300_000)  # a 5-minute ttl changes nothing
        dying = make_broker(redis_url, prefix, client_name="A", ttl_ms=300_000)
        a, bq = TaskQueue(dying, GROUP, "A"), TaskQueue(b, GROUP, "B")
        scanner = Scanner(b, "S")
        try:
            await b.create("job", group=GROUP)
            held = await claim_one(a)
            await shutdown(a, dying)  # every connection named A is gone: A died
            assert await scanner.scan() == []  # first sighting: not yet
            found: list[tuple[str, str, list[str]]] = []
            for _ in range(100):  # a fresh Redis asks for RESTART_CONFIRM_S, else CONFIRM_S
                await asyncio.sleep(CONFIRM_S / 2)
                found = await scanner.scan()
                if found:
                    break
            assert found == [(GROUP, "A", [])]
            t = await task_hash(b, "job")
            assert (t["state"], t["deaths"], t["dead"]) == ("pending", "1", "A")
            again = await claim_one(bq)
            assert again.task_id == "job" and again.previous_holder == "A"
            try:
                await bq.fulfill(held.fence("A"), "resolved", b"")  # the dead holder, back
                raise AssertionError("a requeued task's old holder was not fenced")
            except Fenced:
                pass
            rows = await b.redis.xinfo_consumers(Keys.stream(b.keys.base(0), GROUP), "lb")
            assert [r["name"] for r in rows] == [b"B"]  # the dead consumer is deleted
        finally:
            await shutdown(bq, b)

    asyncio.run(scenario())


def test_a_live_consumer_is_never_requeued(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        busy = make_broker(redis_url, prefix, client_name="A")
        a = TaskQueue(busy, GROUP, "A")
        scanner = Scanner(b, "S")
        try:
            await b.create("job", group=GROUP)
            await claim_one(a)
            await busy.redis.ping()  # its connection stays open, as a busy worker's does
            for _ in range(6):
                assert await scanner.scan() == []
                await asyncio.sleep(CONFIRM_S)
            assert (await task_hash(b, "job"))["pid"] == "A"
        finally:
            await shutdown(a, busy, b)

    asyncio.run(scenario())


def test_only_the_lease_holder_scans(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        one, two = Scanner(b, "one"), Scanner(b, "two")
        try:
            await one.scan()
            await two.scan()
            assert one.holds_lease and not two.holds_lease
        finally:
            await shutdown(b)

    asyncio.run(scenario())
