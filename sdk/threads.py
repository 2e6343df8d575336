"""A pool of daemon threads for plain ``def`` functions.

Why not ThreadPoolExecutor: its threads are joined at interpreter exit, so a worker asked to
stop would wait for a long user function it has already handed back. These threads are daemons:
after ``stop()`` the process can exit at once (the abandoned execution is fenced anyway).
Threads are reused, so running a function costs a hand-off, not a thread start.

The hand-off is last in, first out: a job goes to the thread that went idle last (its stack
and the interpreter state it touched still in the CPU's cache), not to the one idle longest as
a shared queue would; with calls arriving one at a time, one thread does nearly all the work
instead of every thread in turn.

Guarantees: every job submitted runs exactly once, on one of the pool's threads, in submission
order when jobs wait for a thread; at most ``size`` jobs run at once, plus one per
:meth:`abandon`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

__all__ = ["DaemonPool"]

_Job = Callable[[], None] | None  # None: the thread taking it exits


class _Seat:
    """One thread's mailbox: a job, and a lock the thread sleeps on until one is there."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: _Job = None
        self.wake = threading.Lock()
        self.wake.acquire()


class DaemonPool:
    """``size`` threads, plus one per job abandoned and still running (:meth:`abandon`)."""

    def __init__(self, size: int, name: str = "lb-fn") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[_Seat] = []  # a stack: the last to go idle is woken first
        self._waiting: collections.deque[_Job] = collections.deque()  # jobs no thread took yet
        self._surplus = 0  # threads to retire as jobs finish (one per abandoned job)
        self._threads = [self._thread(i) for i in range(size)]
        for t in self._threads:
            t.start()

    def _thread(self, i: int | str) -> threading.Thread:
        return threading.Thread(target=self._run, name=f"{self._name}-{i}", daemon=True)

    def _next(self, seat: _Seat) -> _Job:
        """The next job for this thread: a waiting one, else sleep until one is handed."""
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            self._idle.append(seat)
        seat.wake.acquire()
        job, seat.job = seat.job, None
        return job

    def _run(self) -> None:
        seat = _Seat()
        while True:
            job = self._next(seat)
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
        t = self._thread("x")
        with self._lock:
            self._surplus += 1
            self._threads.append(t)
        t.start()

    def _hand(self, job: _Job) -> None:
        with self._lock:
            if not self._idle:
                self._waiting.append(job)
                return
            seat = self._idle.pop()
        seat.job = job
        seat.wake.release()

    def submit(self, job: Callable[[], None]) -> None:
        self._hand(job)

    def shutdown(self) -> None:
        """Ask idle threads to exit; busy ones finish their job first (they are daemons)."""
        for _ in self._threads:
            self._hand(None)
