"""The journal: a file outside Redis where the chaos functions record what they really did.

Writers (worker processes) append one line per event with a single ``write(2)`` on an
``O_APPEND`` descriptor, so lines from concurrent processes never interleave. Line formats
(fields separated by one space, times are the true wall clock in seconds,
``chaos.clock.real_time``, even in a worker whose ``time.time`` jumps):

* ``begin <id> <func> <attempt> <worker> <t>``: a delivery of ``<id>`` started running;
* ``eff <id> <attempt> <worker> <t>``: the effect function's side effect;
* ``step <id> <n> <worker> <attempt> <t_start> <t_end>``: ``ctx.run`` step ``n`` ran;
* ``clock <offset> <t>``: the jumping worker's ``time.time`` now runs ``offset`` s off;
* ``slept <id> <attempt> <t>``: a ``linger`` call got past its long durable sleep.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Journal", "Step", "append", "read_journal"]

ENV = "CHAOS_JOURNAL"
_fd: int | None = None
_lock = threading.Lock()


def append(*fields: object) -> None:
    """Append one line to the journal named by ``$CHAOS_JOURNAL`` (no-op when unset)."""
    global _fd
    path = os.environ.get(ENV)
    if not path:
        return
    with _lock:
        if _fd is None:
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    line = " ".join(str(f) for f in fields) + "\n"
    os.write(_fd, line.encode("utf-8", "replace"))


@dataclass(frozen=True)
class Step:
    worker: str
    attempt: int
    start: float
    end: float


@dataclass
class Journal:
    """Parsed journal, indexed by promise id."""

    begins: dict[str, list[tuple[int, str, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    effects: dict[str, list[tuple[int, str, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    steps: dict[tuple[str, int], list[Step]] = field(default_factory=lambda: defaultdict(list))
    clock_jumps: list[tuple[float, float]] = field(default_factory=list)
    slept: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    bad_lines: int = 0

    def attempts_begun_before(self, pid: str, attempt: int, t: float) -> bool:
        """True when an attempt newer than ``attempt`` of ``pid`` began before time ``t``."""
        return any(a > attempt and tb < t for a, _, tb in self.begins.get(pid, []))


def read_journal(path: str) -> Journal:
    j = Journal()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return j
    for line in lines:
        parts = line.split(" ")
        try:
            if parts[0] == "begin" and len(parts) == 6:
                j.begins[parts[1]].append((int(parts[3]), parts[4], float(parts[5])))
            elif parts[0] == "eff" and len(parts) == 5:
                j.effects[parts[1]].append((int(parts[2]), parts[3], float(parts[4])))
            elif parts[0] == "step" and len(parts) == 7:
                j.steps[(parts[1], int(parts[2]))].append(
                    Step(parts[3], int(parts[4]), float(parts[5]), float(parts[6]))
                )
            elif parts[0] == "clock" and len(parts) == 3:
                j.clock_jumps.append((float(parts[1]), float(parts[2])))
            elif parts[0] == "slept" and len(parts) == 4:
                j.slept[parts[1]].append((int(parts[2]), float(parts[3])))
            else:
                j.bad_lines += 1
        except ValueError:
            j.bad_lines += 1
    return j
