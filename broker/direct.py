"""Scripts run from the caller's own thread, without a hop to the SDK's I/O loop: creates
(``begin_rpc``) and a ``def`` function's completion (its slot thread settles it).

A synchronous caller (a web handler, a script) that invokes one call at a time paid for two
thread switches and an event-loop turn per call on the I/O-loop path. Here the same
``create.lua`` runs on the caller's thread through a synchronous redis-py client (hiredis
parses the reply when installed) with its own bounded pool, thread-safe, callers beyond
``max_connections`` waiting for a connection.

Guarantees: the same script with the same checked arguments (``arguments.create_args``) as
the I/O-loop path, so the same rules hold (an existing id attaches, nothing runs twice,
typed errors: ``translate``); nothing is sent before the broker's first-contact check of the
server (the eviction policy) has passed, which the caller arranges (see
``Resonate._direct``; a worker has passed it before it runs anything).

A ``def`` function's slot thread fulfills its call itself (:class:`DirectFulfiller`), with the
same ``fulfill.lua`` and fence as the worker's loop would send: a round trip between the slot
thread and the loop costs more CPU than the function (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.exceptions as rexc

from lb.broker.arguments import create_args
from lb.broker.client import translate
from lb.broker.errors import LbError
from lb.broker.keys import Keys
from lb.broker.lane import SyncLane
from lb.broker.records import Fence, Promise, parse_promise
from lb.broker.scripts import script_sha, script_source
from lb.broker.settings import Settings

__all__ = ["DirectCreator", "DirectFulfiller"]


class _Direct:
    """One script run on the calling thread over a bounded, thread-safe set of connections;
    ``close()`` drops them."""

    script = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        pool = redis.BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=None,
            socket_connect_timeout=settings.connect_timeout,
            socket_timeout=settings.socket_timeout,
            health_check_interval=30,
            **settings.tls_kwargs(),
        )
        self.redis = redis.Redis(connection_pool=pool)
        self._source = script_source(self.script)
        self._sha = script_sha(self.script)
        self._lane = SyncLane(pool, settings.max_connections)  # broker/lane.py
        self.keys = Keys(settings.prefix, settings.shards)

    def _run(self, key: str, args: list[Any]) -> Any:
        """The script's reply (its errors as lb's typed errors: Fenced, RedisUnavailable...);
        loaded again if Redis answers NOSCRIPT (a restart, SCRIPT FLUSH)."""
        base = key[: key.index("}") + 1]
        command = ("EVALSHA", self._sha, 1, key, base, self.settings.retention_ms, *args)
        try:
            (raw,) = self._lane.run([command])
            if isinstance(raw, rexc.NoScriptError):
                self.redis.script_load(self._source)
                (raw,) = self._lane.run([command])
            if isinstance(raw, BaseException):
                raise raw
        except LbError:
            raise
        except (rexc.RedisError, OSError) as exc:
            raise translate(exc) from None
        return raw

    def close(self) -> None:
        self._lane.close()
        self.redis.close()
        self.redis.connection_pool.disconnect()


class DirectCreator(_Direct):
    """``create`` on the calling thread."""

    script = "create"

    def create(
        self,
        promise_id: str,
        param: bytes,
        *,
        group: str | None = None,
        timeout_ms: int | None = None,
        retention_ms: int | None = None,
    ) -> tuple[bool, Promise]:
        """As :meth:`Broker.create` for a root call (no fence, no listener, no tags)."""
        args = create_args(
            self.settings,
            promise_id,
            param,
            timeout_ms=timeout_ms,
            group=group,
            retention_ms=retention_ms,
        )
        raw = self._run(self.keys.promise(promise_id), list(args))
        return bool(raw[0]), parse_promise(raw[1:])


class DirectFulfiller(_Direct):
    """A holder's ``fulfill`` on the calling thread (a ``def`` function's slot thread)."""

    script = "fulfill"

    def fulfill(self, fence: Fence, state: str, value: bytes) -> None:
        """As :meth:`TaskQueue.fulfill`; raises :class:`Fenced` when the fence no longer
        holds the task (nothing written). The reply is the state alone (``'-'``)."""
        self._run(self.keys.promise(fence.task_id), [*fence.args(), state, value, b"", "-"])
