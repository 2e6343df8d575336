"""Errors, retries, dead letters, async functions and the in-process mode, through the SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lb.sdk import BadInput, Context, Never, PromiseRejected, Resonate

from .support import Fleet


@pytest.fixture
def worker(fleet: Fleet) -> Iterator[Fleet]:
    fleet.start("ew", concurrency=4, ttl=2)
    yield fleet


def test_raising_function_rejects_with_type_and_message(worker: Fleet, client: Resonate) -> None:
    """`boom` raises ValueError("kaput") with retry Never(): `result()` raises PromiseRejected
    carrying the promise state, the exception type and its message; it ran once."""
    h = client.begin_rpc("err1", "boom", "kaput")
    with pytest.raises(PromiseRejected) as info:
        h.result(timeout=60)
    exc = info.value
    assert (exc.promise_id, exc.state) == ("err1", "rejected")
    assert (exc.error_type, exc.error_message) == ("ValueError", "kaput")
    assert client.promise("err1").state == "rejected"
    assert len(worker.journal_lines("boom", "err1")) == 1


def test_retry_constant_resolves_after_two_failures(worker: Fleet, client: Resonate) -> None:
    """`flaky(2)` fails on its first two tries and succeeds on the third; with retry
    `Constant(0.1, 3)` the promise resolves with 3 and the journal shows exactly 3 tries."""
    assert client.rpc("fl1", "flaky", 2) == 3
    assert len(worker.journal_lines("flaky", "fl1")) == 3
    assert len(worker["ew"].events("retry", "fl1")) == 2


def test_retry_never_rejects_at_once(worker: Fleet, client: Resonate) -> None:
    """The same function registered with `Never()` rejects on its first failure: one try."""
    with pytest.raises(PromiseRejected) as info:
        client.rpc("fl2", "flaky_never", 2)
    assert info.value.error_type == "RuntimeError"
    assert info.value.error_message == "flaky failure 1"
    assert len(worker.journal_lines("flaky", "fl2")) == 1
    assert not worker["ew"].events("retry", "fl2")


def test_retry_constant_gives_up_after_max_retries(worker: Fleet, client: Resonate) -> None:
    """`flaky(10)` with `Constant(0.1, 3)`: 1 try + 3 retries, then rejected with the last
    error."""
    with pytest.raises(PromiseRejected) as info:
        client.rpc("fl3", "flaky", 10)
    assert info.value.error_message == "flaky failure 4"
    assert len(worker.journal_lines("flaky", "fl3")) == 4


def test_unknown_function_waits_for_a_worker_that_serves_it(
    worker: Fleet, client: Resonate
) -> None:
    """Invoking a name no worker registered (the SDK does not check) while a worker runs: the
    worker hands it back on each delivery without crashing (not a failure: in a rolling deploy
    another worker may serve it), so the call waits until its deadline and then times out.
    The worker still serves afterwards."""
    h = client.options(timeout=3).begin_rpc("unk1", "no_such_function", 1)
    with pytest.raises(PromiseRejected) as info:
        h.result(timeout=60)
    assert info.value.state == "rejected_timedout", info.value
    passed = worker["ew"].events("passed-on", "unk1")
    assert 1 <= len(passed) <= 10, passed
    assert worker["ew"].alive()
    assert client.rpc("after-unk", "echo", 7) == 7


def test_async_function_durable_sleep(worker: Fleet, client: Resonate) -> None:
    """An `async def` function awaits `ctx.sleep(1.5)` and returns: the call takes at least
    1.5 s, and the journal's asleep/awake lines are at least 1.5 s apart."""
    t0 = time.monotonic()
    value = client.rpc("as1", "async_sleeper", 1.5)
    elapsed = time.monotonic() - t0
    assert value == {"worker": "ew", "slept": 1.5}
    assert elapsed >= 1.45, elapsed
    asleep = float(worker.journal_lines("asleep", "as1")[0][-1])
    awake = float(worker.journal_lines("awake", "as1")[0][-1])
    assert awake - asleep >= 1.45, (asleep, awake)


def test_local_mode_in_process() -> None:
    """`Resonate.local()`: an embedded Redis and a started worker in this process; a registered
    function (with a `ctx.run` checkpoint) is called with `rpc` and `begin_rpc`, errors come back
    as PromiseRejected, and the same id returns the stored value."""
    calls: list[int] = []

    r = Resonate.local(group="local")
    try:

        @r.register
        def double(ctx: Context, n: int) -> int:
            calls.append(n)
            return int(ctx.run(lambda: n * 2))

        @r.register(name="oops", retry=Never())  # type: ignore[untyped-decorator]
        def oops(ctx: Context) -> None:
            raise KeyError("missing")

        assert r.rpc("l1", "double", 21) == 42
        assert double.begin_rpc("l2", 4).result(timeout=30) == 8
        assert r.rpc("l1", "double", 99) == 42  # same id: stored value, not re-run
        assert calls == [21, 4]
        with pytest.raises(PromiseRejected) as info:
            r.rpc("l3", "oops")
        assert info.value.error_type == "KeyError"
        assert r.promise("l1:1").state == "resolved"
    finally:
        r.stop()


def test_malformed_redis_url_is_bad_input() -> None:
    """`Resonate.remote()` with a URL whose port is not a number raises BadInput (lb's typed
    error), not a bare ValueError from deep inside the Redis client."""
    with pytest.raises(BadInput):
        r = Resonate.remote("redis://127.0.0.1:notaport", prefix="tbadurl")
        r.stop()
