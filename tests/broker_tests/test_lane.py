"""The lanes (broker/lane.py) against a real Redis: replies and errors in order, connections
the server closed replaced before a command is written, a command cut after it was written
never sent again, an interrupted command's connection never reused, the connection cap and
its waiters, both reply protocols of the claim loop's read, and lb's scripts surviving
SCRIPT FLUSH on both the async and the sync path."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions as rexc

from lb.broker import Broker
from lb.broker.direct import DirectCreator
from lb.broker.lane import Lane, SyncLane
from lb.broker.settings import Settings


@contextlib.asynccontextmanager
async def _lane(
    url: str, cap: int, name: str | None = None
) -> AsyncIterator[tuple[aioredis.Redis, Lane]]:
    """A client (named ``name``) and a lane on its pool, both closed afterwards."""
    client = aioredis.Redis.from_url(url, client_name=name)
    lane = Lane(client.connection_pool, cap)
    try:
        yield client, lane
    finally:
        await lane.close()
        await client.aclose()


def _names(url: str, name: str) -> int:
    r = redis.Redis.from_url(url)
    try:
        return sum(1 for c in r.client_list() if c.get("name") == name)
    finally:
        r.close()


def _kill(url: str, name: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        for c in r.client_list():
            if c.get("name") == name:
                r.client_kill_filter(_id=c["id"])
    finally:
        r.close()


def test_replies_and_errors_come_back_in_order(redis_url: str) -> None:
    async def go() -> list[object]:
        async with _lane(redis_url, 2) as (_client, lane):
            return await lane.run([("PING",), ("EVALSHA", "0" * 40, 0), ("ECHO", "x")])

    pong, err, echo = asyncio.run(go())
    assert pong in (b"PONG", "PONG", True) and echo == b"x"
    assert isinstance(err, rexc.NoScriptError)
    lane = SyncLane(redis.Redis.from_url(redis_url).connection_pool, 1)
    try:
        pong, err, echo = lane.run([("PING",), ("EVALSHA", "0" * 40, 0), ("ECHO", "x")])
    finally:
        lane.close()
    assert isinstance(err, rexc.NoScriptError) and echo == b"x"


def test_connections_the_server_closed_are_replaced_before_a_command_is_sent(
    redis_url: str,
) -> None:
    """CLIENT KILL of every lane connection while idle (a restart, a proxy reset, an idle
    timeout): every following command still gets its own reply, none fails, on both lanes
    (a reused connection is checked before a command is written to it)."""
    name = f"lane-{uuid.uuid4().hex[:6]}"

    async def go() -> None:
        async with _lane(redis_url, 4, name) as (_client, lane):
            await asyncio.gather(*(lane.run([("ECHO", str(i))]) for i in range(4)))
            assert len(lane._idle) == 4
            _kill(redis_url, name)
            await asyncio.sleep(0.2)  # Redis closes killed clients on its next cycle
            for i in range(6):
                assert await lane.run([("ECHO", f"b{i}")]) == [f"b{i}".encode()]

    asyncio.run(go())
    lane = SyncLane(redis.Redis.from_url(redis_url, client_name=name).connection_pool, 2)
    try:
        assert lane.run([("ECHO", "a")]) == [b"a"]
        _kill(redis_url, name)
        time.sleep(0.2)
        for i in range(3):
            assert lane.run([("ECHO", f"b{i}")]) == [f"b{i}".encode()]
    finally:
        lane.close()


def test_a_cancelled_waiter_does_not_starve_the_next(redis_url: str, prefix: str) -> None:
    """cap 1: A holds the connection (a blocking read), B and C wait; B is cancelled (a
    caller's timeout). When A ends, C gets the connection."""
    stream = f"{prefix}:lane-wait"

    async def go() -> None:
        async with _lane(redis_url, 1) as (client, lane):
            await client.xgroup_create(stream, "g", id="0", mkstream=True)
            read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "BLOCK", 300,
                    "STREAMS", stream, ">")  # fmt: skip
            a = asyncio.ensure_future(lane.run([read]))
            await asyncio.sleep(0.05)
            b = asyncio.ensure_future(lane.run([("ECHO", "b")]))
            c = asyncio.ensure_future(lane.run([("ECHO", "c")]))
            await asyncio.sleep(0.05)
            b.cancel()
            assert await a == [None]
            assert await asyncio.wait_for(c, 10) == [b"c"]

    asyncio.run(go())


def test_an_interrupted_command_never_hands_its_reply_to_the_next(
    redis_url: str, prefix: str
) -> None:
    """A blocking read cancelled mid-wait, then an entry that the read would have received:
    the next command on the lane gets its own reply, not the late one (the connection of the
    cancelled read was closed, not reused)."""
    stream = f"{prefix}:lane-stream"
    name = f"lane-{uuid.uuid4().hex[:6]}"

    async def go() -> None:
        async with _lane(redis_url, 1, name) as (client, lane):
            await client.xgroup_create(stream, "g", id="0", mkstream=True)
            read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "BLOCK", 5000,
                    "STREAMS", stream, ">")  # fmt: skip
            task = asyncio.ensure_future(lane.run([read]))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.xadd(stream, {"t": "late"})
            assert await lane.run([("ECHO", "mine")]) == [b"mine"]
            assert _names(redis_url, name) <= 2  # the pool's one, and the lane's new one

    asyncio.run(go())


def test_callers_beyond_the_cap_wait_and_all_get_their_reply(redis_url: str) -> None:
    name = f"lane-{uuid.uuid4().hex[:6]}"

    async def go() -> None:
        async with _lane(redis_url, 3, name) as (_client, lane):
            replies = await asyncio.gather(*(lane.run([("ECHO", str(i))]) for i in range(50)))
            assert replies == [[str(i).encode()] for i in range(50)]
            assert _names(redis_url, name) <= 3

    asyncio.run(go())
    lane = SyncLane(redis.Redis.from_url(redis_url, client_name=name).connection_pool, 2)
    out: dict[int, list[object]] = {}

    def call(i: int) -> None:
        out[i] = lane.run([("ECHO", str(i))])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert out == {i: [str(i).encode()] for i in range(20)}
        assert _names(redis_url, name) <= 2
    finally:
        lane.close()


def test_scripts_survive_script_flush_on_both_paths(redis_url: str, prefix: str) -> None:
    """SCRIPT FLUSH (or a Redis restart) between calls: the async broker's next script call
    and the caller's-thread create reload the script and succeed."""
    settings = Settings.from_url(redis_url, prefix=prefix)

    async def go() -> None:
        broker = Broker(settings)
        try:
            await broker.create("flush-a", b"", group="g")
            await broker.redis.script_flush()
            created, p = await broker.create("flush-b", b"", group="g")
            assert created and p.state == "pending"
        finally:
            await broker.close()

    asyncio.run(go())
    direct = DirectCreator(settings)
    try:
        direct.create("flush-c", b"", group="g")
        direct.redis.script_flush()
        created, p = direct.create("flush-d", b"", group="g")
        assert created and p.id == "flush-d"
        assert direct.create("flush-d", b"", group="g")[0] is False  # an existing id attaches
    finally:
        direct.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_claim_loops_read_parses_both_reply_protocols(
    redis_url: str, prefix: str, protocol: int
) -> None:
    """XREADGROUP's reply is an array of [stream, entries] in RESP2 and a map in RESP3 (what
    redis-py 8 may negotiate): the lane's raw read must see the same entries in both, in
    order, with their task ids (a first version read only RESP2, and its claim loop failed
    on every read)."""
    from lb.broker import TaskQueue

    sep = "&" if "?" in redis_url else "?"
    settings = Settings.from_url(f"{redis_url}{sep}protocol={protocol}", prefix=prefix)

    async def go() -> None:
        broker = Broker(settings)
        tq = TaskQueue(broker, "g", "reader")
        try:
            await tq.ensure_group()
            ids = [f"p{protocol}-{i}" for i in range(3)]
            for i, pid in enumerate(ids):
                await broker.create(pid, f"args{i}".encode(), group="g")
            got = await tq.read(10, block_ms=500)
            ((_base, entries),) = got.items()
            assert [e.tid for e in entries] == ids
            assert all(e.eid.count("-") == 1 for e in entries)
            # A first delivery carries its call: params, and the deadline (a day from now).
            assert [e.param for e in entries] == [b"args0", b"args1", b"args2"]
            assert all(e.timeout_at > int(e.eid.split("-")[0]) + 3600_000 for e in entries)
            assert await tq.read(10, block_ms=50) == {}  # nothing more: nil reply
        finally:
            await tq.close()
            await broker.close()

    asyncio.run(go())


def test_a_command_cut_after_it_was_written_is_not_sent_again(redis_url: str, prefix: str) -> None:
    """The connection of a command in flight is killed: the lane raises instead of sending it
    again (a script may already have run; lb's callers ride the outage out and retry with
    their own rules). The next command gets a new connection and its own reply."""
    stream = f"{prefix}:lane-cut"
    name = f"lane-{uuid.uuid4().hex[:6]}"

    async def go() -> None:
        setup = redis.Redis.from_url(redis_url)  # unnamed: the kill spares it
        setup.xgroup_create(stream, "g", id="0", mkstream=True)
        setup.close()
        async with _lane(redis_url, 1, name) as (_, lane):
            read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "BLOCK", 3000,
                    "STREAMS", stream, ">")  # fmt: skip
            task = asyncio.ensure_future(lane.run([read]))
            await asyncio.sleep(0.2)
            _kill(redis_url, name)
            with pytest.raises(rexc.ConnectionError):
                await asyncio.wait_for(task, 2.5)  # a resend would block for 3 s again
            assert await lane.run([("ECHO", "next")]) == [b"next"]

    asyncio.run(go())


def test_pack_all_sends_what_redis_py_would(redis_url: str) -> None:
    """The lanes' packer (one hiredis call per command) writes the bytes redis-py's own
    packing writes, for every argument type lb sends (str, bytes, int, non-ASCII, empty), and
    falls back to redis-py's packing for what hiredis would not take (a two-word command name,
    a float) - then the replies are the same as well."""
    from lb.broker.wire import pack_all

    client = redis.Redis.from_url(redis_url)
    conn = client.connection_pool.get_connection()
    try:
        key = f"pack-{uuid.uuid4().hex[:6]}"
        commands: list[tuple[object, ...]] = [
            ("HSET", key, "a", b"\x00\xff bytes", "b", "h\u00e9llo", "c", 42, "d", ""),
            ("HGETALL", key),
        ]
        assert b"".join(pack_all(conn, commands)) == b"".join(conn.pack_commands(commands))
        odd: list[tuple[object, ...]] = [("CLIENT SETNAME", "pack-test"), ("HSET", key, "e", 1.5)]
        assert b"".join(pack_all(conn, odd)) == b"".join(conn.pack_commands(odd))
        conn.send_packed_command(pack_all(conn, commands + odd))
        replies = [conn.read_response() for _ in range(4)]
        assert replies[1] == {
            b"a": b"\x00\xff bytes",
            b"b": "h\u00e9llo".encode(),
            b"c": b"42",
            b"d": b"",
        } or replies[1] == [
            b"a",
            b"\x00\xff bytes",
            b"b",
            "h\u00e9llo".encode(),
            b"c",
            b"42",
            b"d",
            b"",
        ]
        assert client.hget(key, "e") == b"1.5"
        client.delete(key)
    finally:
        client.connection_pool.release(conn)
        client.close()
