"""The I/O thread: one asyncio loop per Resonate instance, where all Redis traffic happens.

Sync callers hand coroutines to it with :meth:`IoLoop.call` (blocking) or :meth:`IoLoop.submit`
(a concurrent future); async callers on another loop await :meth:`IoLoop.wrap`. Guarantee: the
loop thread is a daemon and :meth:`stop` returns only after the loop has closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["IoLoop"]

T = TypeVar("T")


class IoLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="lb-io", daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()
        # Whatever is still pending (a wait interrupted by Ctrl-C, a listener's read) is
        # cancelled and run to its end, so closing never leaves "Task was destroyed but it is
        # pending!" behind; bounded: a task that ignores cancellation is left to the GC.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            gather = asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, RuntimeError):
                self.loop.run_until_complete(asyncio.wait_for(gather, 2.0))
        self.loop.close()

    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self.in_loop():
            coro.close()
            raise RuntimeError("blocking lb call made from lb's own I/O thread; use the async API")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except (concurrent.futures.TimeoutError, KeyboardInterrupt):
            fut.cancel()  # Ctrl-C in a blocking call: the coroutine on the loop ends too
            raise

    async def wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the I/O loop from any other event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop():
            self.thread.join(timeout=5)
