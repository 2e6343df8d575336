"""Telling a Redis outage once: one line when it starts, one when it ends.

A worker meets an outage in many places at once (every running function's next step, its
completion, the claim, takeover and sweep loops). :class:`OutageLog` turns all of those into
two events, ``redis-down`` (the first failure, with its reason) and ``redis-up`` (the first
write that succeeds afterwards, with how long it lasted), whatever the number of callers.

:func:`refusing` tells the outages in which Redis answers but refuses writes (out of memory
under ``noeviction``, a read-only replica during a failover): a worker waits those out for as
long as they last, holding what it has, since nothing it could do elsewhere would succeed
either and the work is not at fault.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from lb.broker.errors import RedisOutOfMemory, RedisReadOnly

__all__ = ["OutageLog", "refusing"]

_REFUSALS = (RedisOutOfMemory.__name__, RedisReadOnly.__name__)


def refusing(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) is Redis refusing writes for now."""
    e: BaseException | None = exc
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, RedisOutOfMemory | RedisReadOnly):
            return True
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


class OutageLog:
    """Outage state of one worker (used on its event loop only)."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self._emit = emit
        self.since: float | None = None
        self.kind = ""
        self.errors: Counter[str] = Counter()  # every failure seen, by type (the metrics)

    def seen(self, exc: BaseException) -> None:
        """An operation failed for want of Redis: emits ``redis-down`` if this is new."""
        self.errors[type(exc).__name__] += 1
        if self.since is None:
            self.since = time.monotonic()
            self.kind = type(exc).__name__
            self._emit("redis-down", error=str(exc))

    def over(self) -> None:
        """A write succeeded: emits ``redis-up`` if an outage was on."""
        if self.since is not None:
            lasted = time.monotonic() - self.since
            self.since = None
            self._emit("redis-up", after=f"{lasted:.1f}s", was=self.kind)

    def answered(self) -> None:
        """A read succeeded (an idle worker's blocking read): the outage is over unless it
        was Redis refusing writes (full, read-only), which reads do not disprove."""
        if self.since is not None and self.kind not in _REFUSALS:
            self.over()

    @property
    def on(self) -> bool:
        return self.since is not None

    def to_json(self) -> dict[str, Any]:
        return {"on": self.on, "kind": self.kind if self.on else ""}
