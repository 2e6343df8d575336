"""Helpers shared by the broker tests (plain functions, no fixtures: see tests/conftest.py).

Every Redis-touching test builds its own ``Broker`` on the session's real redis-server with the
test's unique prefix, runs one ``async def scenario()`` with ``asyncio.run`` and closes what it
opened. Waiting is done by polling a condition (``eventually``), never by a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lb.broker import Broker, Claimed, Keys, Settings, TaskQueue
from lb.broker.embedded import find_redis_server
from lb.broker.embedded import server_version as binary_version

GROUP = "g"


def server_version() -> tuple[int, ...]:
    """Version of the redis-server binary the fixtures start (honours $LB_REDIS_SERVER)."""
    version = binary_version(find_redis_server())
    if version == "unknown":
        raise RuntimeError("cannot parse the redis-server version")
    return tuple(int(x) for x in version.split("."))


def make_broker(url: str, prefix: str, client_name: str | None = None, **overrides: Any) -> Broker:
    return Broker(Settings.from_url(url, prefix=prefix, **overrides), client_name=client_name)


async def shutdown(*things: Broker | TaskQueue) -> None:
    """Close brokers and task queues, and really drop their sockets.

    The pools are also disconnected explicitly, so that no socket outlives its test on the
    shared server (``test_tasks.py::test_close_drops_every_connection`` checks close() alone).
    """
    for thing in things:
        await thing.close()
        client = thing.redis if isinstance(thing, Broker) else thing.blocking
        await client.connection_pool.disconnect()


async def eventually(
    pred: Callable[[], Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> Any:
    """Await ``pred()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or pred}")
        await asyncio.sleep(interval)


async def redis_now(b: Broker) -> int:
    """The Redis server's clock in ms (the clock every promise timestamp uses)."""
    sec, usec = await b.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


def base0(b: Broker) -> str:
    return b.keys.base(0)


def stream(b: Broker, group: str = GROUP, base: str | None = None) -> str:
    return Keys.stream(base or base0(b), group)


async def xpending_rows(b: Broker, group: str = GROUP, base: str | None = None) -> list[dict]:
    """Pending entries of ``group``: dicts with message_id, consumer, time_since_delivered."""
    rows = await b.redis.xpending_range(stream(b, group, base), "lb", "-", "+", 1000)
    return [
        {
            "message_id": _s(r["message_id"]),
            "consumer": _s(r["consumer"]),
            "idle": int(r["time_since_delivered"]),
            "delivered": int(r["times_delivered"]),
        }
        for r in rows
    ]


async def idle_ms(b: Broker, entry_id: str, group: str = GROUP) -> int:
    """How long ``entry_id`` has been idle in the pending list (-1 when not pending)."""
    for row in await xpending_rows(b, group):
        if row["message_id"] == entry_id:
            return int(row["idle"])
    return -1


async def wait_idle(b: Broker, entry_id: str, at_least_ms: int, group: str = GROUP) -> None:
    async def idle_enough() -> bool:
        return await idle_ms(b, entry_id, group) >= at_least_ms

    await eventually(idle_enough, what=f"entry {entry_id} idle >= {at_least_ms} ms")


async def stream_counts(b: Broker, group: str = GROUP, base: str | None = None) -> tuple[int, int]:
    """(XLEN, number of pending entries) of the group's stream."""
    q = stream(b, group, base)
    xlen = await b.redis.xlen(q)
    info = await b.redis.xpending(q, "lb")
    return int(xlen), int(info["pending"])


async def task_hash(b: Broker, task_id: str) -> dict[str, str]:
    raw = await b.redis.hgetall(b.keys.task(task_id))
    return {_s(k): _s(v) for k, v in raw.items()}


async def raw_state(b: Broker, promise_id: str) -> str | None:
    """The stored state, read without any script (so no lazy timeout is applied)."""
    v = await b.redis.hget(b.keys.promise(promise_id), "state")
    return None if v is None else _s(v)


async def claim(tq: TaskQueue, count: int, block_ms: int = 200) -> tuple[list[Claimed], list[str]]:
    """One read of up to ``count`` entries, then acquire of what was read."""
    held: list[Claimed] = []
    dead: list[str] = []
    for base, entries in (await tq.read(count, block_ms)).items():
        h, d = await tq.acquire(base, entries)
        held += h
        dead += d
    return held, dead


async def claim_one(tq: TaskQueue, timeout: float = 5.0) -> Claimed:
    """Read and acquire until exactly one task is held (fails after ``timeout``)."""
    got: list[Claimed] = []

    async def one() -> bool:
        held, _ = await claim(tq, 1, 100)
        got.extend(held)
        return bool(got)

    await eventually(one, timeout=timeout, what=f"{tq.pid} acquires a task")
    assert len(got) == 1, got
    return got[0]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
