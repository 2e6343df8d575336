"""Read-only look-ups for the views (``lb dashboard``): one promise with its task, its children
and a timeline, and the latest dead letters of a group.

Guarantees:

* Reads only, except what every reader of a promise does: :meth:`Broker.get` applies the lazy
  timeout of a promise past its deadline (as ``lb get`` does), so the views show the state a
  caller would get.
* Bounded: children are probed by their deterministic ids (``<id>:<n>`` under a root,
  ``<id>.<n>`` under a step; ARCHITECTURE's key schema) in pipelined chunks, at most
  CHILDREN_MAX of them; takeovers are read from the group's last ones (``tk:<group>``) and
  dead letters from the newest DEAD_SCAN entries of ``dlq:<group>``. No key scans.
* Previews of values and arguments are at most PREVIEW_CHARS characters of JSON, decoded with
  the codec's limits (msgpack, never pickle): a hostile payload cannot blow up a view.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import redis.exceptions as rexc

from lb.broker.client import Broker, translate_errors
from lb.broker.codec import decode
from lb.broker.errors import BadInput
from lb.broker.keys import CONSUMER_GROUP, Keys, check_id

__all__ = ["CHILDREN_MAX", "DEAD_SCAN", "PREVIEW_CHARS", "lookup", "recent_dead_letters"]

CHILDREN_MAX = 500
DEAD_SCAN = 200
PREVIEW_CHARS = 200
_CHUNK = 50
_TASK_FIELDS = ("state", "v", "pid", "group", "eid", "strikes", "lapses", "deaths", "suspect",
                "dead", "fails")  # fmt: skip


def _s(b: Any) -> str:
    return b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else str(b)


def _i(b: Any) -> int:
    try:
        return int(b) if b not in (None, b"", "") else 0
    except ValueError:
        return 0


def preview(data: bytes, max_payload: int) -> str:
    """At most PREVIEW_CHARS characters of JSON for a msgpack payload ('' for none)."""
    if not data:
        return ""
    try:
        text = json.dumps(decode(data, max_payload), default=repr, ensure_ascii=False)
    except (BadInput, ValueError, RecursionError):
        text = repr(data[:PREVIEW_CHARS])
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _error(data: bytes, max_payload: int) -> dict[str, str]:
    try:
        body = decode(data, max_payload, what="error") if data else {}
    except BadInput:
        body = {}
    if isinstance(body, dict) and "type" in body:
        return {"type": str(body["type"]), "message": str(body.get("message", ""))[:1000]}
    return {"type": "Rejected", "message": preview(data, max_payload)}


def _call(param: bytes, max_payload: int) -> dict[str, Any] | None:
    """The function and arguments of a call's params (kept until it resolves), else None."""
    if not param:
        return None
    try:
        body = decode(param, max_payload, what="params")
    except BadInput:
        return None
    if not isinstance(body, dict) or "func" not in body:
        return None
    args = {"args": body.get("args", []), "kwargs": body.get("kwargs", {})}
    text = json.dumps(args, default=repr, ensure_ascii=False)
    return {
        "func": str(body["func"])[:128],
        "args": text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…",
        "parent": body.get("parent") if isinstance(body.get("parent"), str) else None,
    }


def child_ids(pid: str, first: int, count: int) -> list[str]:
    """Ids of children ``first .. first+count-1`` of ``pid``: ``<root>:<n>``, ``<step>.<n>``."""
    sep = "." if ":" in pid else ":"
    return [f"{pid}{sep}{n}" for n in range(first, first + count)]


async def _children(broker: Broker, pid: str) -> tuple[list[dict[str, Any]], bool]:
    """Existing children in order (probing chunk by chunk until a chunk has none); and whether
    there may be more than CHILDREN_MAX."""
    r = broker.redis
    out: list[dict[str, Any]] = []
    n = 1
    while n <= CHILDREN_MAX:
        ids = child_ids(pid, n, min(_CHUNK, CHILDREN_MAX - n + 1))
        pipe = r.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(broker.keys.promise(cid),
                       ["state", "created_at", "settled_at", "timer", "g"])  # fmt: skip
            pipe.hmget(broker.keys.task(cid), ["state", "pid", "group"])
        rows = await pipe.execute()
        found = 0
        for i, cid in enumerate(ids):
            state, created, settled, timer, pgroup = rows[2 * i]
            if state is None:
                continue
            found += 1
            tstate, holder, group = rows[2 * i + 1]
            group = group or pgroup  # a settled call has no task hash: its promise's group
            kind = (
                "call"
                if tstate is not None or pgroup
                else ("sleep" if _s(timer) == "1" else "step")
            )
            out.append(
                {
                    "id": cid,
                    "kind": kind,
                    "state": _s(state),
                    "created_at": _i(created),
                    "settled_at": _i(settled) or None,
                    "task_state": _s(tstate) if tstate is not None else None,
                    "holder": _s(holder) if holder else None,
                    "group": _s(group) if group else None,
                }
            )
        if not found:
            return out, False
        n += len(ids)
    return out, True


async def _takeovers_of(broker: Broker, pid: str, group: str) -> list[dict[str, Any]]:
    base = broker.keys.base_for(pid)
    out = []
    for raw in await broker.redis.lrange(Keys.takeovers(base, group), 0, -1):
        try:
            at, tid, prev, new, cause = msgpack.unpackb(raw, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            continue
        if tid == pid:
            out.append({"at_ms": int(at), "from": prev, "to": new, "cause": cause})
    return out


def _dead_row(eid: Any, fields: Any) -> dict[str, Any]:
    f = {_s(k): _s(v) for k, v in fields.items()}
    reason = f.get("reason", "")
    return {
        "entry": _s(eid),
        "at_ms": _i(f.get("at")) or _i(_s(eid).split("-", 1)[0]),
        "id": f.get("t", ""),
        "reason": reason[:500],
        "poison": reason.startswith("quarantined"),
    }


async def recent_dead_letters(broker: Broker, group: str, count: int = 10) -> list[dict[str, Any]]:
    """The newest ``count`` entries of the group's dead-letter streams (all shards), newest
    first: entry id, time (Redis ms), call id, reason, and ``poison`` for a quarantined call
    (one that kept killing its workers)."""
    out: list[dict[str, Any]] = []
    async with translate_errors():
        for base in broker.keys.all_bases():
            rows: Any = await broker.redis.xrevrange(Keys.dead_letters(base, group), count=count)
            out.extend(_dead_row(eid, fields) for eid, fields in rows)
    out.sort(key=lambda d: d["entry"], reverse=True)
    return out[:count]


async def _dead_letters_of(broker: Broker, pid: str, group: str) -> list[dict[str, Any]]:
    key = Keys.dead_letters(broker.keys.base_for(pid), group)
    rows: Any = await broker.redis.xrevrange(key, count=DEAD_SCAN)
    return [d for d in (_dead_row(e, f) for e, f in rows) if d["id"] == pid]


async def _fast_holder(broker: Broker, pid: str, task: dict[str, Any]) -> None:
    """Show a call run straight from its first entry (pending at version 0, its entry in a
    worker's pending list) as held by that worker, at the version its first write gives."""
    if not task["eid"]:
        return
    q = Keys.stream(broker.keys.base_for(pid), task["group"])
    try:
        rows: Any = await broker.redis.xpending_range(
            q, CONSUMER_GROUP, task["eid"], task["eid"], 1
        )
    except rexc.ResponseError:  # NOGROUP: the stream or its group deleted by hand
        return
    if rows:
        task |= {"state": "acquired", "pid": _s(rows[0]["consumer"]), "v": "1"}


async def lookup(broker: Broker, pid: str) -> dict[str, Any]:
    """One promise as the dashboard shows it: the record (value or error preview, the call's
    function and arguments while it has them), its task (state, holder, version, lapses, ...),
    its children (id, kind: call / step / sleep, state, holder) and a timeline, oldest first,
    of what is known: created, queued, takeovers, dead-lettered, held now, settled.

    Raises :class:`BadInput` for an invalid id, :class:`NotFound` for an unknown one."""
    check_id(pid)
    p = await broker.get(pid)
    mp = broker.settings.max_payload
    rec: dict[str, Any] = p.to_json()
    rec["read_at"] = p.read_at or None
    if p.state == "resolved":
        rec["value"] = preview(p.value, mp)
    elif p.settled:
        rec["error"] = _error(p.value, mp)
    rec["call"] = _call(p.param, mp)
    timeline: list[dict[str, Any]] = [{"at_ms": p.created_at, "what": "created", "detail": ""}]
    async with translate_errors():
        pipe = broker.redis.pipeline(transaction=False)
        pipe.hmget(broker.keys.task(pid), list(_TASK_FIELDS))
        pipe.hget(broker.keys.promise(pid), "g")
        raw, pgroup = await pipe.execute()
        task = None
        if raw[0] is not None:
            task = {
                k: (_s(v) if v is not None else None)
                for k, v in zip(_TASK_FIELDS, raw, strict=True)
            }
        elif pgroup:  # a settled call: its task hash went at settle, its promise names the group
            task = dict.fromkeys(_TASK_FIELDS) | {"state": "fulfilled", "group": _s(pgroup)}
        children, more = await _children(broker, pid)
        takeovers: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        if task and task["group"] and task["state"] == "pending" and task["v"] == "0":
            # A first delivery runs straight from its entry before any write acquires it
            # (lib.lua held()): the reader of that entry, from the group's pending list, is
            # its holder (a stream or group deleted by hand: none shown).
            await _fast_holder(broker, pid, task)
        if task and task["group"]:
            takeovers = await _takeovers_of(broker, pid, task["group"])
            dead = await _dead_letters_of(broker, pid, task["group"])

    def event(at_ms: int | None, what: str, detail: str = "") -> None:
        timeline.append({"at_ms": at_ms, "what": what, "detail": detail})

    if task:
        eid = task.get("eid") or ""
        if eid and task["state"] in ("pending", "acquired"):
            where = "on the stream" if task["state"] == "pending" else "delivered"
            event(_i(eid.split("-", 1)[0]), "queued", f"{where} of group {task['group']}")
        for t in takeovers:
            why = "connection gone" if t["cause"] == "gone" else "silent past ttl"
            event(t["at_ms"], "takeover", f"from {t['from']} to {t['to']} ({why})")
        for d in dead:
            event(d["at_ms"], "quarantined" if d["poison"] else "dead-lettered", d["reason"])
        if task["state"] == "acquired":
            lapses = task["lapses"] or 0
            event(None, "held", f"by {task['pid']} (delivery {task['v']}, lapses {lapses})")
        elif p.pending:
            event(None, task["state"] or "?")
    if p.settled:
        detail = rec.get("value", "")
        if "error" in rec:
            detail = f"{rec['error']['type']}: {rec['error']['message']}"[:PREVIEW_CHARS]
        event(p.settled_at, p.state, detail)
    timeline.sort(key=lambda e: (e["at_ms"] is None, e["at_ms"] or 0))
    return {
        "promise": rec,
        "task": task,
        "children": children,
        "children_truncated": more,
        "takeovers": takeovers,
        "timeline": timeline,
    }
