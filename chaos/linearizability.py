"""A small Wing-Gong (WGL) linearizability checker for durable promises, split per promise id.

Model of one promise (the state is ``None`` before it exists, else ``(state, args, value)``):

* ``create(args)``: creates ``("pending", args, "")`` when missing; always answers the record
  as it is after the call (``("pending",)`` or ``("settled", state, value)``), so a create on
  an existing id never changes it (the dedup rule);
* ``get()``: answers ``("notfound",)``, ``("pending",)`` or ``("settled", state, value)``;
* ``settle(state)``: ``("notfound",)`` when missing; settles a pending promise to ``state``
  with an empty value; answers the record after the call (unchanged when already settled);
* ``hidden(state, value)``: a settle nobody in the history made (the worker's completion, the
  sweeper's timeout). Always open-ended; allowed only on a pending promise and only when
  ``compatible(args, state, value)`` (e.g. an echo's value must echo the *stored* arguments).

Open-ended operations (timed out, failed) have no answer and an infinite return time: they may
take effect at any point after their call, or never. Histories of different promises are
independent (every operation touches one promise), so each id is checked on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["HOp", "LinResult", "check_history", "check_promise", "hidden_ops"]

Outcome = tuple[str, ...]
State = tuple[str, str, str] | None
Compatible = Callable[[str, str, str], bool]
INF = math.inf


@dataclass(frozen=True)
class HOp:
    """One operation: ``kind`` is create | get | settle | hidden."""

    kind: str
    arg: str = ""
    call: float = 0.0
    ret: float = INF
    result: Outcome | None = None
    value: str = ""  # hidden: the value it settles with (``arg`` holds the state)

    @property
    def open(self) -> bool:
        return self.result is None


@dataclass(frozen=True)
class LinResult:
    ok: bool
    explored: int
    reason: str = ""


def _answer(state: State) -> Outcome:
    if state is None:
        return ("notfound",)
    if state[0] == "pending":
        return ("pending",)
    return ("settled", state[0], state[2])


def _apply(state: State, op: HOp, compatible: Compatible) -> tuple[bool, State]:
    """(allowed, new state) for ``op`` applied to ``state``."""
    new = state
    if op.kind == "create":
        if state is None:
            new = ("pending", op.arg, "")
    elif op.kind == "settle":
        if state is not None and state[0] == "pending":
            new = (op.arg, state[1], "")
    elif op.kind == "hidden":
        if state is None or state[0] != "pending":
            return False, state
        if not compatible(state[1], op.arg, op.value):
            return False, state
        return True, (op.arg, state[1], op.value)
    elif op.kind != "get":
        raise ValueError(f"unknown operation {op.kind!r}")
    if op.result is not None and _answer(new) != op.result:
        return False, state
    return True, new


def _any(_args: str, _state: str, _value: str) -> bool:
    return True


def check_promise(
    ops: list[HOp], compatible: Compatible = _any, max_states: int = 200_000
) -> LinResult:
    """Is there a linearization of ``ops`` (completed ones all included) valid for the model?"""
    ops = sorted(ops, key=lambda o: o.call)
    n = len(ops)
    must = 0
    for i, o in enumerate(ops):
        if not o.open:
            must |= 1 << i
    seen: set[tuple[int, State]] = set()
    stack: list[tuple[int, State]] = [(0, None)]
    deepest = 0
    while stack:
        mask, state = stack.pop()
        if (mask, state) in seen:
            continue
        seen.add((mask, state))
        if len(seen) > max_states:
            return LinResult(False, len(seen), "search too large (undecided)")
        if mask & must == must:
            return LinResult(True, len(seen))
        deepest = max(deepest, bin(mask & must).count("1"))
        # The next operation may be any not yet linearized whose call precedes every
        # pending (not linearized) completed operation's return.
        horizon = min((ops[i].ret for i in range(n) if not mask >> i & 1), default=INF)
        for i in range(n):
            if mask >> i & 1 or ops[i].call > horizon:
                continue
            ok, new = _apply(state, ops[i], compatible)
            if ok:
                stack.append((mask | 1 << i, new))
    done = bin(must).count("1")
    return LinResult(False, len(seen), f"no linearization ({deepest} of {done} completed ops)")


def hidden_ops(
    ops: Iterable[HOp], settled_by_client: Iterable[str] = ("rejected_canceled",)
) -> list[HOp]:
    """One open-ended hidden settle per distinct settled record observed in ``ops``."""
    skip = set(settled_by_client)
    found: set[tuple[str, str]] = set()
    for o in ops:
        if o.result is not None and o.result[0] == "settled" and o.result[1] not in skip:
            found.add((o.result[1], o.result[2]))
    return [HOp("hidden", arg=s, value=v) for s, v in sorted(found)]


def check_history(
    by_promise: dict[str, list[HOp]],
    compatible: Callable[[str], Compatible] | None = None,
) -> dict[str, LinResult]:
    """Check each promise's history (hidden settles added); returns the failures by id."""
    bad: dict[str, LinResult] = {}
    for pid, ops in by_promise.items():
        full = list(ops) + hidden_ops(ops)
        res = check_promise(full, compatible(pid) if compatible else _any)
        if not res.ok:
            bad[pid] = res
    return bad
