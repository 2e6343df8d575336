"""Celery peer.

Config: Redis broker + Redis result backend (json serializer, the default);
each worker is ``celery worker --pool=solo`` (one process executing tasks itself,
no prefork IPC: the fastest pool for tiny tasks), prefetch multiplier 32,
gossip/mingle/heartbeat off. Enqueue: ``task.delay()`` one by one (Celery has
no bulk publish). Result wait: ``AsyncResult.get()``, which on the Redis backend
is pub/sub driven (no polling interval).
"""

from __future__ import annotations

import os
import time

from celery import Celery

from bench.peers.common import Driver, aggressive_recovery, note_start, redis_url, venv_bin

URL = redis_url()
app = Celery("lbbench", broker=URL, backend=URL)
app.conf.update(
    worker_prefetch_multiplier=32,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=None,
)
if aggressive_recovery():
    app.conf.broker_transport_options = {
        "visibility_timeout": 5,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    }


@app.task(name="noop")
def noop() -> None:
    return None


@app.task(name="whoami")
def whoami() -> int:
    return os.getpid()


@app.task(name="sleeper", acks_late=True, reject_on_worker_lost=True)
def sleeper(seconds: float) -> int:
    note_start()
    time.sleep(seconds)
    return os.getpid()


class CeleryDriver(Driver):
    name = "celery"
    packages = ("celery", "kombu", "redis", "hiredis")
    config = {
        "broker": "redis (kombu), queue 'celery'",
        "result_backend": "redis (celery-task-meta-<id> keys)",
        "worker": "celery worker --pool=solo (1 process each), prefetch_multiplier=32, "
        "--without-gossip --without-mingle --without-heartbeat",
        "enqueue": "task.delay() one at a time (no bulk API)",
        "result_wait": "AsyncResult.get() (redis pub/sub, no polling)",
        "serializer": "json (default)",
    }

    recovery = {
        "default": {
            "settings": "task_acks_late=False (default)",
            "documented": "never: the message is acked on receipt, so a killed worker's "
            "task is lost; with task_acks_late=True it is redelivered after the Redis "
            "transport's visibility_timeout=3600 s",
        },
        "aggressive": {
            "settings": "task acks_late=True, reject_on_worker_lost=True, "
            "broker_transport_options visibility_timeout=5 s, "
            "unacked_restore_interval=1 s, unacked_restore_throttle=1",
            "documented": "visibility_timeout (5 s) + the next unacked-restore scan (1 s)",
            "measure": True,
        },
    }

    def enqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        sleeper.delay(seconds)

    def worker_cmd(self, index: int) -> list[str]:
        return [
            venv_bin("celery"),
            "-A",
            "bench.peers.celery_peer",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
            "-n",
            f"w{index}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def after_flush(self) -> None:
        # FLUSHALL removed kombu's exchange->queue binding table; re-declare
        # it so a backlog enqueued before any worker starts is routed.
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for queue in app.amqp.queues.values():
                queue.bind(channel).declare()

    def enqueue(self, n: int) -> list[str]:
        return [f"celery-task-meta-{noop.delay().id}" for _ in range(n)]

    def whoami(self, k: int) -> list[int]:
        pending = [whoami.delay() for _ in range(k)]
        return [int(r.get(timeout=30)) for r in pending]

    def roundtrip(self) -> None:
        noop.delay().get(timeout=30)


DRIVER = CeleryDriver
