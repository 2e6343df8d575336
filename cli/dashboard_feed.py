"""The dashboard's feed: one poller per ``lb dashboard`` process reads the views' snapshot
(broker/status.py, the same one ``lb status``, ``lb top`` and ``lb exporter`` read) every
interval and publishes it as a *frame* to every open page.

Guarantees:

* One Redis read per interval whatever the number of pages: pages share the frame (and its
  JSON text, encoded once).
* The numbers are the views' numbers: shares come from :func:`lb.cli.top.share` and the
  highlight window from :data:`lb.cli.top.HIGHLIGHT_MS`, so the dashboard and ``lb top`` never
  disagree on the same snapshot.
* An outage never ends the feed: while Redis does not answer (or a read fails or takes longer
  than READ_TIMEOUT_S), the frame keeps the last snapshot and history and says ``ok: false``
  with the error and the time the outage began; the poller carries on and the next answer
  clears it.
* The backlog history is a ring buffer of HISTORY_SAMPLES samples (Redis time, backlog per
  group), one per successful read: the page draws it without keeping state of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

from lb.broker.client import Broker
from lb.broker.lookup import recent_dead_letters
from lb.broker.status import snapshot
from lb.cli.top import HIGHLIGHT_MS, share

__all__ = ["DEAD_LETTERS_SHOWN", "HISTORY_SAMPLES", "READ_TIMEOUT_S", "Feed", "decorate"]

log = logging.getLogger("lb.dashboard")

HISTORY_SAMPLES = 240
DEAD_LETTERS_SHOWN = 10
READ_TIMEOUT_S = 5.0


def decorate(snap: dict[str, Any]) -> dict[str, Any]:
    """Add what lb top derives from a snapshot to each worker (``share_running``,
    ``share_done``, ``took_recently``, ``lost_recently``) and takeover (``recent``), in place."""
    for grp in snap["groups"].values():
        workers = grp["workers"]
        running = sum(w["running"] for w in workers.values())
        done = sum(w["done"] for w in workers.values())
        for wi in workers.values():
            wi["share_running"] = share(wi["running"], running)
            wi["share_done"] = share(wi["done"], done)
            took, lost = wi.get("takeover_age_ms"), wi.get("taken_from_age_ms")
            wi["took_recently"] = took is not None and took < HIGHLIGHT_MS
            wi["lost_recently"] = lost is not None and lost < HIGHLIGHT_MS
        for e in grp["takeovers"]:
            e["recent"] = e["age_ms"] < HIGHLIGHT_MS
    return snap


class Feed:
    """Polls the snapshot every ``interval`` seconds and publishes frames (module docstring).
    ``writes``: whether the dashboard accepts writes (the page shows its buttons only then)."""

    def __init__(self, broker: Broker, interval: float, writes: bool) -> None:
        self.broker = broker
        self.interval = interval
        self.writes = writes
        self.history: deque[tuple[int, dict[str, int]]] = deque(maxlen=HISTORY_SAMPLES)
        self.last: dict[str, Any] | None = None
        self.dead: dict[str, list[dict[str, Any]]] = {}
        self.down_since_ms: int | None = None
        self.error = ""
        self.version = 0
        self.text = ""
        self._tick = asyncio.Event()
        self._publish()

    def frame(self) -> dict[str, Any]:
        """What a page renders: the last snapshot (None before the first answer), whether it
        is current (``ok``), the outage's start and error, the history, the latest dead
        letters per group."""
        return {
            "ok": self.down_since_ms is None and self.last is not None,
            "down_since_ms": self.down_since_ms,
            "error": self.error,
            "writes": self.writes,
            "interval": self.interval,
            "frame": self.version,
            "snapshot": self.last,
            "dead_letters": self.dead,
            "history": [[t, b] for t, b in self.history],
        }

    def _publish(self) -> None:
        self.version += 1
        self.text = json.dumps(self.frame(), default=repr)
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def _read(self) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        snap = decorate(await snapshot(self.broker))
        dead = {g: await recent_dead_letters(self.broker, g, DEAD_LETTERS_SHOWN)
                for g in snap["groups"]}  # fmt: skip
        return snap, dead

    async def poll_once(self) -> None:
        """Read once and publish the frame; a failure marks the frame down, never raises."""
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                snap, dead = await self._read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a view outlives any failure of a read: say it, go on
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A read that failed as the stop arrived can surface its own error instead
                # of the cancel (3.11's wait_for did so too): the stop still wins.
                raise asyncio.CancelledError from exc
            if self.down_since_ms is None:
                self.down_since_ms = int(time.time() * 1000)
                log.warning("lb dashboard: Redis read failed: %s", exc)
            self.error = (str(exc) or type(exc).__name__)[:300]
        else:
            if self.down_since_ms is not None:
                log.warning("lb dashboard: Redis answers again")
            self.last, self.dead, self.down_since_ms, self.error = snap, dead, None, ""
            backlog = {g: int(grp["backlog"]) for g, grp in snap["groups"].items()}
            self.history.append((int(snap["now_ms"]), backlog))
        self._publish()

    async def run(self) -> None:
        """Poll forever (until cancelled)."""
        while True:
            await asyncio.sleep(self.interval)
            await self.poll_once()

    async def next_text(self, seen: int, wait: float) -> tuple[int, str | None]:
        """The frame after version ``seen`` as JSON text, waiting at most ``wait`` seconds:
        (version, text), or (seen, None) when none came in time."""
        if self.version == seen:
            tick = self._tick
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # never swallows a cancel (wait_for can)
                    await tick.wait()
        if self.version == seen:
            return seen, None
        return self.version, self.text
