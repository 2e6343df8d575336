"""taskiq peer.

Config: taskiq-redis RedisStreamBroker (Redis streams with acks: the broker
taskiq-redis recommends; ListQueueBroker is at-most-once) +
RedisAsyncResultBackend (result at key <task_id>, json); each worker is
``taskiq worker bench.peers.taskiq_peer:broker --workers 1 --log-level WARNING``
(1 worker process, max 100 async tasks: the default; INFO logs every task).
Enqueue: ``await task.kiq()`` sequentially (no bulk API).
Result wait: ``await handle.wait_result(check_interval=0.001)``
(taskiq polls; default 0.2 s, 1 ms used here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from bench.peers.common import (
    AsyncDriver,
    aggressive_recovery,
    concurrency,
    note_start,
    redis_url,
    venv_bin,
)

POLL = 0.001
URL = redis_url()
FAST = {"idle_timeout": 2000} if aggressive_recovery() else {}
broker = RedisStreamBroker(url=URL, **FAST).with_result_backend(
    RedisAsyncResultBackend(redis_url=URL)
)


@broker.task(task_name="noop")
async def noop() -> None:
    return None


@broker.task(task_name="whoami")
async def whoami() -> int:
    return os.getpid()


@broker.task(task_name="sleeper")
async def sleeper(seconds: float) -> int:
    note_start()
    await asyncio.sleep(seconds)
    return os.getpid()


class TaskiqDriver(AsyncDriver):
    name = "taskiq"
    packages = ("taskiq", "taskiq-redis", "redis", "hiredis")
    config = {
        "broker": "taskiq_redis.RedisStreamBroker (streams + consumer group, acks)",
        "result_backend": "taskiq_redis.RedisAsyncResultBackend",
        "worker": "taskiq worker bench.peers.taskiq_peer:broker --workers 1 --log-level WARNING",
        "enqueue": "await task.kiq() sequentially (no bulk API)",
        "result_wait": "await handle.wait_result(check_interval=0.001) (polling, 1 ms)",
        "serializer": "json (default)",
    }

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        await broker.startup()
        try:
            yield
        finally:
            await broker.shutdown()

    async def aafter_flush(self) -> None:
        # FLUSHALL dropped the stream's consumer group; the broker creates it
        # at "$" on startup, so re-create it before enqueueing a backlog.
        await broker._declare_consumer_group()

    recovery = {
        "default": {
            "settings": "RedisStreamBroker idle_timeout=600000 ms (default)",
            "documented": "unacked entries are XAUTOCLAIMed once idle for 10 min; the "
            "claim only runs after an XREADGROUP that returned new messages",
        },
        "aggressive": {
            "settings": "idle_timeout=2000 ms",
            "documented": "2 s idle, but only reclaimed once new messages arrive",
            "measure": True,
        },
    }

    async def aenqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        await sleeper.kiq(seconds)

    def worker_cmd(self, index: int) -> list[str]:
        return [
            venv_bin("taskiq"),
            "worker",
            "bench.peers.taskiq_peer:broker",
            "--workers",
            "1",
            "--log-level",
            "WARNING",
            # its concurrency: async tasks at once per worker (taskiq's default is 100)
            "--max-async-tasks",
            str(concurrency(100)),
        ]

    async def aenqueue(self, n: int) -> list[str]:
        return [(await noop.kiq()).task_id for _ in range(n)]

    async def awhoami(self, k: int) -> list[int]:
        handles = [await whoami.kiq() for _ in range(k)]
        out = []
        for h in handles:
            res = await h.wait_result(check_interval=POLL, timeout=30)
            out.append(int(res.return_value))
        return out

    async def aroundtrip(self) -> None:
        handle = await noop.kiq()
        res = await handle.wait_result(check_interval=POLL, timeout=30)
        if res.is_err:
            raise RuntimeError(f"task failed: {res.error}")


DRIVER = TaskiqDriver
