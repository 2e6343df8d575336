"""The checkers, run after the drain on the journal, the client history, the logs and Redis.

Every function returns plain data (counts plus a few examples) for the report.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter, defaultdict
from typing import Any

import msgpack

from chaos.faults import Done
from chaos.history import History, Invocation, args_key
from chaos.journal import Journal
from chaos.linearizability import HOp, check_history
from chaos.logs import Event
from lb.broker.records import Promise
from lb.sdk.encoding import decode_error

__all__ = [
    "check_duplicates",
    "check_linearizable",
    "check_liveness",
    "check_lost",
    "check_steps",
    "check_zombies",
    "latency_by_phase",
    "percentile",
    "takeover_latency",
]

MB = 1 << 20


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))]


def value_of(p: Promise) -> Any:
    if p.state != "resolved" or not p.value:
        return None
    try:
        return msgpack.unpackb(p.value, raw=False, strict_map_key=False)
    except Exception:
        return None


def _settled(p: Promise | None) -> bool:
    return p is not None and p.settled


def _examples(xs: list[Any], n: int = 5) -> list[Any]:
    return xs[:n]


def check_lost(invs: dict[str, Invocation], final: dict[str, Promise | None]) -> dict[str, Any]:
    """Acknowledged invocations never settled (or gone). A call purged by its own short
    retention (``linger``) counts as settled only when the load saw it settle."""

    def done(pid: str, inv: Invocation) -> bool:
        return _settled(final.get(pid)) or inv.observed.startswith(("resolved", "rejected"))

    lost = [pid for pid, inv in invs.items() if inv.acked_at and not done(pid, inv)]
    unacked = [pid for pid, inv in invs.items() if not inv.acked_at]
    return {"lost": len(lost), "examples": _examples(lost), "never_acked": len(unacked)}


def _candidate_args(pid: str, h_ops: list[Any]) -> set[str]:
    """Arguments that may have been stored: creates started before the first ack ended."""
    creates = [o for o in h_ops if o.op == "create"]
    acked = [o.end for o in creates if o.end is not None]
    horizon = min(acked) if acked else float("inf")
    return {o.arg for o in creates if o.start <= horizon}


def check_duplicates(
    invs: dict[str, Invocation],
    final: dict[str, Promise | None],
    reads: dict[str, list[tuple[str, str]]],
    journal: Journal,
    events: dict[str, list[Event]],
    h: History,
) -> dict[str, Any]:
    """Settled twice, or settled with a value that is not the first accepted completion."""
    done_by_id = Counter(e.id for e in events.get("done", []))
    twice = sorted(pid for pid, n in done_by_id.items() if n > 1)
    changed = sorted(pid for pid, seen in reads.items() if len(set(seen)) > 1)
    not_journaled: list[str] = []
    wrong_args: list[str] = []
    by_pid = h.by_promise()
    for pid, inv in invs.items():
        p = final.get(pid)
        v = value_of(p) if p else None
        if not isinstance(v, dict):
            continue
        w, a = v.get("w"), v.get("a")
        begun = {(att, wk) for att, wk, _ in journal.begins.get(pid, [])}
        if (a, w) not in begun:
            not_journaled.append(pid)
        if inv.func == "effect" and (a, w) not in {
            (x, y) for x, y, _ in journal.effects.get(pid, [])
        }:
            not_journaled.append(pid)
        allowed = _candidate_args(pid, by_pid.get(pid, []))
        if inv.func == "echo":
            got = args_key("echo", list(v.get("echo") or []))
        elif inv.func == "effect":
            got = args_key("effect", [v.get("token")])
        else:
            continue
        if got not in allowed:
            wrong_args.append(pid)
    ids = sorted(set(twice) | set(changed) | set(not_journaled) | set(wrong_args))
    return {
        "duplicated": len(ids),
        "done_twice": _examples(twice),
        "value_changed": _examples(changed),
        "value_not_journaled": _examples(sorted(set(not_journaled))),
        "not_first_args": _examples(wrong_args),
        "n_done_twice": len(twice),
        "n_value_changed": len(changed),
        "n_not_journaled": len(set(not_journaled)),
        "n_not_first_args": len(wrong_args),
    }


def check_zombies(
    invs: dict[str, Invocation],
    final: dict[str, Promise | None],
    journal: Journal,
    events: dict[str, list[Event]],
) -> dict[str, Any]:
    """Refused: fenced / lost lines. Accepted: a value from an attempt already superseded."""
    canceled = {pid for pid, inv in invs.items() if inv.canceled}
    refused_lines = [e for k in ("fenced", "lost") for e in events.get(k, [])]
    refused = {(e.worker, e.id) for e in refused_lines if e.id not in canceled}
    accepted: list[str] = []
    for pid, p in final.items():
        v = value_of(p) if p else None
        if not isinstance(v, dict) or p is None or not isinstance(v.get("a"), int):
            continue
        if journal.attempts_begun_before(pid, v["a"], p.settled_at / 1000.0 - 0.001):
            accepted.append(pid)
    errors = events.get("error", [])
    reruns = sorted(pid for pid, runs in journal.effects.items() if len(runs) > 1)
    return {
        "refused": len(refused),
        "abandoned_on_error": len(errors),
        "effects_rerun": len(reruns),
        "effects_rerun_examples": reruns[:5],
        "abandoned_examples": [f"{e.worker} {e.id}" for e in errors[:3]],
        "refused_lines": len(refused_lines),
        "canceled_fenced": len({e.id for e in refused_lines if e.id in canceled}),
        "accepted": len(accepted),
        "accepted_examples": _examples(accepted),
    }


def check_steps(journal: Journal, steps: dict[str, Promise | None]) -> dict[str, Any]:
    """``ctx.run`` steps executed again after their checkpoint had settled.

    ``live``: by an attempt that was still the current one (a replay bug). ``zombie``: by an
    attempt already superseded when the step started (a stalled process waking up between
    opening the step and running it: the fence cannot stop code that is already running).
    """
    live: list[str] = []
    zombie: list[str] = []
    twice = 0
    for (pid, n), runs in journal.steps.items():
        if len(runs) < 2:
            continue
        twice += 1
        p = steps.get(f"{pid}:{n}")
        if p is None or not p.settled:
            continue
        for s in sorted(runs, key=lambda r: r.start)[1:]:
            if s.start * 1000.0 > p.settled_at + 1:
                if journal.attempts_begun_before(pid, s.attempt, s.start):
                    zombie.append(f"{pid}:{n}")
                else:
                    live.append(f"{pid}:{n}")
    # linger: step 1 settled before the child call, so no run of it may start after any run
    # got past the child (the step's record must outlive the call's own short retention).
    linger_live: list[str] = []
    for pid, marks in journal.slept.items():
        past = min(t for _, t in marks)
        for s in journal.steps.get((pid, 1), []):
            if s.start > past:
                if journal.attempts_begun_before(pid, s.attempt, s.start):
                    zombie.append(f"{pid}:1")
                else:
                    linger_live.append(f"{pid}:1")
    live += linger_live
    return {
        "re_executed": len(live),
        "re_executed_examples": _examples(live),
        "lingers_past_retention": len(journal.slept),
        "lingers_re_executed": len(linger_live),
        "zombie_runs": len(zombie),
        "zombie_examples": _examples(zombie),
        "ran_twice_before_checkpoint": twice - len(set(live) | set(zombie)),
    }


def check_liveness(
    invs: dict[str, Invocation],
    final: dict[str, Promise | None],
    windows: list[tuple[float, float]],
    ttl: float,
    samples: list[tuple[float, int, int]],
    grace: float = 5.0,
) -> dict[str, Any]:
    """Every promise settled within ttl + grace of the end of the last disturbance it lived
    through. Its deadline starts at creation; every fault (``windows``: start, heal) that
    begins before the deadline, and heals after the creation, moves the deadline to the heal
    + ttl + grace. Time spent queued behind a backlog does not count: the clock (re)starts
    when the group first had spare capacity (backlog sampled at zero). Slow is allowed,
    stuck is not. This is stricter than "within ttl + 5 s of the last heal" for every
    promise that lived before the last fault."""
    slack = {"nap": 0.5, "chain": 1.5, "saga": 4.0, "hog": 4.0, "poison": 8.0, "linger": 4.0}
    times = [t for t, _, _ in samples]
    nxt: list[float] = [math.inf] * (len(samples) + 1)
    for i in range(len(samples) - 1, -1, -1):
        nxt[i] = samples[i][0] if samples[i][1] == 0 else nxt[i + 1]

    def free_after(t: float) -> float:
        return max(t, nxt[bisect.bisect_left(times, t)]) if samples else t

    late: list[tuple[float, str]] = []
    for pid, inv in invs.items():
        p = final.get(pid)
        if not inv.acked_at or p is None or not p.settled:
            continue
        created, settled = p.created_at / 1000.0, p.settled_at / 1000.0
        budget = ttl + grace + slack.get(inv.func, 0.1)
        deadline = free_after(created) + budget
        for at, healed in windows:
            if healed > created and at < deadline:
                deadline = max(deadline, free_after(healed) + budget)
        if settled > deadline:
            late.append((settled - deadline, pid))
    late.sort(reverse=True)
    return {
        "late": len(late),
        "worst_over_s": round(late[0][0], 3) if late else 0.0,
        "examples": [pid for _, pid in late[:5]],
        "backlog_max": max((b for _, b, _ in samples), default=0),
    }


def check_rejections(
    invs: dict[str, Invocation], final: dict[str, Promise | None]
) -> dict[str, Any]:
    """Invocations of functions that never fail which ended rejected (not canceled)."""
    bad: dict[str, list[str]] = defaultdict(list)
    for pid, inv in invs.items():
        p = final.get(pid)
        if inv.func == "poison":  # must end quarantined, whatever else happened
            if p is not None and not inv.canceled and p.settled:
                etype, msg = decode_error(p.value, MB) if p.state != "resolved" else ("", "")
                if etype != "Quarantined":
                    bad[f"poison not quarantined:{p.state}:{etype}"].append(pid)
            continue
        if p is None and inv.observed.startswith("rejected"):
            bad["seen by the load:rejected"].append(f"{pid} ({inv.observed[:80]})")
        if p is None or p.state in ("pending", "resolved") or inv.canceled:
            continue
        etype, msg = decode_error(p.value, MB)
        bad[f"{p.state}:{etype}"].append(f"{pid} ({msg[:80]})")
    return {
        "wrongly_rejected": sum(len(v) for v in bad.values()),
        "by_type": {k: len(v) for k, v in bad.items()},
        "examples": [x for v in bad.values() for x in v[:2]],
    }


def _compat(func: str) -> Any:
    def compatible(args: str, state: str, value_hex: str) -> bool:
        if state != "resolved":
            return True
        try:
            v = msgpack.unpackb(bytes.fromhex(value_hex), raw=False, strict_map_key=False)
            f, a = json.loads(args)
        except Exception:
            return False
        if f == "echo":
            return isinstance(v, dict) and v.get("echo") == a
        if f == "effect":
            return isinstance(v, dict) and [v.get("token")] == a
        return True

    return compatible


def check_linearizable(h: History) -> dict[str, Any]:
    by: dict[str, list[HOp]] = {}
    for pid, ops in h.by_promise().items():
        lst = by.setdefault(pid, [])
        for o in ops:
            if o.op == "get" and o.open:
                continue  # a read that got no answer constrains nothing
            ret = o.end if o.end is not None else float("inf")
            lst.append(HOp(o.op, o.arg, o.start, ret, o.outcome))
    funcs = {pid: inv.func for pid, inv in h.invocations.items()}
    bad = check_history(by, lambda pid: _compat(funcs.get(pid, "")))
    return {
        "promises": len(by),
        "ops": sum(len(v) for v in by.values()),
        "violations": len(bad),
        "examples": {pid: r.reason for pid, r in list(bad.items())[:5]},
    }


def takeover_latency(
    done: list[Done], events: dict[str, list[Event]], ttl: float
) -> dict[str, Any]:
    """Seconds from each worker fault to the takeovers of its tasks by other workers."""
    lat: list[float] = []
    first: list[float] = []
    per_kind: dict[str, int] = defaultdict(int)
    takeovers = events.get("takeover", [])
    starts = [d.at for d in done]
    for i, d in enumerate(done):
        kind = d.fault.kind
        victim = d.fault.target or d.notes.get("worker", "")
        end = min([d.healed + ttl + 5.0, *starts[i + 1 : i + 2]])
        window = [e for e in takeovers if d.at <= e.t < end]
        per_kind[kind] += len(window)
        if kind not in ("worker_kill", "worker_stop", "proxy_blackhole"):
            continue
        mine = [e.t - d.at for e in window if e.fields.get("previous") == victim]
        lat += mine
        if mine:
            first.append(min(mine))
    # Tasks a stalled worker held: were they taken over while it was stalled?
    stalled = taken = 0
    missed: list[str] = []
    for d in done:
        if d.fault.kind not in ("worker_stop", "proxy_blackhole") or d.fault.duration < ttl + 1:
            continue
        for tid in d.notes.get("held", []):
            if any(e.id == tid and d.at <= e.t <= d.healed for e in takeovers):
                taken += 1
                stalled += 1
            elif any(e.id == tid and d.at <= e.t <= d.healed for e in events.get("start", [])):
                continue  # re-delivered (it had suspended or been released): not held
            else:
                stalled += 1
                q = d.notes.get("queue", {})
                lo, hi = q.get("backlog_min"), q.get("backlog_max")
                missed.append(f"{tid} ({d.fault.kind} #{d.fault.n}, backlog {lo}..{hi})")
    return {
        "stalled_held": stalled,
        "stalled_taken_over": taken,
        "stalled_missed": missed[:10],
        "n_stalled_missed": len(missed),
        "takeovers": len(takeovers),
        "by_fault_kind": dict(per_kind),
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "first_p50": percentile(first, 50),
        "n": len(lat),
    }


def latency_by_phase(
    invs: dict[str, Invocation],
    final: dict[str, Promise | None],
    done: list[Done],
    recovery: float = 7.0,
) -> dict[str, dict[str, Any]]:
    """Invoke -> settle latency (s), by the phase the invocation started in: a fault's own
    window, ``recovery`` (up to ttl + 5 s after a heal), or ``calm``."""
    windows = [(d.at, d.healed, d.fault.kind) for d in done]
    by: dict[str, list[float]] = defaultdict(list)
    for pid, inv in invs.items():
        p = final.get(pid)
        if p is None or not p.settled or not inv.acked_at:
            continue
        phase = next((k for a, b, k in windows if a <= inv.start < b), "")
        if not phase:
            near = any(b <= inv.start < b + recovery for _, b, _ in windows)
            phase = "recovery (heal+7s)" if near else "calm"
        by[phase].append(p.settled_at / 1000.0 - inv.start)
    return {
        k: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)}
        for k, v in sorted(by.items())
    }
