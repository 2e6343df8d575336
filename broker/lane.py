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
* A command that met a dropped connection (``ConnectionError``: Redis restarted, a proxy
  reset it) is sent once more on a new connection, as redis-py's client does by default;
  lb's scripts are idempotent or fenced, so a repeat changes nothing. Timeouts are not
  repeated.
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

__all__ = ["Lane", "SyncLane"]


class Lane:
    """Connections of ``pool``'s kind, used one command batch at a time each."""

    def __init__(self, pool: aconn.ConnectionPool, cap: int) -> None:
        self._pool = pool
        self._cap = max(1, cap)
        self._idle: list[aconn.AbstractConnection] = []
        self._open = 0
        self._freed = asyncio.Condition()
        self._waiting = 0
        self._closed = False

    async def _take(self) -> aconn.AbstractConnection:
        while True:
            if self._idle:
                return self._idle.pop()
            if self._open < self._cap:
                self._open += 1
                conn: aconn.AbstractConnection = self._pool.connection_class(
                    **self._pool.connection_kwargs
                )
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                except BaseException:
                    self._open -= 1
                    await self._notify()
                    raise
                return conn
            async with self._freed:
                self._waiting += 1
                try:
                    await self._freed.wait()
                finally:
                    self._waiting -= 1

    async def _notify(self) -> None:
        if self._waiting:
            async with self._freed:
                self._freed.notify()

    async def _drop(self, conn: aconn.AbstractConnection) -> None:
        self._open -= 1
        with contextlib.suppress(Exception):
            await conn.disconnect()
        await self._notify()

    async def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` as one pipeline; their replies in order (errors as values)."""
        try:
            return await self._run_once(commands)
        except rexc.ConnectionError:
            if self._closed:
                raise
            return await self._run_once(commands)  # once, on a new connection

    async def _run_once(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        conn = await self._take()
        done = False
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            out: list[Any] = []
            for _ in commands:
                try:
                    out.append(await conn.read_response())
                except rexc.ResponseError as err:
                    out.append(err)
            done = True
            return out
        finally:
            if done and not self._closed:
                self._idle.append(conn)
                await self._notify()
            else:
                await self._drop(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._drop(conn)


class SyncLane:
    """:class:`Lane` for threads: connections of ``pool``'s kind, one caller at a time each."""

    def __init__(self, pool: sconn.ConnectionPool, cap: int) -> None:
        self._pool = pool
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, cap))
        self._closed = False

    def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` as one pipeline; their replies in order (errors as values)."""
        try:
            return self._run_once(commands)
        except rexc.ConnectionError:
            if self._closed:
                raise
            return self._run_once(commands)  # once, on a new connection

    def _run_once(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        with self._slots:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._pool.connection_class(**self._pool.connection_kwargs)
                conn.connect()
            done = False
            try:
                conn.send_packed_command(conn.pack_commands(commands))
                out: list[Any] = []
                for _ in commands:
                    try:
                        out.append(conn.read_response())
                    except rexc.ResponseError as err:
                        out.append(err)
                done = True
                return out
            finally:
                if done and not self._closed:
                    with self._lock:
                        self._idle.append(conn)
                else:
                    with contextlib.suppress(Exception):
                        conn.disconnect()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.disconnect()
