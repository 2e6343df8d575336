"""arq peer.

Config: arq's Redis queue + results (arq:result:<id>, pickle: arq's default);
each worker is ``arq bench.peers.arq_peer.WorkerSettings`` with max_jobs=10
(default), arq logger at WARNING (INFO logs every job) and poll_delay=1 ms
(default 0.5 s: arq's worker *polls* the queue sorted set, so the default caps
an idle worker's latency at ~0.5 s).
Enqueue: ``await pool.enqueue_job()`` one at a time, sequentially (no bulk API).
Result wait: ``await job.result(poll_delay=0.001)`` (arq polls; default 0.5 s,
1 ms used here; arq documents no minimum).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.peers.common import AsyncDriver, aggressive_recovery, note_start, redis_url, venv_bin

POLL = 0.001
SETTINGS = RedisSettings.from_dsn(redis_url())


async def quiet_logs(ctx: dict[str, Any]) -> None:
    # arq logs every job at INFO; the other peers run at WARNING
    logging.getLogger("arq").setLevel(logging.WARNING)


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def whoami(ctx: dict[str, Any]) -> int:
    return os.getpid()


async def sleeper(ctx: dict[str, Any], seconds: float) -> int:
    note_start()
    await asyncio.sleep(seconds)
    return os.getpid()


class WorkerSettings:
    functions = [noop, whoami, sleeper]
    redis_settings = SETTINGS
    poll_delay = POLL
    max_jobs = 10
    on_startup = quiet_logs
    # in-progress key TTL = max job timeout + 10 s (arq re-runs the job after it)
    job_timeout = 5 if aggressive_recovery() else 300


class ArqDriver(AsyncDriver):
    name = "arq"
    packages = ("arq", "redis", "hiredis")
    config = {
        "broker": "arq queue (sorted set arq:queue)",
        "result_backend": "arq results (arq:result:<id>)",
        "worker": "arq bench.peers.arq_peer.WorkerSettings, max_jobs=10, poll_delay=0.001, "
        "arq logger at WARNING",
        "enqueue": "await pool.enqueue_job() sequentially (no bulk API)",
        "result_wait": "await job.result(poll_delay=0.001) (polling, 1 ms)",
        "serializer": "pickle (default)",
    }

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        self.pool: ArqRedis = await create_pool(SETTINGS)
        try:
            yield
        finally:
            await self.pool.aclose()

    recovery = {
        "default": {
            "settings": "job_timeout=300 s (default)",
            "documented": "re-run by another worker once the in-progress key expires: "
            "job_timeout + 10 s = 310 s after the start",
        },
        "aggressive": {
            "settings": "job_timeout=5 s (in-progress key TTL 15 s)",
            "documented": "~15 s after the start",
            "measure": True,
        },
    }

    async def aenqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        await self.pool.enqueue_job("sleeper", seconds)

    def worker_cmd(self, index: int) -> list[str]:
        return [venv_bin("arq"), "bench.peers.arq_peer.WorkerSettings"]

    async def aenqueue(self, n: int) -> list[str]:
        keys = []
        for _ in range(n):
            job = await self.pool.enqueue_job("noop")
            assert job is not None
            keys.append(f"arq:result:{job.job_id}")
        return keys

    async def awhoami(self, k: int) -> list[int]:
        jobs = [await self.pool.enqueue_job("whoami") for _ in range(k)]
        return [int(await j.result(timeout=30, poll_delay=POLL)) for j in jobs if j]

    async def aroundtrip(self) -> None:
        job = await self.pool.enqueue_job("noop")
        assert job is not None
        await job.result(timeout=30, poll_delay=POLL)


DRIVER = ArqDriver
