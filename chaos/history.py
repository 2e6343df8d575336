"""The client history: every create / get / settle the load generator made, with its outcome.

An operation whose call timed out or raised is *open-ended* (``end is None``): it may or may
not have taken effect. Outcomes are tuples of strings so that they can be compared and hashed:

* create: ``("pending",)`` or ``("settled", state, value_hex)`` (the record the create returned);
* get: ``("notfound",)``, ``("pending",)`` or ``("settled", state, value_hex)``;
* settle: the record after the settle, ``("settled", state, value_hex)``, or ``("notfound",)``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["History", "Invocation", "Op", "args_key"]

Outcome = tuple[str, ...]


def args_key(func: str, args: list[Any]) -> str:
    """A canonical string for one call's function and arguments."""
    return json.dumps([func, args], separators=(",", ":"), sort_keys=True)


@dataclass
class Op:
    pid: str
    op: str  # create | get | settle
    arg: str  # create: args_key; settle: target state; get: ""
    start: float
    end: float | None = None
    outcome: Outcome | None = None
    error: str = ""

    @property
    def open(self) -> bool:
        return self.end is None


@dataclass
class Invocation:
    pid: str
    func: str
    args: list[Any]
    start: float  # start of the first create attempt
    acked_at: float | None = None
    creates: int = 0
    alt_args: list[list[Any]] = field(default_factory=list)  # same id, different arguments
    canceled: bool = False
    retried_same_id: int = 0
    observed: str = ""  # outcome seen by the load itself ("resolved", "rejected:<type>")


class History:
    """Thread-safe append-only store of operations and invocations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ops: list[Op] = []
        self.invocations: dict[str, Invocation] = {}
        self.client_exceptions: list[str] = []  # untyped exceptions out of the SDK
        self.waits: list[dict[str, Any]] = []

    def add(self, op: Op) -> Op:
        with self._lock:
            self.ops.append(op)
        return op

    def invocation(self, inv: Invocation) -> Invocation:
        with self._lock:
            self.invocations[inv.pid] = inv
        return inv

    def untyped(self, what: str) -> None:
        with self._lock:
            self.client_exceptions.append(what)

    def by_promise(self) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        with self._lock:
            for op in self.ops:
                out.setdefault(op.pid, []).append(op)
        return out

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ops": [asdict(o) for o in self.ops],
                "invocations": [asdict(i) for i in self.invocations.values()],
                "client_exceptions": list(self.client_exceptions),
            }
