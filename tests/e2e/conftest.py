"""Fixtures of the e2e tests: a worker fleet per test (killed at teardown) and an SDK client.

The session Redis (``redis_server``) and the per-test key ``prefix`` come from tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lb.sdk import Resonate

from .support import CliResult, Fleet, run_cli


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, redis_url: str, prefix: str, tmp_path: Path
) -> Iterator[Fleet]:
    with fleet_of(request, redis_url, prefix, tmp_path) as f:
        yield f


LOOP_FAILED = re.compile(r"\b(claim|scan|sweep) failed\b")


@contextlib.contextmanager
def fleet_of(request: pytest.FixtureRequest, url: str, prefix: str, tmp: Path) -> Iterator[Fleet]:
    """A fleet on ``url``, killed at the end, its logs printed when the test failed."""
    f = Fleet(url, prefix, tmp)
    try:
        yield f
    finally:
        f.stop_all()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(f.dump())
    # An invariant of every e2e test: a worker's own loops (claim, scan, sweep) never meet an
    # exception they did not expect (a Redis outage is expected and logged otherwise). A
    # broken claim loop can hide behind the other paths that start calls (a completion's
    # next claim, takeovers) and slow a fleet down without failing a single call.
    broken = [
        f"{w.name}: {line}"
        for w in f.workers.values()
        for line in w.text().splitlines()
        if LOOP_FAILED.search(line)
    ]
    assert not broken, "a worker loop failed:\n" + "\n".join(broken[:5])


@pytest.fixture
def client(redis_url: str, prefix: str) -> Iterator[Resonate]:
    r = Resonate.remote(redis_url, group="workers", prefix=prefix)
    try:
        yield r
    finally:
        r.stop()


class Lb:
    """`lb ...` against this test's Redis and prefix."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url, self.prefix = redis_url, prefix

    def __call__(self, *args: str, timeout: float = 60, **env: str) -> CliResult:
        return run_cli(self.redis_url, self.prefix, *args, timeout=timeout, env=env or None)


@pytest.fixture
def lb(redis_url: str, prefix: str) -> Lb:
    return Lb(redis_url, prefix)
