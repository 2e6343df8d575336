"""Dramatiq peer.

Config: RedisBroker + Results middleware with the RedisBackend (json encoder,
the default); each worker is ``dramatiq MODULE -p 1 -t 8`` (1 worker process,
8 threads, the default thread count). Enqueue: ``actor.send()`` one by one
(Dramatiq has no bulk enqueue). Result wait: ``message.get_result(block=True)``,
which on Redis is a blocking BRPOPLPUSH (no polling).
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from bench.peers.common import (
    Driver,
    aggressive_recovery,
    concurrency,
    note_start,
    redis_url,
    venv_bin,
)

URL = redis_url()
# aggressive recovery: dead-worker detection after 2 s, maintenance on every call
FAST = {"heartbeat_timeout": 2000, "maintenance_chance": 1_000_000}
broker = RedisBroker(url=URL, **(FAST if aggressive_recovery() else {}))
backend = RedisBackend(url=URL)
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", store_results=True, max_retries=0)
def noop() -> None:
    return None


@dramatiq.actor(actor_name="whoami", store_results=True, max_retries=0)
def whoami() -> int:
    return os.getpid()


@dramatiq.actor(actor_name="sleeper", store_results=True, max_retries=0, time_limit=3_600_000)
def sleeper(seconds: float) -> int:
    note_start()
    time.sleep(seconds)
    return os.getpid()


class DramatiqDriver(Driver):
    name = "dramatiq"
    packages = ("dramatiq", "redis", "hiredis")
    config = {
        "broker": "RedisBroker",
        "result_backend": "Results middleware + RedisBackend",
        "worker": "dramatiq ... -p 1 -t N (1 process, N threads: 8 unless --concurrency)",
        "enqueue": "actor.send() one at a time (no bulk API)",
        "result_wait": "message.get_result(block=True) (BRPOPLPUSH, no polling)",
        "serializer": "json (default)",
    }

    recovery = {
        "default": {
            "settings": "heartbeat_timeout=60000 ms, maintenance_chance=1000 (per million)",
            "documented": "requeued once the dead worker's heartbeat is older than "
            "heartbeat_timeout=60 s, by a maintenance pass that runs on ~0.1% of broker "
            "calls: 60 s or (much) more",
        },
        "aggressive": {
            "settings": "heartbeat_timeout=2000 ms, maintenance_chance=1000000 (every call)",
            "documented": "~heartbeat_timeout (2 s)",
            "measure": True,
        },
    }

    def enqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        sleeper.send(seconds)

    def worker_cmd(self, index: int) -> list[str]:
        threads = str(concurrency(8))
        return [venv_bin("dramatiq"), "bench.peers.dramatiq_peer", "-p", "1", "-t", threads]

    def enqueue(self, n: int) -> list[str]:
        return [backend.build_message_key(noop.send()) for _ in range(n)]

    def whoami(self, k: int) -> list[int]:
        msgs = [whoami.send() for _ in range(k)]
        return [int(m.get_result(block=True, timeout=30_000)) for m in msgs]

    def roundtrip(self) -> None:
        noop.send().get_result(block=True, timeout=30_000)


DRIVER = DramatiqDriver
