"""Parsing the worker logs (lines as printed by ``lb worker``, timestamped by our pump)."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from chaos.cluster import LogLine

__all__ = ["Event", "parse_events"]

# "HH:MM:SS.mmm LEVEL   worker kind      k=v k=v ..." (cli/logs.py TextFormatter)
_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} [A-Z]+\s+(?P<worker>\S+) (?P<kind>\S+)\s*(?P<rest>.*)$")
_KV = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class Event:
    t: float
    worker: str
    kind: str
    fields: dict[str, str]

    @property
    def id(self) -> str:
        return self.fields.get("id", "")


def parse_events(lines: list[LogLine]) -> dict[str, list[Event]]:
    """Events by kind (start, done, takeover, lost, fenced, refused, ...)."""
    out: dict[str, list[Event]] = defaultdict(list)
    for ln in lines:
        m = _LINE.match(ln.text)
        if not m:
            continue
        fields = dict(_KV.findall(m.group("rest")))
        out[m.group("kind")].append(Event(ln.t, m.group("worker"), m.group("kind"), fields))
    return out
