"""RQ peer.

Config: one RQ queue, results in RQ's Redis result streams (rq:results:<id>);
each worker is ``rq worker -w rq.worker.SimpleWorker`` (executes jobs in the
worker process: the documented no-fork worker; the default Worker forks per
job). Enqueue: ``Queue.enqueue_many`` (bulk, one pipeline). Result wait:
``job.latest_result(timeout=...)`` (blocking XREAD on the result stream).
Serializer: pickle (RQ's default).
"""

from __future__ import annotations

import os
import time

from redis import Redis
from rq import Queue, Retry

from bench.peers.common import Driver, aggressive_recovery, note_start, venv_bin

MOD = "bench.peers.rq_peer"


def noop() -> None:
    return None


def whoami() -> int:
    return os.getpid()


def sleeper(seconds: float) -> int:
    note_start()
    time.sleep(seconds)
    return os.getpid()


class RqDriver(Driver):
    name = "rq"
    packages = ("rq", "redis", "hiredis")
    config = {
        "broker": "rq Queue 'default'",
        "result_backend": "rq result streams (rq:results:<id>)",
        "worker": "rq worker -w rq.worker.SimpleWorker (no fork per job)",
        "enqueue": "Queue.enqueue_many (bulk pipeline)",
        "result_wait": "job.latest_result(timeout) (blocking XREAD, no polling)",
        "serializer": "pickle (default)",
    }

    def open(self) -> None:
        self.conn = Redis.from_url(self.url)
        self.queue = Queue("default", connection=self.conn)

    def close(self) -> None:
        self.conn.close()

    recovery = {
        "default": {
            "settings": "no Retry, job_timeout=180 s, maintenance every 600 s (defaults)",
            "documented": "never: the abandoned job is moved to the FailedJobRegistry by "
            "a later maintenance pass (not re-run without Retry)",
        },
        "aggressive": {
            "settings": "Retry(max=1), job_timeout=5 s, rq worker --maintenance-interval 1 "
            "--worker-ttl 20 (idle dequeue blocks worker_ttl-15 = 5 s between maintenance)",
            "documented": "the started-registry entry expires min(job_timeout, 30 s) + 60 s "
            "after the last heartbeat, then the next maintenance pass re-queues it",
            "cap": 100,
            "measure": True,
        },
    }

    def enqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        opts = {"job_timeout": 5, "retry": Retry(max=1)} if aggressive else {}
        self.queue.enqueue(f"{MOD}.sleeper", seconds, **opts)

    def worker_cmd(self, index: int) -> list[str]:
        cmd = [
            venv_bin("rq"),
            "worker",
            "-u",
            self.url,
            "-w",
            "rq.worker.SimpleWorker",
            "--logging_level",
            "WARNING",
            "default",
        ]
        if aggressive_recovery():
            cmd[2:2] = ["--maintenance-interval", "1", "--worker-ttl", "20"]
        return cmd

    def enqueue(self, n: int) -> list[str]:
        data = [Queue.prepare_data(f"{MOD}.noop") for _ in range(n)]
        return [f"rq:results:{job.id}" for job in self.queue.enqueue_many(data)]

    def whoami(self, k: int) -> list[int]:
        jobs = [self.queue.enqueue(f"{MOD}.whoami") for _ in range(k)]
        out = []
        for job in jobs:
            res = job.latest_result(timeout=30)
            if res is None:
                raise TimeoutError("no whoami result")
            out.append(int(res.return_value))
        return out

    def roundtrip(self) -> None:
        if self.queue.enqueue(f"{MOD}.noop").latest_result(timeout=30) is None:
            raise TimeoutError("no result")


DRIVER = RqDriver
