"""Shared fixtures: one real redis-server per test session, a unique key prefix per test.

The server is the embedded one (see ``broker.embedded``; select another binary with
``LB_REDIS_SERVER=/usr/bin/redis-server``). When it cannot start, tests fail - in CI
(``CI=true``) and locally alike - rather than skip: a suite that silently skips Redis tests
proves nothing.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from lb.broker.embedded import EmbeddedRedis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of one test only, AOF ``always`` (the session one must never be killed):
    for tests that kill -9 and restart Redis on the same port and directory."""
    server = EmbeddedRedis(appendfsync="always").start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def prefix(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A fresh key prefix; the test fails if it leaves keys without a way to expire."""
    p = "t" + uuid.uuid4().hex[:10]
    yield p
    client = redis.Redis.from_url(redis_server.url)
    try:
        for key in client.scan_iter(match="{" + p + ":*", count=1000):
            ttl = client.pttl(key)
            kind = client.type(key)
            # Streams, consumer groups and the group registry are permanent by design.
            if ttl == -1 and kind not in (b"stream", b"set", b"zset", b"hash", b"list"):
                pytest.fail(f"key {key!r} ({kind!r}) left with no expiry")
    finally:
        client.close()


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``pred`` until it returns a truthy value; fail with a clear message on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {pred}")
        time.sleep(interval)


PYTHON = sys.executable
