"""SDK behaviour with an in-process worker on the real test Redis.

Worker subprocesses killed for real are in tests/e2e; here the worker shares the test's
process, which is enough for replay, suspension, errors and backpressure.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lb.broker.errors import BadInput, NotFound, PromiseRejected, RedisUnavailable, Timeout
from lb.sdk import AsyncContext, Context, Never, Resonate


@pytest.fixture
def resonate(redis_url: str, prefix: str) -> Iterator[Resonate]:
    r = Resonate.remote(redis_url, group="g", prefix=prefix, concurrency=1)
    yield r
    r.stop()


def test_checkpoints_replay_after_suspension(resonate: Resonate) -> None:
    """A parent runs a ctx.run step, then suspends on a child: on re-run the step replays
    (not executed again), and child ids follow root:1, root:2 and root:2.1 for a grandchild."""
    calls: list[str] = []
    seen_ids: list[str] = []
    lock = threading.Lock()

    def step(tag: str) -> str:
        with lock:
            calls.append(tag)
        return tag.upper()

    def child(ctx: Context, x: int) -> int:
        seen_ids.append(ctx.id)
        return int(ctx.run(lambda: x * 10))

    def parent(ctx: Context) -> list[Any]:
        a = ctx.run(step, "a")
        b = ctx.rpc("child", 4)
        return [a, b]

    resonate.register(child, retry=Never())
    resonate.register(parent, retry=Never())
    resonate.start()
    assert resonate.rpc("root", "parent") == ["A", 40]
    assert calls == ["a"], "a settled checkpoint ran again on replay"
    assert seen_ids == ["root:2"]
    assert resonate.promise("root:1").state == "resolved"
    assert resonate.promise("root:2.1").state == "resolved"


def test_one_slot_worker_calling_its_own_group_finishes(resonate: Resonate) -> None:
    """concurrency=1: the parent suspends, freeing the only slot for its children."""

    def leaf(ctx: Context, n: int) -> int:
        return n + 1

    def chain(ctx: Context, n: int) -> int:
        return int(ctx.rpc("leaf", n)) + int(ctx.rpc("leaf", n + 10))

    resonate.register(leaf)
    resonate.register(chain)
    resonate.start()
    assert resonate.rpc("c1", "chain", 1) == 2 + 12


def test_async_function_and_durable_sleep(resonate: Resonate) -> None:
    """async def functions get an AsyncContext; ctx.sleep waits about the asked time."""

    async def nap(ctx: AsyncContext, s: float) -> str:
        await ctx.sleep(s)
        v = await ctx.run(lambda: "ok")
        return f"{v}:{ctx.attempt}"

    resonate.register(nap)
    resonate.start()
    assert resonate.rpc("n1", "nap", 0.3) == "ok:1"
    p = resonate.promise("n1:1")
    assert p.state == "resolved" and p.tags.get("resonate:timer") == "true"
    assert p.settled_at >= p.timeout_at


def test_errors_come_back_typed(resonate: Resonate) -> None:
    """A raised error rejects the promise with type and message and re-raises at result()."""

    def bad(ctx: Context) -> None:
        raise KeyError("missing-thing")

    resonate.register(bad, retry=Never())
    resonate.start()
    with pytest.raises(PromiseRejected) as info:
        resonate.rpc("e1", "bad")
    assert info.value.error_type == "KeyError" and "missing-thing" in info.value.error_message
    assert resonate.promise("e1").state == "rejected"


def test_same_id_attaches(resonate: Resonate) -> None:
    """Invoking an existing id attaches: one execution, the first arguments win."""
    runs: list[int] = []

    def once(ctx: Context, x: int) -> int:
        runs.append(x)
        return x

    resonate.register(once)
    h1 = resonate.begin_rpc("same", "once", 1)
    h2 = resonate.begin_rpc("same", "once", 2)
    resonate.start()
    assert h1.result(timeout=10) == 1 and h2.result(timeout=10) == 1
    assert resonate.rpc("same", "once", 3) == 1
    assert runs == [1]


def test_external_promise(resonate: Resonate) -> None:
    """ctx.promise() suspends the task until someone settles it from outside."""

    def approval(ctx: Context) -> Any:
        pid = ctx.promise()
        return ctx.wait(pid)

    resonate.register(approval)
    resonate.start()
    h = resonate.begin_rpc("ap", "approval")
    with pytest.raises(Timeout):
        h.result(timeout=0.5)
    resonate.settle("ap:1", "resolved", {"ok": True})
    assert h.result(timeout=10) == {"ok": True}


def test_bad_input_and_missing(resonate: Resonate) -> None:
    """Hostile ids, bad targets and oversized args are refused before anything is stored."""
    with pytest.raises(BadInput):
        resonate.begin_rpc("bad\nid", "f")
    with pytest.raises(BadInput):
        resonate.options(target="http://x").begin_rpc("ok", "f")
    with pytest.raises(BadInput):
        resonate.begin_rpc("big", "f", "x" * (2 << 20))
    with pytest.raises(NotFound):
        resonate.get("never-created")


def test_burst_of_20000_from_one_client(redis_url: str, prefix: str) -> None:
    """20,000 concurrent invocations from one process all get stored (bounded in-flight
    requests and connections: slower, never failing for want of a connection)."""
    r = Resonate.remote(redis_url, group="burst", prefix=prefix)
    try:
        opts = r.options()

        handles = opts.begin_rpc_many("echo", [(f"b{i}", (i,)) for i in range(20_000)])
        assert len(handles) == 20_000
        assert r._io.call(r._broker.count_by_state())["pending"] == 20_000
    finally:
        r.stop()


def test_burst_of_20000_single_calls_at_once_all_settle(redis_url: str, prefix: str) -> None:
    """The burst that fails Resonate's SDK: 20,000 separate invocations in flight at once from
    one process (asyncio.gather of abegin_rpc, no batch API), then every one waited on. All
    are stored and all settle on a worker of another Resonate instance; none fails for want
    of a connection (the client bounds its in-flight requests and its pool)."""
    import asyncio

    n = 20_000
    worker = Resonate.remote(redis_url, group="burst1", prefix=prefix, concurrency=64)
    client = Resonate.remote(redis_url, group="burst1", prefix=prefix)

    def echo(ctx: Context, x: int) -> int:
        return x

    async def burst() -> list[Any]:
        opts = client.options()
        handles = await asyncio.gather(*(opts.abegin_rpc(f"s{i}", "echo", i) for i in range(n)))
        assert len({h.id for h in handles}) == n
        worker.start()
        return list(await asyncio.gather(*(h.aresult(timeout=120) for h in handles)))

    try:
        worker.register(echo, retry=Never())
        values = asyncio.run(burst())
        assert values == list(range(n))
    finally:
        client.stop()
        worker.stop()


def test_redis_down_is_typed() -> None:
    """An unreachable Redis raises RedisUnavailable at once, not a handle that never settles."""
    r = Resonate.remote("redis://127.0.0.1:1/0", group="g")
    try:
        with pytest.raises(RedisUnavailable):
            r.begin_rpc("x", "f")
    finally:
        r.stop()
