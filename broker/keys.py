"""Every Redis key lb uses, built in one place.

Layout: ``{<prefix>:<shard>}:<kind>:<name>``. The leading ``{...}`` is a Redis Cluster hash tag,
so every key of one shard lives in one slot and each Lua script touches exactly one slot. The
shard of a promise is ``crc32(root) % shards`` where ``root`` is the id up to its first ``:``;
children (``root:1``, ``root:1.2``) therefore share their root's shard, which lets a parent's
fenced script create and settle them. ``broker/lua/lib.lua`` builds the derived keys with the
same rules (tested in ``tests/broker_tests/test_keys.py``).

This module also validates the names that end up inside keys (ids, groups, function names): a
hostile name is refused with :class:`BadInput` before it reaches Redis.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from lb.broker.errors import BadInput

__all__ = [
    "CONSUMER_GROUP",
    "PROMISE_STATES",
    "Keys",
    "check_func_name",
    "check_group",
    "check_id",
    "check_root_id",
    "root_of",
]

CONSUMER_GROUP = "lb"
PROMISE_STATES = ("pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout")
MAX_ID_BYTES = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GROUP_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_FUNC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,127}$")


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a usable promise id, else raise :class:`BadInput`.

    Ids are 1-512 bytes of UTF-8 with no control characters (no NUL, no newline). Braces,
    colons and stars are fine: they never reach a key's hash tag or a pattern.
    """
    if not isinstance(value, str) or not value:
        raise BadInput(f"{what} must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise BadInput(f"{what} is longer than {MAX_ID_BYTES} bytes")
    if _CONTROL.search(value):
        raise BadInput(f"{what} {value[:40]!r} contains a control character (NUL, newline, ...)")
    return value


def check_root_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it can name a call (a root promise), else raise :class:`BadInput`.

    A root id follows :func:`check_id` and has no ``:``: step ids are ``<root>:<n>``, so a
    root id with a colon could equal a step of another call (Resonate 0.8 has the same rule).
    """
    check_id(value, what)
    assert isinstance(value, str)
    if ":" in value:
        raise BadInput(
            f"{what} {value[:40]!r} contains ':', which lb keeps for the ids of durable steps "
            "(root:1, root:1.2); choose an id without ':' (for example with '-' or '/')"
        )
    return value


def check_group(value: object, what: str = "group") -> str:
    """Return ``value`` if it is a valid group (or worker) name (1-64 of ``[A-Za-z0-9_.-]``)."""
    if not isinstance(value, str) or not _GROUP_RE.fullmatch(value):
        shown = repr(value)[:60]
        raise BadInput(f"{what} {shown} must be 1-64 characters of letters, digits, '_', '.', '-'")
    return value


def check_func_name(value: object) -> str:
    """Return ``value`` if it is a valid function name (an identifier-like string)."""
    if not isinstance(value, str) or not _FUNC_RE.fullmatch(value):
        shown = repr(value)[:60]
        raise BadInput(f"function name {shown} must look like an identifier (max 128 characters)")
    return value


def root_of(promise_id: str) -> str:
    """The part of an id that picks its shard: everything before the first ``:``."""
    return promise_id.split(":", 1)[0]


@dataclass(frozen=True)
class Keys:
    """Key builder for one prefix and shard count."""

    prefix: str = "lb"
    shards: int = 1

    def shard_of(self, promise_id: str) -> int:
        """The shard that holds ``promise_id`` and all its descendants."""
        if self.shards == 1:
            return 0
        return zlib.crc32(root_of(promise_id).encode("utf-8", "surrogatepass")) % self.shards

    def base(self, shard: int) -> str:
        """The hash-tagged base of every key in ``shard``: ``{prefix:shard}``."""
        return "{" + f"{self.prefix}:{shard}" + "}"

    def base_for(self, promise_id: str) -> str:
        return self.base(self.shard_of(promise_id))

    def all_bases(self) -> list[str]:
        return [self.base(s) for s in range(self.shards)]

    # Per promise (shard chosen by the id).
    def promise(self, promise_id: str) -> str:
        return f"{self.base_for(promise_id)}:p:{promise_id}"

    def task(self, promise_id: str) -> str:
        return f"{self.base_for(promise_id)}:t:{promise_id}"

    def callbacks(self, promise_id: str) -> str:
        return f"{self.base_for(promise_id)}:cb:{promise_id}"

    def listeners(self, promise_id: str) -> str:
        return f"{self.base_for(promise_id)}:ls:{promise_id}"

    # Per shard.
    @staticmethod
    def stream(base: str, group: str) -> str:
        return f"{base}:q:{group}"

    @staticmethod
    def dead_letters(base: str, group: str) -> str:
        return f"{base}:dlq:{group}"

    @staticmethod
    def timeouts(base: str) -> str:
        return f"{base}:timeouts"

    @staticmethod
    def delayed(base: str) -> str:
        """Tasks waiting for a later re-delivery (task id -> due time, Redis ms)."""
        return f"{base}:delayed"

    @staticmethod
    def children(base: str, root: str) -> str:
        """Settled steps of a pending root, retained from the root's settle on."""
        return f"{base}:ch:{root}"

    @staticmethod
    def gc(base: str) -> str:
        return f"{base}:gc"

    @staticmethod
    def sweep_lease(base: str) -> str:
        return f"{base}:lease"

    @staticmethod
    def sweep_wake(base: str) -> str:
        """A one-token list: pushed when a new deadline becomes the shard's earliest, so the
        sweeper, blocked on it until the deadline it knew, recomputes."""
        return f"{base}:sweep-wake"

    @staticmethod
    def silent(base: str, group: str) -> str:
        """Set by the scanner when work of ``group`` is silent past its holder's ttl."""
        return f"{base}:silent:{group}"

    @staticmethod
    def conn_name(prefix: str, pid: str) -> str:
        """The Redis connection name of worker ``pid`` (CLIENT SETNAME): scoped by the
        prefix, so the same worker name under another prefix of the same Redis never
        passes for this one's live connection."""
        return f"{prefix}/{pid}"

    @staticmethod
    def connected(prefix: str, names: set[str]) -> set[str]:
        """The worker names of ``prefix`` among Redis connection ``names`` (CLIENT LIST):
        ``<prefix>/<worker>``, and bare names without a prefix, as workers from before
        prefixed names set them (a rolling upgrade: never take a live old worker for dead)."""
        mine = Keys.conn_name(prefix, "")
        return {n[len(mine) :] if n.startswith(mine) else n for n in names
                if "/" not in n or n.startswith(mine)}  # fmt: skip

    @staticmethod
    def scan_lease(base: str) -> str:
        """The liveness scanner's lease (one scanner per Redis: on shard 0's base)."""
        return f"{base}:scan"

    @staticmethod
    def scan_standby(base: str) -> str:
        """The scanner's standby lease: its holder checks the scanner's lease every scan
        period and takes it the moment it lapses."""
        return f"{base}:scan-standby"

    @staticmethod
    def groups(base: str) -> str:
        return f"{base}:groups"

    @staticmethod
    def inbox(base: str, client_id: str) -> str:
        return f"{base}:inbox:{client_id}"

    @staticmethod
    def state_index(base: str, state: str) -> str:
        return f"{base}:ix:s:{state}"

    @staticmethod
    def tag_index(base: str, key: str, value: str) -> str:
        return f"{base}:ix:t:{key}={value}"

    @staticmethod
    def workers(base: str, group: str) -> str:
        return f"{base}:w:{group}"

    @staticmethod
    def stats(base: str, group: str) -> str:
        return f"{base}:stats:{group}"

    @staticmethod
    def counts(base: str) -> str:
        """Calls (promises with a task) by state: state -> count (lib.lua K_COUNTS)."""
        return f"{base}:n"

    @staticmethod
    def takeovers(base: str, group: str) -> str:
        """The group's last takeovers, newest first: msgpack [at ms, task id, from, to,
        cause ('gone': its connection was; 'lapsed': silent past its ttl)]."""
        return f"{base}:tk:{group}"

    @staticmethod
    def worker_info(base: str, worker: str) -> str:
        return f"{base}:wi:{worker}"
