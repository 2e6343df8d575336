"""Leak checks on Redis after the drain: the group stream, stray keys, keys that never expire.

What may stay without an expiry is what ARCHITECTURE.md's key table calls permanent: the group
streams and dead-letter streams, the group registry, the worker registry zsets, the timeout /
gc / index zsets. A promise or task hash with no expiry must belong to a *pending* promise (it
is then in the timeouts zset and the sweeper will settle it); callbacks and listener sets too.
"""

from __future__ import annotations

from typing import Any

import redis

from lb.broker.keys import CONSUMER_GROUP, Keys

__all__ = ["check_leaks"]

PERMANENT = ("q", "dlq", "groups", "w", "timeouts", "gc", "ix", "delayed", "n")
WITH_PROMISE = ("p", "t", "cb", "ls", "ch")


def _s(b: Any) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


# The call counters and the calls they count, read in one atomic step: the sweeper purges
# settled calls while the check runs (short retention), so two separate reads could disagree.
_COUNT_CALLS = """
local base, cursor, actual = ARGV[1], '0', {}
repeat
  local r = redis.call('SCAN', cursor, 'MATCH', base .. ':p:*', 'COUNT', 1000)
  cursor = r[1]
  for _, key in ipairs(r[2]) do  -- a call's promise names its group ('g'), settled or not
    local h = redis.call('HMGET', key, 'state', 'g')
    if h[1] and h[2] then actual[h[1]] = (actual[h[1]] or 0) + 1 end
  end
until cursor == '0'
local flat = {}
for k, v in pairs(actual) do table.insert(flat, k); table.insert(flat, v) end
return {redis.call('HGETALL', base .. ':n'), flat}
"""


def _call_counts(cl: Any, base: str) -> tuple[dict[str, int], dict[str, int]]:
    counted_raw, actual_raw = cl.eval(_COUNT_CALLS, 0, base)

    def pairs(flat: list[Any]) -> dict[str, int]:
        it = iter(flat)
        return {_s(k): int(v) for k, v in zip(it, it, strict=True) if int(v)}

    return pairs(counted_raw), pairs(actual_raw)


def check_leaks(url: str, prefix: str, group: str = "chaos") -> dict[str, Any]:
    cl = redis.Redis.from_url(url, socket_timeout=30)
    try:
        base = Keys(prefix).base(0)
        stream = Keys.stream(base, group)
        xlen = int(cl.xlen(stream))
        pending = 0
        if cl.exists(stream):
            pending = int(cl.xpending(stream, CONSUMER_GROUP)["pending"])
        outside: list[str] = []
        no_expiry: list[str] = []
        pending_promises = 0
        timeouts = Keys.timeouts(base)
        scanned = 0
        for key in cl.scan_iter(count=2000):
            scanned += 1
            k = key.decode("utf-8", "surrogateescape")
            if not k.startswith(base + ":"):
                outside.append(k[:120])
                continue
            kind, _, name = k[len(base) + 1 :].partition(":")
            if kind in PERMANENT:
                continue
            if cl.pttl(key) != -1:
                continue
            if kind in WITH_PROMISE:
                # A step of a pending root is kept until the root settles (retention rule).
                owner = name.split(":", 1)[0] if kind == "ch" or ":" in name else name
                state = cl.hget(Keys(prefix).promise(owner), "state")
                if owner != name and state == b"pending":
                    continue
                if state == b"pending" and cl.zscore(timeouts, name) is not None:
                    if kind == "p":
                        pending_promises += 1
                    continue
            no_expiry.append(k[:120])
        dlq = int(cl.xlen(Keys.dead_letters(base, group)))
        counted, calls = _call_counts(cl, base)
        pend_ix = Keys.state_index(base, "pending")
        still = [_s(x) for x in cl.zrange(pend_ix, 0, 4)]
        return {
            "stream_len": xlen,
            "stream_pending": pending,
            "keys": scanned,
            "outside_prefix": len(outside),
            "outside_examples": outside[:5],
            "no_expiry": len(no_expiry),
            "no_expiry_examples": no_expiry[:5],
            "pending_promises": pending_promises,
            "pending_after_drain": int(cl.zcard(pend_ix)),
            "pending_examples": still,
            "dead_letters": dlq,
            "calls_counted": counted,
            "calls_actual": calls,
            "leaks": xlen + pending + len(outside) + len(no_expiry) + int(counted != calls),
        }
    finally:
        cl.close()


def entry_present(url: str, prefix: str, eid: str, group: str = "chaos") -> bool:
    cl = redis.Redis.from_url(url)
    try:
        return bool(cl.xrange(Keys.stream(Keys(prefix).base(0), group), eid, eid))
    finally:
        cl.close()


def dead_letter_reasons(url: str, prefix: str, group: str = "chaos") -> dict[str, str]:
    """Dead-lettered entry id -> reason."""
    cl = redis.Redis.from_url(url)
    try:
        out: dict[str, str] = {}
        rows: Any = cl.xrange(Keys.dead_letters(Keys(prefix).base(0), group), "-", "+")
        for _, fields in rows:
            out[_s(fields.get(b"eid", b""))] = _s(fields.get(b"reason", b""))
        return out
    finally:
        cl.close()
