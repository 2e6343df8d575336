"""SAQ peer.

Config: SAQ RedisQueue 'default' (job + result stored in saq:job:default:<key>,
json); each worker is ``saq bench.peers.saq_peer.settings`` (1 process,
concurrency 10: the default; dequeue is a blocking BLMOVE). Enqueue:
``await queue.enqueue()`` sequentially (no bulk API). Result wait:
``await queue.apply("noop", poll_interval=0.001)`` (SAQ polls the job record;
default 0.5 s, 1 ms used here). ``job.refresh(until_complete=...)`` (pub/sub)
was not used: it races (a job finishing between its read and its subscribe is
missed and the call waits for the full timeout; seen in testing).
A job counts as done when it has left the ``saq:default:incomplete`` zset,
which SAQ does in the same transaction that stores the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from saq import Queue

from bench.peers.common import AsyncDriver, aggressive_recovery, note_start, redis_url, venv_bin

queue = Queue.from_url(redis_url())
INCOMPLETE = "saq:default:incomplete"
POLL = 0.001


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def whoami(ctx: dict[str, Any]) -> int:
    return os.getpid()


async def sleeper(ctx: dict[str, Any], *, seconds: float) -> int:
    note_start()
    await asyncio.sleep(seconds)
    return os.getpid()


settings: dict[str, Any] = {
    "queue": queue,
    "functions": [noop, whoami, sleeper],
    "concurrency": 10,
}
if aggressive_recovery():
    settings["timers"] = {"sweep": 1}


class SaqDriver(AsyncDriver):
    name = "saq"
    packages = ("saq", "redis", "hiredis")
    config = {
        "broker": "saq RedisQueue 'default'",
        "result_backend": "saq job record (saq:job:default:<key>, ttl 600 s)",
        "worker": "saq bench.peers.saq_peer.settings (1 process, concurrency=10)",
        "enqueue": "await queue.enqueue() sequentially (no bulk API)",
        "result_wait": "await queue.apply('noop', poll_interval=0.001) (polling, 1 ms)",
        "serializer": "json (default)",
    }

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        await queue.connect()
        try:
            yield
        finally:
            await queue.disconnect()

    recovery = {
        "default": {
            "settings": "job retries=1, timeout=10 s, sweep timer 60 s (defaults)",
            "documented": "never: the stuck job is swept (<= 60 s after timeout) and, "
            "with retries=1, aborted instead of re-run",
        },
        "aggressive": {
            "settings": "job retries=2, timeout=5 s; worker timers sweep=1 s",
            "documented": "timeout (5 s) + sweep + abort wait (5 s)",
            "measure": True,
        },
    }

    async def aenqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        opts = {"timeout": 5, "retries": 2} if aggressive else {}
        await queue.enqueue("sleeper", seconds=seconds, **opts)

    def worker_cmd(self, index: int) -> list[str]:
        return [venv_bin("saq"), "bench.peers.saq_peer.settings", "--workers", "1"]

    def done_cmd(self, key: str) -> list[object]:
        return ["ZSCORE", INCOMPLETE, key]

    def is_done(self, reply: Any) -> bool:
        return reply is None

    async def aenqueue(self, n: int) -> list[str]:
        keys = []
        for _ in range(n):
            job = await queue.enqueue("noop")
            assert job is not None
            keys.append(job.id)
        return keys

    async def awhoami(self, k: int) -> list[int]:
        # return_exceptions: with the aggressive sweep (1 s) SAQ sometimes sweeps a
        # just-dequeued job whose status is not ACTIVE yet (seen in testing)
        res = await queue.map(
            "whoami", [{}] * k, timeout=30, poll_interval=POLL, return_exceptions=True
        )
        return [int(x) for x in res if isinstance(x, int)]

    async def aroundtrip(self) -> None:
        await queue.apply("noop", timeout=30, poll_interval=POLL)


DRIVER = SaqDriver
