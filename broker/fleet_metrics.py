"""Fleet-wide Prometheus gauges computed from Redis, for ``lb exporter``: one process exports
them, so they are never multiplied by the number of workers (the workers export only their
own counters, sdk/metrics.py). Read at scrape time from the same snapshot ``lb status`` and
``lb top`` show (broker/status.py), so the three never disagree.

* ``promises_total{state}``: calls by state (Resonate's name: its scaling guide's
  ``promises_total{state="pending"}`` works as written; ctx.run steps and timers excluded);
* ``lb_backlog{group}``, ``lb_in_flight{group}``, ``lb_oldest_waiting_seconds{group}`` (the
  age of the oldest call no worker has read yet: what an autoscaler should watch),
  ``lb_dead_letters{group}``;
* ``lb_workers{group,state}`` (alive, stalled, dead: the scanner's signals);
* ``lb_fleet_takeovers_total{group,cause}`` (gone: connection lost; lapsed: silent past ttl);
* ``lb_dead_lettered_total{group,reason}`` (quarantined, deliveries, refused, garbage);
* ``lb_retained_calls``, ``lb_retained_bytes`` (settled calls kept for their retention);
* ``lb_exporter_up``: 1 when Redis answered this scrape, else 0 (and nothing else).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lb.broker.client import Broker
from lb.broker.errors import LbError
from lb.broker.settings import Settings
from lb.broker.status import snapshot

__all__ = ["FleetCollector"]

WORKER_STATES = ("alive", "stalled", "dead")
# lib.lua count_dead: quarantined (killed its workers), deliveries (too many that ended in
# nothing), refused (undecodable or unknown, too often), garbage (an entry naming no task).
DEAD_REASONS = ("quarantined", "deliveries", "refused", "garbage")


async def _read(settings: Settings) -> dict[str, Any]:
    b = Broker(settings)
    try:
        return await snapshot(b, max_held=1000)
    finally:
        await b.close()


class FleetCollector(Collector):
    """Collects the fleet gauges from Redis on every scrape (module docstring)."""

    NAMES = (
        "lb_exporter_up", "promises_total", "lb_backlog", "lb_in_flight", "lb_dead_letters",
        "lb_oldest_waiting_seconds", "lb_workers", "lb_fleet_takeovers_total",
        "lb_dead_lettered_total", "lb_retained_calls", "lb_retained_bytes",
    )  # fmt: skip

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.last_error = ""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("lb_exporter_up", "1 when Redis answered this scrape")
        try:
            snap = asyncio.run(_read(self.settings))
        except LbError as exc:
            self.last_error = str(exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        calls = GaugeMetricFamily("promises_total", "Calls by state", labels=["state"])
        for state, n in snap["calls"].items():
            calls.add_metric([state], n)
        yield calls
        specs = (
            ("lb_backlog", "Calls waiting for a worker", "backlog", 1),
            ("lb_in_flight", "Calls delivered to a worker", "in_flight", 1),
            ("lb_dead_letters", "Entries in the dead-letter stream", "dead_letters", 1),
            ("lb_oldest_waiting_seconds", "Age of the oldest unread call", "oldest_waiting_ms",
             1000),
        )  # fmt: skip
        for name, text, key, div in specs:
            m = GaugeMetricFamily(name, text, labels=["group"])
            for g, grp in snap["groups"].items():
                m.add_metric([g], grp.get(key, 0) / div)
            yield m
        workers = GaugeMetricFamily("lb_workers", "Workers by state", labels=["group", "state"])
        for g, grp in snap["groups"].items():
            states = [w["state"] for w in grp["workers"].values()]
            for st in WORKER_STATES:
                workers.add_metric([g, st], states.count(st))
        yield workers
        tk = CounterMetricFamily(
            "lb_fleet_takeovers", "Takeovers in the group, by cause", labels=["group", "cause"]
        )
        dl = CounterMetricFamily(
            "lb_dead_lettered", "Calls dead-lettered in the group, by reason",
            labels=["group", "reason"],
        )  # fmt: skip
        for g, grp in snap["groups"].items():
            for cause in ("gone", "lapsed"):
                tk.add_metric([g, cause], grp["takeovers_by_cause"].get(cause, 0))
            for reason in DEAD_REASONS:
                dl.add_metric([g, reason], grp["dead_by_reason"].get(reason, 0))
        yield tk
        yield dl
        yield GaugeMetricFamily("lb_retained_calls", "Settled calls kept", snap["retained"])
        yield GaugeMetricFamily(
            "lb_retained_bytes", "Memory of the settled calls kept (estimate)",
            snap["retained_bytes_estimate"],
        )  # fmt: skip
