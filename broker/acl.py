"""The Redis ACL rules of lb's two roles, least privilege (published in the README, printed by
``lb acl``, and tested against a real server in tests/e2e/test_acl.py).

* **worker** (``lb worker``, ``Resonate.remote(...).start()``): everything lb's scripts and
  loops run, on lb's keys only: ``~{<prefix>:*`` (every key is ``{prefix:shard}:...``).
* **client** (callers: invoke, wait, get, cancel, status): the same keys, but no command that
  reads or claims work from a group's stream (XREADGROUP, XAUTOCLAIM, XCLAIM, XGROUP).

Rules are by category, then ``-@dangerous``: what lb never needs (KEYS, FLUSHALL, CONFIG,
DEBUG, CLIENT LIST/KILL...) stays out. ``+info`` is added back because the eviction-policy
check reads INFO (drop it and lb warns once that it cannot check), ``+time`` (the one clock
lb uses) and ``+client|setname`` (workers name their connections; Redis 6.2 files all of
CLIENT under @dangerous). CLIENT LIST is optional: without it a dead worker's tasks are
taken over after the ttl instead of at once.
"""

from __future__ import annotations

__all__ = ["ROLES", "rules", "setuser"]

_BASE = (
    "resetchannels -@all +@read +@write +@stream +@hash +@sortedset +@set +@list +@keyspace "
    "+@scripting +@connection -@dangerous +info +time +client|setname"
)
ROLES: dict[str, str] = {
    "worker": _BASE,
    "client": _BASE + " -xreadgroup -xautoclaim -xclaim -xgroup",
}


def rules(role: str, prefix: str = "lb") -> str:
    """The ACL rules of ``role`` for a deployment with key prefix ``prefix``."""
    return f"resetkeys ~{{{prefix}:* {ROLES[role]}"


def setuser(role: str, user: str, password: str, prefix: str = "lb") -> list[str]:
    """The ``ACL SETUSER`` command (as arguments) that creates ``user`` with ``role``'s rules."""
    return ["ACL", "SETUSER", user, "reset", "on", f">{password}", *rules(role, prefix).split()]
