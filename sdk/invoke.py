"""How a registered function is called for one execution.

An ``async def`` runs on the worker's I/O loop with an :class:`AsyncContext`; a plain ``def``
runs on a slot thread of the worker's pool with a :class:`Context`, its outcome handed back to
the loop (sdk/handoff.py: a returned value is fulfilled by the slot thread itself, so that the
loop need not wake for it). That hand-off is the largest single cost of a ``def`` call (a
round trip between threads costs ~75-100 us of CPU: BENCHMARKS.md), so it is kept here and
in sdk/handoff.py.

Guarantees: the function's value or exception reaches the awaiting execution exactly once; a
``BaseException`` that would end the worker (``SystemExit``, ``KeyboardInterrupt``,
``GeneratorExit``...) fails this call only, as :class:`FunctionAborted`; the control-flow
exceptions of the steps (``Suspend``, ``Lost``) and a cancellation pass through unchanged.
While tracing, the execution's ``lb.run`` span is current inside the function.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lb.broker.errors import FunctionAborted
from lb.sdk import tracing
from lb.sdk.context import AsyncContext, Context, Execution, Lost, Suspend
from lb.sdk.encoding import safe_str
from lb.sdk.threads import DaemonPool

__all__ = ["invoke"]


async def invoke(ex: Execution, fn: Any, is_async: bool, pool: DaemonPool) -> Any:
    """Run ``fn`` for ``ex`` from its first step (module docstring)."""
    try:
        return await _call(ex, fn, is_async, pool)
    except (Exception, Suspend, Lost, asyncio.CancelledError):
        raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit...
        # would end the I/O loop (and with it the worker, silently): fails this call only.
        raise FunctionAborted(
            f"{ex.call.func} raised {type(exc).__name__}({safe_str(exc)}): a function may "
            "not end its worker; the call fails"
        ) from None


async def _call(ex: Execution, fn: Any, is_async: bool, pool: DaemonPool) -> Any:
    ex.counter = 0
    if is_async:
        with tracing.current(ex.span):
            return await fn(AsyncContext(ex), *ex.call.args, **ex.call.kwargs)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    worker = ex.worker

    def body() -> None:
        try:
            with tracing.current(ex.span):
                result = fn(Context(ex), *ex.call.args, **ex.call.kwargs)
        except BaseException as exc:  # delivered to the loop, re-raised there
            worker._hand_back(fut, None, exc)
        else:
            # Settled here when it can be (sdk/handoff.py): the loop then only books it.
            worker._hand_back(fut, worker._settle_in_thread(ex, result) or result)

    pool.submit(body)
    return await fut
