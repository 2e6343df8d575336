"""The dashboard's feed ends when it is stopped, whatever its read is doing: a stop is never
lost. (CI once saw `lb dashboard` ignore Ctrl-C after a Redis outage: its read failed just as
the cancel came, Python 3.11's wait_for raised the read's error instead of the cancel, the
feed took it for one more failed read and polled on, and the stop waited forever.)

Pure asyncio logic: the read is replaced by one that fails in the two ways a failing Redis
connection gives; no Redis is involved."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lb.broker.client import Broker
from lb.broker.errors import RedisUnavailable
from lb.broker.settings import Settings
from lb.cli.dashboard_feed import Feed


class _Failing(Feed):
    """``how``: "converts" turns the cancel into a Redis error (as a client that closes its
    connection on a cancel may); "races" fails the read in the very step the stop comes."""

    def __init__(self, how: str) -> None:
        super().__init__(Broker(Settings(url="redis://127.0.0.1:1/0")), 0.01, writes=False)
        self.how = how
        self.reads = 0
        self.stop: asyncio.Task[None] | None = None

    async def _read(self) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        self.reads += 1
        if self.reads > 1:  # only the first read fails so; later ones let a cancel through
            await asyncio.sleep(10)
        if self.how == "races" and self.stop is not None:
            self.stop.cancel()
            raise RedisUnavailable("Connection closed by server.")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RedisUnavailable("Connection closed by server.") from None
        raise AssertionError("not reached")


@pytest.mark.parametrize("how", ["converts", "races"])
def test_a_stop_during_a_failing_read_ends_the_feed(how: str) -> None:
    async def main() -> None:
        feed = _Failing(how)
        task = asyncio.create_task(feed.run())
        if how == "races":
            feed.stop = task
        else:
            while feed.reads < 1:
                await asyncio.sleep(0.005)
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, f"the feed ignored its stop (reads: {feed.reads})"
        assert task.cancelled()

    asyncio.run(main())
