"""The liveness scanner: one process per Redis finds dead workers and hands their work back.

A worker that dies (kill -9, the OOM killer, a crash, a lost node) leaves entries in its
group's pending list and no Redis connection under its name. One worker at a time (whoever
holds the ``scan`` lease; the holder renews it on every pass) looks, at a fixed cadence
(SCAN_PERIOD_S, whatever the ttl): XINFO CONSUMERS per group and, only when a consumer holds
entries (CLIENT LIST's cost grows with every client of the Redis; an idle fleet pays it once
per PRUNE_EVERY_S), CLIENT LIST once. A second worker holds the ``scan-standby`` lease and
checks the scanner's every period: when the scanner dies its lease lapses after LEASE_MS and
the standby takes it within a period. Heartbeats take either lease when it is free (no extra
call). A consumer with pending entries and no connection, seen so on two passes at least
CONFIRM_S apart (or once, by a standby that just took the lease of that very consumer: the
lapse was the first sighting), is dead; its work goes back on its group's stream at once
(requeue.lua: the dead holder is fenced, holder deaths are counted and poison calls
quarantined), where any worker with a free slot reads it. Consumers that hold nothing and
are gone are deleted. A consumer that is connected but has not renewed its entries for its
own ttl (a stalled process, a partition: XINFO's idle time, reset by every heartbeat) gets
the same treatment without a death counted (flagged for the group's workers, which take it
into their free slots). So the liveness cost is one scan per Redis per period, not one per
worker per ttl/5, a kill -9 is noticed in about SCAN_PERIOD_S + CONFIRM_S at any ttl, and a
stall after its ttl.

After a Redis restart every worker reconnects on its own schedule: while Redis has been up less
than RESTART_GRACE_S, a consumer must be gone for RESTART_CONFIRM_S before it counts as dead.
Without CLIENT LIST (a least-privilege user) every consumer counts as connected, with one
warning: a dead worker's work then goes back after its ttl, like a stalled one's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions as rexc

from lb.broker.client import Broker, translate_errors
from lb.broker.errors import PermissionDenied
from lb.broker.keys import CONSUMER_GROUP, Keys

__all__ = ["CONFIRM_S", "SCAN_PERIOD_S", "Scanner"]

log = logging.getLogger("lb.broker")

SCAN_PERIOD_S = 0.2  # the holder's cadence (it renews the lease on every pass)
CONFIRM_S = 0.15  # a consumer must be seen gone on two passes at least this far apart
LEASE_MS = 500  # as heartbeats set it (broker/heartbeat.py SCAN_LEASE_MS)
RESTART_GRACE_S = 10  # after a Redis (re)start, for this long...
RESTART_CONFIRM_S = 3.0  # ...a consumer must be gone this long: workers are reconnecting
PRUNE_IDLE_MS = 60_000
GROUPS_EVERY_S = 1.0  # the scanner reads the set of groups this often
PRUNE_EVERY_S = 10.0  # an idle fleet's scanner lists clients this often (to prune consumers)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class Scanner:
    """Run :meth:`scan` every SCAN_PERIOD_S from every worker: only the lease holder works."""

    def __init__(
        self,
        broker: Broker,
        pid: str,
        take: Callable[[str, int], Awaitable[int]] | None = None,
    ) -> None:
        """``take(group, ttl_ms)``: the scanner's own worker takes silent work of its group
        into its free slots first (takeover.lua) - a stalled holder's blocked read would
        otherwise be the first to get what goes back on the stream."""
        self.broker = broker
        self.pid = pid
        self.take = take
        self.denied = False
        self._suspect: dict[tuple[str, str], float] = {}  # (stream, consumer) -> first seen
        self.role = 0  # 1 the scanner's lease, 2 the standby's, 0 neither (lease.lua)
        self._watched: str | None = None  # the scanner's lease holder, as the standby saw it
        self._pruned_at = float("-inf")
        self._groups_at = float("-inf")
        self._group_list: list[tuple[str, str]] = []
        self._ttls: dict[str, int] = {}  # consumer -> its ttl ms (from its info hash)

    async def scan(self) -> list[tuple[str, str, list[str]]]:
        """One pass. Returns (group, dead consumer, quarantined task ids) per consumer whose
        work was handed back. The standby only renews its lease (and takes the scanner's the
        moment it lapses); others make this one call."""
        base0 = self.broker.keys.base(0)
        role, holder = await self.broker.script(
            "lease", [Keys.scan_lease(base0), Keys.scan_standby(base0)], [self.pid, LEASE_MS]
        )
        was, self.role = self.role, int(role)
        if self.role != 1:
            self._suspect.clear()
            self._watched = _s(holder) or None
            return []
        # Just taken from a scanner that stopped renewing for LEASE_MS (seen by our standby
        # polls): if it has no connection either, that is the second sighting already.
        lapsed = self._watched if was == 2 and self._watched != self.pid else None
        self._watched = None
        r = self.broker.redis
        groups: list[tuple[str, str, str, list[Any]]] = []  # (base, group, stream, consumers)
        for base, group in await self._groups():
            stream = Keys.stream(base, group)
            try:
                async with translate_errors():
                    consumers = await r.xinfo_consumers(stream, CONSUMER_GROUP)
            except rexc.ResponseError:
                continue
            groups.append((base, group, stream, consumers))
        now = time.monotonic()
        holding = any(int(c.get("pending", 0)) for g in groups for c in g[3])
        if not holding and now - self._pruned_at < PRUNE_EVERY_S:
            self._suspect.clear()
            return []  # an idle fleet: nothing to hand back, no CLIENT LIST to pay for
        names = await self._connected()
        self._pruned_at = now
        uptime = await self._uptime()
        confirm = RESTART_CONFIRM_S if uptime < RESTART_GRACE_S else CONFIRM_S
        if uptime < RESTART_GRACE_S:
            lapsed = None
        settings = self.broker.settings
        seen: dict[tuple[str, str], float] = {}
        out: list[tuple[str, str, list[str]]] = []
        for base, group, stream, consumers in groups:
            prune: list[str] = []
            silent = await self._silent(base, stream, consumers)
            for c in consumers:
                name = _s(c.get("name", b""))
                pending, idle = int(c.get("pending", 0)), int(c.get("idle", 0))
                if names is None or name in names:
                    # Our own name too: a restarted worker reuses its name (--name), and
                    # what its previous process held is silent past the ttl.
                    if name in silent:
                        if await self._reclaim(base, stream, group, name):
                            out.append((group, name, []))
                    elif not pending and names is None and idle > PRUNE_IDLE_MS:
                        prune.append(name)  # without CLIENT LIST: long silent, empty
                    continue
                if not pending:
                    prune.append(name)
                    continue
                first = float("-inf") if name == lapsed else self._suspect.get((stream, name), now)
                seen[(stream, name)] = first
                if now - first < confirm:
                    continue
                res = await self.broker.script(
                    "requeue",
                    [stream],
                    [
                        name,
                        group,
                        settings.max_deaths,
                        settings.ttl_ms,
                        settings.max_deliveries,
                    ],
                )
                seen.pop((stream, name), None)
                out.append((group, name, [_s(x) for x in res[1]]))
            if prune:
                await self.broker.script("prune", [stream], prune[:100])
        self._suspect = seen
        return out

    async def _groups(self) -> list[tuple[str, str]]:
        """(base, group) of every group, read again every GROUPS_EVERY_S."""
        now = time.monotonic()
        if now - self._groups_at >= GROUPS_EVERY_S:
            found: list[tuple[str, str]] = []
            for base in self.broker.keys.all_bases():
                async with translate_errors():
                    members = await self.broker.redis.smembers(Keys.groups(base))
                found += [(base, g) for g in sorted(_s(m) for m in members)]
            self._group_list, self._groups_at = found, now
        return self._group_list

    async def _connected(self) -> set[str] | None:
        """The workers of this prefix with a connection to this Redis (by connection name,
        broker/keys.py conn_name; names with no prefix too, as older workers set them);
        None without CLIENT LIST."""
        try:
            if self.denied:
                raise PermissionDenied("CLIENT LIST")
            async with translate_errors():
                clients = await self.broker.redis.client_list()
            return Keys.connected(self.broker.settings.prefix, {c.get("name", "") for c in clients})
        except PermissionDenied:
            if not self.denied:
                log.warning(
                    "CLIENT LIST is not permitted to this Redis user: a dead worker's tasks are "
                    "taken over after the ttl, not at once when its connection drops"
                )
            self.denied = True
            return None

    async def _uptime(self) -> int:
        try:
            async with translate_errors():
                return int((await self.broker.redis.info("server")).get("uptime_in_seconds", 10**6))
        except PermissionDenied:
            return 10**6

    async def _ttl(self, base: str, name: str) -> int:
        """A worker's own ttl (its info hash; this worker's when it has none), cached."""
        if name not in self._ttls:
            async with translate_errors():
                raw = await self.broker.redis.hget(Keys.worker_info(base, name), "ttl")
            self._ttls[name] = int(raw) if raw else self.broker.settings.ttl_ms
        return self._ttls[name]

    async def _silent(self, base: str, stream: str, consumers: list[Any]) -> set[str]:
        """Consumers with an entry idle past their own ttl. Entry idle times, not XINFO's
        consumer idle time: a stalled worker's blocking XREADGROUP, served while it is
        stopped, refreshes the latter."""
        holding = [_s(c.get("name", b"")) for c in consumers if int(c.get("pending", 0))]
        if not holding:
            return set()
        least = min([await self._ttl(base, n) for n in holding])
        async with translate_errors():
            rows: Any = await self.broker.redis.xpending_range(
                stream, CONSUMER_GROUP, "-", "+", 1000, idle=least
            )
        out: set[str] = set()
        for row in rows or []:
            name, idle = _s(row["consumer"]), int(row["time_since_delivered"])
            if idle >= await self._ttl(base, name):
                out.add(name)
        return out

    async def _reclaim(self, base: str, stream: str, group: str, name: str) -> int:
        """A connected consumer silent past its own ttl (from its info hash; this worker's
        ttl if it has none): its entries idle that long are taken into free slots, here or
        by the group's other workers (flagged through their heartbeats)."""
        ttl = await self._ttl(base, name)
        taken = await self.take(group, ttl) if self.take is not None else 0
        # What this worker could not take: flag it for the group's other workers, whose next
        # heartbeat (ttl/5 away when busy, 1.5 ttl when idle) sees the flag and runs a takeover
        # pass into their free slots. Not put back on the stream: the silent worker's own
        # blocked read would be the first to get it.
        async with translate_errors():
            await self.broker.redis.set(Keys.silent(base, group), self.pid, px=2000)
        return taken
