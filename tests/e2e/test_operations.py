"""Redis as operators run it, and workers that contain their own failures (the operations
issue): an evicting policy, a full Redis, a wrong password, a user without a permission, a
stalled Redis at shutdown, functions that end or kill their worker. Each against a real
redis-server of the test's own (configured for the case) and real `lb worker` subprocesses."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lb.broker import EmbeddedRedis
from lb.broker.errors import PromiseRejected, RedisOutOfMemory, UnsafeRedisConfig
from lb.sdk import Resonate

from .conftest import fleet_of
from .support import Fleet, run_cli, wait_for


@pytest.fixture
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    """A redis-server of this test (extra arguments from the ``redis_args`` marker) and a fleet
    of workers on it."""
    marker = request.node.get_closest_marker("redis_args")
    server = EmbeddedRedis(extra=list(marker.args) if marker else []).start()
    try:
        with fleet_of(request, server.url, "ops", tmp_path) as f:
            yield f
    finally:
        server.cleanup()


def _one_error_line(err: str, out: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err + out, err + out
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


@pytest.mark.redis_args("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru")
def test_an_evicting_redis_is_refused_with_the_fix(fresh: Fleet) -> None:
    """allkeys-lru silently dropped 16,335 of 20,000 acknowledged promises. Now workers,
    the CLI and the SDK refuse it (exit 13, the remedy in words) unless told to accept it."""
    w = fresh.start("w", wait=False)
    assert w.proc.wait(30) == 13, w.text()
    assert "maxmemory-policy allkeys-lru" in w.text() and "noeviction" in w.text()
    res = run_cli(fresh.redis_url, "ops", "invoke", "--func", "echo", "--args", "[1]")
    assert res.code == 13
    assert "LB_ALLOW_EVICTION" in _one_error_line(res.err, res.out)
    r = Resonate.remote(fresh.redis_url, group="workers", prefix="ops")
    try:
        with pytest.raises(UnsafeRedisConfig):
            r.begin_rpc("x", "echo", 1)
    finally:
        r.stop()
    ok = run_cli(
        fresh.redis_url, "ops", "invoke", "--func", "echo", "--args", "[1]",
        env={"LB_ALLOW_EVICTION": "1"},
    )  # fmt: skip
    assert ok.code == 0, ok


def _fill(url: str) -> redis.Redis:
    """Make Redis full: fill it with small values, then cap maxmemory under what is used, so
    that it stays over the limit whatever buffers come and go (noeviction: writes refused)."""
    r = redis.Redis.from_url(url)
    r.config_set("maxmemory-policy", "noeviction")
    pipe = r.pipeline(transaction=False)
    for j in range(2000):
        pipe.set(f"filler:{j}", b"x" * 500)
    pipe.execute()
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", str(used - 500_000))
    return r


def test_a_full_redis_is_waited_out_and_nothing_is_lost(fresh: Fleet) -> None:
    """Under noeviction at maxmemory a running worker settled 0 of 8 calls and logged 27
    tracebacks in 12 s; a worker started while full died with a traceback. Now: clients get
    RedisOutOfMemory (exit 9), the worker says so once, holds its work, and finishes it once
    room returns; a worker started while full waits and joins."""
    fresh.start("w", concurrency=2)
    client = Resonate.remote(fresh.redis_url, group="workers", prefix="ops")
    try:
        handles = [client.begin_rpc(f"g{i}", "grinder", 1.5) for i in range(2)]
        wait_for(lambda: len(fresh.journal_lines("start")) == 2, 30, "both calls started")
        admin = _fill(fresh.redis_url)
        with pytest.raises(RedisOutOfMemory):
            client.begin_rpc("late", "grinder", 0.1)
        res = run_cli(fresh.redis_url, "ops", "invoke", "--func", "echo", "--args", "[1]")
        assert res.code == 9, res
        assert "out of memory" in _one_error_line(res.err, res.out)
        late = fresh.start("late", wait=False)  # started while full: waits, does not die
        wait_for(lambda: len(fresh.journal_lines("finish")) == 2, 30, "both calls ran")
        wait_for(lambda: fresh["w"].events("redis-down"), 30, "the worker saw the refusal")
        time.sleep(3)  # the worker keeps retrying meanwhile (quietly)
        assert late.alive(), late.text()
        assert all(client.promise(h.id).pending for h in handles)
        admin.config_set("maxmemory", "0")
        for h in handles:
            assert h.result(timeout=60)["worker"] in ("w", "late")
        fresh.wait_joined("late")
        assert client.rpc("after", "echo", 5) == 5
        wait_for(lambda: fresh["w"].events("redis-up"), 30, "the worker saw room return")
        text = fresh["w"].text()
        assert "Traceback" not in text, text
        assert len(fresh["w"].events("redis-down")) == 1, text
        admin.close()
    finally:
        client.stop()


@pytest.mark.redis_args("--requirepass", "s3cret")
def test_a_wrong_password_is_an_authentication_error(fresh: Fleet) -> None:
    bad = fresh.redis_url.replace("redis://", "redis://:wrong@")
    res = run_cli(bad, "ops", "invoke", "--func", "echo", "--args", "[1]")
    assert res.code == 12, res
    assert "credentials" in _one_error_line(res.err, res.out)
    good = fresh.redis_url.replace("redis://", "redis://:s3cret@")
    fresh.redis_url = bad
    w = fresh.start("w", wait=False)
    assert w.proc.wait(30) == 12, w.text()
    fresh.redis_url = good
    fresh.start("ok")


def test_a_denied_command_is_named_at_start(fresh: Fleet) -> None:
    """A worker whose user may not ZADD died with a traceback; now: exit 11 naming it."""
    admin = redis.Redis.from_url(fresh.redis_url)
    admin.execute_command("ACL", "SETUSER", "nozadd", "on", ">pw", "~*", "&*", "+@all", "-zadd")
    admin.close()
    fresh.redis_url = fresh.redis_url.replace("redis://", "redis://nozadd:pw@")
    w = fresh.start("w", wait=False)
    assert w.proc.wait(30) == 11, w.text()
    assert "zadd" in w.text().lower() and "Traceback" not in w.text(), w.text()


@pytest.mark.parametrize("how", ["exit", "interrupt", "base"])
def test_a_function_that_ends_its_worker_fails_only_its_call(fleet: Fleet, how: str) -> None:
    """`sys.exit()` in a function ended the worker's I/O thread silently while heartbeats went
    on: the group stalled. Now that call is rejected FunctionAborted (not retried, though
    the function has the default retry policy) and the worker serves on."""
    w = fleet.start("w", concurrency=1)
    client = Resonate.remote(fleet.redis_url, group="workers", prefix=fleet.prefix)
    try:
        with pytest.raises(PromiseRejected) as err:
            client.rpc("e1", "ends_worker", how)
        assert err.value.error_type == "FunctionAborted", err.value
        assert len(fleet.journal_lines("ends", "e1")) == 1
        assert client.rpc("after", "echo", 7) == 7
        assert w.alive()
        os.kill(w.pid, signal.SIGTERM)
        assert w.proc.wait(15) == 0, w.text()
    finally:
        client.stop()


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_a_call_that_kills_its_workers_is_quarantined(fleet: Fleet, how: str) -> None:
    """A poison call killed 3 of 3 workers in 1.2 s as takeovers handed it on. Now its second
    holder death quarantines it (rejected Quarantined): at most 2 workers die, the third
    lives and serves."""
    for n in ("a", "b", "c"):
        fleet.start(n, concurrency=1, ttl=1)
    client = Resonate.remote(fleet.redis_url, group="workers", prefix=fleet.prefix)
    try:
        with pytest.raises(PromiseRejected) as err:
            client.options(timeout=60).rpc("poison", "kills_worker", how)
        assert err.value.error_type == "Quarantined", err.value
        assert "died 2 times" in err.value.error_message
        assert len(fleet.journal_lines("kills", "poison")) == 2
        alive = [n for n, w in fleet.workers.items() if w.alive()]
        assert len(alive) == 1, fleet.dump()
        assert client.rpc("after", "echo", 1) == 1
    finally:
        client.stop()


def test_shutdown_is_bounded_while_redis_is_stalled(fresh: Fleet) -> None:
    """With Redis SIGSTOPped, SIGTERM, a second SIGTERM and SIGINT were all ignored until it
    answered. Now a stop gives up after 5 s, and a second signal exits at once."""
    fresh.start("a", concurrency=1)
    fresh.start("b", concurrency=1)
    client = Resonate.remote(fresh.redis_url, group="workers", prefix="ops")
    try:
        client.begin_rpc("long1", "grinder", 30.0)
        client.begin_rpc("long2", "grinder", 30.0)
        wait_for(lambda: len(fresh.journal_lines("start")) == 2, 30, "both calls started")
        redis_pid = int(redis.Redis.from_url(fresh.redis_url).info("server")["process_id"])
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            os.kill(fresh["a"].pid, signal.SIGTERM)
            fresh["a"].proc.wait(15)
            assert time.monotonic() - t0 < 10, fresh["a"].text()
            t0 = time.monotonic()
            os.kill(fresh["b"].pid, signal.SIGTERM)
            time.sleep(0.5)
            os.kill(fresh["b"].pid, signal.SIGINT)
            assert fresh["b"].proc.wait(5) == 130
            assert time.monotonic() - t0 < 3
        finally:
            os.kill(redis_pid, signal.SIGCONT)
    finally:
        client.stop()


def _consumers(url: str, prefix: str) -> list[str]:
    r = redis.Redis.from_url(url)
    try:
        rows = r.xinfo_consumers("{" + prefix + ":0}:q:workers", "lb")
        return sorted(c["name"].decode() for c in rows)
    finally:
        r.close()


def test_consumers_stay_bounded_by_live_workers(fleet: Fleet) -> None:
    """40 clean stops left 40 consumers in the group (and XINFO CONSUMERS slowed every
    takeover pass). Now a clean stop deletes its own consumer, and a dead worker's consumer
    is deleted once its entries were taken over."""
    client = Resonate.remote(fleet.redis_url, group="workers", prefix=fleet.prefix)
    try:
        for i in range(5):
            w = fleet.start(f"s{i}", concurrency=1)
            assert client.rpc(f"c{i}", "echo", i) == i
            os.kill(w.pid, signal.SIGTERM)
            assert w.proc.wait(15) == 0
            assert _consumers(fleet.redis_url, fleet.prefix) == [], w.text()
        a = fleet.start("a", concurrency=1, ttl=1)
        b = fleet.start("b", concurrency=1, ttl=1)
        h = client.begin_rpc("held", "grinder", 1.0)
        wait_for(lambda: fleet.journal_lines("start", "held"), 30, "the call started")
        holder = fleet.journal_lines("start", "held")[0][2]
        victim, survivor = (a, b) if holder == "a" else (b, a)
        os.kill(victim.pid, signal.SIGKILL)
        assert h.result(timeout=30)["worker"] == survivor.name
        wait_for(
            lambda: _consumers(fleet.redis_url, fleet.prefix) == [survivor.name],
            30,
            lambda: f"consumers {_consumers(fleet.redis_url, fleet.prefix)}",
        )
    finally:
        client.stop()


@pytest.mark.parametrize("end", ["timeout", "cancel"])
def test_a_hung_function_gives_its_slot_back(fleet: Fleet, end: str) -> None:
    """A hung function kept its slot forever after its promise timed out or was canceled.
    Now the slot is freed (the thread is abandoned, counted and logged by function name, and
    shown in `lb status`), and the worker's one slot serves the next call."""
    w = fleet.start("w", concurrency=1)
    client = Resonate.remote(fleet.redis_url, group="workers", prefix=fleet.prefix)
    try:
        opts = client.options(timeout=1.0 if end == "timeout" else 3600.0)
        h = opts.begin_rpc("stuck", "hang")
        wait_for(lambda: fleet.journal_lines("hang", "stuck"), 30, "the call started")
        if end == "cancel":
            client.settle("stuck", "rejected_canceled")
        with pytest.raises(PromiseRejected):
            h.result(timeout=30)
        assert client.rpc("next", "echo", 2) == 2  # the one slot is free again
        ev = wait_for(lambda: w.events("abandoned", "stuck"), 30, lambda: w.text())
        assert ev[0].fields.get("func") == "hang"
        res = run_cli(fleet.redis_url, fleet.prefix, "status")
        assert "abandoned=1" in res.out, res
    finally:
        client.stop()


def test_an_exception_with_a_broken_str_follows_the_retry_policy(fleet: Fleet) -> None:
    """An exception whose __str__ raised bypassed the retry policy: a Never() function ran 10
    times and was dead-lettered after 22 s with tracebacks. Now it is rejected after one run."""
    w = fleet.start("w", concurrency=1)
    client = Resonate.remote(fleet.redis_url, group="workers", prefix=fleet.prefix)
    try:
        with pytest.raises(PromiseRejected) as err:
            client.rpc("bs", "broken_str")
        assert err.value.error_type == "BrokenStr", err.value
        assert len(fleet.journal_lines("broken", "bs")) == 1
        assert "Traceback" not in w.text(), w.text()
    finally:
        client.stop()
