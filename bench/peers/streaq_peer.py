"""streaQ peer.

Config: streaq Worker on Redis streams (coredis client), results stored at
streaq:default:task:results:<id> (pickle: streaq's default serializer); each
worker is ``streaq run bench.peers.streaq_peer:worker`` (1 process,
concurrency 16: the default), streaq logger at WARNING (INFO logs every task).
Enqueue: ``worker.enqueue_many`` (documented bulk pipeline API).
Result wait: ``await task.result()`` (pub/sub, no polling); note that with
coredis 6.9 each call also spends ~100 ms in the pub/sub cleanup
(``unsubscription_timeout=0.1``), which dominates its latency.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import anyio
from streaq import Worker

from bench.peers.common import AsyncDriver, aggressive_recovery, note_start, redis_url, venv_bin


@contextlib.asynccontextmanager
async def quiet_logs() -> AsyncIterator[None]:
    # streaq logs every task at INFO; the other peers run at WARNING
    logging.getLogger("streaq").setLevel(logging.WARNING)
    yield


worker = Worker(
    redis_url=redis_url(),
    concurrency=16,
    lifespan=quiet_logs,
    idle_timeout=2 if aggressive_recovery() else 60,
)
RESULTS = worker.results_key


@worker.task()
async def noop() -> None:
    return None


@worker.task()
async def whoami() -> int:
    return os.getpid()


@worker.task(timeout=3600)
async def sleeper(seconds: float) -> int:
    note_start()
    await anyio.sleep(seconds)
    return os.getpid()


class StreaqDriver(AsyncDriver):
    name = "streaq"
    packages = ("streaq", "coredis", "anyio")
    config = {
        "broker": "streaq Worker, Redis streams + consumer group",
        "result_backend": "streaq results (streaq:default:task:results:<id>)",
        "worker": "streaq run bench.peers.streaq_peer:worker (1 process, concurrency=16), "
        "streaq logger at WARNING",
        "enqueue": "worker.enqueue_many([...]) (bulk pipeline, chunks of 1000)",
        "result_wait": "await task.result() (pub/sub, no polling)",
        "serializer": "pickle (default)",
    }

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with worker:
            yield

    recovery = {
        "default": {
            "settings": "idle_timeout=60 s (default)",
            "documented": "a dead worker's stream entries are reclaimed once idle for "
            "idle_timeout=60 s (an idle reader blocks up to idle_timeout): 60-120 s",
        },
        "aggressive": {
            "settings": "idle_timeout=2 s",
            "documented": "2-4 s",
            "measure": True,
        },
    }

    async def aenqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        await sleeper.enqueue(seconds)

    def worker_cmd(self, index: int) -> list[str]:
        return [venv_bin("streaq"), "run", "bench.peers.streaq_peer:worker"]

    async def aenqueue(self, n: int) -> list[str]:
        keys = []
        for start in range(0, n, 1000):
            tasks = [noop.enqueue() for _ in range(min(1000, n - start))]
            await worker.enqueue_many(tasks)
            keys.extend(RESULTS + t.id for t in tasks)
        return keys

    async def awhoami(self, k: int) -> list[int]:
        tasks = [await whoami.enqueue() for _ in range(k)]
        return [int((await t.result(timeout=30)).result) for t in tasks]

    async def aroundtrip(self) -> None:
        task = await noop.enqueue()
        res = await task.result(timeout=30)
        if not res.success:
            raise RuntimeError(f"task failed: {res}")


DRIVER = StreaqDriver
