"""A light sampler of the group queue (every 0.5 s): backlog and in-flight entries.

Backlog = entries on the stream not yet delivered to any worker: while it is above zero every
live worker is busy (a worker with a free slot reads at once), which is what starves
takeovers in a saturated group.
"""

from __future__ import annotations

import threading
import time

import redis

from lb.broker.keys import CONSUMER_GROUP, Keys

__all__ = ["Sampler"]


class Sampler(threading.Thread):
    def __init__(self, url: str, prefix: str, period: float = 0.5) -> None:
        super().__init__(name="chaos-sampler", daemon=True)
        self.url = url
        self.stream = Keys.stream(Keys(prefix).base(0), "chaos")
        self.period = period
        self.samples: list[tuple[float, int, int]] = []  # (t, backlog, in flight)
        self.halt = threading.Event()

    def run(self) -> None:
        cl = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while not self.halt.wait(self.period):
                try:
                    pipe = cl.pipeline(transaction=False)
                    pipe.xlen(self.stream)
                    pipe.xpending(self.stream, CONSUMER_GROUP)
                    xlen, pend = pipe.execute()
                    n = int(pend["pending"])
                    self.samples.append((time.time(), max(0, int(xlen) - n), n))
                except (redis.RedisError, OSError):
                    continue
        finally:
            cl.close()

    def during(self, a: float, b: float) -> dict[str, int]:
        """Max and min backlog, and max in flight, between times ``a`` and ``b``."""
        xs = [s for s in self.samples if a <= s[0] <= b]
        if not xs:
            return {"samples": 0}
        return {
            "samples": len(xs),
            "backlog_max": max(s[1] for s in xs),
            "backlog_min": min(s[1] for s in xs),
            "in_flight_max": max(s[2] for s in xs),
        }
