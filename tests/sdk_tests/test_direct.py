"""``begin_rpc`` from the caller's own thread (broker/direct.py) keeps every rule of the I/O
loop path, against the session's real redis-server: one task per id however many threads
race on it and whichever path each takes, the same stored call, typed errors, and no call
before the server check."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import redis

from lb.broker import Keys, Settings
from lb.broker.embedded import EmbeddedRedis
from lb.broker.errors import BadInput, PayloadTooLarge, RedisUnavailable, UnsafeRedisConfig
from lb.sdk import Resonate


def _stream_len(url: str, prefix: str, group: str) -> int:
    cl = redis.Redis.from_url(url)
    try:
        return int(cl.xlen(Keys.stream(Keys(prefix).base(0), group)))
    finally:
        cl.close()


def test_racing_threads_on_both_paths_make_one_task_per_id(redis_url: str, prefix: str) -> None:
    """Randomised: 8 threads invoke overlapping ids, each call by the direct path or the I/O
    loop's (abegin_rpc through the loop), in random order; every id ends with exactly one
    stream entry and one stored, pending call."""
    r = Resonate(Settings.from_url(redis_url, prefix=prefix), "g")
    rng = random.Random(7)
    ids = [f"id-{i}" for i in range(300)]
    plans = [[rng.choice(ids) for _ in range(200)] for _ in range(8)]
    errors: list[BaseException] = []
    o = r.options(target="poll://any@g")

    def run(plan: list[str], seed: int) -> None:
        local = random.Random(seed)
        try:
            for pid in plan:
                if local.random() < 0.5:
                    h = o.begin_rpc(pid, "f", pid)
                else:
                    h = r._io.call(o.abegin_rpc(pid, "f", pid))
                assert h.id == pid
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        o.begin_rpc("warm", "f", 0)  # the first call checks the server (I/O loop path)
        assert r._direct() is not None
        threads = [threading.Thread(target=run, args=(p, i)) for i, p in enumerate(plans)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        used = {pid for p in plans for pid in p}
        assert _stream_len(redis_url, prefix, "g") == len(used) + 1
        for pid in used:
            p = r.promise(pid)
            assert p.state == "pending"
    finally:
        r.stop()


def test_direct_calls_are_typed_errors(redis_url: str, prefix: str) -> None:
    r = Resonate(Settings.from_url(redis_url, prefix=prefix, max_payload=1000), "g")
    try:
        o = r.options(target="poll://any@g")
        o.begin_rpc("first", "f")
        assert r._direct() is not None
        with pytest.raises(PayloadTooLarge):
            o.begin_rpc("big", "f", "x" * 5000)
        with pytest.raises(BadInput):
            o.begin_rpc("a:b", "f")  # a root id may not look like a step id
        with pytest.raises(BadInput):
            r.options(target="poll://any@g", timeout=float("nan"))
    finally:
        r.stop()


def test_direct_path_reports_a_redis_that_is_gone() -> None:
    server = EmbeddedRedis().start()
    r = Resonate(Settings.from_url(server.url, connect_timeout=0.5), "g")
    try:
        o = r.options(target="poll://any@g")
        o.begin_rpc("one", "f")
        assert r._direct() is not None
        server.cleanup()
        with pytest.raises(RedisUnavailable):
            o.begin_rpc("two", "f")
    finally:
        r.stop()
        server.cleanup()


def test_no_direct_call_before_the_server_check(own_redis: EmbeddedRedis) -> None:
    """An evicting Redis is refused on the first call, and the direct path never opens
    before a check has passed."""
    cl = redis.Redis.from_url(own_redis.url)
    cl.config_set("maxmemory-policy", "allkeys-lru")
    cl.close()
    r = Resonate(Settings.from_url(own_redis.url), "g")
    try:
        for _ in range(2):
            with pytest.raises(UnsafeRedisConfig):
                r.options(target="poll://any@g").begin_rpc("x", "f")
            assert r._direct() is None
    finally:
        r.stop()


def test_both_paths_over_a_unix_socket(tmp_path: Path) -> None:
    """``unix://`` URLs get their own connection class (hiredis packing, broker/wire.py) on the
    I/O loop path and a plain one on the direct path: both store and read calls."""
    sock = tmp_path / "r.sock"
    with EmbeddedRedis(extra=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
        r = Resonate(Settings.from_url(f"unix://{sock}"), "g")
        try:
            o = r.options(target="poll://any@g")
            o.begin_rpc("u1", "f", 1)  # the I/O loop's path (the first call checks the server)
            assert r._direct() is not None
            o.begin_rpc("u2", "f", 2)  # the caller's thread
            assert r.promise("u1").state == r.promise("u2").state == "pending"
        finally:
            r.stop()
