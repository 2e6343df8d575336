"""create_many: a batch of creates behaves like one create per id, in one atomic step."""

from __future__ import annotations

import asyncio

import pytest

from lb.broker import BadInput, Broker, Keys, Settings


def test_batch_creates_once_and_attaches(redis_url: str, prefix: str) -> None:
    """New ids are created with one stream entry each; ids already present (before, or earlier
    in the same batch) are returned unchanged and get no second task."""

    async def body() -> None:
        b = Broker(Settings.from_url(redis_url, prefix=prefix))
        try:
            await b.create("old", b"p0", group="g")
            await b.settle("old", "resolved", b"v0")
            items = [("a", b"p1"), ("old", b"px"), ("b", b"p2"), ("a", b"p3")]
            res = await b.create_many("g", items)
            assert [(c, p.id, p.state) for c, p in res] == [
                (True, "a", "pending"),
                (False, "old", "resolved"),
                (True, "b", "pending"),
                (False, "a", "pending"),
            ]
            assert res[1][1].value == b"v0"
            assert (await b.get("a")).param == b"p1"
            assert await b.redis.xlen(Keys.stream(b.keys.base(0), "g")) == 2
            with pytest.raises(BadInput):
                await b.create_many("g", [("bad\nid", b"")])
            with pytest.raises(BadInput):
                await b.create_many("bad group", [("x", b"")])
        finally:
            await b.close()

    asyncio.run(body())


def test_large_batch_spans_script_calls(redis_url: str, prefix: str) -> None:
    """1,000 ids (several 256-id script calls) all land, in order."""

    async def body() -> None:
        b = Broker(Settings.from_url(redis_url, prefix=prefix))
        try:
            res = await b.create_many("g", [(f"i{n}", b"") for n in range(1000)])
            assert [p.id for _, p in res] == [f"i{n}" for n in range(1000)]
            assert all(c for c, _ in res)
            assert (await b.count_by_state())["pending"] == 1000
        finally:
            await b.close()

    asyncio.run(body())
