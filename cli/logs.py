"""The worker's log: one line per event, in one format, through :mod:`logging`.

Every worker event (``start``, ``done``, ``takeover``, ``lost``, ``redis-down``...) and every
message lb's own loggers write becomes one record of the ``lb`` logger, rendered by one
formatter: text (``12:00:01.234 INFO  w1 done id=x func=f attempt=1 duration_ms=3.1``) or JSON
for log shippers (``{"time", "level", "event", "worker", "id", "func", "attempt",
"duration_ms", ...}``, one object per line). Each event has a fixed level (below), so
``--log-level warning`` keeps takeovers, losses and outages and drops the per-call lines.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["LEVELS", "event_logger", "setup"]

_WARN = ("takeover", "lost", "fenced", "passed-on", "isolated", "abandoned", "stalled",
         "redis-down", "redis-up", "retry")  # fmt: skip
_ERROR = ("dead-letter", "refused", "error", "died")
LEVELS: dict[str, int] = {k: logging.WARNING for k in _WARN}
LEVELS.update({k: logging.ERROR for k in _ERROR})  # everything else (start, done...): INFO
LEVELS["redis-wait"] = logging.DEBUG  # per call during an outage: redis-down/up tell it once

_events = logging.getLogger("lb.events")


def _stamp(created: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(created)) + f".{int(created * 1000) % 1000:03d}"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = f"{_stamp(record.created)} {record.levelname:<7}"
        event = getattr(record, "lb_event", None)
        if event is None:
            text = f"{head} {record.getMessage()}"
            return text + "\n" + self.formatException(record.exc_info) if record.exc_info else text
        data: dict[str, Any] = dict(getattr(record, "lb_data", {}))
        worker = data.pop("worker", "-")
        rest = " ".join(f"{k}={v}" for k, v in data.items())
        return f"{head} {worker} {event:<10} {rest}".rstrip()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.created * 1000) % 1000:03d}Z",
            "level": record.levelname.lower(),
        }
        event = getattr(record, "lb_event", None)
        if event is None:
            out["logger"] = record.name
            out["message"] = record.getMessage()
            if record.exc_info:
                out["exc"] = self.formatException(record.exc_info)
        else:
            out["event"] = event
            out.update(getattr(record, "lb_data", {}))
        return json.dumps(out, default=str, separators=(",", ":"))


def setup(level: str = "info", fmt: str = "text") -> None:
    """Send the ``lb`` loggers to stdout, one line per record, at ``level`` and up."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("lb")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False


def event_logger() -> Callable[[str, dict[str, Any]], None]:
    """The worker's ``on_event``: each event one record at its level."""

    def on_event(kind: str, data: dict[str, Any]) -> None:
        level = LEVELS.get(kind, logging.INFO)
        if _events.isEnabledFor(level):
            _events.log(level, kind, extra={"lb_event": kind, "lb_data": data})

    return on_event
