"""A Redis outage under a running function, on a redis-server of the test's own (killed with -9
and restarted on the same port and AOF directory), with an in-process worker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from lb.broker import EmbeddedRedis, PromiseRejected, RedisUnavailable
from lb.sdk import Context, Never, Resonate


def _until(pred: Any, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_redis_killed_between_two_steps_neither_rejects_nor_repeats_a_step(
    own_redis: EmbeddedRedis,
) -> None:
    """Regression (chaos seed 11, 2 of 45,000 `chain` invocations rejected with
    "RedisUnavailable"): a function's second ctx.run step met a dead Redis, and the worker
    took that for the function failing, spent its retries and rejected the promise.

    Now: step "a" settles, Redis is killed, the function reaches step "b" (which fails to
    reach Redis) with retry=Never; once Redis is back the worker re-runs the function from
    the top, step "a" replays from its checkpoint, "b" runs, and the promise resolves."""
    calls: list[str] = []
    events: list[str] = []
    gate = threading.Event()
    lock = threading.Lock()

    def step(tag: str) -> str:
        with lock:
            calls.append(tag)
        return tag

    def two_steps(ctx: Context) -> list[str]:
        a = ctx.run(step, "a")
        gate.wait(30)
        b = ctx.run(step, "b")
        return [a, b]

    r = Resonate.remote(
        own_redis.url,
        group="g",
        prefix="o" + uuid.uuid4().hex[:8],
        ttl=5.0,
        concurrency=2,
        on_event=lambda kind, data: events.append(kind),
    )
    try:
        r.register(two_steps, retry=Never())
        r.start()
        h = r.begin_rpc("job", "two_steps")
        _until(lambda: calls == ["a"], what="step a")
        own_redis.kill()
        gate.set()
        _until(lambda: "redis-wait" in events, what="the worker to meet the outage")
        own_redis.start()
        assert h.result(timeout=30) == ["a", "b"]
        assert calls == ["a", "b"], "a settled checkpoint ran again, or b ran twice"
        assert "retry" not in events, "the outage was spent from the function's retry budget"
    finally:
        r.stop()


def _serve_one_step(redis_url: str, prefix: str, step: Callable[[], str]) -> Resonate:
    """A started in-process worker of group "g" serving ``f(ctx) = ctx.run(step)``, retry
    Never (so an outage taken for a failure would reject at once)."""

    def f(ctx: Context) -> str:
        return str(ctx.run(step))

    r = Resonate.remote(redis_url, group="g", prefix=prefix, concurrency=2)
    r.register(f, retry=Never())
    r.start()
    return r


def test_an_outage_inside_a_step_is_not_stored_as_the_steps_failure(
    redis_url: str, prefix: str
) -> None:
    """A ctx.run step whose own code meets an outage (the step raises RedisUnavailable, as a
    nested lb call inside it would) must not be closed as rejected when Redis answers again at
    close time: every re-run would then replay that rejection and the promise would end
    rejected for an outage. Instead the step stays open, the function re-runs, the step runs
    again and the promise resolves."""
    runs: list[int] = []

    def step() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise RedisUnavailable("Redis is unreachable (as seen from inside the step)")
        return "ok"

    r = _serve_one_step(redis_url, prefix, step)
    try:
        assert r.begin_rpc("job2", "f").result(timeout=30) == "ok"
        assert len(runs) == 2
        assert r.promise("job2:1").state == "resolved"
    finally:
        r.stop()


def test_a_persistent_outage_of_the_functions_own_is_its_failure(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a step whose own code always raises RedisUnavailable (another Redis it
    uses is down) while lb's Redis answers must not be re-run forever. After the outage
    patience (1 s here) with no progress, it is the function's own failure: retry=Never
    rejects the promise with the error, after a bounded number of re-runs."""
    import lb.sdk.riding

    monkeypatch.setattr(lb.sdk.riding, "OUTAGE_PATIENCE_S", 1.0)
    runs: list[int] = []

    def step() -> str:
        runs.append(1)
        raise RedisUnavailable("the other Redis is unreachable")

    r = _serve_one_step(redis_url, prefix, step)
    try:
        with pytest.raises(PromiseRejected) as info:
            r.begin_rpc("job3", "f").result(timeout=30)
        assert "RedisUnavailable" in str(info.value), info.value
        assert 2 <= len(runs) <= 15, runs
    finally:
        r.stop()
