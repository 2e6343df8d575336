"""The Resonate-style entry point: register functions, invoke them durably, serve them.

>>> resonate = Resonate.remote(group="workers")      # Redis from $LB_REDIS_URL
>>> @resonate.register
... def add(ctx, a, b):
...     return a + b
>>> resonate.start()                                 # serve the group (optional)
>>> resonate.options(target="poll://any@workers").rpc("add-1", "add", 1, 2)
3

Guarantees: an invocation is a durable promise keyed by the caller's id; invoking an id that
exists attaches to it (never a second execution). ``begin_rpc`` returns once the promise is
stored in Redis (or raises a typed error: nothing half-sent). In-flight calls per client and
connections are bounded; a burst waits for room instead of failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from lb.broker.client import Broker
from lb.broker.codec import encode
from lb.broker.direct import DirectCreator
from lb.broker.embedded import EmbeddedRedis
from lb.broker.errors import LbError, WorkerDied
from lb.broker.records import Promise
from lb.broker.settings import Settings
from lb.sdk.durations import seconds_to_ms
from lb.sdk.endpoints import Endpoints
from lb.sdk.listener import Listener
from lb.sdk.loop import IoLoop
from lb.sdk.options import Handle, Options, value_of
from lb.sdk.registry import Function, Registry
from lb.sdk.retry import RetryPolicy
from lb.sdk.target import parse_target
from lb.sdk.worker import Worker

log = logging.getLogger("lb.sdk")

__all__ = ["Handle", "Options", "Resonate", "value_of"]

F = TypeVar("F", bound=Callable[..., Any])


class Resonate:
    """A client (and optionally a worker) of one lb deployment."""

    def __init__(
        self,
        settings: Settings,
        group: str = "default",
        pid: str | None = None,
        concurrency: int = 8,
        embedded: EmbeddedRedis | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        suspend_after: float = 60.0,
    ) -> None:
        self.settings = settings
        self.group = parse_target(group)
        self.registry = Registry()
        self._embedded = embedded
        self._io = IoLoop()
        self._broker = Broker(settings)
        self._listener = Listener(self._broker)
        self._inflight = self._io.call(_semaphore(settings.max_inflight))
        self._worker_args: dict[str, Any] = {
            "pid": pid,
            "concurrency": concurrency,
            "on_event": on_event,
            "suspend_after": suspend_after,
        }
        self.worker: Worker | None = None
        self._stopped = threading.Event()
        self._closed = False
        self._death: BaseException | None = None
        self._direct_creator: DirectCreator | None = None
        self._direct_lock = threading.Lock()
        self._endpoints: Endpoints | None = None

    @classmethod
    def remote(
        cls,
        url: str | None = None,
        group: str = "default",
        pid: str | None = None,
        ttl: float | None = None,
        concurrency: int = 8,
        prefix: str | None = None,
        retention: float | None = None,
        **kwargs: Any,
    ) -> Resonate:
        """Connect to Redis at ``url`` (default ``$LB_REDIS_URL``); ``group`` is the group this
        process serves when started and the default target of its calls. ``retention``
        (seconds; default ``$LB_RETENTION``, else 7 days) is how long settled calls are kept."""
        over: dict[str, Any] = {}
        if ttl is not None:
            over["ttl_ms"] = int(ttl * 1000)
        if retention is not None:
            over["retention_ms"] = seconds_to_ms(retention, "retention")
        if prefix:
            over["prefix"] = prefix
        return cls(Settings.from_url(url, **over), group, pid, concurrency, **kwargs)

    @classmethod
    def local(cls, group: str = "default", concurrency: int = 8, **kwargs: Any) -> Resonate:
        """Everything in this process: an embedded Redis and a started worker."""
        server = EmbeddedRedis().start()
        r = cls(Settings.from_url(server.url), group, None, concurrency, embedded=server, **kwargs)
        r.start()
        return r

    def _direct(self) -> DirectCreator | None:
        """The caller's-thread creator, once the broker has checked the server (the first
        call goes by the I/O loop, which does); None on the I/O loop's own thread (a
        blocking call there would stall it) and once stopped."""
        if self._closed or not self._broker._server_checked:
            return None
        if threading.current_thread() is self._io.thread:
            return None
        if self._direct_creator is None:
            with self._direct_lock:
                if self._direct_creator is None and not self._closed:
                    self._direct_creator = DirectCreator(self.settings)
        return self._direct_creator

    # -- registration ---------------------------------------------------------------------
    def register(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        version: int = 1,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Register ``fn(ctx, ...)`` (bare decorator or with ``name=``/``version=``/``retry=``).

        Returns the function unchanged, with ``.rpc(id, ...)``/``.begin_rpc(id, ...)`` attached.
        """

        def wrap(f: F) -> F:
            entry = self.registry.add(f, name, version, retry)
            _attach(self, f, entry)
            return f

        return wrap(fn) if fn is not None else wrap

    # -- invocation -----------------------------------------------------------------------
    def options(
        self,
        target: str | None = None,
        timeout: float | None = None,
        version: int | None = None,
        retention: float | None = None,
    ) -> Options:
        return Options(self, target, timeout, version, retention)

    def rpc(
        self, promise_id: str, func: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        return self.options().rpc(promise_id, func, *args, **kwargs)

    def begin_rpc(
        self, promise_id: str, func: str | Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Handle:
        return self.options().begin_rpc(promise_id, func, *args, **kwargs)

    def get(self, promise_id: str) -> Handle:
        """A handle on an existing invocation (:class:`NotFound` if there is none)."""
        p = self._io.call(self._broker.get(promise_id))
        return Handle(self, promise_id, p)

    def promise(self, promise_id: str) -> Promise:
        """The stored promise record."""
        return self._io.call(self._broker.get(promise_id))

    def settle(self, promise_id: str, state: str, value: Any = None) -> Promise:
        """Resolve / reject / cancel from outside (``resolved``, ``rejected``,
        ``rejected_canceled``); returns the stored record (unchanged if already settled)."""
        data = b"" if value is None else encode(value, self.settings.max_payload)
        return self._io.call(self._broker.settle(promise_id, state, data))[1]

    # -- serving --------------------------------------------------------------------------
    def serve_metrics(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve the worker's ``/metrics`` (Prometheus), ``/livez`` and ``/readyz`` on
        ``host:port`` (0 picks a free port) from now on, before the worker joins (sdk/
        endpoints.py). Call before :meth:`start`. Returns the port. A port that cannot be
        bound is :class:`BadInput`."""
        if self._endpoints is None:
            self._worker_args["metrics"] = True
            self._endpoints = Endpoints(self, port, host)
        return self._endpoints.port

    def start(self) -> Worker:
        """Serve this instance's group with its registered functions (returns at once)."""
        if self.worker is None:
            w = Worker(self.settings, self._io, self.registry, self.group, **self._worker_args)
            w.on_death = self._died
            try:
                self._io.call(w.start())
            except BaseException:
                self._bounded(w.stop(), time.monotonic() + STOP_TIMEOUT_S)
                raise
            self.worker = w
        return self.worker

    def _bounded(self, coro: Any, deadline: float) -> None:
        """Run a stop step on the I/O loop, giving up at ``deadline`` (Redis stalled)."""
        if not self._io.thread.is_alive():
            coro.close()
            return
        try:
            self._io.call(coro, timeout=max(0.05, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            _log_stop_timeout()
        except LbError:
            pass

    def _died(self, exc: BaseException) -> None:
        self._death = exc
        self._stopped.set()

    def serve(self) -> None:
        """Start and block until SIGTERM/SIGINT (or ``stop()``), then stop cleanly.

        Bounded: the hand-back at stop takes at most STOP_TIMEOUT_S whatever Redis does (what
        it could not hand back goes by takeover), and a second signal exits at once (130).
        Raises :class:`WorkerDied` when the worker's own machinery stopped (its tasks are then
        taken over: its heartbeats have stopped)."""
        self.start()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        self._stopped.wait()
        self.stop()
        if self._death is not None:
            raise WorkerDied(str(self._death))

    def _on_signal(self, *_: Any) -> None:
        if self._stopped.is_set():
            os._exit(130)  # a second signal: the operator does not want to wait
        self._stopped.set()

    def stop(self) -> None:
        """Stop serving (hand running tasks back at once) and close every connection.
        Idempotent: a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._stopped.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        if self.worker is not None:
            worker, self.worker = self.worker, None
            if worker.heartbeat is not None and self._death is not None:
                worker.heartbeat.stopping.set()
            self._bounded(worker.stop(), deadline)
        self._bounded(self._listener.close(), deadline)
        self._bounded(self._broker.close(), deadline)
        with self._direct_lock:
            if self._direct_creator is not None:
                self._direct_creator.close()
        self._io.stop()
        if self._endpoints is not None:
            self._endpoints.close()
        if self._embedded is not None:
            self._embedded.cleanup()


STOP_TIMEOUT_S = 5.0


def _log_stop_timeout() -> None:
    log.warning(
        "stop: Redis did not answer within %.0f s; what was not handed back goes by takeover",
        STOP_TIMEOUT_S,
    )


async def _semaphore(n: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(n)


def _attach(r: Resonate, f: Any, entry: Function) -> None:
    try:
        f.rpc = lambda pid, *a, **k: r.rpc(pid, entry.name, *a, **k)
        f.begin_rpc = lambda pid, *a, **k: r.begin_rpc(pid, entry.name, *a, **k)
        f.name = entry.name
    except (AttributeError, TypeError):
        pass  # builtins and some callables take no attributes; use resonate.rpc(name) then
