"""After the load: wait until every acknowledged invocation settled, then read everything back.

Reads go through ``broker.Broker.get`` (the SDK's own read path, pipelined) and are recorded in
the client history as ``get`` operations; each promise is read at least twice at the end so
that a value changing between reads is caught.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from chaos.history import History, Op
from chaos.load import outcome_of
from lb.broker import Broker, Settings
from lb.broker.errors import LbError, NotFound
from lb.broker.records import Promise

__all__ = ["Reader"]

CHUNK = 200


def _settled(p: Promise | None) -> bool:
    return p is not None and p.settled


class Reader:
    def __init__(self, url: str, prefix: str, history: History) -> None:
        self.url = url
        self.prefix = prefix
        self.h = history

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    async def _get(self, b: Broker, pid: str, record: bool) -> Promise | None:
        op = Op(pid, "get", "", time.time())
        try:
            p = await asyncio.wait_for(b.get(pid), 10)
        except NotFound:
            op.end, op.outcome = time.time(), ("notfound",)
            if record:
                self.h.add(op)
            return None
        except (LbError, TimeoutError) as exc:
            op.error = f"{type(exc).__name__}: {exc}"[:200]
            if record:
                self.h.add(op)
            return None
        op.end, op.outcome = time.time(), outcome_of(p)
        if record:
            self.h.add(op)
        return p

    async def read_all(self, ids: list[str], record: bool = True) -> dict[str, Promise | None]:
        b = Broker(Settings.from_url(self.url, prefix=self.prefix))
        out: dict[str, Promise | None] = {}
        try:
            for i in range(0, len(ids), CHUNK):
                part = ids[i : i + CHUNK]
                got = await asyncio.gather(*(self._get(b, pid, record) for pid in part))
                out.update(zip(part, got, strict=True))
        finally:
            await b.close()
        return out

    def drain(
        self, ids: list[str], timeout: float, on_poll: Callable[[], None] | None = None
    ) -> tuple[float, list[str]]:
        """Poll until every id settled; returns (seconds waited, ids still not settled).
        ``on_poll`` runs before each poll (the injector restarts workers a poison call
        killed)."""
        t0 = time.monotonic()
        left = list(ids)
        while left:
            if on_poll is not None:
                on_poll()
            got = self.run(self.read_all(left, record=False))
            left = [pid for pid in left if not _settled(got.get(pid))]
            if not left or time.monotonic() - t0 > timeout:
                break
            time.sleep(0.5)
        return time.monotonic() - t0, left

    def final(
        self, ids: list[str], rounds: int = 2
    ) -> tuple[dict[str, Promise | None], dict[str, list[tuple[str, str]]]]:
        """Read every id ``rounds`` times (recorded); the last record and every (state, value)."""
        seen: dict[str, list[tuple[str, str]]] = {pid: [] for pid in ids}
        last: dict[str, Promise | None] = {}
        for _ in range(rounds):
            last = self.run(self.read_all(ids))
            for pid, p in last.items():
                if p is not None and p.settled:
                    seen[pid].append((p.state, p.value.hex()))
        return last, seen
