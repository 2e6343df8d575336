"""Command packing for lb's asyncio connections: hiredis's C packer when it is installed.

redis-py's asyncio connection packs every command in Python (the sync one uses hiredis): for
lb's scripts, a dozen arguments each, that was the largest single cost a worker paid per call.
The classes here are redis-py's own connection classes with ``pack_command`` taken from
hiredis; the bytes on the wire are identical (RESP arrays of bulk strings), so behaviour is
unchanged. Without hiredis (a platform with no wheel) redis-py's packer is used.
:func:`pack_all` does the same for the lanes (broker/lane.py), sync and async.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio.connection as aconn

_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    import hiredis

    _pack = hiredis.pack_command
except ImportError:  # pragma: no cover - hiredis has wheels for every platform lb claims
    _pack = None

__all__ = ["connection_class", "pack_all"]


def pack_all(conn: Any, commands: list[tuple[Any, ...]]) -> Any:
    """``commands`` as ``conn.send_packed_command`` takes them (a list of bytes): one hiredis
    ``pack_command`` each (lb's commands are str, bytes and int arguments, a one-word command
    name first), else redis-py's own packing (without hiredis, or any other argument type).
    redis-py 8's sync connection encodes each argument in Python before hiredis packs them."""
    if _pack is not None and all(isinstance(c[0], str) and " " not in c[0] for c in commands):
        try:
            return [b"".join([_pack(c) for c in commands])]
        except TypeError:
            pass
    return conn.pack_commands(commands)


class _HiredisPacking:
    """``pack_command`` by hiredis (str, bytes, int and float arguments, as redis-py's; any
    other type falls back to redis-py's packer and its errors)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        try:
            assert _pack is not None  # connection_class() picks these classes only then
            return [_pack(args)]
        except TypeError:
            return super().pack_command(*args)  # type: ignore[misc, no-any-return]


class Connection(_HiredisPacking, aconn.Connection):
    pass


class SSLConnection(_HiredisPacking, aconn.SSLConnection):
    pass


class UnixDomainSocketConnection(_HiredisPacking, aconn.UnixDomainSocketConnection):
    pass


def connection_class(url: str) -> type[aconn.AbstractConnection] | None:
    """The connection class for ``url``'s scheme, or None (redis-py's choice) without hiredis."""
    if _pack is None:
        return None
    if url.startswith("rediss://"):
        return SSLConnection
    if url.startswith("unix://"):
        return UnixDomainSocketConnection
    return Connection
