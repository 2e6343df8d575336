"""Automatic pipelining of script calls made at the same moment.

Script calls issued by concurrent coroutines during one event-loop iteration are sent to Redis
as one pipeline (one round trip) instead of one round trip each. Each caller still gets its
own result or its own exception; the pipeline is not a transaction, so one failing call does
not affect the others. A NOSCRIPT answer (Redis restarted, or SCRIPT FLUSH) reloads the
script and repeats just those calls. A lone call goes out as a plain EVALSHA. Calls go out on
the broker's lane (broker/lane.py: redis-py's connections without its client layer).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions as rexc

from lb.broker.lane import Lane
from lb.broker.scripts import Scripts

__all__ = ["Batcher"]

MAX_BATCH = 512


class Batcher:
    def __init__(self, scripts: Scripts, lane: Lane) -> None:
        self.scripts = scripts
        self.lane = lane
        self._queue: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((name, keys, args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flush, loop)
        return await fut

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        for i in range(0, len(batch), MAX_BATCH):
            task = loop.create_task(self._flush(batch[i : i + MAX_BATCH]))
            self._flushing.add(task)  # keep a reference until done (asyncio holds weak ones)
            task.add_done_callback(self._flushing.discard)

    async def _flush(
        self, batch: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            results = await self.lane.run(
                [
                    ("EVALSHA", self.scripts.sha(name), len(keys), *keys, *args)
                    for name, keys, args, _ in batch
                ]
            )
        except BaseException as exc:
            for *_, fut in batch:
                _fail(fut, exc)
            return
        for (name, keys, args, fut), res in zip(batch, results, strict=True):
            if isinstance(res, rexc.NoScriptError):
                try:
                    res = await self.scripts.call(name, keys, args)
                except BaseException as exc:
                    _fail(fut, exc)
                    continue
            if isinstance(res, BaseException):
                _fail(fut, res)
            else:
                _ok(fut, res)


def _ok(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
