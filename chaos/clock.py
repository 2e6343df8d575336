"""Wall-clock jumps for one chaos worker (the "worker whose wall clock jumps" shape).

A worker started with ``$CHAOS_CLOCK_JUMPS`` set replaces ``time.time`` / ``time.time_ns``
in its own process with the real clock plus an offset that a daemon thread changes every
1-4 s, among steps of -10 min .. +10 min (NTP steps, a VM resumed after a pause). This is
a Python-level step: it reaches every Python caller of ``time.time`` (lb's own code must
take no deadline from it: every time it compares comes from Redis, every wait runs on the
monotonic clock), not the kernel's clock, which a test cannot step without privileges.

The journal must keep true times whatever the worker believes: ``real_time`` is the clock
as it was before any patch.
"""

from __future__ import annotations

import os
import random
import threading
import time

from chaos.journal import append

__all__ = ["ENV", "install_jumps", "jumps", "real_time"]

ENV = "CHAOS_CLOCK_JUMPS"
STEPS = (-600.0, -30.0, -5.0, 0.0, 0.0, 5.0, 30.0, 600.0)

_real_time = time.time
_real_time_ns = time.time_ns
_offset = 0.0
_jumps = 0


def real_time() -> float:
    """The unpatched wall clock (what the journal records)."""
    return _real_time()


def jumps() -> int:
    """How many times this process's clock has jumped so far."""
    return _jumps


def _fake_time() -> float:
    return _real_time() + _offset


def _fake_time_ns() -> int:
    return _real_time_ns() + int(_offset * 1e9)


def _jumper(seed: str) -> None:
    global _offset, _jumps
    rng = random.Random(seed)
    while True:
        time.sleep(rng.uniform(1.0, 4.0))
        _offset = rng.choice(STEPS)
        _jumps += 1
        append("clock", f"{_offset:+.0f}", f"{_real_time():.6f}")


def install_jumps() -> bool:
    """Patch this process's wall clock when ``$CHAOS_CLOCK_JUMPS`` is set (its value seeds
    the jumps). Returns whether it did."""
    seed = os.environ.get(ENV)
    if not seed:
        return False
    time.time = _fake_time
    time.time_ns = _fake_time_ns
    threading.Thread(target=_jumper, args=(seed,), name="chaos-clock", daemon=True).start()
    return True
