"""Durations given by users (seconds) checked and turned into what Redis stores (ms).

Guarantee: a NaN, infinite, negative, non-numeric or over-a-century value is refused with
:class:`BadInput` here, before any int() conversion can raise an untyped error or a bad
deadline can reach a script. Sub-millisecond positive values round up to 1 ms, never to 0
(which would make a promise that is timed out on arrival).
"""

from __future__ import annotations

import math

from lb.broker.arguments import check_duration
from lb.broker.errors import BadInput

__all__ = ["check_seconds", "seconds_to_ms"]


def check_seconds(value: object, what: str = "timeout") -> float | None:
    """``value`` as seconds (None passes through), or :class:`BadInput`."""
    return None if value is None else check_duration(value, 1000, what)


def seconds_to_ms(value: object, what: str = "timeout") -> int:
    """``value`` seconds as whole milliseconds, rounded up; :class:`BadInput` as above."""
    if value is None:
        raise BadInput(f"{what} must be a number of seconds, not None")
    return math.ceil(check_duration(value, 1000, what) * 1000)
