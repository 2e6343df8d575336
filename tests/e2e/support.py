"""Helpers for the e2e tests: real `lb worker` subprocesses, their logs, the journal, the CLI.

Every worker line is timestamped (``time.time()``) by a reader thread the moment it arrives, so
tests can measure spans finer than the worker's own ``HH:MM:SS`` stamps. Logs are also written
to ``<tmp>/<name>.log`` and dumped when a test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lb.cli.common import lb_argv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Kinds printed by `lb worker` (cli/logs.py: "HH:MM:SS.mmm LEVEL worker kind k=v ...").
EVENT_KINDS = {
    "start", "done", "takeover", "joined", "lost", "fenced", "dead-letter", "refused", "passed-on",
    "released", "redis-down", "redis-up", "died", "abandoned", "requeued", "isolated", "retry",
    "suspended", "error",
}  # fmt: skip


def wait_for(
    pred: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.05
) -> Any:
    """Poll ``pred`` until truthy; fail with ``what`` (a string or a callable) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s: {msg}")
        time.sleep(interval)


def base_env(redis_url: str, prefix: str) -> dict[str, str]:
    """The environment of every subprocess: no stray LB_* settings, ours instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(
        {
            "LB_REDIS_URL": redis_url,
            "LB_PREFIX": prefix,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        }
    )
    return env


@dataclass
class Event:
    at: float  # time.time() when the line arrived
    kind: str
    fields: dict[str, str]
    line: str

    @property
    def id(self) -> str:
        return self.fields.get("id", "")


def parse_event(name: str, line: str, at: float) -> Event | None:
    parts = line.split()
    if len(parts) < 4 or parts[2] != name or parts[3] not in EVENT_KINDS:
        return None
    fields = {}
    for tok in parts[4:]:
        k, sep, v = tok.partition("=")
        if sep and k not in fields:
            fields[k] = v
    return Event(at, parts[3], fields, line)


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    lines: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "a") as log:
            for raw in self.proc.stdout:
                at = time.time()
                text = raw.decode("utf-8", "replace").rstrip("\n")
                with self.lock:
                    self.lines.append((at, text))
                log.write(f"{at:.3f} {text}\n")
                log.flush()

    def text(self) -> str:
        with self.lock:
            return "\n".join(t for _, t in self.lines)

    def events(self, kind: str | None = None, id: str | None = None) -> list[Event]:
        with self.lock:
            snapshot = list(self.lines)
        out = []
        for at, text in snapshot:
            ev = parse_event(self.name, text, at)
            if ev and (kind is None or ev.kind == kind) and (id is None or ev.id == id):
                out.append(ev)
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None


class Fleet:
    """Worker subprocesses of one test, all killed (SIGCONT then SIGKILL) at teardown."""

    def __init__(self, redis_url: str, prefix: str, tmp: Path) -> None:
        self.redis_url, self.prefix, self.tmp = redis_url, prefix, tmp
        self.journal = tmp / "journal.txt"
        self.journal.touch()
        self.workers: dict[str, WorkerProc] = {}
        self.extra_env: dict[str, str] = {}  # more LB_* settings for the workers started next

    @property
    def env(self) -> dict[str, str]:
        journal = {"LB_E2E_JOURNAL": str(self.journal)}
        return {**base_env(self.redis_url, self.prefix), **journal, **self.extra_env}

    def start(
        self,
        name: str,
        *args: str,
        group: str = "workers",
        concurrency: int = 2,
        ttl: float = 2.0,
        app: str = "apps:register",
        wait: bool = True,
    ) -> WorkerProc:
        cmd = [
            *lb_argv(), "worker",
            "--group", group, "--concurrency", str(concurrency), "--ttl", str(ttl),
            "--app", app, "--name", name, *args,
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        w = WorkerProc(name, proc, self.tmp / f"{name}.log")
        w.reader = threading.Thread(target=w._read, name=f"reader-{name}", daemon=True)
        w.reader.start()
        self.workers[name] = w
        if wait:
            self.wait_joined(name)
        return w

    def wait_joined(self, name: str, timeout: float = 60) -> None:
        w = self.workers[name]
        wait_for(
            lambda: w.events("joined") or not w.alive(),
            timeout,
            lambda: f"worker {name} did not join:\n{w.text()}",
        )
        assert w.alive(), f"worker {name} exited with {w.proc.returncode}:\n{w.text()}"

    def __getitem__(self, name: str) -> WorkerProc:
        return self.workers[name]

    def events(self, kind: str | None = None, id: str | None = None) -> list[tuple[str, Event]]:
        """(worker name, event) over all workers, in arrival order."""
        out = [(n, e) for n, w in self.workers.items() for e in w.events(kind, id)]
        return sorted(out, key=lambda ne: ne[1].at)

    def journal_lines(self, kind: str | None = None, id: str | None = None) -> list[list[str]]:
        rows = [ln.split() for ln in self.journal.read_text().splitlines() if ln.strip()]
        return [r for r in rows if (kind is None or r[0] == kind) and (id is None or r[1] == id)]

    def dump(self) -> str:
        parts = [f"--- journal ---\n{self.journal.read_text()}"]
        for n, w in self.workers.items():
            parts.append(f"--- {n} (rc={w.proc.poll()}) ---\n{w.text()}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for w in self.workers.values():
            if w.proc.poll() is None:
                try:
                    os.kill(w.proc.pid, signal.SIGCONT)
                    w.proc.kill()
                except ProcessLookupError:
                    pass
            try:
                w.proc.wait(timeout=30)
            finally:
                if w.reader is not None:
                    w.reader.join(timeout=10)
                if w.proc.stdout is not None:
                    w.proc.stdout.close()


@dataclass
class CliResult:
    args: Sequence[str]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        cmd = " ".join(self.args)
        return f"lb {cmd!r} -> {self.code}\nstdout: {self.out!r}\nstderr: {self.err!r}"


def run_cli(
    redis_url: str, prefix: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> CliResult:
    """Run `lb ARGS` (as ``python -m lb``) against the test's Redis and prefix."""
    proc = subprocess.run(
        [*lb_argv(), *args],
        cwd=ROOT,
        env={**base_env(redis_url, prefix), **(env or {})},
        capture_output=True,
        timeout=timeout,
    )
    return CliResult(
        args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
