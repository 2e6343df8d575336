"""A new user's first hour (the packaging issue, items 3, 4 and 8), as they would type it: real
``lb`` subprocesses in a directory of their own, a real redis-server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import redis

from lb.broker import Keys
from lb.broker.embedded import EmbeddedRedis, free_port
from lb.cli.common import lb_argv
from tests.conftest import wait_until


def _answers(port: int) -> bool:
    r = redis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False
    finally:
        r.close()


def test_lb_server_with_a_relative_dir_starts(tmp_path: Path) -> None:
    """The Quick start's first line: ``lb server --port P --dir .lb-data`` from the user's
    directory starts (the relative dir used to be applied twice) and keeps its data there."""
    port = free_port()
    proc = subprocess.Popen(
        [*lb_argv(), "server", "--port", str(port), "--dir", ".lb-data"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: _answers(port), timeout=20)
        assert (tmp_path / ".lb-data" / "redis.log").exists()
        assert not (tmp_path / ".lb-data" / ".lb-data").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert b"lb server: redis" in out


def test_lb_server_on_a_taken_port_says_so_and_prints_no_success(tmp_path: Path) -> None:
    with EmbeddedRedis() as other:
        proc = subprocess.run(
            [*lb_argv(), "server", "--port", str(other.port), "--dir", "data"],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
    assert proc.returncode != 0
    assert b"lb server: redis" not in proc.stdout  # no success line before the failure
    err = proc.stderr.decode()
    assert "Address already in use" in err or "in use" in err, err
    assert "Traceback" not in err


_ORPHAN = """
import os, sys
from lb.sdk import Resonate
r = Resonate.local()
print(r.settings.url, flush=True)
os._exit(0)  # no stop(): the embedded server must not outlive this process
"""


def test_an_embedded_server_dies_with_its_program(tmp_path: Path) -> None:
    """``Resonate.local()`` without ``stop()``, the process ending abruptly: its redis-server
    must not live on (it used to, on a deleted temp directory)."""
    proc = subprocess.run(
        [sys.executable, "-P", "-c", _ORPHAN], capture_output=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr.decode()[-1000:]
    port = int(proc.stdout.decode().strip().rsplit(":", 1)[1].split("/")[0])
    deadline = time.monotonic() + 10
    while _answers(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _answers(port), "the embedded redis-server outlived its program"


def test_lb_worker_imports_the_app_from_the_current_directory(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    """``lb worker --app myapp:register`` from the user's project directory, no PYTHONPATH
    (as ``celery -A`` does)."""
    (tmp_path / "myapp.py").write_text(
        textwrap.dedent(
            """
            def hello(ctx, name):
                return f"hello {name}"

            def register(r):
                r.register(hello)
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(LB_REDIS_URL=redis_url, LB_PREFIX=prefix)
    worker = subprocess.Popen(
        [*lb_argv(), "worker", "--group", "g", "--app", "myapp:register"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = subprocess.run(
            [
                *lb_argv(),
                *("invoke", "--func", "hello", "--args", '["you"]', "--id", "h1"),
                *("--target", "poll://any@g", "--wait", "--timeout", "30"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert out.returncode == 0, (out.stderr.decode(), worker.poll())
        assert b"hello you" in out.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=20)


def _lines_until(proc: subprocess.Popen[bytes], pred: Any, timeout: float) -> list[str]:
    """Read proc's stdout lines (on a thread) until pred(lines) or timeout; returns them."""
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred(lines):
        time.sleep(0.05)
    return lines


def test_worker_logs_one_json_object_per_line_and_one_line_per_event(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """``--log-format json``: every line is one JSON object; a call's done line carries id,
    func, attempt, worker and duration_ms; a call canceled from outside while it runs is
    reported lost once (it used to be twice); start and done once each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_REDIS_URL=redis_url, LB_PREFIX=prefix, PYTHONUNBUFFERED="1")
    worker = subprocess.Popen(
        [*lb_argv(), "worker", "--group", "g", "--name", "wj", "--log-format", "json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        joined = _lines_until(worker, lambda ls: any('"joined"' in x for x in ls), 30)
        assert any('"joined"' in x for x in joined), joined
        cli = [*lb_argv()]
        run = subprocess.run(
            [*cli, "invoke", "--func", "echo", "--args", "[7]", "--id", "j1", "--target", "g",
             "--wait", "--timeout", "30"],
            env=env, cwd=tmp_path, capture_output=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0 and run.stdout.strip() == b"7", run
        subprocess.run(
            [*cli, "invoke", "--func", "compute_something", "--args", '["j2", 30]', "--id", "j2",
             "--target", "g"],
            env=env, cwd=tmp_path, capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        wait_until(lambda: any('"start"' in x and '"j2"' in x for x in joined), timeout=30)
        subprocess.run(
            [*cli, "cancel", "j2"], env=env, cwd=tmp_path, capture_output=True, timeout=60,
            check=True,
        )  # fmt: skip
        wait_until(lambda: any('"lost"' in x and '"j2"' in x for x in joined), timeout=30)
        time.sleep(1.5)  # a second report would come within this
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
    objs = [json.loads(x) for x in joined if x.strip()]  # every line parses
    assert all("time" in o and "level" in o for o in objs)
    done = [o for o in objs if o.get("event") == "done" and o.get("id") == "j1"]
    assert len(done) == 1, objs
    assert done[0]["func"] == "echo" and done[0]["worker"] == "wj" and done[0]["attempt"] == 1
    assert isinstance(done[0]["duration_ms"], int | float)
    assert len([o for o in objs if o.get("event") == "start" and o.get("id") == "j1"]) == 1
    assert len([o for o in objs if o.get("event") == "lost" and o.get("id") == "j2"]) == 1, objs


def _alive(path: Path, max_age: float = 3) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*lb_argv(), "alive", "--file", str(path), "--max-age", str(max_age)],
        capture_output=True,
        timeout=30,
    )


def test_liveness_is_the_worker_not_redis(tmp_path: Path) -> None:
    """``lb alive`` (the container liveness probe) stays true while Redis is down (the worker
    rides the outage out; restarting it would not help) and turns false when the worker's
    process stops making progress (SIGSTOP)."""
    path = tmp_path / "alive"
    server = EmbeddedRedis().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_REDIS_URL=server.url, LB_PREFIX="alive")
    worker = subprocess.Popen(
        [*lb_argv(), "worker", "--group", "g", "--alive-file", str(path), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _alive(path).returncode == 0, timeout=30)
        server.kill()  # Redis gone
        time.sleep(4)  # longer than --max-age
        res = _alive(path)
        assert res.returncode == 0, res.stderr  # still live: it waits for Redis
        worker.send_signal(signal.SIGSTOP)
        time.sleep(4)
        res = _alive(path)
        assert res.returncode == 1 and b"not live" in res.stderr, res
        worker.send_signal(signal.SIGCONT)
    finally:
        worker.kill()
        worker.wait(timeout=20)
        server.cleanup()
    assert _alive(tmp_path / "missing").returncode == 1


def test_ctrl_c_in_invoke_wait_exits_cleanly(redis_url: str, prefix: str) -> None:
    """Ctrl-C while ``lb invoke --wait`` waits: exit 130, no traceback, no asyncio noise
    ("Task was destroyed but it is pending!"); the call itself stays stored."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_REDIS_URL=redis_url, LB_PREFIX=prefix)
    proc = subprocess.Popen(
        [*lb_argv(), "invoke", "--func", "echo", "--args", "[1]", "--id", "cc", "--target",
         "nobody", "--wait"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    r = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: r.exists(Keys(prefix).promise("cc")), timeout=20)
    finally:
        r.close()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (proc.returncode, err)
    assert b"Traceback" not in err and b"destroyed" not in err, err
