"""Least privilege (the operations issue, item 4): the published ACL rules of the worker and
client roles (lb.broker.acl, ``lb acl``), used for real against a redis-server of the test's
own. Both roles lack CLIENT LIST (in @admin and @dangerous): liveness must fall back to the ttl
path with one warning, not stall with a traceback every 0.5 s as it did."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lb.broker import EmbeddedRedis
from lb.broker.acl import setuser
from lb.broker.errors import PermissionDenied
from lb.sdk import Resonate

from .conftest import fleet_of
from .support import Fleet, run_cli, wait_for

PREFIX = "acl"


def _url(server: EmbeddedRedis, user: str) -> str:
    return server.url.replace("redis://", f"redis://{user}:pw@")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    s = EmbeddedRedis().start()
    admin = redis.Redis.from_url(s.url)
    for role in ("worker", "client"):
        admin.execute_command(*setuser(role, f"lb-{role}", "pw", PREFIX))
    admin.close()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def workers(
    request: pytest.FixtureRequest, server: EmbeddedRedis, tmp_path: Path
) -> Iterator[Fleet]:
    with fleet_of(request, _url(server, "lb-worker"), PREFIX, tmp_path) as f:
        yield f


def test_worker_role_without_client_list_still_takes_over(
    server: EmbeddedRedis, workers: Fleet
) -> None:
    a = workers.start("a", concurrency=1, ttl=1)
    b = workers.start("b", concurrency=1, ttl=1)
    client = Resonate.remote(_url(server, "lb-client"), group="workers", prefix=PREFIX)
    try:
        h = client.begin_rpc("job", "grinder", 2.0)
        wait_for(lambda: workers.journal_lines("start", "job"), 30, "the call started")
        holder = workers.journal_lines("start", "job")[0][2]
        victim, survivor = (a, b) if holder == "a" else (b, a)
        os.kill(victim.pid, signal.SIGKILL)
        value = h.result(timeout=30)
        assert value["worker"] == survivor.name
        assert survivor.events("takeover", "job"), survivor.text()
        text = survivor.text()
        assert text.count("CLIENT LIST is not permitted") == 1, text
        assert "Traceback" not in text, text
        assert client.rpc("after", "echo", 3) == 3
    finally:
        client.stop()


def test_client_role_calls_but_cannot_serve(server: EmbeddedRedis, workers: Fleet) -> None:
    workers.start("w", concurrency=1)
    client_url = _url(server, "lb-client")
    res = run_cli(client_url, PREFIX, "invoke", "--func", "echo", "--args", "[4]", "--wait")
    assert res.code == 0 and res.out.strip().splitlines()[-1] == "4", res
    assert run_cli(client_url, PREFIX, "status", "--json").code == 0
    served = Fleet(client_url, PREFIX, workers.tmp)
    try:
        w = served.start("thief", wait=False)
        assert w.proc.wait(30) == 11, w.text()
        assert "XGROUP" in w.text() or "XREADGROUP" in w.text(), w.text()
        assert "Traceback" not in w.text()
    finally:
        served.stop_all()
    outsider = Resonate.remote(client_url, group="workers", prefix="other")
    try:
        with pytest.raises(PermissionDenied):  # keys outside its prefix are not its own
            outsider.begin_rpc("x", "echo", 1)
    finally:
        outsider.stop()
