"""A pool of daemon threads for plain ``def`` functions.

Why not ThreadPoolExecutor: its threads are joined at interpreter exit, so a worker asked to
stop would wait for a long user function it has already handed back. These threads are daemons:
after ``stop()`` the process can exit at once (the abandoned execution is fenced anyway).
Threads are reused, so running a function costs a queue hand-off, not a thread start.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["DaemonPool"]


class DaemonPool:
    """``size`` threads, plus one per job abandoned and still running (:meth:`abandon`)."""

    def __init__(self, size: int, name: str = "lb-fn") -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._name = name
        self._lock = threading.Lock()
        self._surplus = 0  # threads to retire as jobs finish (one per abandoned job)
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()  # jobs handle their own exceptions
            with self._lock:
                if self._surplus > 0:
                    self._surplus -= 1
                    return

    def abandon(self) -> None:
        """A running job will not be waited for: start a thread in its place, so the pool keeps
        ``size`` threads free for new jobs; one thread retires when a job next finishes."""
        t = threading.Thread(target=self._run, name=f"{self._name}-x", daemon=True)
        with self._lock:
            self._surplus += 1
            self._threads.append(t)
        t.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def shutdown(self) -> None:
        """Ask idle threads to exit; busy ones finish their job first (they are daemons)."""
        for _ in self._threads:
            self._jobs.put(None)
