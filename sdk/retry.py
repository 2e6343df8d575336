"""Retry policies for functions and ``ctx.run`` steps.

A retry re-runs the function from the top *with replay*: steps whose promises already settled
return their stored values and are not executed again, so a function that performed durable
steps is never blindly repeated. Backoff happens inside the worker slot while heartbeats go on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Constant", "Exponential", "Never", "RetryPolicy"]


class RetryPolicy:
    """Base: ``delay(attempt)`` is the wait before retry number ``attempt`` (1-based), or None."""

    def delay(self, attempt: int) -> float | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Never(RetryPolicy):
    """Do not retry: the first error rejects the promise."""

    def delay(self, attempt: int) -> float | None:
        return None


@dataclass(frozen=True)
class Constant(RetryPolicy):
    seconds: float = 1.0
    max_retries: int = 3

    def delay(self, attempt: int) -> float | None:
        return self.seconds if attempt <= self.max_retries else None


@dataclass(frozen=True)
class Exponential(RetryPolicy):
    """``initial * factor**(attempt-1)``, capped at ``max_delay``, with +-10 % jitter."""

    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    max_retries: int = 3

    def delay(self, attempt: int) -> float | None:
        if attempt > self.max_retries:
            return None
        base = min(self.max_delay, self.initial * self.factor ** (attempt - 1))
        return float(base * random.uniform(0.9, 1.1))
