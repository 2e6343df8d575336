"""The liveness scanner (broker/liveness.py) against the session's real redis-server: a dead
consumer's work goes back on the stream after two sightings CONFIRM_S apart, at any ttl; a
live one is never touched; only the lease holder scans."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from broker_helpers import GROUP, claim_one, make_broker, shutdown, task_hash

from lb.broker import Broker, Fenced, Keys, Settings, TaskQueue
from lb.broker.heartbeat import Heartbeat
from lb.broker.liveness import CONFIRM_S, LEASE_MS, RESTART_GRACE_S, SCAN_PERIOD_S, Scanner


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


def test_a_namesake_under_another_prefix_does_not_hide_a_death(redis_url: str, prefix: str) -> None:
    """Two apps on one Redis may both name a worker "A": the live one of the other prefix
    must not make this prefix's dead "A" look connected."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        dying = make_broker(redis_url, prefix, client_name="A")
        namesake = make_broker(redis_url, prefix + "x", client_name="A")
        a = TaskQueue(dying, GROUP, "A")
        scanner = Scanner(b, "S")
        try:
            await b.create("job", group=GROUP)
            await claim_one(a)
            await namesake.redis.ping()  # connected, named A, under prefix + "x"
            await shutdown(a, dying)
            found: list[tuple[str, str, list[str]]] = []
            for _ in range(100):
                found = await scanner.scan()
                if found:
                    break
                await asyncio.sleep(CONFIRM_S / 2)
            assert found == [(GROUP, "A", [])]
        finally:
            await shutdown(namesake, b)

    asyncio.run(scenario())


def test_an_older_worker_with_a_bare_connection_name_counts_as_live(
    redis_url: str, prefix: str
) -> None:
    """During a rolling upgrade, workers from before prefixed connection names are still
    running: one whose connection is named plainly "A" must keep its work."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        holder = make_broker(redis_url, prefix, client_name="A")
        a = TaskQueue(holder, GROUP, "A")
        old = aioredis.Redis.from_url(redis_url, client_name="A")  # the old worker's name
        scanner = Scanner(b, "S")
        try:
            await b.create("job", group=GROUP)
            await claim_one(a)
            await old.ping()
            await shutdown(a, holder)  # only the bare-named connection is left
            for _ in range(6):
                assert await scanner.scan() == []
                await asyncio.sleep(CONFIRM_S)
            assert (await task_hash(b, "job"))["pid"] == "A"
        finally:
            await old.aclose()
            await shutdown(b)

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
            assert one.role == 1 and two.role == 2
        finally:
            await shutdown(b)

    asyncio.run(scenario())


async def _past_restart_grace(b: Broker) -> None:
    """A fresh Redis asks for RESTART_CONFIRM_S and no shortcut: wait its grace out."""
    up = int((await b.redis.info("server"))["uptime_in_seconds"])
    if up < RESTART_GRACE_S:
        await asyncio.sleep(RESTART_GRACE_S - up + 1)


async def _scanner_holding_a_task(
    redis_url: str, prefix: str
) -> tuple[Broker, Broker, TaskQueue, Scanner]:
    """Worker A is the scanner and holds task "job"; S (on the first broker) is its standby.
    Returns (S's broker, A's broker, A's queue, S's scanner), both scanners having scanned."""
    b = make_broker(redis_url, prefix)
    holder = make_broker(redis_url, prefix, client_name="A")
    a = TaskQueue(holder, GROUP, "A")
    scanner, standby = Scanner(holder, "A"), Scanner(b, "S")
    await _past_restart_grace(b)
    await b.create("job", group=GROUP)
    await claim_one(a)
    assert await scanner.scan() == [] and scanner.role == 1
    assert await standby.scan() == [] and standby.role == 2
    return b, holder, a, standby


def test_the_standby_hands_a_dead_scanners_work_back_on_taking_its_lease(
    redis_url: str, prefix: str
) -> None:
    """The scanner itself dies holding a task: its lease lapses, the standby (polling every
    period) takes it, and on that very pass hands the dead scanner's work back - the lapsed
    lease plus the missing connection are the two sightings."""

    async def scenario() -> None:
        b, dying, a, standby = await _scanner_holding_a_task(redis_url, prefix)
        try:
            await shutdown(a, dying)  # the scanner dies
            t0 = time.monotonic()
            while True:
                await asyncio.sleep(SCAN_PERIOD_S)
                found = await standby.scan()
                if standby.role == 1:
                    break
                assert found == [] and time.monotonic() - t0 < 10
            assert found == [(GROUP, "A", [])]  # on the pass that took the lease
            t = await task_hash(b, "job")
            assert (t["state"], t["dead"]) == ("pending", "A")
        finally:
            await shutdown(b)

    asyncio.run(scenario())


def test_a_new_scanner_still_confirms_a_live_holders_silence(redis_url: str, prefix: str) -> None:
    """The shortcut is for the lapsed scanner only: the lease lapsing while its holder's
    connection stays open (a long pause) hands nothing back."""

    async def scenario() -> None:
        b, paused, a, standby = await _scanner_holding_a_task(redis_url, prefix)
        try:
            await asyncio.sleep(LEASE_MS / 1000 + 0.1)  # A stops renewing; connected still
            await paused.redis.ping()
            for _ in range(4):
                assert await standby.scan() == []
                await asyncio.sleep(CONFIRM_S)
            assert standby.role == 1 and (await task_hash(b, "job"))["pid"] == "A"
        finally:
            await shutdown(a, paused, b)

    asyncio.run(scenario())


def _client_lists(r: redis.Redis) -> int:
    stats: Any = r.info("commandstats")
    row = stats.get("cmdstat_client|list") or stats.get("cmdstat_client") or {}
    return int(row.get("calls", 0))


def test_an_idle_fleets_scanner_does_not_list_clients(redis_url: str, prefix: str) -> None:
    """CLIENT LIST (its cost grows with every client of the Redis) runs only while some
    consumer holds entries, or once per PRUNE_EVERY_S for the empty ones."""

    async def scenario() -> None:
        b = make_broker(redis_url, prefix)
        holder = make_broker(redis_url, prefix, client_name="A")
        a = TaskQueue(holder, GROUP, "A")
        scanner = Scanner(b, "S")
        sync = redis.Redis.from_url(redis_url)
        try:
            await a.ensure_group()
            await scanner.scan()  # the first pass lists them (pruning is due)
            before = _client_lists(sync)
            for _ in range(5):
                await scanner.scan()
            assert _client_lists(sync) == before
            await b.create("job", group=GROUP)
            await claim_one(a)
            held = _client_lists(sync)
            await scanner.scan()
            assert _client_lists(sync) == held + 1
        finally:
            sync.close()
            await shutdown(a, holder, b)

    asyncio.run(scenario())


def test_an_idle_heartbeat_is_brought_forward_by_the_first_hold(
    redis_url: str, prefix: str
) -> None:
    """An idle worker beats seldom (every idle_interval); the moment it holds a task its next
    beat comes within ``interval``, so a held task is renewed within ttl/5 of its delivery."""
    held: list[tuple[str, str, str]] = []
    hb = Heartbeat(
        Settings.from_url(redis_url, prefix=prefix),
        GROUP,
        "H",
        0.2,
        lambda: list(held),
        lambda lost: None,
        idle_interval=600.0,
    )
    hb.start()
    try:
        deadline = time.monotonic() + 10
        while hb.beats < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)
        assert hb.beats == 1  # idle: no second beat for 600 s
        held.append((Keys(prefix).base(0), "t", "1"))
        hb.nudge()
        while hb.beats < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hb.beats >= 2
        time.sleep(0.5)
        assert hb.beats >= 3  # holding: every interval
    finally:
        hb.stop()
