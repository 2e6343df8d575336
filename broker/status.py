"""A read-only snapshot of a deployment, for ``lb status``, ``lb top`` and the metrics: groups,
workers with their state (from the same signals the liveness scanner acts on), what each
holds, completions, takeovers, backlog, and call counts by state. Reads only; safe any time.

Worker state (:func:`worker_state`), so that a view agrees with what recovery does:

* ``alive``: its Redis connection is open (CLIENT LIST, by connection name) and nothing it
  holds has gone unrenewed for its ttl.
* ``stalled``: connected, but an entry it holds was not renewed for its ttl (the scanner
  hands such work to other workers' free slots).
* ``dead``: its connection is gone (the scanner's takeover signal: a kill -9 shows within
  about a second) while it still holds work or was heard from within GONE_SHOW_MS.
* ``gone``: no connection, holds nothing, silent for GONE_SHOW_MS: left out of the views
  (``hidden``) until the sweeper drops it from the registry; ``lb forget`` drops it now.

Without CLIENT LIST (a least-privilege user) connections are unknown and the heartbeat's age
decides: ``alive`` within the worker's live horizon (3 ttl), else ``dead`` or ``gone``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from lb.broker.client import Broker, translate_errors
from lb.broker.errors import BadInput, PermissionDenied
from lb.broker.keys import CONSUMER_GROUP, PROMISE_STATES, Keys

__all__ = ["GONE_SHOW_MS", "forget", "known_functions", "retained", "snapshot", "worker_state"]

GONE_SHOW_MS = 30_000  # a worker without connection or work stays in view this long


def _s(b: Any) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def worker_state(
    connected: bool | None,
    seen_age_ms: int,
    holding: int,
    oldest_idle_ms: int,
    ttl_ms: int,
    live_ms: int,
) -> str:
    """The state of one worker (module docstring); pure, so the rules are tested alone."""
    if connected is None:
        if seen_age_ms < live_ms:
            return "alive"
        return "dead" if holding or seen_age_ms < live_ms + GONE_SHOW_MS else "gone"
    if not connected:
        return "dead" if holding or seen_age_ms < GONE_SHOW_MS else "gone"
    return "stalled" if holding and oldest_idle_ms >= ttl_ms else "alive"


async def connected_workers(broker: Broker) -> set[str] | None:
    """Worker names of this prefix with an open connection; None without CLIENT LIST."""
    try:
        async with translate_errors():
            clients = await broker.redis.client_list()
    except PermissionDenied:
        return None
    return Keys.connected(broker.settings.prefix, {c.get("name", "") for c in clients})


async def call_counts(broker: Broker) -> dict[str, int]:
    """Calls (promises with a task: no ctx.run steps, no ctx.sleep timers) by state, from the
    counters lib.lua moves with every transition. Calls created before the counters existed
    are not in them: a count never shows below zero."""
    counts = dict.fromkeys(PROMISE_STATES, 0)
    async with translate_errors():
        for base in broker.keys.all_bases():
            raw: Any = await broker.redis.hgetall(Keys.counts(base))
            for k, v in raw.items():
                if _s(k) in counts:
                    counts[_s(k)] += int(v)
    return {k: max(0, v) for k, v in counts.items()}


def _worker() -> dict[str, Any]:
    return {"state": "gone", "alive": False, "running": 0, "held": [], "done": 0,
            "takeovers": 0, "last_seen_ms": None, "takeover_age_ms": None,
            "taken_from_age_ms": None, "abandoned": 0}  # fmt: skip


async def snapshot(broker: Broker, max_held: int = 200, keep_gone: bool = False) -> dict[str, Any]:
    """The deployment now (module docstring). ``max_held``: task ids listed per group;
    workers in state ``gone`` are left out (counted in ``hidden``) unless ``keep_gone``."""
    r = broker.redis
    names = await connected_workers(broker)
    out: dict[str, Any] = {
        "redis": broker.settings.safe_url,
        "prefix": broker.settings.prefix,
        "connections_known": names is not None,
        "groups": {},
        "calls": await call_counts(broker),
        "promises": await broker.count_by_state(),
        **await retained(broker),
    }
    async with translate_errors():
        t: Any = await r.time()
        now = int(t[0]) * 1000 + int(t[1]) // 1000
        out["now_ms"] = now
        for base in broker.keys.all_bases():
            for g in sorted(_s(x) for x in await r.smembers(Keys.groups(base))):
                grp = out["groups"].setdefault(
                    g,
                    {
                        "backlog": 0,
                        "in_flight": 0,
                        "workers": {},
                        "dead_letters": 0,
                        "takeovers": [],
                        "hidden": 0,
                        "dead_by_reason": {},
                        "takeovers_by_cause": {},
                    },
                )
                await _group(broker, base, g, grp, now, names, max_held)
    for grp in out["groups"].values():
        gone = [w for w, wi in grp["workers"].items() if wi["state"] == "gone" and not keep_gone]
        for w in gone:
            del grp["workers"][w]
        grp["hidden"] = len(gone)
        grp["takeovers"].sort(key=lambda e: -e["at_ms"])
    return out


async def _group(
    broker: Broker, base: str, g: str, grp: dict[str, Any], now: int,
    names: set[str] | None, max_held: int,
) -> None:  # fmt: skip
    r = broker.redis
    stream = Keys.stream(base, g)
    workers: dict[str, dict[str, Any]] = grp["workers"]
    length = int(await r.xlen(stream))
    pend: Any = await r.xpending(stream, CONSUMER_GROUP) if length else {"pending": 0}
    grp["in_flight"] += int(pend.get("pending", 0))
    grp["backlog"] += max(0, length - int(pend.get("pending", 0)))
    grp["dead_letters"] += int(await r.xlen(Keys.dead_letters(base, g)))
    grp.setdefault("oldest_waiting_ms", 0)
    if length > int(pend.get("pending", 0)):
        # The first entry never delivered: the one after the group's last delivered id.
        info: Any = await r.xinfo_groups(stream)
        last = next((_s(i["last-delivered-id"]) for i in info if _s(i["name"]) == CONSUMER_GROUP),
                    "0-0")  # fmt: skip
        first: Any = await r.xrange(stream, f"({last}", "+", count=1)
        if first:
            age = now - int(_s(first[0][0]).split("-", 1)[0])
            grp["oldest_waiting_ms"] = max(grp["oldest_waiting_ms"], age)
    for c in pend.get("consumers") or []:
        workers.setdefault(_s(c["name"]), _worker())["running"] += int(c["pending"])
    members: Any = await r.zrange(Keys.workers(base, g), 0, -1, withscores=True)
    for name, seen in members:
        workers.setdefault(_s(name), _worker())["last_seen_ms"] = now - int(seen)
    stats: Any = await r.hgetall(Keys.stats(base, g))
    for k, v in stats.items():
        kind, _, name = _s(k).partition(":")
        if kind == "done":
            workers.setdefault(name, _worker())["done"] += int(v)
        elif kind == "takeover":
            workers.setdefault(name, _worker())["takeovers"] += int(v)
        elif kind == "takeover_at" and name in workers:
            workers[name]["takeover_age_ms"] = now - int(v)
        elif kind == "taken_at" and name in workers:
            workers[name]["taken_from_age_ms"] = now - int(v)
        elif kind == "dlq":
            grp["dead_by_reason"][name] = grp["dead_by_reason"].get(name, 0) + int(v)
        elif kind == "cause":
            grp["takeovers_by_cause"][name] = grp["takeovers_by_cause"].get(name, 0) + int(v)
    oldest: dict[str, int] = {}
    if grp["in_flight"]:
        rows: Any = await r.xpending_range(stream, CONSUMER_GROUP, "-", "+", max_held)
        pipe = r.pipeline(transaction=False)
        for row in rows:
            eid = _s(row["message_id"])
            pipe.xrange(stream, eid, eid)
        for row, entry in zip(rows, await pipe.execute(), strict=True):
            name = _s(row["consumer"])
            oldest[name] = max(oldest.get(name, 0), int(row["time_since_delivered"]))
            tid = _s(entry[0][1].get(b"t", b"?")) if entry else "?"
            workers.setdefault(name, _worker())["held"].append(tid)
    for raw in await r.lrange(Keys.takeovers(base, g), 0, 19):
        at, tid, prev, new, cause = msgpack.unpackb(raw, raw=False)
        grp["takeovers"].append(
            {
                "at_ms": int(at),
                "age_ms": now - int(at),
                "id": tid,
                "from": prev,
                "to": new,
                "cause": cause,
            }
        )
    pipe = r.pipeline(transaction=False)
    order = sorted(workers)
    for name in order:
        pipe.hmget(Keys.worker_info(base, name), ["ttl", "abandoned", "slots"])
    for name, (ttl, stuck, slots) in zip(order, await pipe.execute(), strict=True):
        wi = workers[name]
        wi["abandoned"] = int(stuck or 0)
        wi["slots"] = int(slots) if slots else None
        seen_age = wi["last_seen_ms"] if wi["last_seen_ms"] is not None else 10**9
        ttl_ms = int(ttl) if ttl else broker.settings.ttl_ms
        wi["state"] = worker_state(
            None if names is None else name in names, seen_age, wi["running"],
            oldest.get(name, 0), ttl_ms, max(3 * ttl_ms, 3000),
        )  # fmt: skip
        wi["alive"] = wi["state"] == "alive"


async def forget(broker: Broker, workers: list[str] | None) -> list[str]:
    """Drop workers from every group's registry, info and stats (what ``lb status`` and ``lb
    top`` show): the named ones, or with ``None`` every worker that is ``gone``, or ``dead``
    holding nothing. A named worker that is connected or holds work is refused (BadInput):
    forgetting never touches work in flight. Returns the names dropped."""
    snap = await snapshot(broker, keep_gone=True)
    r = broker.redis
    dropped: set[str] = set()
    for g, grp in snap["groups"].items():
        if workers is None:
            pick = [
                w
                for w, wi in grp["workers"].items()
                if wi["state"] == "gone" or (wi["state"] == "dead" and not wi["running"])
            ]
        else:
            pick = [w for w in workers if w in grp["workers"]]
            for w in pick:
                wi = grp["workers"][w]
                if wi["running"] or wi["state"] in ("alive", "stalled"):
                    what = f"holds {wi['running']} call(s)" if wi["running"] else wi["state"]
                    raise BadInput(
                        f"worker {w} {what}: stop it first (forgetting never touches a live "
                        "worker or work in flight)"
                    )
        async with translate_errors():
            for base in broker.keys.all_bases():
                stats = [_s(k) for k in await r.hkeys(Keys.stats(base, g))]
                for w in pick:
                    pipe = r.pipeline(transaction=False)
                    pipe.zrem(Keys.workers(base, g), w)
                    fields = [k for k in stats if k.partition(":")[2] == w]
                    if fields:
                        pipe.hdel(Keys.stats(base, g), *fields)
                    pipe.delete(Keys.worker_info(base, w))
                    await pipe.execute()
                    await broker.script("prune", [Keys.stream(base, g)], [w])
                    dropped.add(w)
    return sorted(dropped)


async def known_functions(broker: Broker, group: str) -> set[str] | None:
    """Function names served by the group's live workers, or None when no worker is live."""
    r = broker.redis
    names: set[str] = set()
    live = False
    async with translate_errors():
        t: Any = await r.time()
        now = int(t[0]) * 1000 + int(t[1]) // 1000
        horizon = broker.settings.live_ms
        for base in broker.keys.all_bases():
            for w in await r.zrangebyscore(Keys.workers(base, group), now - horizon, "+inf"):
                funcs = await r.hget(Keys.worker_info(base, _s(w)), "funcs")
                if funcs is not None:
                    live = True
                    names.update(x for x in _s(funcs).split(",") if x)
    return names if live else None


async def retained(broker: Broker, sample: int = 50) -> dict[str, int]:
    """Settled promises waiting for their purge (the gc index) and an estimate of the memory
    they use: MEMORY USAGE of a sample of them (promise and task hashes), times the count."""
    count = used = sampled = 0
    r = broker.redis
    async with translate_errors():
        for base in broker.keys.all_bases():
            gc = f"{base}:gc"
            n = int(await r.zcard(gc))
            count += n
            if not n:
                continue
            ids: Any = await r.zrandmember(gc, min(sample, n))
            for raw in ids or []:
                pid = raw.decode("utf-8", "surrogateescape")
                for key in (f"{base}:p:{pid}", f"{base}:t:{pid}"):
                    used += int(await r.memory_usage(key) or 0)
                sampled += 1
    per = used / sampled if sampled else 0
    return {"retained": count, "retained_bytes_estimate": int(per * count)}
