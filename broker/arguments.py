"""The checked arguments of lb's scripts: every duration, tag set and create goes through
these before it reaches Redis, so no NaN, infinity, oversized payload or malformed tag does.
"""

from __future__ import annotations

import json
import math
from typing import Any

from lb.broker.errors import BadInput, PayloadTooLarge
from lb.broker.keys import check_group, check_id, check_root_id
from lb.broker.records import NO_FENCE, Fence
from lb.broker.settings import Settings

__all__ = ["MAX_TIMEOUT_MS", "check_duration", "create_args", "timeout_ms_or"]


def create_args(
    settings: Settings,
    promise_id: str,
    param: bytes,
    param_headers: bytes = b"",
    tags: dict[str, str] | None = None,
    timeout_ms: int | None = None,
    group: str | None = None,
    listener: str | None = None,
    fence: Fence | None = None,
    timer: bool = False,
    cap: int | None = None,
    retention_ms: int | None = None,
) -> list[Any]:
    """create.lua's arguments after the header (base, retention), checked: the one place
    that builds them, for the I/O loop's path and the caller's-thread one (broker/direct.py).
    """
    if fence is None:
        check_root_id(promise_id)
    else:
        check_id(promise_id)
    if group is not None:
        check_group(group)
    if len(param) + len(param_headers) > settings.max_payload:
        raise PayloadTooLarge(f"params are over the {settings.max_payload}-byte limit")
    # A step with no timeout of its own lives until its parent's deadline (the cap).
    default = MAX_TIMEOUT_MS if cap is not None else settings.default_timeout_ms
    return [
        promise_id,
        param,
        param_headers,
        _tags_json(tags),
        timeout_ms_or(timeout_ms, default),
        group or "",
        listener or "",
        *(fence.args() if fence else NO_FENCE),
        "1" if timer else "0",
        "" if cap is None else cap,
        "" if retention_ms is None else int(check_duration(retention_ms, 1, "retention")),
    ]


def _tags_json(tags: dict[str, str] | None) -> str:
    if not tags:
        return ""
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise BadInput("tags must map strings to strings")
        if not k or len(k) > 128 or len(v) > 1024 or "=" in k:
            raise BadInput(f"tag {k[:40]!r} is empty, too long, or contains '='")
    return json.dumps(tags, separators=(",", ":"), sort_keys=True)


MAX_TIMEOUT_MS = 100 * 365 * 86_400_000  # a century: far below Lua's exact-integer range


def check_duration(value: object, unit_ms: float, what: str = "timeout") -> float:
    """``value`` (in units of ``unit_ms`` milliseconds) if it is a real, finite number from 0
    to a century; else :class:`BadInput`, so no NaN, infinity or bad deadline reaches a
    script and no ``int()`` of one raises an untyped error. The one rule for durations."""
    unit = "seconds" if unit_ms == 1000 else "milliseconds"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{what} must be a number of {unit}, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or value * unit_ms > MAX_TIMEOUT_MS:
        raise BadInput(f"{what} must be a finite number of {unit} from 0 to a century, not {value}")
    return float(value)


def timeout_ms_or(value: object, default: int) -> int:
    """A create's ``timeout_ms``: the default when None, else checked by :func:`check_duration`."""
    return default if value is None else int(check_duration(value, 1))
