"""Regression tests for the lifecycle issue: one per failure found in review, each named after
it and opening with its scenario. All run against the session's real redis-server with an
in-process worker (what kills workers for real lives in tests/e2e and tests/model).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lb.broker import Broker, Keys, Settings, TaskQueue
from lb.broker.errors import AlreadyRegistered, BadInput, PromiseRejected
from lb.sdk import AsyncContext, Constant, Context, Never, Resonate
from lb.sdk.listener import Listener
from tests.broker_tests.broker_helpers import shutdown
from tests.conftest import wait_until


def _worker(url: str, prefix: str, group: str = "g", **kw: Any) -> Resonate:
    return Resonate(Settings.from_url(url, prefix=prefix, **kw.pop("settings", {})), group, **kw)


@pytest.fixture
def r(redis_url: str, prefix: str) -> Iterator[Resonate]:
    res = _worker(redis_url, prefix, concurrency=1, suspend_after=0.01)
    yield res
    res.stop()


def test_ten_child_calls_do_not_dead_letter_a_workflow(r: Resonate) -> None:
    """`sum(ctx.rpc("leaf", i) for i in range(n))` was rejected `DeadLettered: delivered 10
    times` for n = 10 (each resume counted as a delivery), and ctx.attempt grew on every
    resume. Twelve children and twelve suspending sleeps now finish, attempt stays 1."""
    attempts: list[int] = []

    def leaf(ctx: Context, i: int) -> int:
        return i

    def fan(ctx: Context, n: int) -> int:
        attempts.append(ctx.attempt)
        return sum(ctx.rpc("leaf", i) for i in range(n))

    def sleeper(ctx: Context, n: int) -> int:
        attempts.append(ctx.attempt)
        for _ in range(n):
            ctx.sleep(0.05)  # longer than suspend_after: each one suspends the task
        return n

    r.register(leaf, retry=Never())
    r.register(fan, retry=Never())
    r.register(sleeper, retry=Never())
    r.start()
    assert r.rpc("fan12", "fan", 12) == sum(range(12))
    assert r.rpc("sleep12", "sleeper", 12) == 12
    assert set(attempts) == {1}, attempts


def test_late_acquire_does_not_orphan_the_task(redis_url: str, prefix: str) -> None:
    """Worker A reads an entry and stalls before acquire.lua; B takes the entry over; A's late
    acquire used to XACK+XDEL the entry B owned, so when B died no takeover could find the
    task. Now A's acquire skips it and B's entry stays; C takes it over after B dies."""

    async def scenario() -> None:
        b = Broker(Settings.from_url(redis_url, prefix=prefix))
        qa, qb, qc = (TaskQueue(b, "g", n) for n in ("A", "B", "C"))
        try:
            await qa.ensure_group()
            await b.create("job", b"x", group="g")
            read = await qa.read(1, block_ms=10)
            held_b, _ = await qb.takeover(0, 1)  # A "stalled" past the ttl
            assert [c.task_id for c in held_b] == ["job"]
            (base, entries), *_ = read.items()
            held_a, dead = await qa.acquire(base, entries)
            assert held_a == [] and dead == []
            pel = await b.redis.xpending_range(f"{base}:q:g", "lb", "-", "+", 10)
            assert [(p["consumer"], p["message_id"].decode()) for p in pel] == [
                (b"B", entries[0].eid)
            ]
            held_c, _ = await qc.takeover(0, 1)  # B died
            assert [c.task_id for c in held_c] == ["job"]
        finally:
            await shutdown(b, qa, qb, qc)

    asyncio.run(scenario())


def test_a_failed_step_is_retried_where_it_failed(r: Resonate) -> None:
    """retry=Constant(0.01, 3) on the function and a ctx.run(flaky) that raises once: the
    failed step used to be stored rejected and replayed by every function retry, so the call
    failed although flaky ran once. Now the step retries itself and the call resolves; a step
    whose own policy gives up ends the call without function retries replaying it."""
    runs: list[str] = []
    lock = threading.Lock()

    def flaky(tag: str) -> str:
        with lock:
            runs.append(tag)
            if runs.count(tag) == 1:
                raise ConnectionError("transient")
        return tag

    def once_flaky(ctx: Context) -> str:
        return str(ctx.run(flaky, "a", ctx.options(retry=Constant(0.01, 2))))

    bodies: list[int] = []

    def hopeless(ctx: Context) -> str:
        bodies.append(1)
        return str(ctx.run(_always_fails, ctx.options(retry=Never())))

    r.register(once_flaky, retry=Constant(0.01, 3))
    r.register(hopeless, retry=Constant(0.01, 3))
    r.start()
    assert r.rpc("flaky1", "once_flaky") == "a"
    assert runs == ["a", "a"]
    with pytest.raises(PromiseRejected) as info:
        r.rpc("hopeless1", "hopeless")
    assert "ValueError" in str(info.value)
    assert bodies == [1], "a final step failure was replayed by function retries"


def _always_fails() -> None:
    raise ValueError("never works")


def test_retention_does_not_rerun_checkpointed_work(redis_url: str, prefix: str) -> None:
    """With retention 1 s, a parent suspended past that (a long ctx.sleep) used to find its
    settled ctx.run step purged on resume, and ran the effect twice. A step now lives as long
    as its root is pending."""
    effects: list[int] = []
    w = _worker(
        redis_url, prefix, concurrency=1, suspend_after=0.01, settings={"retention_ms": 300}
    )

    def effect() -> int:
        effects.append(1)
        return len(effects)

    def wf(ctx: Context) -> int:
        n = int(ctx.run(effect))
        ctx.sleep(1.0)  # suspends; the sweeper runs many times meanwhile
        return n

    try:
        w.register(wf, retry=Never())
        w.start()
        assert w.rpc("ret1", "wf") == 1
        assert effects == [1]
    finally:
        w.stop()


def test_durable_sleep_ignores_the_workers_wall_clock(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10 s forward step of the worker's wall clock made ctx.sleep(3) return at once with
    its timer still pending (remaining time came from time.time() + a measured offset). Now
    it comes from Redis and is waited on the monotonic clock. A step's deadline never passes
    its parent's."""
    real = time.time
    took: list[float] = []

    def sleepy(ctx: Context) -> None:
        t0 = time.monotonic()
        ctx.sleep(0.6)
        took.append(time.monotonic() - t0)
        ctx.run(lambda: None)

    r = _worker(redis_url, prefix, concurrency=1)  # sleeps wait in the slot
    try:
        r.register(sleepy, retry=Never())
        r.start()
        monkeypatch.setattr(time, "time", lambda: real() + 10.0)
        r.options(timeout=30).rpc("clock1", "sleepy")
        assert took and took[0] >= 0.55, took
        root = r.promise("clock1")
        assert r.promise("clock1:2").timeout_at <= root.timeout_at
    finally:
        r.stop()


def test_root_ids_with_a_colon_are_refused(r: Resonate) -> None:
    """An invocation named `job:1` used to be resolved by the first ctx.run step of `job`.
    Root ids may not contain ':' (Resonate 0.8's rule): BadInput before anything is stored."""
    r.register(_echo)
    with pytest.raises(BadInput, match="':'"):
        r.begin_rpc("job:1", "_echo", 1)
    with pytest.raises(BadInput, match="':'"):
        r.options().begin_rpc_many("_echo", [("ok", (1,)), ("bad:2", (2,))])


def _echo(ctx: Context, x: Any) -> Any:
    return x


def test_wait_on_a_missing_promise_is_a_typed_error(r: Resonate) -> None:
    """A ctx.wait on an id that does not exist used to be taken for a suspension (suspend.lua
    answered 'missing'), dropping the task until a takeover dead-lettered it. Now the ctx
    call raises NotFound in the function, which rejects the call with that error."""

    def waits(ctx: Context) -> Any:
        return ctx.wait("nobody-made-this")

    r.register(waits, retry=Never())
    r.start()
    with pytest.raises(PromiseRejected) as info:
        r.options(timeout=20).rpc("miss1", "waits")
    assert "NotFound" in str(info.value)


def test_wait_across_shards_is_refused(redis_url: str, prefix: str) -> None:
    """With shards=8 a wait on a promise of another shard could never wake the task: refused
    with BadInput at the ctx call."""
    w = _worker(redis_url, prefix, concurrency=1, settings={"shards": 8})
    keys = Keys(prefix, 8)
    other = next(f"x{i}" for i in range(100) if keys.shard_of(f"x{i}") != keys.shard_of("sh1"))

    async def make_other() -> None:
        b = Broker(w.settings)
        try:
            await b.create(other)  # exists, in another shard
        finally:
            await b.close()

    def waits(ctx: Context, pid: str) -> Any:
        return ctx.wait(pid)

    try:
        w.register(waits, retry=Never())
        w.start()
        asyncio.run(make_other())
        with pytest.raises(PromiseRejected) as info:
            w.options(timeout=20).rpc("sh1", "waits", other)
        assert "different shards" in str(info.value)
    finally:
        w.stop()


def test_blocking_call_in_async_def_stops_renewals(redis_url: str, prefix: str) -> None:
    """time.sleep inside an async def stalled the loop while the heartbeat thread renewed its
    tasks: they were held forever. Now a heartbeat renews only while the loop ticks, so a
    second worker takes the call over, and the stall is reported with the function's name."""
    events: list[tuple[str, dict[str, Any]]] = []
    blocked = threading.Event()

    async def hog(ctx: AsyncContext) -> str:
        if not blocked.is_set():
            blocked.set()
            time.sleep(3.0)  # blocks the event loop (ttl is 1 s)
        return ctx.worker

    a = _worker(
        redis_url, prefix, pid="hog-a", concurrency=2, on_event=lambda k, d: events.append((k, d)),
        settings={"ttl_ms": 1000},
    )  # fmt: skip
    b = _worker(redis_url, prefix, pid="hog-b", concurrency=2, settings={"ttl_ms": 1000})
    # The caller has a loop of its own: a blocked loop blocks everything on it, the worker's
    # own callers too (hog starts as soon as its entry is read, the fast path, maybe before
    # the create's reply is handed back on that same loop).
    caller = _worker(redis_url, prefix, settings={"ttl_ms": 1000})
    try:
        for w in (a, b):
            w.register(hog, retry=Never())
        a.start()
        h = caller.begin_rpc("hog1", "hog")
        assert blocked.wait(10)
        b.start()
        assert h.result(timeout=30) == "hog-b"
        stalls = [d for k, d in events if k == "stalled"]
        assert stalls and "hog" in stalls[0]["error"], events
    finally:
        b.stop()
        a.stop()
        caller.stop()


def test_two_functions_under_one_name_are_refused() -> None:
    """Registering a second function under a taken name used to replace the first silently."""
    r = Resonate(Settings.from_url("redis://127.0.0.1:1/0"), "g")
    try:
        r.register(_echo, name="f")
        r.register(_echo, name="f")  # the same function again: fine
        with pytest.raises(AlreadyRegistered):
            r.register(_always_fails, name="f")
    finally:
        r.stop()


def test_a_worker_without_the_function_passes_the_call_on(redis_url: str, prefix: str) -> None:
    """A rolling deploy: an old worker lacking `newfn` used to dead-letter calls to it after 3
    deliveries. Now it hands the call back for a later delivery; it settles once a worker
    that serves it joins."""
    passed: list[str] = []
    old = _worker(
        redis_url, prefix, pid="old", concurrency=2, on_event=lambda k, d: passed.append(k)
    )
    new = _worker(redis_url, prefix, pid="new", concurrency=2)

    def newfn(ctx: Context) -> str:
        return ctx.worker

    try:
        old.register(_echo)
        old.start()
        h = old.begin_rpc("roll1", "newfn")
        # The old code dead-lettered it on the third refusal: wait for four hand-backs.
        wait_until(lambda: passed.count("passed-on") >= 4, timeout=30)
        assert not h.done()
        new.register(newfn)
        new.start()
        assert h.result(timeout=30) == "new"
    finally:
        new.stop()
        old.stop()


def test_push_wakeups_do_not_wait_for_the_safety_net(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 20,000 waiters in one process, the periodic GET re-check of every waiter ran
    inside the push loop and delayed wake-ups by seconds. Now it runs beside it: here the
    re-check is made to hang for ever, and a promise settled after it began still wakes its
    waiter (on the old code the push loop hung with it)."""
    started = asyncio.Event()

    async def hang(self: Listener, *args: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(Listener, "_recheck", hang)
    client = _worker(redis_url, prefix, group="nobody")

    async def scenario() -> Any:
        opts = client.options(target="poll://any@nobody")
        handles = [await opts.abegin_rpc(f"q{i}", "f") for i in range(10)]
        waits = [asyncio.ensure_future(h.aresult(timeout=60)) for h in handles]
        await asyncio.wait_for(started.wait(), 30)  # a re-check round is under way, stuck
        b = Broker(client.settings)
        try:
            await b.settle("q7", "resolved", b"\xc0")
            value = await asyncio.wait_for(waits[7], 30)
        finally:
            await b.close()
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        return value

    try:
        assert client._io.call(scenario()) is None
    finally:
        client.stop()


def test_a_call_for_a_version_waits_for_a_worker_with_that_version(
    redis_url: str, prefix: str
) -> None:
    """`register(version=...)` was stored but never used at dispatch: a call asking for
    version 2 ran on a worker with version 1 only. Now it is handed back until a worker with
    version 2 takes it; a call that asks no version runs the highest the worker has."""
    passed: list[str] = []
    old = _worker(
        redis_url, prefix, pid="v1-only", concurrency=2, on_event=lambda k, d: passed.append(k)
    )
    new = _worker(redis_url, prefix, pid="v1-v2", concurrency=2)

    def f_v1(ctx: Context) -> str:
        return f"v1 on {ctx.worker}"

    def f_v2(ctx: Context) -> str:
        return f"v2 on {ctx.worker}"

    try:
        old.register(f_v1, name="f", version=1)
        old.start()
        h = old.options(version=2).begin_rpc("ver1", "f")
        wait_until(lambda: passed.count("passed-on") >= 2, timeout=30)
        assert not h.done()
        new.register(f_v1, name="f", version=1)
        new.register(f_v2, name="f", version=2)
        with pytest.raises(AlreadyRegistered):
            new.register(_echo, name="f", version=2)
        new.start()
        assert h.result(timeout=30) == "v2 on v1-v2"
        assert old.options(version=1).rpc("ver2", "f").startswith("v1 on ")
        old.stop()
        assert new.rpc("ver3", "f") == "v2 on v1-v2"
    finally:
        new.stop()
        old.stop()
