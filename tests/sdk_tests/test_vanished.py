"""Waits end on their own (the operations issue, item 3): a wait whose promise is gone ends
with NotFound within a few seconds, with or without a timeout (40 of 40 callers were still
blocked 64 s after a Redis without persistence restarted empty); a promise's own deadline
ends its waits when no worker or sweeper runs anywhere. A redis-server of the test's own."""

from __future__ import annotations

import concurrent.futures
import glob
import os
import shutil

import pytest

import lb.broker.errors
import lb.sdk.listener
from lb.broker import EmbeddedRedis, NotFound, PromiseRejected
from lb.sdk import Resonate


def test_waiters_on_a_redis_that_restarted_empty_end_with_not_found(
    own_redis: EmbeddedRedis,
) -> None:
    r = Resonate.remote(own_redis.url, group="nobody", prefix="gone")  # no worker serves it
    pool = concurrent.futures.ThreadPoolExecutor(20)
    try:
        handles = [r.begin_rpc(f"h{i}", "f") for i in range(20)]
        by_rpc = [pool.submit(r.rpc, f"r{i}", "f") for i in range(20)]
        by_result = [pool.submit(h.result) for h in handles]
        for f in by_rpc:  # the rpc creates have landed before Redis goes
            with pytest.raises(concurrent.futures.TimeoutError):
                f.result(timeout=0.01)
        r.promise("r19")  # raises NotFound if that create had not landed yet
        own_redis.kill()
        for path in glob.glob(os.path.join(own_redis.directory, "appendonly*")):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        own_redis.start()
        for f in by_rpc + by_result:
            with pytest.raises(NotFound):
                f.result(timeout=30)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        r.stop()


def test_a_purged_promise_ends_its_wait(own_redis: EmbeddedRedis) -> None:
    """Eviction, a purge or a hand-made DEL: the same rule for one promise."""
    r = Resonate.remote(own_redis.url, group="nobody", prefix="gone")
    try:
        h = r.begin_rpc("victim", "f")
        other = r.begin_rpc("survivor", "f")
        own_redis_client = __import__("redis").Redis.from_url(own_redis.url)
        own_redis_client.delete("{gone:0}:p:victim")
        own_redis_client.close()
        with pytest.raises(NotFound):
            h.result(timeout=30)
        with pytest.raises(lb.broker.errors.Timeout):
            other.result(timeout=0.5)  # a wait on a promise still there times out as asked
    finally:
        r.stop()


def test_a_promise_deadline_ends_its_wait_with_no_worker_or_sweeper(
    own_redis: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody serves the group and nobody sweeps: only the deadline timer can end this wait
    (the safety-net re-check is pushed an hour away)."""
    monkeypatch.setattr(lb.sdk.listener, "RECHECK_FIRST_S", 3600.0)
    r = Resonate.remote(own_redis.url, group="nobody", prefix="dl")
    try:
        with pytest.raises(PromiseRejected) as err:
            r.options(timeout=0.5).rpc("soon", "f")
        assert err.value.state == "rejected_timedout"
        h = r.options(timeout=0.5).begin_rpc("later", "f")
        with pytest.raises(PromiseRejected):
            h.result()
    finally:
        r.stop()
