"""Retention is settable everywhere: settings (``Resonate.remote(retention=)``,
``$LB_RETENTION``, ``--retention``) and per call (``options(retention=)``). A per-call
retention applies to the call and to its steps, which are kept while the call is pending.
Against the session's real redis-server."""

from __future__ import annotations

import math

import pytest
import redis

from lb.broker import Keys, Settings
from lb.broker.errors import BadInput, NotFound
from lb.sdk import Context, Never, Resonate
from tests.conftest import wait_until


def _gc_scores(url: str, prefix: str, ids: list[str]) -> list[float | None]:
    cl = redis.Redis.from_url(url)
    try:
        key = f"{Keys(prefix).base(0)}:gc"
        return [cl.zscore(key, i) for i in ids]
    finally:
        cl.close()


def test_per_call_retention_covers_the_call_and_its_steps(redis_url: str, prefix: str) -> None:
    w = Resonate(Settings.from_url(redis_url, prefix=prefix), "g", concurrency=2)

    def step(x: int) -> int:
        return x + 1

    def wf(ctx: Context, x: int) -> int:
        return int(ctx.run(step, x))

    try:
        w.register(wf, retry=Never())
        w.start()
        short = w.options(retention=0.3)
        assert short.rpc("short", "wf", 1) == 2
        assert w.rpc("long", "wf", 1) == 2
        p = w.promise("short")
        score_root, score_step, score_long = _gc_scores(
            redis_url, prefix, ["short", "short:1", "long"]
        )
        assert score_root == p.settled_at + 300
        assert score_step == p.settled_at + 300  # the step follows its call's retention
        assert score_long is not None and score_long >= w.promise("long").settled_at + 7 * 86400e3

        def purged() -> bool:
            try:
                w.promise("short")
            except NotFound:
                return True
            return False

        assert wait_until(purged, 15)
        with pytest.raises(NotFound):
            w.promise("short:1")
        assert w.promise("long").state == "resolved"
    finally:
        w.stop()


def test_per_call_retention_holds_for_a_batch(redis_url: str, prefix: str) -> None:
    """``options(retention=).begin_rpc_many`` keeps each call of the batch for that retention,
    as ``begin_rpc`` does (the batch used to fall back to the settings' 7 days)."""
    w = Resonate(Settings.from_url(redis_url, prefix=prefix), "g", concurrency=2)

    def f(ctx: Context, x: int) -> int:
        return x

    try:
        w.register(f, retry=Never())
        w.start()
        handles = w.options(retention=0.3).begin_rpc_many("f", [(f"b{i}", (i,)) for i in range(5)])
        assert [h.result(10) for h in handles] == list(range(5))
        scores = _gc_scores(redis_url, prefix, [h.id for h in handles])
        assert scores == [w.promise(h.id).settled_at + 300 for h in handles]
        ids = [h.id for h in handles]
        assert wait_until(lambda: all(s is None for s in _gc_scores(redis_url, prefix, ids)), 15)
        for i in ids:
            with pytest.raises(NotFound):
                w.promise(i)
    finally:
        w.stop()


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "1", True, 1e12])
def test_a_bad_per_call_retention_is_bad_input(redis_url: str, prefix: str, bad: object) -> None:
    r = Resonate(Settings.from_url(redis_url, prefix=prefix), "g")
    try:
        with pytest.raises(BadInput, match="retention"):
            r.options(retention=bad)  # type: ignore[arg-type]
    finally:
        r.stop()


def test_retention_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_RETENTION", "90")
    assert Settings.from_url("redis://x:1").retention_ms == 90_000
    assert Settings.from_url("redis://x:1", retention_ms=5).retention_ms == 5
    r = Resonate.remote("redis://x:1", retention=2)
    try:
        assert r.settings.retention_ms == 2000
    finally:
        r.stop()
    for bad in ("soon", "-3", "nan", "1e30"):
        monkeypatch.setenv("LB_RETENTION", bad)
        with pytest.raises(BadInput, match="LB_RETENTION"):
            Settings.from_url("redis://x:1")
