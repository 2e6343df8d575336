"""The slot threads' pool (sdk/threads.py): every job runs exactly once, never more than
``size`` at once (plus one per abandoned job), waiting jobs in submission order, and a job
goes to the thread that went idle last. Pure threading: no Redis."""

from __future__ import annotations

import random
import threading
import time

import pytest

from lb.sdk.threads import DaemonPool


def _all_idle(pool: DaemonPool, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(pool._idle) < n:  # the pool's own record of who waits for a job
        assert time.monotonic() < deadline, "threads never went idle"
        time.sleep(0.001)


@pytest.mark.parametrize("seed", range(6))
def test_every_job_once_within_size(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 2, 3, 8])
    pool = DaemonPool(size)
    lock = threading.Lock()
    running = 0
    peak = 0
    ran: list[int] = []
    done = threading.Semaphore(0)
    n = 400

    def job(i: int, pause: float) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(pause)
        with lock:
            running -= 1
            ran.append(i)
        done.release()

    def submitter(ids: range) -> None:
        for i in ids:
            pause = rng.choice([0.0, 0.0, 0.0005, 0.002])
            pool.submit(lambda i=i, pause=pause: job(i, pause))
            if rng.random() < 0.3:
                time.sleep(rng.choice([0.0, 0.001]))

    subs = [threading.Thread(target=submitter, args=(range(k, n, 4),)) for k in range(4)]
    for t in subs:
        t.start()
    for t in subs:
        t.join()
    for _ in range(n):
        assert done.acquire(timeout=10)
    assert sorted(ran) == list(range(n))
    assert peak <= size
    pool.shutdown()


def test_waiting_jobs_run_in_submission_order() -> None:
    pool = DaemonPool(1)
    gate = threading.Event()
    order: list[int] = []
    finished = threading.Event()
    pool.submit(gate.wait)  # the one thread is busy until the gate opens
    for i in range(50):
        pool.submit(lambda i=i: order.append(i))
    pool.submit(finished.set)
    gate.set()
    assert finished.wait(5)
    assert order == list(range(50))
    pool.shutdown()


def test_the_last_idle_thread_takes_the_next_job() -> None:
    """One call at a time: the same (warm) thread runs them all, not each thread in turn."""
    pool = DaemonPool(8)
    _all_idle(pool, 8)
    names: list[str] = []
    for _ in range(40):
        finished = threading.Event()

        def job(finished: threading.Event = finished) -> None:
            names.append(threading.current_thread().name)
            finished.set()

        pool.submit(job)
        assert finished.wait(5)
        _all_idle(pool, 8)
    assert len(set(names)) == 1
    pool.shutdown()


def test_abandon_keeps_size_threads_free_and_shutdown_ends_idle_threads() -> None:
    pool = DaemonPool(2)
    stuck = threading.Event()
    pool.submit(stuck.wait)
    pool.abandon()  # the stuck job is not waited for: a thread starts in its place
    both = threading.Barrier(3, timeout=5)
    pool.submit(both.wait)
    pool.submit(both.wait)
    both.wait()  # two jobs ran at once beside the stuck one
    stuck.set()
    _all_idle(pool, 2)  # the surplus thread retired after its job
    threads = list(pool._threads)
    pool.shutdown()
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in threads):
        assert time.monotonic() < deadline, "an idle thread did not exit on shutdown"
        time.sleep(0.005)
