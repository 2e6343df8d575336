"""Commands on connections of lb's own, past redis-py's client layer: the hot path's lane.

Profiling a worker (py-spy, one call at a time) put redis-py's client machinery (connection
pool bookkeeping, observability hooks, retry and response-callback layers) at about 25 us of
the ~40 us of CPU that one asyncio command costs; the command itself on a connection of its
own costs ~15 us. lb's hot commands (its scripts, the workers' blocking read) go out here, on
connections made by the same redis-py pool (``make_connection``: the same URL, TLS, password,
client name, timeouts and hiredis packing), written and read by redis-py's own connection code.

Guarantees:

* The bytes on the wire and the replies are redis-py's: a reply error comes back as the
  ``ResponseError`` (``NoScriptError``, ...) redis-py would raise, in its position; a
  pipeline of ``n`` commands yields ``n`` results in order.
* A connection that failed, or whose command was interrupted (cancelled, timed out), is
  closed, never reused: a late reply can never be read as another command's.
* A reused connection is checked before a command is written to it (redis-py's pool does the
  same): one the server has closed (a restart, a proxy reset, an idle timeout) is replaced
  by a new one, and when a connection is found dropped every idle one is let go too. A
  command is sent again only when it was never written (its connection could not be made);
  once written, a failure is the caller's (lb's callers ride outages out), so a script can
  never run twice because of the lane.
* At most ``cap`` connections; callers beyond it wait for one (never fail for want of one).

:class:`Lane` is for asyncio code; :class:`SyncLane`, the same for threads (the caller's-thread
create of ``begin_rpc``, broker/direct.py), is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import redis.asyncio.connection as aconn
import redis.connection as sconn
import redis.exceptions as rexc

from lb.broker.wire import pack_all

__all__ = ["Lane", "SyncLane"]


class Lane:
    """Connections of ``pool``'s kind, used one command batch at a time each."""

    def __init__(self, pool: aconn.ConnectionPool, cap: int) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(max(1, cap))
        self._idle: list[aconn.AbstractConnection] = []
        self._closed = False

    async def _connect(self) -> aconn.AbstractConnection:
        conn: aconn.AbstractConnection = self._pool.connection_class(**self._pool.connection_kwargs)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:  # a cancel mid-handshake, too: never leave a socket open
            await _close(conn)
            raise
        return conn

    async def _take(self) -> aconn.AbstractConnection:
        """An idle connection the server has not closed, else a new one."""
        while self._idle:
            conn = self._idle.pop()
            try:
                stale = await _readable(conn)
            except (rexc.ConnectionError, OSError):
                stale = True
            if not stale:
                return conn
            await _close(conn)
            await self._let_idle_go()
        return await self._connect()

    async def _let_idle_go(self) -> None:
        """One connection was dropped: the idle ones most likely were too."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)

    async def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` as one pipeline; their replies in order (errors as values)."""
        async with self._slots:
            try:
                conn = await self._take()
            except rexc.ConnectionError:
                if self._closed:
                    raise
                conn = await self._connect()  # nothing was sent: once more
            done = False
            try:
                await conn.send_packed_command(pack_all(conn, commands))
                out: list[Any] = []
                for _ in commands:
                    try:
                        out.append(await conn.read_response())
                    except rexc.ResponseError as err:
                        out.append(err)
                done = True
                return out
            except rexc.ConnectionError:
                await self._let_idle_go()
                raise
            finally:
                if done and not self._closed:
                    self._idle.append(conn)
                else:
                    await _close(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)


async def _readable(conn: aconn.AbstractConnection) -> bool:
    """Whether an idle connection has something to read: a closed socket (EOF) or a stray
    reply. Either way it must not carry a command."""
    check = getattr(conn, "can_read", None) or conn.can_read_destructive
    return bool(await check())


async def _close(conn: aconn.AbstractConnection) -> None:
    with contextlib.suppress(BaseException):
        await conn.disconnect(nowait=True)


class SyncLane:
    """:class:`Lane` for threads: connections of ``pool``'s kind, one caller at a time each."""

    def __init__(self, pool: sconn.ConnectionPool, cap: int) -> None:
        self._pool = pool
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, cap))
        self._closed = False

    def _connect(self) -> Any:
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        conn.connect()
        return conn

    def _take(self) -> Any:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            try:
                check = getattr(conn, "can_read", None) or conn.can_read_destructive
                stale = bool(check())
            except (rexc.ConnectionError, OSError):
                stale = True
            if not stale:
                return conn
            _sclose(conn)
            self._let_idle_go()

    def _let_idle_go(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _sclose(conn)

    def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` as one pipeline; their replies in order (errors as values)."""
        with self._slots:
            try:
                conn = self._take()
            except rexc.ConnectionError:
                if self._closed:
                    raise
                conn = self._connect()  # nothing was sent: once more
            done = False
            try:
                conn.send_packed_command(pack_all(conn, commands))
                out: list[Any] = []
                for _ in commands:
                    try:
                        out.append(conn.read_response())
                    except rexc.ResponseError as err:
                        out.append(err)
                done = True
                return out
            except rexc.ConnectionError:
                self._let_idle_go()
                raise
            finally:
                keep = False
                if done:
                    with self._lock:
                        if not self._closed:
                            self._idle.append(conn)
                            keep = True
                if not keep:
                    _sclose(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _sclose(conn)


def _sclose(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.disconnect()
