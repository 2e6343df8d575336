"""OpenTelemetry traces across real processes (issue 14 item 4): a caller's span, the call's
claim and runs on one worker, its steps, a `ctx.rpc` child run on whichever worker took it,
and the settle, all in one trace, joined through the trace context stored in the promise;
a takeover after kill -9 continues the same trace; off by default, nothing imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lb.sdk import Resonate, tracing
from lb.sdk.encoding import Call

from .support import ROOT, Fleet, wait_for


@pytest.fixture
def memory() -> Iterator[tuple[InMemorySpanExporter, Any]]:
    """This process traced into memory (the caller's side), untraced again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter, provider.get_tracer("test")
    finally:
        tracing.disable()


def _hex(n: int, width: int) -> str:
    return "0x" + format(n, f"0{width}x")


def _caller_spans(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    """The in-memory spans in the console exporter's JSON shape."""
    return [json.loads(s.to_json(indent=None)) for s in exporter.get_finished_spans()]


def _file_spans(*paths: Path) -> list[dict[str, Any]]:
    spans = []
    for path in paths:
        if path.exists():
            spans += [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return spans


def _of(spans: list[dict[str, Any]], name: str, pid: str | None = None) -> list[dict[str, Any]]:
    return [
        s
        for s in spans
        if s["name"] == name and (pid is None or s["attributes"].get("lb.promise_id") == pid)
    ]


def _parent_of(span: dict[str, Any]) -> str | None:
    return span.get("parent_id")


def _id(span: dict[str, Any]) -> str:
    return str(span["context"]["span_id"])


def test_one_trace_from_the_caller_through_steps_children_and_settle(
    fleet: Fleet, client: Resonate, memory: tuple[InMemorySpanExporter, Any], tmp_path: Path
) -> None:
    """`traced` runs on a (group workers) a checkpoint (with a user span inside), a `ctx.rpc`
    child on b (group kids) and a durable sleep. Every span is in the caller's trace; the
    invoke is a child of the caller's span; claims and runs of the call are children of the
    invoke; each run's steps are children of that run (the first run suspends at the rpc,
    the second replays the checkpoint and the rpc); the child's claim and run, on b, are
    children of the rpc step that created it; settles are children of the runs that wrote
    them."""
    exporter, tracer = memory
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for name, group, path in zip(("a", "b"), ("workers", "kids"), files, strict=True):
        fleet.start(name, "--trace", "console", "--trace-file", str(path), group=group)
    pid = f"tr-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("request") as request:
        assert client.rpc(pid, "traced", 3, "kids") == 4 + 6  # the child runs on b
    child = f"{pid}:2"  # :1 the checkpoint, :2 the rpc, :3 the sleep

    def complete() -> list[dict[str, Any]] | None:
        spans = _caller_spans(exporter) + _file_spans(*files)
        settled = [s for s in _of(spans, "lb.settle") if s["attributes"]["lb.state"]]
        return spans if len(settled) >= 2 and len(_of(spans, "lb.run", pid)) >= 2 else None

    spans = wait_for(complete, 30, lambda: _file_spans(*files))
    trace_id = _hex(request.get_span_context().trace_id, 32)
    mine = [s for s in spans if s["context"]["trace_id"] == trace_id]
    assert {s["name"] for s in mine} >= {
        "request", "lb.invoke", "lb.claim", "lb.run", "lb.step", "user.work", "lb.settle"
    }  # fmt: skip
    ours = [s for s in spans if s["name"].startswith("lb.")]
    assert all(s["context"]["trace_id"] == trace_id for s in ours), ours

    (invoke,) = _of(spans, "lb.invoke", pid)
    assert _parent_of(invoke) == _hex(request.get_span_context().span_id, 16)
    assert invoke["kind"] == "SpanKind.PRODUCER"
    runs = sorted(_of(spans, "lb.run", pid), key=lambda s: s["start_time"])
    assert [r["attributes"]["lb.outcome"] for r in runs] == ["suspended", "resolved"]
    assert all(_parent_of(s) == _id(invoke) for s in runs + _of(spans, "lb.claim", pid))
    assert len(_of(spans, "lb.claim", pid)) == 2  # created, then resumed by the child

    def steps_of(run: dict[str, Any]) -> list[tuple[str, str, bool]]:
        kids = [s for s in _of(spans, "lb.step") if _parent_of(s) == _id(run)]
        kids.sort(key=lambda s: s["start_time"])
        a = [s["attributes"] for s in kids]
        return [(x["lb.step"], x["lb.step_id"], x["lb.replayed"]) for x in a]

    assert steps_of(runs[0]) == [("run", f"{pid}:1", False), ("rpc", child, False)]
    assert steps_of(runs[1]) == [
        ("run", f"{pid}:1", True), ("rpc", child, True), ("sleep", f"{pid}:3", False)
    ]  # fmt: skip
    rpc_step = next(
        s
        for s in _of(spans, "lb.step")
        if _parent_of(s) == _id(runs[0]) and s["attributes"]["lb.step"] == "rpc"
    )
    assert rpc_step["attributes"]["lb.outcome"] == "suspend"
    (child_run,) = _of(spans, "lb.run", child)
    (child_claim,) = _of(spans, "lb.claim", child)
    assert _parent_of(child_run) == _parent_of(child_claim) == _id(rpc_step)
    assert child_run["attributes"]["lb.outcome"] == "resolved"
    assert child_run["attributes"]["lb.worker"] == "b"  # another worker, another process
    assert {r["attributes"]["lb.worker"] for r in runs} == {"a"}
    first_step = next(s for s in _of(spans, "lb.step") if _parent_of(s) == _id(runs[0]))
    (user,) = _of(spans, "user.work")
    assert _parent_of(user) == _id(first_step)  # user code nests under the step it runs in
    for run in (runs[1], child_run):
        settles = [s for s in _of(spans, "lb.settle") if _parent_of(s) == _id(run)]
        assert [s["attributes"]["lb.state"] for s in settles] == ["resolved"]


def test_a_takeover_after_kill_9_continues_the_callers_trace(
    fleet: Fleet, client: Resonate, memory: tuple[InMemorySpanExporter, Any], tmp_path: Path
) -> None:
    """a runs a traced call and is killed -9; b takes it over: b's claim (marked as a
    takeover) and run are in the caller's trace, children of the same invoke."""
    exporter, _ = memory
    a_file, b_file = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a = fleet.start("a", "--trace", "console", "--trace-file", str(a_file), concurrency=1)
    pid = f"tk-{uuid.uuid4().hex[:8]}"
    handle = client.begin_rpc(pid, "grinder", 3)
    wait_for(lambda: fleet.journal_lines("start", pid), 30, fleet.dump)
    os.kill(a.pid, signal.SIGKILL)
    fleet.start("b", "--trace", "console", "--trace-file", str(b_file), concurrency=1)
    assert handle.result(60)["worker"] == "b"
    (invoke,) = _of(_caller_spans(exporter), "lb.invoke", pid)
    runs = wait_for(
        lambda: [
            s
            for s in _of(_file_spans(b_file), "lb.run", pid)
            if "lb.outcome" in s.get("attributes", {})
        ],
        30,
        lambda: _file_spans(a_file, b_file),
    )
    claims = _of(_file_spans(a_file, b_file), "lb.claim", pid)
    assert [c["attributes"]["lb.worker"] for c in claims] == ["a", "b"]
    assert [c["attributes"]["lb.takeover"] for c in claims] == [False, True]
    for s in (*claims, *runs):
        assert s["context"]["trace_id"] == invoke["context"]["trace_id"]
        assert _parent_of(s) == _id(invoke)
    assert runs[0]["attributes"]["lb.worker"] == "b"
    assert runs[0]["attributes"]["lb.attempt"] == 2


def test_an_untraced_call_on_a_traced_worker_gets_a_trace_rooted_at_its_claim(
    fleet: Fleet, client: Resonate, tmp_path: Path
) -> None:
    """The caller does not trace (this process has tracing off): the worker still traces the
    call, its first claim the root, its run a child of it, its `ctx.rpc` child in that same
    trace (the child's record carries the step's context)."""
    path = tmp_path / "a.jsonl"
    fleet.start("a", "--trace", "console", "--trace-file", str(path), concurrency=2)
    pid = f"ut-{uuid.uuid4().hex[:8]}"
    assert client.rpc(pid, "parent", 1) == 2 + 4
    child = f"{pid}:1"

    def done() -> list[dict[str, Any]] | None:
        spans = _file_spans(path)
        ok = [s for s in _of(spans, "lb.run", pid) if s["attributes"]["lb.outcome"] == "resolved"]
        return spans if ok else None

    spans = wait_for(done, 30, lambda: _file_spans(path))
    first_claim = min(_of(spans, "lb.claim", pid), key=lambda s: s["start_time"])
    assert _parent_of(first_claim) is None
    trace_id = first_claim["context"]["trace_id"]
    first_run = min(_of(spans, "lb.run", pid), key=lambda s: s["start_time"])
    assert _parent_of(first_run) == _id(first_claim)
    (child_run,) = _of(spans, "lb.run", child)
    assert child_run["context"]["trace_id"] == trace_id
    assert not _of(spans, "lb.invoke")


def test_untraced_calls_make_no_spans_and_carry_no_context(redis_url: str, prefix: str) -> None:
    """Off by default, even in a process whose own OpenTelemetry is set up (redis-py imports
    it when installed): lb makes no span and stores no trace context in its calls."""
    code = textwrap.dedent(
        f"""
        import sys
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from lb.broker.codec import decode
        from lb.sdk import Resonate
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        r = Resonate.remote({redis_url!r}, group="quiet", prefix={prefix!r})
        @r.register
        def f(ctx, n):
            return ctx.run(lambda: n + 1)
        r.start()
        with trace.get_tracer("user").start_as_current_span("request"):
            assert r.options(target="poll://any@quiet").rpc("q-1", "f", 1) == 2
            assert r.options(target="poll://any@quiet").begin_rpc("q-2", "f", 2).result(30) == 3
            r.options(target="poll://any@idle").begin_rpc("q-3", "f", 3)
        param = decode(r.promise("q-3").param, 1 << 20, what="p")
        r.stop()
        names = sorted(s.name for s in exporter.get_finished_spans())
        print("spans:", names, "param keys:", sorted(param))
        sys.exit(0 if names == ["request"] and "tc" not in param else 1)
        """
    )
    res = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    "tc",
    [
        "00-abc",  # not a dict
        {"traceparent": 5},  # not strings
        {"traceparent": "x" * 5000},  # too long
        {str(i): "v" for i in range(10)},  # too many
    ],
)
def test_a_malformed_trace_context_runs_the_call_untraced(tc: Any) -> None:
    """A call record whose ``tc`` is garbage is still a call (never refused for it)."""
    from lb.broker.codec import encode

    raw = encode({"func": "f", "args": [1], "kwargs": {}, "v": 0, "tc": tc}, 1 << 20, what="t")
    call = Call.decode(raw, 1 << 20)
    assert call.func == "f" and call.args == [1] and call.tc is None


def test_a_span_processor_that_raises_never_fails_or_strands_a_call() -> None:
    """OpenTelemetry's SDK lets a processor's exception through to whoever starts or ends a
    span: lb's hooks swallow it (logged once), so the call still runs, settles and frees
    its slot, on the caller's side and the worker's, for plain and stepped calls."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Broken(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("processor on_start")

        def on_end(self, span: Any) -> None:
            raise RuntimeError("processor on_end")

    provider = TracerProvider()
    provider.add_span_processor(Broken())
    tracing.enable(provider)
    r = Resonate.local(group="broken", concurrency=2)
    try:

        @r.register
        def f(ctx: Any, n: int) -> int:
            return int(ctx.run(lambda: n + 1)) + 1

        o = r.options(target="poll://any@broken")
        assert o.rpc("b-1", "f", 1) == 3
        assert o.begin_rpc("b-2", "f", 2).result(30) == 4
        assert r.worker is not None
        wait_for(lambda: not r.worker.running, 10, "the worker still runs a call")
    finally:
        tracing.disable()
        r.stop()
