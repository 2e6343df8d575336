"""Stdlib-only helpers shared by the orchestrator and the per-peer runners.

Nothing here imports a peer library, so the orchestrator (any Python 3.11) can
import it; the runner (inside a peer's venv) imports it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[2]
ENV_URL = "LB_BENCH_REDIS_URL"
ENV_PIDFILE = "LB_BENCH_PIDFILE"
RESULT_PREFIX = "LBRESULT "
ENV_RECOVERY = "LB_BENCH_RECOVERY"
STARTS_KEY = "lbbench:starts"
T = TypeVar("T")


def redis_url() -> str:
    """The Redis URL a peer module (client or worker) should use."""
    return os.environ.get(ENV_URL, "redis://127.0.0.1:6379/0")


ENV_CONCURRENCY = "LB_BENCH_CONCURRENCY"


def concurrency(default: int) -> int:
    """Worker concurrency for this run (``python -m bench.peers --concurrency N``), else the
    peer's ``default`` as the harness has always run it."""
    value = os.environ.get(ENV_CONCURRENCY, "")
    return int(value) if value.isdigit() and int(value) > 0 else default


def aggressive_recovery() -> bool:
    """True in worker processes started for the aggressive recovery test."""
    return os.environ.get(ENV_RECOVERY) == "aggressive"


def note_start() -> None:
    """Called by the ``sleeper`` tasks: record which process started it."""
    conn = Resp(redis_url())
    try:
        conn.call("RPUSH", STARTS_KEY, os.getpid())
    finally:
        conn.close()


class RespError(Exception):
    """An error reply from Redis."""


class Resp:
    """Minimal blocking RESP2 client with pipelining (stdlib only)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        if parts.password:
            auth = [unquote(parts.username)] if parts.username else []
            self.call("AUTH", *auth, unquote(parts.password))
        db = int(parts.path.lstrip("/") or 0)
        if db:
            self.call("SELECT", db)

    @staticmethod
    def _encode(args: Sequence[object]) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return b"".join(out)

    def _read(self) -> Any:
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return RespError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            return None if size < 0 else self.rfile.read(size + 2)[:-2]
        if kind == b"*":
            size = int(body)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise ConnectionError(f"bad RESP line {line!r}")

    def call(self, *args: object) -> Any:
        self.sock.sendall(self._encode(args))
        reply = self._read()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[object]]) -> list[Any]:
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.rfile.close()
            self.sock.close()


def redis_version(url: str) -> str:
    conn = Resp(url)
    try:
        info = conn.call("INFO", "server").decode()
    finally:
        conn.close()
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


# --------------------------------------------------------------------------
# process handling


def _proc_groups(marker: str) -> list[tuple[int, int]]:
    """(pid, pgid) of live processes whose command line contains ``marker``."""
    found: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            pgid = int(stat.rsplit(")", 1)[1].split()[2])
            found.append((int(entry.name), pgid))
    return found


def reap_groups(pgids: Iterable[int], marker: str) -> int:
    """SIGKILL leftover processes in our own process groups.

    Only processes that are in one of ``pgids`` (groups we created) *and* whose
    command line contains ``marker`` (our venv path) are touched.
    """
    wanted = set(pgids)
    killed = 0
    for pid, pgid in _proc_groups(marker):
        if pgid in wanted and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def read_pidfile(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split() if x.strip().isdigit()]


def group_cpu(pgids: list[int]) -> float:
    """CPU seconds (user + system) of every live process in the process groups ``pgids``
    (a worker and the children it forks), from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    want = set(pgids)
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in want:  # pgrp
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def redis_cpu(conn: Any) -> float:
    """Redis's CPU seconds (user + system) from INFO cpu."""
    raw = conn.call("INFO", "cpu")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = dict(ln.split(":", 1) for ln in text.splitlines() if ":" in ln)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


class Workers:
    """Worker processes, each in its own process group; always SIGKILLed on exit.

    Killing is safe for the benchmark: Redis is flushed before every phase.
    """

    def __init__(self, cmds: list[list[str]], logdir: Path, tag: str) -> None:
        self.cmds = cmds
        self.logdir = logdir
        self.tag = tag
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def __enter__(self) -> Workers:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        pidfile = os.environ.get(ENV_PIDFILE)
        try:
            for i, cmd in enumerate(self.cmds):
                log = self.logdir / f"{self.tag}-w{i}.log"
                self.logs.append(log)
                with log.open("ab") as fh:
                    proc = subprocess.Popen(
                        cmd,
                        cwd=ROOT,
                        env=env,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                self.procs.append(proc)
                if pidfile:
                    with open(pidfile, "a") as fh:
                        fh.write(f"{proc.pid}\n")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"worker exited with {proc.returncode}: {tail}")

    def group_of(self, pid: int) -> int | None:
        """Index of the worker whose process group contains ``pid``."""
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            return None
        for i, proc in enumerate(self.procs):
            if proc.pid == pgid:
                return i
        return None

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def stop(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)


def venv_bin(name: str) -> str:
    """Path of a console script in the running interpreter's venv."""
    return str(Path(sys.executable).parent / name)


# --------------------------------------------------------------------------
# drivers: one per peer, implemented in <peer>_peer.py


class Driver:
    """Client side of one peer. Subclasses implement the peer-specific parts."""

    name = "?"
    packages: tuple[str, ...] = ()
    config: dict[str, Any] = {}
    # {"default"|"aggressive": {"settings": str, "documented": str, "measure": bool}}
    recovery: dict[str, dict[str, Any]] = {}

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self) -> None:
        """Connect the client (called once)."""

    def close(self) -> None:
        """Disconnect the client (called once)."""

    def after_flush(self) -> None:
        """Re-create broker state that FLUSHALL removed (queues, groups...)."""

    def worker_cmd(self, index: int) -> list[str]:
        raise NotImplementedError

    def enqueue(self, n: int) -> list[str]:
        """Enqueue ``n`` no-op tasks; return the keys used by :meth:`done_cmd`."""
        raise NotImplementedError

    def whoami(self, k: int) -> list[int]:
        """Run ``k`` tasks returning the worker pid; wait for and return them."""
        raise NotImplementedError

    def roundtrip(self) -> None:
        """Enqueue one no-op task and wait for its result with the peer's API."""
        raise NotImplementedError

    def enqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        """Enqueue one ``sleeper`` task (which calls :func:`note_start`)."""
        raise NotImplementedError

    def latencies(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            self.roundtrip()
            out.append(time.perf_counter() - start)
        return out

    def done_cmd(self, key: str) -> list[object]:
        """Redis command whose reply tells whether the task's result is stored."""
        return ["EXISTS", key]

    def is_done(self, reply: Any) -> bool:
        return reply == 1


class AsyncDriver(Driver):
    """Driver for asyncio peers: one loop, a long-lived session task.

    Subclasses implement :meth:`session` (an async context manager holding the
    client open) and the ``a*`` coroutines.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._runner = asyncio.Runner()
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def _hold(self, started: asyncio.Event) -> None:
        assert self._stop is not None
        async with self.session():
            started.set()
            await self._stop.wait()

    def open(self) -> None:
        async def start() -> None:
            self._stop = asyncio.Event()
            started = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._hold(started))
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait([self._task, waiter], return_when=asyncio.FIRST_COMPLETED)
            if self._task.done():
                waiter.cancel()
                self._task.result()

        self.run(start())

    def close(self) -> None:
        async def stop() -> None:
            if self._stop is not None and self._task is not None:
                self._stop.set()
                await asyncio.wait_for(self._task, 10)

        try:
            self.run(stop())
        finally:
            self._runner.close()

    async def aafter_flush(self) -> None:
        return None

    async def aenqueue(self, n: int) -> list[str]:
        raise NotImplementedError

    async def awhoami(self, k: int) -> list[int]:
        raise NotImplementedError

    async def aroundtrip(self) -> None:
        raise NotImplementedError

    async def aenqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        raise NotImplementedError

    def after_flush(self) -> None:
        self.run(self.aafter_flush())

    def enqueue_sleeper(self, seconds: float, aggressive: bool) -> None:
        self.run(self.aenqueue_sleeper(seconds, aggressive))

    def enqueue(self, n: int) -> list[str]:
        return self.run(self.aenqueue(n))

    def whoami(self, k: int) -> list[int]:
        return self.run(self.awhoami(k))

    def latencies(self, n: int) -> list[float]:
        async def loop() -> list[float]:
            out = []
            for _ in range(n):
                start = time.perf_counter()
                await self.aroundtrip()
                out.append(time.perf_counter() - start)
            return out

        return self.run(loop())
