"""A read-only snapshot of a deployment: groups, live workers and what they hold, backlog,
counts by state, completions and takeovers per worker. Reads only; safe to call any time."""

from __future__ import annotations

from typing import Any

from lb.broker.client import Broker, translate_errors
from lb.broker.keys import CONSUMER_GROUP, Keys

__all__ = ["snapshot"]


def _s(b: Any) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


async def snapshot(broker: Broker, max_held: int = 200) -> dict[str, Any]:
    r = broker.redis
    out: dict[str, Any] = {
        "redis": broker.settings.safe_url,
        "prefix": broker.settings.prefix,
        "groups": {},
        "promises": await broker.count_by_state(),
        **await retained(broker),
    }
    async with translate_errors():
        t: Any = await r.time()
        now = int(t[0]) * 1000 + int(t[1]) // 1000
        live_horizon = broker.settings.live_ms
        for base in broker.keys.all_bases():
            for g in sorted(_s(x) for x in await r.smembers(Keys.groups(base))):
                grp = out["groups"].setdefault(
                    g, {"backlog": 0, "in_flight": 0, "workers": {}, "dead_letters": 0}
                )
                stream = Keys.stream(base, g)
                length = int(await r.xlen(stream))
                pend = await r.xpending(stream, CONSUMER_GROUP) if length else {"pending": 0}
                grp["in_flight"] += int(pend.get("pending", 0))
                grp["backlog"] += max(0, length - int(pend.get("pending", 0)))
                grp["dead_letters"] += int(await r.xlen(Keys.dead_letters(base, g)))
                members: Any = await r.zrange(Keys.workers(base, g), 0, -1, withscores=True)
                for name, seen in members:
                    w = grp["workers"].setdefault(_s(name), {"held": [], "done": 0, "takeovers": 0})
                    w["last_seen_ms"] = now - int(seen)
                    w["alive"] = now - int(seen) < live_horizon
                    stuck = await r.hget(Keys.worker_info(base, _s(name)), "abandoned")
                    w["abandoned"] = int(stuck or 0)
                stats: Any = await r.hgetall(Keys.stats(base, g))
                for k, v in stats.items():
                    kind, _, name = _s(k).partition(":")
                    w = grp["workers"].setdefault(
                        name, {"held": [], "done": 0, "takeovers": 0, "alive": False}
                    )
                    w["done" if kind == "done" else "takeovers"] += int(v)
                if grp["in_flight"]:
                    rows = await r.xpending_range(stream, CONSUMER_GROUP, "-", "+", max_held)
                    for row in rows:
                        eid = _s(row["message_id"])
                        entry: Any = await r.xrange(stream, eid, eid)
                        tid = _s(entry[0][1].get(b"t", b"?")) if entry else "?"
                        w = grp["workers"].setdefault(
                            _s(row["consumer"]),
                            {"held": [], "done": 0, "takeovers": 0, "alive": False},
                        )
                        w["held"].append(tid)
    return out


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
