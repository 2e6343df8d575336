"""The asyncio client of the broker: promises, and the task transitions used by workers.

Every state change is one Lua script call (one round trip). Guarantees:

* Errors are typed: Redis unreachable -> :class:`RedisUnavailable` (nothing changed by that
  call); a stale worker mutation -> :class:`Fenced`; bad names -> :class:`BadInput` before any
  I/O; a missing promise -> :class:`NotFound`.
* Connections are bounded: at most ``settings.max_connections`` pooled connections; a caller
  beyond that waits for one instead of failing. Blocking reads use their own connections.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as rexc

from lb.broker.arguments import check_duration, create_args, timeout_ms_or
from lb.broker.batching import Batcher
from lb.broker.errors import (
    AuthenticationFailed,
    BadInput,
    Fenced,
    LbError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RedisOutOfMemory,
    RedisReadOnly,
    RedisUnavailable,
    UnsafeRedisConfig,
)
from lb.broker.keys import PROMISE_STATES, Keys, check_group, check_id, check_root_id
from lb.broker.lane import Lane
from lb.broker.records import NO_FENCE, Fence, Promise, parse_promise
from lb.broker.scripts import Scripts, command_at
from lb.broker.settings import Settings
from lb.broker.wire import connection_class

__all__ = ["Broker", "translate_errors"]

log = logging.getLogger("lb.broker")
T = TypeVar("T")
CONNECT_RETRIES = 3
_SETTLE_STATES = ("resolved", "rejected", "rejected_canceled")


def translate(exc: BaseException) -> LbError:
    """Map a redis-py exception to lb's typed errors (each with its own exit code)."""
    text = str(exc)
    if isinstance(exc, rexc.AuthenticationError) or _auth_refused(text):
        return AuthenticationFailed(
            f"Redis refused the credentials ({text[:160]}): check the user name and password "
            "in --redis / LB_REDIS_URL (redis://user:password@host:port)"
        )
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
        if "SSL" in text or "certificate" in text:
            return RedisUnavailable(
                f"the TLS handshake with Redis failed ({text[:200]}); check the rediss:// URL "
                "and --tls-ca (the server's CA), --tls-cert/--tls-key (a client certificate)"
            )
        return RedisUnavailable(
            f"Redis is unreachable ({exc}); start it, or check the Redis URL "
            "(--redis, LB_REDIS_URL, or the url given to Resonate.remote)"
        )
    if isinstance(exc, rexc.ResponseError):
        if "FENCED" in text:
            return Fenced(text[text.index("FENCED") :])
        if text.startswith("LOADING"):
            return RedisUnavailable("Redis is loading its data; try again in a moment")
        if isinstance(exc, rexc.OutOfMemoryError) or "OOM " in text[:200]:
            return RedisOutOfMemory(
                "Redis is out of memory (used memory > maxmemory under noeviction): nothing "
                "was stored. Raise maxmemory, shorten the retention (--retention / "
                "LB_RETENTION) or add memory; lb carries on by itself once there is room"
            )
        if isinstance(exc, rexc.ReadOnlyError) or "READONLY" in text[:200]:
            return RedisReadOnly(
                "Redis is read-only (a replica, or a failover in progress): point --redis at "
                "the primary; workers wait and carry on once a primary answers"
            )
        if (
            isinstance(exc, rexc.NoPermissionError)
            or "NOPERM" in text[:300]
            or "can't run this command" in text[:300]
            or "no permissions to run" in text[:300]  # Valkey: "ACL failure in script: ..."
        ):
            where = command_at(text)
            named = re.search(r"run the '([\w|]+)' command", text)
            what = (
                f"run {where[1]} (in lb's {where[0]} script)"
                if where
                else f"run {named.group(1).upper()}"
                if named
                else "do this"
            )
            return PermissionDenied(
                f"the Redis user may not {what} ({_noperm(text)}); grant it the rules in "
                "the README's 'Redis users (ACL)' section"
            )
        return LbError(f"Redis refused the call: {text}")
    if isinstance(exc, rexc.RedisError):
        return LbError(f"Redis error: {exc}")
    raise exc


def _auth_refused(text: str) -> bool:
    head = text[:200]
    return head.startswith(("WRONGPASS", "NOAUTH")) or "invalid username-password" in head


def _noperm(text: str) -> str:
    """The NOPERM part of a Redis error (it names the command or key), shortened."""
    at = text.find("NOPERM")
    return (text[at:] if at >= 0 else text)[:200].rstrip(". ")


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Re-raise redis-py errors inside the block as lb's typed errors."""
    try:
        yield
    except LbError:
        raise
    except (rexc.RedisError, OSError) as exc:
        raise translate(exc) from None


def make_redis(
    settings: Settings, max_connections: int, client_name: str | None = None
) -> aioredis.Redis:
    """A client with a bounded pool: callers beyond ``max_connections`` wait, never fail."""
    extra: dict[str, Any] = {}
    packer = connection_class(settings.url)
    if packer is not None:
        extra["connection_class"] = packer
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        client_name=Keys.conn_name(settings.prefix, client_name) if client_name else None,
        max_connections=max_connections,
        timeout=None,
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=settings.socket_timeout,
        health_check_interval=30,
        **settings.tls_kwargs(),
        **extra,
    )
    return aioredis.Redis(connection_pool=pool)


class Broker:
    """Async access to lb's data in Redis. Create one per process and ``await close()``."""

    def __init__(self, settings: Settings | None = None, client_name: str | None = None) -> None:
        self.settings = settings or Settings.from_url()
        self.client_name = client_name
        self.keys = Keys(self.settings.prefix, self.settings.shards)
        self.redis = make_redis(self.settings, self.settings.max_connections, client_name)
        self.scripts = Scripts(self.redis)
        self.lane = Lane(self.redis.connection_pool, self.settings.max_connections)
        self.batcher = Batcher(self.scripts, self.lane)
        self._server_checked = False
        self._checking: asyncio.Future[None] | None = None

    async def check_server(self) -> None:
        """Refuse a Redis that would lose acknowledged work: any ``maxmemory-policy`` but
        ``noeviction`` raises :class:`UnsafeRedisConfig` unless ``allow_eviction`` is set
        (``LB_ALLOW_EVICTION=1``). Read from INFO, which users without CONFIG may run; a user
        who may not run INFO either is let through with one warning. Done once per broker,
        before its first script call (and by workers at start)."""
        if self._server_checked:
            return
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(self._check_server())
        check = self._checking
        try:
            await asyncio.shield(check)
        finally:
            if check.done() and not check.cancelled() and check.exception() is not None:
                self._checking = None  # the next caller tries again

    async def _check_server(self) -> None:
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                return await self._read_policy()
            except RedisUnavailable as exc:
                if attempt == CONNECT_RETRIES or "Timeout connecting" not in str(exc):
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))

    async def _read_policy(self) -> None:
        try:
            info = await self.redis.info("memory")
        except rexc.ResponseError as exc:
            if "NOPERM" not in str(exc):
                raise translate(exc) from None
            log.warning("cannot check Redis's maxmemory-policy (INFO is not permitted)")
            self._server_checked = True
            return
        except (rexc.RedisError, OSError) as exc:
            raise translate(exc) from None
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            if not self.settings.allow_eviction:
                raise UnsafeRedisConfig(
                    f"Redis evicts keys under memory pressure (maxmemory-policy {policy}): lb "
                    "would silently lose acknowledged calls. Set 'maxmemory-policy noeviction' "
                    "(redis.conf, or CONFIG SET maxmemory-policy noeviction), or accept the "
                    "risk with LB_ALLOW_EVICTION=1"
                )
            log.warning(
                "Redis evicts keys (maxmemory-policy %s); allowed by LB_ALLOW_EVICTION", policy
            )
        self._server_checked = True

    async def close(self) -> None:
        await self.lane.close()
        await self.redis.aclose(close_connection_pool=True)

    async def _run(self, call: Callable[[], Awaitable[T]]) -> T:
        async with translate_errors():
            return await call()

    async def script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script with the standard header (base, retention) prepended to ``args``.

        A connection that could not be opened in time is retried (up to CONNECT_RETRIES
        times): nothing reached Redis, so a retry is safe for every script. A burst that keeps
        this process's own event loop busy delays the connect's callback past its timeout
        while Redis is fine; such a burst must slow down, not fail for want of a connection.
        """
        if not self._server_checked:
            await self.check_server()
        base = keys[0][: keys[0].index("}") + 1]
        full = [base, self.settings.retention_ms, *args]
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                async with translate_errors():
                    return await self.batcher.call(name, keys, full)
            except RedisUnavailable as exc:
                if attempt == CONNECT_RETRIES or "Timeout connecting" not in str(exc):
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        await self._run(self.redis.ping)

    # ----------------------------------------------------------------- promises
    async def create(
        self,
        promise_id: str,
        param: bytes = b"",
        *,
        param_headers: bytes = b"",
        tags: dict[str, str] | None = None,
        timeout_ms: int | None = None,
        group: str | None = None,
        listener: str | None = None,
        fence: Fence | None = None,
        timer: bool = False,
        retention_ms: int | None = None,
    ) -> tuple[bool, Promise]:
        """Create ``promise_id`` or return the existing one (``created`` is then False).

        With ``group`` a task is created and delivered to that group's stream in the same step.
        With ``listener`` the client's inbox gets the record when the promise settles.
        With ``fence`` the create is refused (:class:`Fenced`) unless the fence holds its task.
        Without one the promise is a root (a call): its id may not contain ``:`` (step ids).
        ``retention_ms`` keeps this call (and its steps) that long once settled instead of
        the settings' default; an existing id keeps the retention it was created with.
        """
        args = create_args(
            self.settings,
            promise_id,
            param,
            param_headers,
            tags,
            timeout_ms,
            group,
            listener,
            fence,
            timer,
            retention_ms=retention_ms,
        )
        raw = await self._create(promise_id, args)
        return bool(raw[0]), parse_promise(raw[1:])

    async def open_step(
        self,
        promise_id: str,
        fence: Fence,
        deadline: int,
        *,
        param: bytes = b"",
        tags: dict[str, str] | None = None,
        timeout_ms: int | None = None,
        group: str | None = None,
        timer: bool = False,
    ) -> tuple[Promise, int]:
        """Create (or find) a durable step of the call ``fence`` holds; returns the step and the
        Redis clock of this call in ms.

        The step's deadline is now + ``timeout_ms`` (default: none of its own), capped at
        ``deadline`` (the parent's, absolute ms): a step never outlives its call. Remaining
        times are to be computed from the returned clock, never from the local one.
        """
        args = create_args(
            self.settings, promise_id, param, b"", tags, timeout_ms, group, None, fence, timer,
            deadline,
        )  # fmt: skip
        raw = await self._create(promise_id, args)
        return parse_promise(raw[1:11]), int(raw[11])

    async def _create(self, promise_id: str, args: list[Any]) -> Any:
        """create.lua with arguments from :func:`create_args` (checked there)."""
        return await self.script("create", [self.keys.promise(promise_id)], args)

    async def create_many(
        self,
        group: str,
        items: list[tuple[str, bytes]],
        timeout_ms: int | None = None,
        retention_ms: int | None = None,
    ) -> list[tuple[bool, Promise]]:
        """Create many promises with tasks on ``group``: one script call per 256 ids and shard.

        Same rules as :meth:`create` for each id (``retention_ms`` as there: these calls' own
        retention); the returned promises carry id, state and value only. Results are in the
        order of ``items``.
        """
        check_group(group)
        timeout = timeout_ms_or(timeout_ms, self.settings.default_timeout_ms)
        ret = "" if retention_ms is None else int(check_duration(retention_ms, 1, "retention"))
        by_base: dict[str, list[int]] = {}
        for i, (pid, param) in enumerate(items):
            check_root_id(pid)
            if len(param) > self.settings.max_payload:
                raise PayloadTooLarge(f"params of {pid!r} are over the limit")
            by_base.setdefault(self.keys.base_for(pid), []).append(i)
        out: list[tuple[bool, Promise] | None] = [None] * len(items)
        calls = []
        for base, idx in by_base.items():
            for s in range(0, len(idx), 256):
                chunk = idx[s : s + 256]
                flat: list[Any] = []
                for i in chunk:
                    flat += [items[i][0], items[i][1]]
                calls.append(
                    (
                        chunk,
                        self.script(
                            "create_many", [Keys.stream(base, group)], [group, timeout, ret, *flat]
                        ),
                    )
                )
        answers = await asyncio.gather(*(call for _, call in calls))
        for (chunk, _), rows in zip(calls, answers, strict=True):
            for i, row in zip(chunk, rows, strict=True):
                p = Promise(
                    items[i][0],
                    row[1].decode(),
                    b"",
                    b"",
                    row[2] or b"",
                    row[3] or b"",
                    {},
                    0,
                    0,
                    0,
                )
                out[i] = (bool(row[0]), p)
        return [x for x in out if x is not None]

    async def get(self, promise_id: str, listener: str | None = None) -> Promise:
        """The promise (lazily timed out if past its deadline), or :class:`NotFound`."""
        check_id(promise_id)
        raw = await self.script(
            "get", [self.keys.promise(promise_id)], [promise_id, listener or ""]
        )
        if raw is None:
            raise NotFound(f"no promise with id {promise_id!r} (never created, or expired)")
        return parse_promise(raw)

    async def settle(
        self,
        promise_id: str,
        state: str,
        value: bytes = b"",
        *,
        value_headers: bytes = b"",
        fence: Fence | None = None,
    ) -> tuple[bool, Promise]:
        """Settle once; ``changed`` is False when it was already settled (record unchanged)."""
        check_id(promise_id)
        if state not in _SETTLE_STATES:
            raise BadInput(f"cannot settle to {state!r}; use one of {', '.join(_SETTLE_STATES)}")
        if len(value) + len(value_headers) > self.settings.max_payload:
            raise PayloadTooLarge(f"value is over the {self.settings.max_payload}-byte limit")
        args = [promise_id, state, value, value_headers, *(fence.args() if fence else NO_FENCE)]
        raw = await self.script("settle", [self.keys.promise(promise_id)], args)
        if raw is None:
            raise NotFound(f"no promise with id {promise_id!r} (never created, or expired)")
        return bool(raw[0]), parse_promise(raw[1:])

    async def search(
        self,
        state: str | None = None,
        tag: tuple[str, str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[Promise], int]:
        """Promises by state and/or one tag, from the indexes (no key scans).

        Returns the page and the next offset (-1 when there is no more). Searches shard 0
        and onwards in turn when there are several shards (offsets are per call).
        """
        if state is not None and state not in PROMISE_STATES:
            raise BadInput(f"unknown state {state!r}; use one of {', '.join(PROMISE_STATES)}")
        if tag is None and state is None:
            raise BadInput("search needs a state or a tag")
        found: list[Promise] = []
        nxt = -1
        for base in self.keys.all_bases():
            if tag is not None:
                index = Keys.tag_index(base, tag[0], tag[1])
            else:
                assert state is not None
                index = Keys.state_index(base, state)
            raw = await self.script("search", [index], [state or "", offset, limit])
            nxt = max(nxt, int(raw[0]))
            found.extend(parse_promise(r) for r in raw[1:])
        return found, nxt

    async def count_by_state(self) -> dict[str, int]:
        """How many promises are in each state (from the state indexes)."""
        counts = dict.fromkeys(PROMISE_STATES, 0)
        async with translate_errors():
            for base in self.keys.all_bases():
                pipe = self.redis.pipeline(transaction=False)
                for s in PROMISE_STATES:
                    pipe.zcard(Keys.state_index(base, s))
                for s, n in zip(PROMISE_STATES, await pipe.execute(), strict=True):
                    counts[s] += int(n)
        return counts
