"""The seeded fault schedule: fault phases, each followed by a heal and a calm gap.

Pure: the same (seed, duration, short, workers) always gives the same plan.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ALL_KINDS", "SHORT_KINDS", "Fault", "make_schedule"]

ALL_KINDS = (
    "worker_kill",  # (1) kill -9 a worker mid-task, restart it later
    "worker_stop",  # (2) SIGSTOP a worker past its ttl, then SIGCONT (zombie)
    "redis_stop",  # (3) SIGSTOP redis-server ~3 s
    "redis_kill",  # (4) kill -9 redis-server, restart from its AOF
    "proxy_latency",  # (5) added latency between one worker and Redis
    "proxy_blackhole",  # (5) partition: stop forwarding, keep sockets open
    "proxy_reset",  # (5) connection resets
    "client_retry",  # (6) clients time out and retry with the same id
    "redis_full",  # (7) Redis at maxmemory under noeviction: every write refused
)
SHORT_KINDS = ("worker_kill", "worker_stop", "redis_kill", "proxy_blackhole", "client_retry")


@dataclass(frozen=True)
class Fault:
    n: int
    kind: str
    start: float  # seconds after the load started
    duration: float  # seconds until the heal
    target: str = ""  # worker name for worker faults
    param: float = 0.0  # latency in ms for proxy_latency

    @property
    def end(self) -> float:
        return self.start + self.duration

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# kind -> (adds the ttl, low, high seconds, latency choices in ms): a fault lasts
# [ttl +] uniform(low, high); stalls and partitions outlast the ttl so that takeovers happen.
_DURATIONS: dict[str, tuple[bool, float, float, tuple[int, ...]]] = {
    "worker_kill": (False, 1.5, 3.0, ()),
    "worker_stop": (True, 1.0, 2.0, ()),
    "redis_stop": (False, 2.5, 3.5, ()),
    "redis_kill": (False, 0.5, 1.5, ()),
    "proxy_latency": (False, 3.0, 5.0, (20, 50, 100, 200)),
    "proxy_blackhole": (True, 1.0, 2.0, ()),
    "proxy_reset": (False, 1.5, 3.0, ()),
    "client_retry": (False, 3.0, 5.0, ()),
    "redis_full": (False, 2.0, 4.0, ()),
}


def _duration(kind: str, rng: random.Random, ttl: float) -> tuple[float, float]:
    """(duration, param) for one fault of ``kind`` (same draws, in the same order, as ever:
    recorded seeds keep their schedules)."""
    plus_ttl, low, high, choices = _DURATIONS[kind]
    d = (ttl if plus_ttl else 0.0) + rng.uniform(low, high)
    return d, float(rng.choice(choices)) if choices else 0.0


def _order(rng: random.Random, short: bool) -> list[str]:
    if short:
        first = ["worker_kill", "worker_stop", "redis_kill"]
        second = ["proxy_blackhole", "client_retry"]
        rng.shuffle(first)
        rng.shuffle(second)
        return first + second
    kinds = list(ALL_KINDS)
    rng.shuffle(kinds)
    return kinds


def make_schedule(
    seed: int,
    duration: float,
    short: bool,
    workers: list[str],
    ttl: float = 2.0,
    warmup: float | None = None,
    tail: float | None = None,
) -> list[Fault]:
    """Faults placed one after the other between ``warmup`` and ``duration - tail``."""
    rng = random.Random(f"schedule-{seed}")
    warmup = (2.0 if short else 4.0) if warmup is None else warmup
    tail = (3.0 if short else 8.0) if tail is None else tail
    gap = (0.8, 1.5) if short else (1.5, 3.0)
    out: list[Fault] = []
    t = warmup
    queue: list[str] = []
    while True:
        if not queue:
            queue = _order(rng, short)
        kind = queue[0]
        d, param = _duration(kind, rng, ttl)
        if t + d > duration - tail:
            break
        queue.pop(0)
        target = rng.choice(workers) if kind in ("worker_kill", "worker_stop") else ""
        out.append(Fault(len(out) + 1, kind, round(t, 3), round(d, 3), target, param))
        t += d + rng.uniform(*gap)
    return out
