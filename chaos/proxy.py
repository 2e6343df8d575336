"""A TCP proxy between one worker and Redis, on its own asyncio loop in a thread.

Modes (switched from any thread):

* ``latency(ms)``: every chunk is forwarded ``ms`` later (order kept, no throttling);
* ``blackhole()``: a partition: nothing is read or forwarded any more, but every socket stays
  open (TCP would retransmit, so what was sent arrives once the partition heals);
  new connections are accepted and left hanging too;
* ``reset()``: every current connection is aborted with a TCP RST on both sides;
* ``heal()``: back to plain forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from typing import Any

__all__ = ["Proxy"]


class _Conn:
    def __init__(self, cw: asyncio.StreamWriter, uw: asyncio.StreamWriter) -> None:
        self.writers = (cw, uw)

    def abort(self) -> None:
        for w in self.writers:
            sock = w.get_extra_info("socket")
            with contextlib.suppress(OSError):
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()


class Proxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        self.delay = 0.0
        self.conns: set[_Conn] = set()
        self.resets = 0
        self.accepted = 0
        self.loop = asyncio.new_event_loop()
        self._open: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="chaos-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    # -- control (any thread) -------------------------------------------------------------
    def start(self) -> Proxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def latency(self, ms: float) -> None:
        self.delay = ms / 1000.0

    def blackhole(self) -> None:
        self._call(self._set_open(False))

    def heal(self) -> None:
        self.delay = 0.0
        self._call(self._set_open(True))

    def reset(self) -> int:
        return int(self._call(self._reset()))

    def stop(self) -> None:
        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    # -- loop side ------------------------------------------------------------------------
    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _set_open(self, value: bool) -> None:
        assert self._open is not None
        if value:
            self._open.set()
        else:
            self._open.clear()

    async def _reset(self) -> int:
        n = len(self.conns)
        for c in list(self.conns):
            c.abort()
        self.conns.clear()
        self.resets += n
        return n

    async def _close(self) -> None:
        await self._reset()
        if self._server is not None:
            self._server.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        assert self._open is not None
        self.accepted += 1
        await self._open.wait()
        try:
            ur, uw = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            cw.transport.abort()
            return
        conn = _Conn(cw, uw)
        self.conns.add(conn)
        try:
            await asyncio.gather(self._pipe(cr, uw), self._pipe(ur, cw))
        finally:
            self.conns.discard(conn)
            conn.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction; a queue keeps order while each chunk waits out its delay."""
        assert self._open is not None
        q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            assert self._open is not None
            while True:
                due, data = await q.get()
                if not data:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._open.wait()
                writer.write(data)
                await writer.drain()

        sender = asyncio.get_running_loop().create_task(send())
        try:
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                await self._open.wait()
                q.put_nowait((time.monotonic() + self.delay, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            with contextlib.suppress(OSError):
                writer.close()
