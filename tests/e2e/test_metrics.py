"""Metrics and health endpoints against real workers (issue 14): a scrape after a known
sequence - calls, a kill -9, a garbage entry dead-lettered - gives exact counts, from the
workers (their own counters) and from `lb exporter` (the fleet's gauges, from Redis, which
`lb status` shows too); /livez and /readyz tell a Redis outage apart from a dead worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from lb.broker import EmbeddedRedis
from lb.broker.embedded import free_port
from lb.broker.keys import Keys
from lb.cli.common import lb_argv
from lb.sdk import Resonate

from .support import ROOT, Fleet, base_env, run_cli, wait_for


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:port/metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def status_of(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as exc:  # not listening (yet)
        return 0, str(exc)


@pytest.fixture
def exporter(redis_url: str, prefix: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [*lb_argv(), "exporter", "--port", str(port)], cwd=ROOT,
        env=base_env(redis_url, prefix), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: status_of(port, "/metrics")[0] == 200, 30, "exporter up")
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read().decode()
        proc.stderr.close()


def test_a_known_sequence_gives_exact_counts(
    fleet: Fleet, client: Resonate, exporter: int, redis_url: str, prefix: str
) -> None:
    """20 calls on a and b, then a grinder on a (1 slot) and a kill -9 of a: b takes it over
    (cause gone), and a garbage entry is dead-lettered. The workers' counters and the
    exporter's gauges say exactly that; `lb status --json` has the same numbers."""
    pa, pb = free_port(), free_port()
    fleet.start("a", "--metrics-port", str(pa), concurrency=1)
    fleet.start("b", "--metrics-port", str(pb), concurrency=4)
    for i in range(20):
        client.begin_rpc(f"m-{i}", "record", i)

    def completed() -> float:
        return sum(value(scrape(p), "tasks_total", state="completed") for p in (pa, pb))

    wait_for(lambda: completed() == 20, 60, fleet.dump)
    both = [scrape(pa), scrape(pb)]
    assert sum(value(s, "tasks_total", state="claimed") for s in both) == 20
    assert sum(value(s, "lb_execution_seconds_count", function="record") for s in both) == 20
    assert sum(value(s, "lb_claim_latency_seconds_count", function="record") for s in both) == 20
    assert value(both[1], "lb_slots", state="free") + value(both[1], "lb_slots", state="busy") == 4
    assert value(both[1], "lb_heartbeats_total", outcome="sent") >= 1
    fleet_now = scrape(exporter)
    assert value(fleet_now, "promises_total", state="resolved") == 20
    assert value(fleet_now, "lb_workers", state="alive") == 2

    client.begin_rpc("held", "grinder", 2)
    wait_for(lambda: fleet.journal_lines("start", "held"), 30, fleet.dump)
    holder = fleet.journal_lines("start", "held")[0][2]
    other_port = pb if holder == "a" else pa
    os.kill(fleet[holder].pid, signal.SIGKILL)
    wait_for(lambda: value(scrape(other_port), "lb_takeovers_total", cause="gone") == 1,
             30, fleet.dump)  # fmt: skip
    client.get("held").result(timeout=60)
    r = redis.Redis.from_url(redis_url)
    r.xadd(Keys.stream(Keys(prefix).base(0), "workers"), {"t": "no-such-task"})
    r.close()
    wait_for(lambda: value(scrape(exporter), "lb_dead_lettered_total", reason="garbage") == 1,
             30, fleet.dump)  # fmt: skip
    fleet_now = scrape(exporter)
    from lb.broker.fleet_metrics import FleetCollector
    from lb.sdk.metrics import NAMES

    assert {n for n, _ in fleet_now} == set(FleetCollector.NAMES)
    # (lb_redis_errors_total has a sample per error type seen: none yet)
    assert {n for n, _ in scrape(other_port)} >= set(NAMES) - {"lb_redis_errors_total"}
    assert value(fleet_now, "lb_fleet_takeovers_total", cause="gone") == 1
    assert value(fleet_now, "lb_fleet_takeovers_total", cause="lapsed") == 0
    assert value(fleet_now, "lb_workers", state="dead") == 1
    assert value(fleet_now, "lb_workers", state="alive") == 1
    assert value(fleet_now, "promises_total", state="resolved") == 21
    assert value(fleet_now, "promises_total", state="pending") == 0
    assert value(fleet_now, "lb_backlog") == 0 and value(fleet_now, "lb_dead_letters") == 1
    assert value(scrape(other_port), "lb_dead_letters_total") == 1
    snap = json.loads(run_cli(redis_url, prefix, "status", "--json").out)
    grp = snap["groups"]["workers"]
    assert snap["calls"]["resolved"] == 21 and grp["takeovers_by_cause"] == {"gone": 1}
    assert grp["dead_by_reason"] == {"garbage": 1}


def test_liveness_and_readiness_tell_an_outage_from_a_dead_worker(tmp_path: Path) -> None:
    """Ready and live while serving; Redis stopped: not ready (Redis unavailable) but still
    live, so a probe restarts nothing; Redis back: ready again. A worker started before its
    Redis is live (waiting to join) but not ready."""
    server = EmbeddedRedis().start()
    port = free_port()
    try:
        with fleet_of_path(server.url, tmp_path) as fleet:
            fleet.start("w", "--metrics-port", str(port))
            assert status_of(port, "/livez") == (200, "ok\n")
            assert status_of(port, "/readyz") == (200, "ok\n")
            assert status_of(port, "/nope")[0] == 404
            server.stop()
            wait_for(lambda: status_of(port, "/readyz")[0] == 503, 30, fleet.dump)
            code, why = status_of(port, "/readyz")
            assert "Redis unavailable" in why, why
            assert status_of(port, "/livez")[0] == 200
            server.start()
            wait_for(lambda: status_of(port, "/readyz")[0] == 200, 60, fleet.dump)
            assert value(scrape(port), "lb_redis_errors_total") >= 1
        late = free_port()
        with fleet_of_path("redis://127.0.0.1:1/0", tmp_path / "late") as fleet:
            w = fleet.start("late", "--metrics-port", str(late), wait=False)
            wait_for(lambda: status_of(late, "/livez")[0] != 0, 30, w.text)
            assert status_of(late, "/livez")[0] == 200
            code, why = status_of(late, "/readyz")
            assert code == 503 and "not joined" in why, why
    finally:
        server.cleanup()


class fleet_of_path:
    """A Fleet on ``url`` in ``tmp`` (no pytest request: the logs are printed on failure)."""

    def __init__(self, url: str, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.fleet = Fleet(url, "health", tmp)

    def __enter__(self) -> Fleet:
        return self.fleet

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            print(self.fleet.dump())
        self.fleet.stop_all()


def test_a_taken_metrics_port_is_a_clear_error(fleet: Fleet) -> None:
    """A second worker on the same --metrics-port exits 2 with one line, no traceback."""
    port = free_port()
    fleet.start("first", "--metrics-port", str(port))
    second = fleet.start("second", "--metrics-port", str(port), wait=False)
    assert second.proc.wait(30) == 2, second.text()
    assert "cannot serve metrics" in second.text() and "Traceback" not in second.text()


def test_two_shards_are_summed_by_the_workers_views_and_exporter(
    fleet: Fleet, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With LB_SHARDS=2 everywhere, calls land in both shards (their counters, takeover
    records and stats are per shard); a kill -9 takeover of a call in shard 1. The workers,
    `lb status` and `lb exporter` count every call once: the views sum the shards."""
    monkeypatch.setenv("LB_SHARDS", "2")
    fleet.extra_env = {"LB_SHARDS": "2"}
    keys = Keys(prefix, 2)
    ids = [f"s{i}" for i in range(20)]
    assert {keys.shard_of(i) for i in ids} == {0, 1}
    held = next(f"held{i}" for i in range(100) if keys.shard_of(f"held{i}") == 1)
    pa, pb = free_port(), free_port()
    fleet.start("a", "--metrics-port", str(pa), concurrency=1)
    fleet.start("b", "--metrics-port", str(pb), concurrency=4)
    client = Resonate.remote(redis_url, group="workers", prefix=prefix)
    env = {**base_env(redis_url, prefix), "LB_SHARDS": "2"}
    port = free_port()
    exporter = subprocess.Popen(
        [*lb_argv(), "exporter", "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert client.settings.shards == 2
        for pid in ids:
            client.begin_rpc(pid, "record", pid)
        completed = lambda: sum(  # noqa: E731
            value(scrape(p), "tasks_total", state="completed") for p in (pa, pb)
        )
        wait_for(lambda: completed() == 20, 60, fleet.dump)
        client.begin_rpc(held, "grinder", 2)
        wait_for(lambda: fleet.journal_lines("start", held), 30, fleet.dump)
        holder = fleet.journal_lines("start", held)[0][2]
        os.kill(fleet[holder].pid, signal.SIGKILL)
        assert client.get(held).result(timeout=60)["attempts"] == 2
        wait_for(lambda: status_of(port, "/metrics")[0] == 200, 30, "exporter up")
        fleet_now = scrape(port)
        assert value(fleet_now, "promises_total", state="resolved") == 21
        assert value(fleet_now, "promises_total", state="pending") == 0
        assert value(fleet_now, "lb_fleet_takeovers_total", cause="gone") == 1
        assert value(fleet_now, "lb_workers", state="alive") == 1
        snap = json.loads(run_cli(redis_url, prefix, "status", "--json", env=env).out)
        assert snap["calls"]["resolved"] == 21
        assert snap["groups"]["workers"]["takeovers_by_cause"] == {"gone": 1}
        survivor = "b" if holder == "a" else "a"
        assert snap["groups"]["workers"]["workers"][survivor]["takeovers"] == 1
    finally:
        client.stop()
        exporter.kill()
        exporter.wait(10)
