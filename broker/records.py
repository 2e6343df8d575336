"""Typed views of what the Lua scripts return."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Claimed", "Entry", "Fence", "Promise", "parse_promise"]

SETTLED_STATES = ("resolved", "rejected", "rejected_canceled", "rejected_timedout")


def _s(b: Any) -> str:
    return b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else str(b)


def _i(b: Any) -> int:
    return int(b) if b not in (None, b"", "") else 0


@dataclass(frozen=True)
class Promise:
    """A durable promise as stored. Times are ms since the epoch by the Redis server's clock."""

    id: str
    state: str
    param: bytes
    param_headers: bytes
    value: bytes
    value_headers: bytes
    tags: dict[str, str]
    timeout_at: int
    created_at: int
    settled_at: int
    # The Redis clock when this record was read (0 when unknown): with timeout_at it gives the
    # time left without any local clock.
    read_at: int = field(default=0, compare=False, repr=False)

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    @property
    def settled(self) -> bool:
        return self.state != "pending"

    def to_json(self) -> dict[str, Any]:
        """The record with binary fields left out (callers decode ``value`` themselves)."""
        return {
            "id": self.id,
            "state": self.state,
            "tags": self.tags,
            "timeout_at": self.timeout_at,
            "created_at": self.created_at,
            "settled_at": self.settled_at or None,
        }


def parse_promise(raw: list[Any]) -> Promise:
    """Build a :class:`Promise` from a record in ``lib.lua`` FIELDS order."""
    tags_raw = raw[6] or b""
    tags: dict[str, str] = json.loads(tags_raw) if tags_raw not in (b"", b"{}") else {}
    return Promise(
        id=_s(raw[0]),
        state=_s(raw[1]),
        param=raw[2] or b"",
        param_headers=raw[3] or b"",
        value=raw[4] or b"",
        value_headers=raw[5] or b"",
        tags=tags,
        timeout_at=_i(raw[7]),
        created_at=_i(raw[8]),
        settled_at=_i(raw[9]),
        read_at=_i(raw[10]) if len(raw) > 10 else 0,
    )


@dataclass(frozen=True)
class Fence:
    """The fencing token of one execution: a mutation is refused unless all three match."""

    task_id: str
    version: str
    pid: str

    def args(self) -> list[str]:
        return [self.task_id, self.version, self.pid]


NO_FENCE = ["", "", ""]


@dataclass(frozen=True)
class Claimed:
    """A task a worker now holds, at ``version`` (or ``~<entry id>``: a first delivery run
    straight from its entry, see :meth:`Entry.fast`), with its promise's params."""

    task_id: str
    version: str
    strikes: int  # deliveries in a row that ended in nothing, this one included (poison guard)
    param: bytes
    param_headers: bytes
    timeout_at: int
    entry_id: str
    base: str
    group: str
    previous_holder: str | None = None
    lapses: int = 0  # earlier deliveries that ended in nothing (holder died or stalled)
    suspect: bool = False  # its worker died running it beside others: run it alone
    claimed_at_ms: int = 0  # the Redis clock at the claim

    @property
    def waited_s(self) -> float:
        """Seconds from the entry's enqueue (its id's time: create, requeue or resume) to this
        claim, both on the Redis clock."""
        try:
            return max(0, self.claimed_at_ms - int(self.entry_id.split("-", 1)[0])) / 1000.0
        except ValueError:
            return 0.0

    def fence(self, pid: str) -> Fence:
        return Fence(self.task_id, self.version, pid)


@dataclass(frozen=True)
class Entry:
    """A stream entry a worker read (XREADGROUP): entry id, task id ('' when the entry names
    none) and, for a call's first delivery, the call itself (lib.lua new_promise: its params,
    their headers and its deadline), which lets the worker run it without an acquire."""

    eid: str
    tid: str
    param: bytes | None = None  # None: not a first delivery (or params too big to carry)
    param_headers: bytes = b""
    timeout_at: int = 0

    def fast(self, base: str, group: str, now_ms: int) -> Claimed:
        """The call held straight from this entry (the fast path): fenced by '~' + entry id,
        which the holder's first fenced write or heartbeat turns into version 1 (lib.lua
        held()). First delivery: strikes 1, no lapses, no previous holder, not a suspect."""
        assert self.param is not None
        return Claimed(
            task_id=self.tid,
            version="~" + self.eid,
            strikes=1,
            param=self.param,
            param_headers=self.param_headers,
            timeout_at=self.timeout_at,
            entry_id=self.eid,
            base=base,
            group=group,
            claimed_at_ms=now_ms,
        )


def parse_claims(rows: list[Any], base: str, group: str) -> tuple[list[Claimed], list[str]]:
    """Split an acquire/takeover answer into held tasks and dead-lettered task ids."""
    held: list[Claimed] = []
    dead: list[str] = []
    for row in rows:
        kind = _s(row[1])
        if kind == "ok":
            held.append(
                Claimed(
                    task_id=_s(row[2]),
                    version=_s(row[3]),
                    strikes=_i(row[4]),
                    param=row[5] or b"",
                    param_headers=row[6] or b"",
                    timeout_at=_i(row[7]),
                    entry_id=_s(row[0]),
                    base=base,
                    group=group,
                    previous_holder=_s(row[8]) if len(row) > 8 and row[8] else None,
                    lapses=_i(row[9]) if len(row) > 9 else 0,
                    suspect=len(row) > 10 and _s(row[10]) == "1",
                    claimed_at_ms=_i(row[11]) if len(row) > 11 else 0,
                )
            )
        elif kind == "dead":
            dead.append(_s(row[2]) if len(row) > 2 else "")
    return held, dead
