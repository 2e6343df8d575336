"""A worker's own Prometheus metrics (prometheus-client), one registry per worker.

Names follow Resonate's scaling guide where it has one, so its queries work as written:
``rate(tasks_total{state="completed"}[5m])`` and ``tasks_total{state="claimed"} -
tasks_total{state="completed"}`` from the workers, ``promises_total{state="pending"}`` from
``lb exporter`` (fleet-wide numbers come from one process, never multiplied by the number of
workers: broker/fleet_metrics.py). The rest is what Resonate does not expose:

* ``lb_heartbeats_total{outcome=sent|failed}``, ``lb_takeovers_total{cause=gone|lapsed}``
  (this worker took a call over: its holder's connection was gone, or it was silent past its
  ttl), ``lb_dead_letters_total{reason}``, ``lb_fenced_writes_total`` (a write refused because
  the call was no longer this worker's), ``lb_lost_total``, ``lb_suspensions_total``,
  ``lb_retries_total``, ``lb_abandoned_threads_total``, ``lb_redis_errors_total{type}``;
* ``lb_slots{state=busy|free}``;
* histograms per function: ``lb_claim_latency_seconds`` (the entry's enqueue - create,
  requeue or resume - to its claim, on the Redis clock), ``lb_execution_seconds`` (the last
  attempt's run) and ``lb_invoke_to_settle_seconds`` (enqueue to the completion's write).

Every series carries ``group`` and ``worker``; functions and states are the other labels. No
label takes a promise id: the series count is bounded by workers x functions x states.
Counting costs a dict lookup and a lock per event; gauges are read at scrape time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "NAMES", "WorkerMetrics"]

# Every sample name a worker exports (histograms as their _bucket, _count, _sum).
NAMES = tuple(
    ["tasks_total", "lb_takeovers_total", "lb_dead_letters_total", "lb_fenced_writes_total",
     "lb_lost_total", "lb_suspensions_total", "lb_retries_total", "lb_abandoned_threads_total",
     "lb_slots", "lb_heartbeats_total", "lb_redis_errors_total"]
    + [f"{h}{s}" for h in ("lb_claim_latency_seconds", "lb_execution_seconds",
                           "lb_invoke_to_settle_seconds") for s in ("_bucket", "_count", "_sum")]
)  # fmt: skip

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                   60, 300, 1800, 3600)  # fmt: skip

# Worker events (sdk/worker.py _emit) counted one to one: event -> (metric, labels from data).
_COUNTED = {
    "fenced": "fenced",
    "lost": "lost",
    "suspended": "suspensions",
    "retry": "retries",
    "abandoned": "abandoned",
}


class WorkerMetrics:
    """The metrics of one worker. :meth:`event` is fed every worker event; ``state`` gives
    the scrape-time numbers (slots, heartbeats, Redis errors by type)."""

    def __init__(
        self, group: str, worker: str, state: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.group, self.worker = group, worker
        base = ["group", "worker"]
        r = self.registry
        self.tasks = PCounter("tasks", "Task transitions on this worker", [*base, "state"],
                              registry=r)  # fmt: skip
        self.takeovers = PCounter(
            "lb_takeovers", "Calls this worker took over, by cause", [*base, "cause"], registry=r
        )
        self.dead = PCounter(
            "lb_dead_letters", "Calls dead-lettered by this worker", [*base, "reason"], registry=r
        )
        self.simple = {
            name: PCounter(f"lb_{metric}", f"Worker events: {name}", base, registry=r)
            for name, metric in (
                ("fenced", "fenced_writes"),
                ("lost", "lost"),
                ("suspensions", "suspensions"),
                ("retries", "retries"),
                ("abandoned", "abandoned_threads"),
            )
        }
        fb = [*base, "function"]
        self.claim_latency = Histogram(
            "lb_claim_latency_seconds", "Enqueue to claim", fb, buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.execution = Histogram(
            "lb_execution_seconds", "One attempt's run", fb, buckets=LATENCY_BUCKETS, registry=r
        )
        self.to_settle = Histogram(
            "lb_invoke_to_settle_seconds", "Enqueue to the completion's write", fb,
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        # Every series present (at 0) from the start, so a rate() sees the first event.
        for st in ("claimed", "completed", "suspended", "released"):
            self.tasks.labels(group, worker, st)
        for cause in ("gone", "lapsed"):
            self.takeovers.labels(group, worker, cause)
        for reason in ("dead-lettered", "quarantined"):
            self.dead.labels(group, worker, reason)
        for c in self.simple.values():
            c.labels(group, worker)
        self._completed = self.tasks.labels(group, worker, "completed")
        self._claimed = self.tasks.labels(group, worker, "claimed")
        self._funcs: dict[str, tuple[Any, Any, Any]] = {}
        if state is not None:
            r.register(_StateCollector(group, worker, state))

    def _per_func(self, func: str) -> tuple[Any, Any, Any]:
        """The three histograms' children for ``func``, looked up once (labels() takes a
        lock and builds a key on every call: the per-call path must not pay it)."""
        got = self._funcs.get(func)
        if got is None:
            g, w = self.group, self.worker
            got = (
                self.claim_latency.labels(g, w, func),
                self.execution.labels(g, w, func),
                self.to_settle.labels(g, w, func),
            )
            self._funcs[func] = got
        return got

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Count one worker event (the same events the worker logs)."""
        g, w = self.group, self.worker
        if kind == "start":
            return  # the common case first: nothing to count
        if kind == "done":
            self._completed.inc()
            _, run, settle = self._per_func(str(data.get("func", "")))
            run.observe(float(data.get("duration_ms", 0.0)) / 1000.0)
            if "settle_s" in data:
                settle.observe(float(data["settle_s"]))
        elif kind == "suspended":
            self.tasks.labels(g, w, "suspended").inc()
            self.simple["suspensions"].labels(g, w).inc()
        elif kind == "released":
            self.tasks.labels(g, w, "released").inc()
        elif kind == "takeover":
            self.takeovers.labels(g, w, str(data.get("cause", "gone"))).inc()
        elif kind == "dead-letter":
            self.dead.labels(g, w, str(data.get("reason", "deliveries"))).inc()
        elif kind in _COUNTED:
            self.simple[_COUNTED[kind]].labels(g, w).inc()

    def claimed(self, func: str, waited_s: float) -> None:
        self._claimed.inc()
        self._per_func(func)[0].observe(max(0.0, waited_s))


class _StateCollector(Collector):
    """Scrape-time numbers read from the worker: ``state()`` returns slots busy and free,
    heartbeats sent and failed, and Redis errors by type."""

    def __init__(self, group: str, worker: str, state: Callable[[], dict[str, Any]]) -> None:
        self.labels = [group, worker]
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state()
        slots = GaugeMetricFamily(
            "lb_slots", "Slots of this worker", labels=["group", "worker", "state"]
        )
        slots.add_metric([*self.labels, "busy"], s.get("busy", 0))
        slots.add_metric([*self.labels, "free"], s.get("free", 0))
        yield slots
        beats = CounterMetricFamily(
            "lb_heartbeats", "Heartbeats of this worker", labels=["group", "worker", "outcome"]
        )
        beats.add_metric([*self.labels, "sent"], s.get("beats", 0))
        beats.add_metric([*self.labels, "failed"], s.get("beat_failures", 0))
        yield beats
        errors = CounterMetricFamily(
            "lb_redis_errors", "Redis operations that failed, by error type",
            labels=["group", "worker", "type"],
        )  # fmt: skip
        by_type: Counter[str] = s.get("redis_errors", Counter())
        for kind, n in sorted(by_type.items()):
            errors.add_metric([*self.labels, kind], n)
        yield errors
