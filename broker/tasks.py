"""Worker-side task transitions on the group streams: claim, heartbeat, complete, take over.

Guarantees (each is one Lua script, so one atomic step and one round trip):

* ``read`` + ``acquire``: a worker reads at most its free slots (XREADGROUP COUNT = free), then
  acquires them, which bumps each task's version (the fencing token) and records the holder.
* ``fulfill`` / ``suspend`` / ``release`` / fenced creates and settles are refused with
  :class:`Fenced` unless (task id, version, pid) still holds the task.
* ``takeover``: XAUTOCLAIM with min idle = ttl (cursor kept per stream between calls), plus
  immediate claims from consumers whose Redis connection is gone; the version is bumped in the
  same step, so the old holder is fenced from that moment on.
* ``sweep``: settles expired promises and purges retained ones under a short shared lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast, overload

import redis.asyncio as aioredis
import redis.exceptions as rexc

from lb.broker.client import Broker, make_redis, translate_errors
from lb.broker.errors import BadInput, Fenced, PayloadTooLarge
from lb.broker.keys import CONSUMER_GROUP, Keys, check_group
from lb.broker.lane import Lane
from lb.broker.records import Claimed, Entry, Fence, Promise, parse_claims, parse_promise

__all__ = ["TaskQueue"]


def _s(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


@overload
def _field(fields: Any, name: bytes) -> bytes: ...
@overload
def _field(fields: Any, name: bytes, missing: None) -> bytes | None: ...
def _field(fields: Any, name: bytes, missing: bytes | None = b"") -> bytes | None:
    """Field ``name`` of a raw stream entry ([k, v, ...], a RESP3 map, or nil: deleted);
    ``missing`` when the entry has no such field."""
    if isinstance(fields, dict):
        v = fields.get(name, missing)
    elif isinstance(fields, list):
        v = next(
            (fields[i + 1] for i in range(0, len(fields) - 1, 2) if fields[i] == name), missing
        )
    else:
        v = missing
    return v if isinstance(v, bytes) or v is None else missing


def _entry(eid: str, fields: Any) -> Entry:
    """A raw stream entry as read: its task id, and the call a first delivery carries."""
    try:
        tid = _field(fields, b"t").decode("utf-8")
    except UnicodeDecodeError:
        tid = ""
    param = _field(fields, b"p", None)
    if param is None:
        return Entry(eid, tid)
    try:
        deadline = int(_field(fields, b"d"))
    except ValueError:
        return Entry(eid, tid)  # not lb's own entry: the acquire judges it
    return Entry(eid, tid, param, _field(fields, b"h"), deadline)


log = logging.getLogger("lb.broker")
# A first delivery whose deadline is closer than this (by the estimated Redis clock) is not run
# straight from its entry: an acquire times it out if it is past.
FAST_DEADLINE_MARGIN_MS = 1000
# A consumer that holds nothing and has not read for this long (or 10 ttl) is deleted.
PRUNE_IDLE_MS = 60_000


class TaskQueue:
    """The task side of one broker, for one group, as seen by one worker ``pid``."""

    def __init__(self, broker: Broker, group: str, pid: str) -> None:
        self.broker = broker
        self.group = check_group(group)
        self.pid = pid
        self.keys: Keys = broker.keys
        self.bases = self.keys.all_bases()
        self.streams = {Keys.stream(b, group): b for b in self.bases}
        # Blocking reads get their own connection so they never starve the pool.
        self.blocking: aioredis.Redis = make_redis(broker.settings, 2, broker.client_name)
        # The claim loop's reads (one at a time) on a connection of that pool's kind.
        self._reads = Lane(self.blocking.connection_pool, 1)
        self._cursors = dict.fromkeys(self.bases, "0-0")
        self._suspect: dict[str, tuple[float, float]] = {}  # consumer -> first, last seen gone
        self._clock_offset_ms = 0  # Redis clock - local clock (see redis_now_ms)

    async def close(self) -> None:
        await self._reads.close()
        await self.blocking.aclose(close_connection_pool=True)

    async def ensure_group(self) -> None:
        """Create the group's streams and consumer groups if missing (idempotent)."""
        async with translate_errors():
            for base in self.bases:
                try:
                    await self.broker.redis.xgroup_create(
                        Keys.stream(base, self.group), CONSUMER_GROUP, id="0", mkstream=True
                    )
                except rexc.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                await self.broker.redis.sadd(Keys.groups(base), self.group)

    async def register(self, info: dict[str, str], ttl_ms: int) -> None:
        """Announce this worker (for ``lb status``); kept alive by heartbeats."""
        async with translate_errors():
            for base in self.bases:
                pipe = self.broker.redis.pipeline(transaction=False)
                pipe.hset(Keys.worker_info(base, self.pid), mapping=cast(Any, info))
                pipe.pexpire(Keys.worker_info(base, self.pid), ttl_ms * 3)
                pipe.execute_command("TIME")
                sec, usec = (await pipe.execute())[-1]
                self._learn_clock(int(sec) * 1000 + int(usec) // 1000)

    async def read(self, count: int, block_ms: int) -> dict[str, list[Entry]]:
        """Read up to ``count`` new entries (blocking up to ``block_ms``), by shard base."""
        streams = list(self.streams)
        command = ("XREADGROUP", "GROUP", CONSUMER_GROUP, self.pid, "COUNT", count,
                   "BLOCK", block_ms, "STREAMS", *streams, *[">"] * len(streams))  # fmt: skip
        try:
            async with translate_errors():
                (resp,) = await self._reads.run([command])
                if isinstance(resp, rexc.ResponseError):
                    raise resp
        except Exception as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group()
                return {}
            raise
        out: dict[str, list[Entry]] = {}
        # RESP2: [[stream, entries], ...]; RESP3: {stream: entries}; nil when nothing came.
        by_stream = resp.items() if isinstance(resp, dict) else (resp or [])
        for stream, entries in by_stream:
            base = self.streams[_s(stream)]
            for eid, fields in entries:
                out.setdefault(base, []).append(_entry(_s(eid), fields))
        return out

    def redis_now_ms(self) -> int:
        """The Redis clock, estimated from the local one (offset learned at register() and
        from the Redis time every acquire and completion's claim reports)."""
        return int(time.time() * 1000) + self._clock_offset_ms

    def _learn_clock(self, redis_ms: int) -> None:
        if redis_ms > 0:
            self._clock_offset_ms = redis_ms - int(time.time() * 1000)

    async def claim(self, base: str, entries: list[Entry]) -> tuple[list[Claimed], list[str]]:
        """Hold the entries just read: a call's first delivery (its entry carries the call) is
        held at once, with no round trip (:meth:`Entry.fast`; acquired by the holder's first
        fenced write or heartbeat); any other entry, or one whose deadline is near (an acquire
        times it out instead of running it), goes through :meth:`acquire`. The worker itself
        uses :meth:`split` and starts the fast ones before it awaits the acquire, so that a
        failed acquire strands none of them."""
        held, slow = self.split(base, entries)
        if not slow:
            return held, []
        h, dead = await self.acquire(base, slow)
        return held + h, dead

    def split(self, base: str, entries: list[Entry]) -> tuple[list[Claimed], list[Entry]]:
        """The entries :meth:`claim` holds at once (first deliveries, their deadline not near)
        and those it acquires."""
        held: list[Claimed] = []
        slow: list[Entry] = []
        now = self.redis_now_ms()
        for e in entries:
            if e.param is not None and e.tid and e.timeout_at > now + FAST_DEADLINE_MARGIN_MS:
                held.append(e.fast(base, self.group, now))
            else:
                slow.append(e)
        return held, slow

    async def acquire(self, base: str, entries: list[Entry]) -> tuple[list[Claimed], list[str]]:
        """Acquire entries just read (all of them: every one is acquired, none held fast):
        bump versions, load params; garbage is dead-lettered."""
        flat: list[str] = []
        for e in entries:
            flat += [e.eid, e.tid]
        args = [self.pid, self.group, self.broker.settings.max_deliveries, *flat]
        rows = await self.broker.script("acquire", [Keys.stream(base, self.group)], args)
        held, dead = parse_claims(rows, base, self.group)
        if held:
            self._learn_clock(held[-1].claimed_at_ms)
        return held, dead

    async def fulfill(
        self, fence: Fence, state: str, value: bytes, value_headers: bytes = b""
    ) -> Promise:
        """Settle the task's promise as its holder and complete the task (fenced)."""
        self._check_outcome(state, len(value) + len(value_headers))
        raw = await self.broker.script(
            "fulfill",
            [self.keys.promise(fence.task_id)],
            [*fence.args(), state, value, value_headers],
        )
        return parse_promise(raw)

    async def complete(self, fence: Fence, state: str, value: bytes) -> str | None:
        """:meth:`fulfill`, replying with the promise's state after it alone (None when the
        promise is gone): a worker's completion needs no record read back."""
        self._check_outcome(state, len(value))
        raw = await self.broker.script(
            "fulfill", [self.keys.promise(fence.task_id)], [*fence.args(), state, value, b"", "-"]
        )
        return None if raw is None else _s(raw)

    def _check_outcome(self, state: str, size: int) -> None:
        if state not in ("resolved", "rejected"):
            raise BadInput(f"a task settles resolved or rejected, not {state!r}")
        if size > self.broker.settings.max_payload:
            raise PayloadTooLarge(
                f"value is over the {self.broker.settings.max_payload}-byte limit"
            )

    async def fulfill_and_claim(
        self, fence: Fence, state: str, value: bytes, base: str
    ) -> tuple[str, list[Claimed], list[str]]:
        """:meth:`fulfill`, and in the same atomic step claim the next entry of the group
        waiting on shard ``base`` (one at most: the slot this completion frees) for this
        worker. Returns the promise's state after the call, the task now held (none when
        the stream had nothing undelivered) and task ids dead-lettered on the way. If the
        reply is lost, the claimed task is never run here: it is taken over after the ttl
        like any silent holder's (so a retry of a lost reply should use :meth:`fulfill`)."""
        self._check_outcome(state, len(value))
        raw = await self.broker.script(
            "fulfill",
            [self.keys.promise(fence.task_id)],
            [*fence.args(), state, value, b"", "1", self.broker.settings.max_deliveries],
        )
        held, dead = parse_claims(raw[1], base, self.group)
        if held:
            self._learn_clock(held[-1].claimed_at_ms)
        final = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
        return final, held, dead

    async def suspend(self, fence: Fence, awaited: Iterable[str]) -> str:
        """Park the task until one awaited promise settles: 'suspended' or 'ready' (fenced)."""
        awaited = list(awaited)
        if not awaited:
            raise BadInput("suspend needs at least one awaited promise id")
        res = await self.broker.script(
            "suspend", [self.keys.task(fence.task_id)], [*fence.args(), *awaited]
        )
        return _s(res[0])

    async def release(
        self, fence: Fence, failed: bool = False, reason: str = "", delay_ms: int = 0
    ) -> str:
        """Hand the task back to the group: 'released', or 'dead' when it failed too often.

        With ``delay_ms`` the task is delivered again only after that long (by the sweeper),
        so a call no worker online can serve does not bounce between them."""
        res = await self.broker.script(
            "release",
            [self.keys.task(fence.task_id)],
            [
                *fence.args(),
                "1" if failed else "0",
                reason,
                self.broker.settings.max_failures,
                int(delay_ms),
            ],
        )
        return _s(res)

    async def holds(self, base: str, fence: Fence) -> bool:
        """True when ``fence`` still holds its task (and its entry's idle time is reset, as a
        heartbeat would). Used before re-running an execution that waited out an outage,
        since the heartbeat thread may not have reported a takeover yet."""
        lost = await self.broker.script(
            "heartbeat",
            [Keys.stream(base, self.group)],
            [self.pid, self.group, self.broker.settings.live_ms, "", fence.task_id, fence.version],
        )
        return not lost[2:]  # lost[0], lost[1]: the scanner's lease and silent flags

    async def takeover(
        self, min_idle_ms: int, count: int, dead: Iterable[str] = ()
    ) -> tuple[list[Claimed], list[str]]:
        """Take over up to ``count`` silent tasks (and all of known-dead consumers' tasks)."""
        held: list[Claimed] = []
        dead_ids: list[str] = []
        dead_list = list(dead)
        for base in self.bases:
            if count - len(held) <= 0:
                break
            args = [
                self.pid,
                self.group,
                min_idle_ms,
                self._cursors[base],
                count - len(held),
                self.broker.settings.max_deliveries,
                *dead_list,
            ]
            rows = await self.broker.script("takeover", [Keys.stream(base, self.group)], args)
            self._cursors[base] = _s(rows[0])
            h, d = parse_claims(rows[1:], base, self.group)
            held += h
            dead_ids += d
        return held, dead_ids

    async def requeue_own(self) -> list[str]:
        """At start: entries still pending under this worker's own name were held by a
        previous process of the same name (``--name``), which died. Hand them back as the
        scanner does for a dead worker (requeue.lua: deaths counted, poison quarantined).
        Returns the quarantined task ids."""
        s = self.broker.settings
        out: list[str] = []
        for base in self.bases:
            res = await self.broker.script(
                "requeue",
                [Keys.stream(base, self.group)],
                [self.pid, self.group, s.max_deaths, s.ttl_ms, s.max_deliveries],
            )
            out += [x.decode() if isinstance(x, bytes) else str(x) for x in res[1]]
        return out

    async def release_unread(self) -> int:
        """At a clean stop, after every running task was handed back: hand back the first
        deliveries still pending under this worker's name, which it never started (a read
        cut short by the stop after Redis had served it: the reply never reached the worker).
        A clean release each (fenced by the entry, no strike), so that the liveness scanner
        does not later count them as run by a dead worker (requeue.lua treats a first
        delivery as running from its read on). Returns how many were handed back."""
        done = 0
        for base in self.bases:
            stream = Keys.stream(base, self.group)
            async with translate_errors():
                rows: Any = await self.broker.redis.xpending_range(
                    stream, CONSUMER_GROUP, "-", "+", 1000, consumername=self.pid
                )
                for row in rows or []:
                    eid = _s(row["message_id"])
                    found: Any = await self.broker.redis.xrange(stream, eid, eid)
                    if not found:
                        continue
                    e = _entry(eid, found[0][1])
                    if e.param is None or not e.tid:
                        continue  # not a first delivery: requeue.lua hands it back unblamed
                    try:
                        await self.release(Fence(e.tid, "~" + eid, self.pid))
                        done += 1
                    except (Fenced, BadInput):
                        pass  # no longer this worker's (taken over, settled): nothing to do
        return done

    async def forget_self(self) -> None:
        """Delete this worker's own consumer from its group (at a clean stop, after every
        task was handed back); kept if it still holds entries."""
        for base in self.bases:
            await self.broker.script("prune", [Keys.stream(base, self.group)], [self.pid])

    async def wait_sweep(self, seconds: float) -> None:
        """Sleep until ``seconds`` pass or a new deadline becomes the earliest (the
        sweep-wake list, BLPOP: an idle fleet's sweeper costs one call per wait, not ten a
        second). On several shards (different hash slots) a plain sleep, at most 0.1 s."""
        if len(self.bases) > 1 or seconds < 0.01:
            await asyncio.sleep(min(seconds, 0.1))
            return
        async with translate_errors():
            await self.blocking.blpop([Keys.sweep_wake(self.bases[0])], timeout=seconds)

    async def sweep(self, lease_ms: int, limit: int = 500) -> tuple[bool, int]:
        """Run the sweeper on every shard; returns (this worker holds a sweep lease, ms until
        the next known deadline or -1)."""
        nxt = -1
        holds = False
        horizon = max(60_000, self.broker.settings.ttl_ms * 10)
        for base in self.bases:
            res = await self.broker.script(
                "sweep", [Keys.sweep_lease(base)], [self.pid, lease_ms, limit, horizon]
            )
            holds = holds or int(res[0]) == 1
            if int(res[0]) == 1 and int(res[3]) >= 0:
                wait = int(res[3]) - int(res[4])
                nxt = wait if nxt < 0 else min(nxt, wait)
        return holds, nxt
