"""The system under test: one redis-server with AOF and a few ``lb worker`` subprocesses.

Redis can be paused (SIGSTOP), resumed, killed (SIGKILL) and restarted from its AOF on the same
port and directory. Each worker's stdout/stderr is pumped by a thread into ``<logs>/<name>.log``,
each line prefixed with the wall-clock time it was read, so log events (takeover, fenced, lost)
can be timed to the millisecond even though the worker prints seconds only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from chaos.clock import ENV as CLOCK_ENV
from lb.broker.embedded import EmbeddedRedis
from lb.cli.common import lb_argv

__all__ = ["Cluster", "LogLine", "WorkerProc"]

ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class LogLine:
    t: float
    worker: str
    text: str


@dataclass
class WorkerProc:
    name: str
    url: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None
    lines: list[LogLine] = field(default_factory=list)
    starts: int = 0
    killed_by_us: int = 0
    stopped: bool = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(self, workdir: str, prefix: str, workers: int, ttl: float = 2.0) -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.jumpy = ""  # the worker whose wall clock jumps (chaos.clock), if any
        self.ttl = ttl
        self.redis = EmbeddedRedis(directory=os.path.join(workdir, "redis"), appendfsync="always")
        self.journal = os.path.join(workdir, "journal.log")
        self.logdir = os.path.join(workdir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.n_workers = workers
        self.workers: dict[str, WorkerProc] = {}
        self._lock = threading.Lock()
        self.redis_paused = False

    @property
    def url(self) -> str:
        return self.redis.url

    # -- redis ----------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.redis.start()

    def redis_pid(self) -> int:
        assert self.redis.proc is not None
        return self.redis.proc.pid

    def pause_redis(self) -> None:
        os.kill(self.redis_pid(), signal.SIGSTOP)
        self.redis_paused = True

    def resume_redis(self) -> None:
        os.kill(self.redis_pid(), signal.SIGCONT)
        self.redis_paused = False

    def kill_redis(self) -> None:
        self.redis.kill()

    def restart_redis(self) -> float:
        """Start redis-server again on the same port and dir (AOF replay); returns seconds."""
        t0 = time.monotonic()
        for _ in range(50):
            try:
                self.redis.start()
                break
            except Exception:  # port still in TIME_WAIT or the like: try again shortly
                time.sleep(0.1)
        return time.monotonic() - t0

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=10)

    # -- workers --------------------------------------------------------------------------
    def add_worker(self, name: str, url: str) -> WorkerProc:
        w = WorkerProc(name, url, os.path.join(self.logdir, f"{name}.log"))
        self.workers[name] = w
        return w

    def start_worker(self, name: str) -> None:
        w = self.workers[name]
        env = {
            **os.environ,
            "LB_REDIS_URL": w.url,
            "LB_PREFIX": self.prefix,
            "CHAOS_JOURNAL": self.journal,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        if name == self.jumpy:
            env[CLOCK_ENV] = f"{self.prefix}-{name}-{w.starts}"
        cmd = [
            *lb_argv(),
            "worker",
            "--group",
            "chaos",
            "--ttl",
            str(self.ttl),
            "--concurrency",
            "8",
            "--app",
            "chaos.app:register",
            "--name",
            name,
        ]
        w.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        w.starts += 1
        w.stopped = False
        w.pump = threading.Thread(target=self._pump, args=(w, w.proc), daemon=True)
        w.pump.start()

    def _pump(self, w: WorkerProc, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with open(w.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.time():.6f} ### process {proc.pid} started\n")
            for raw in proc.stdout:
                now = time.time()
                text = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    w.lines.append(LogLine(now, w.name, text))
                fh.write(f"{now:.6f} {text}\n")
                fh.flush()
            fh.write(f"{time.time():.6f} ### process {proc.pid} exited rc={proc.wait()}\n")

    def wait_joined(self, name: str, timeout: float = 30.0) -> bool:
        w = self.workers[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                joined = sum(" joined " in ln.text for ln in w.lines)
            if joined >= w.starts:
                return True
            if not w.alive:
                return False
            time.sleep(0.05)
        return False

    def kill_worker(self, name: str) -> None:
        w = self.workers[name]
        if w.proc is not None and w.alive:
            if w.stopped:
                os.kill(w.proc.pid, signal.SIGCONT)
            w.proc.kill()
            w.proc.wait()
            w.killed_by_us += 1
        if w.pump is not None:
            w.pump.join(timeout=5)

    def stop_worker(self, name: str) -> None:
        w = self.workers[name]
        assert w.proc is not None
        os.kill(w.proc.pid, signal.SIGSTOP)
        w.stopped = True

    def cont_worker(self, name: str) -> None:
        w = self.workers[name]
        assert w.proc is not None
        os.kill(w.proc.pid, signal.SIGCONT)
        w.stopped = False

    def all_lines(self) -> list[LogLine]:
        with self._lock:
            out = [ln for w in self.workers.values() for ln in w.lines]
        return sorted(out, key=lambda ln: ln.t)

    def shutdown_workers(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM every worker (after SIGCONT), wait; returns exit codes."""
        for w in self.workers.values():
            if w.alive and w.proc is not None:
                if w.stopped:
                    os.kill(w.proc.pid, signal.SIGCONT)
                w.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for w in self.workers.values():
            if w.proc is None:
                continue
            try:
                codes[w.name] = w.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                codes[w.name] = None
            if w.pump is not None:
                w.pump.join(timeout=5)
        return codes

    def close(self) -> None:
        for w in self.workers.values():
            if w.alive and w.proc is not None:
                if w.stopped:
                    os.kill(w.proc.pid, signal.SIGCONT)
                w.proc.kill()
                w.proc.wait()
        if self.redis.proc is not None and self.redis_paused:
            self.resume_redis()
        self.redis.stop()
