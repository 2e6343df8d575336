"""OpenTelemetry traces of calls (the optional ``otel`` extra): off by default, free when off.

Spans, all named ``lb.<what>`` with ``lb.*`` attributes (never a value or an argument):

* ``lb.invoke`` (PRODUCER, on the caller): the create of a call; with ``rpc`` (waiting), until
  its value is back. Its context travels **in the promise** (the call record's ``tc``: W3C
  ``traceparent`` / ``tracestate``), so the call's spans join the caller's trace on any worker.
* ``lb.claim`` (on the worker, child of the invoke): from the call's creation to its claim, so
  the wait in the queue shows as a span; ``lb.waited_ms``, ``lb.takeover`` (the claim took it
  from a dead or silent holder). A call made untraced, on a traced worker, gets a trace of
  its own per execution, rooted at its claim.
* ``lb.run`` (CONSUMER, child of the invoke): one execution of the function on one worker, with
  ``lb.outcome`` (resolved, rejected, suspended, lost, fenced, error). A call that suspends,
  is taken over or retried has one ``lb.run`` per execution, all in the same trace.
* ``lb.step`` (children of the run): ``ctx.run``, ``ctx.sleep``, ``ctx.rpc``, ``ctx.promise``,
  ``ctx.wait``, with ``lb.step`` (the kind), ``lb.step_id`` and ``lb.replayed`` (its outcome
  came from the promise, the step did not run again). A ``ctx.rpc`` child's record carries
  the step's context: the child's claim and run, on whatever worker, are children of it.
* ``lb.settle`` (child of the run): the write of the call's outcome.

Guarantees: with tracing off (the default) no span is made, no trace context stored, and
every hook is one attribute test; with it on, a failure to record never fails or strands a
call: every hook is guarded (OpenTelemetry's SDK does not guard span processors, so a faulty
one would raise into the caller), the first failure is logged and the span is skipped.
Turn it on with :func:`enable` (the global tracer provider, or one given), or ``--trace`` on
the ``lb`` commands (:func:`configure`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from lb.broker.errors import BadInput

__all__ = ["child", "configure", "disable", "enable", "enabled", "invoking", "mark", "step"]

_TRACER: Any = None  # an opentelemetry Tracer while enabled, else None
_F = TypeVar("_F", bound=Callable[..., Any])
log = logging.getLogger("lb.sdk")
_warned = False


def _guarded(fn: _F) -> _F:
    """A hook that never raises into a call: OpenTelemetry's SDK does not guard span
    processors, so a faulty one (the user's, an exporter's) would otherwise fail lb's own
    bookkeeping. The first failure is logged; the hook then returns None (no span)."""

    @functools.wraps(fn)
    def safe(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            global _warned
            if not _warned:
                _warned = True
                log.exception("tracing failed (spans may be missing; calls are unaffected)")
            return None

    return cast(_F, safe)


_NULL: contextlib.nullcontext[None] = contextlib.nullcontext()  # reusable: holds nothing
_MAX_CARRIER = 1024  # a trace context longer than this is not one (hostile or garbage)


def enabled() -> bool:
    return _TRACER is not None


def enable(provider: Any = None) -> None:
    """Trace calls from now on, into ``provider`` (default: OpenTelemetry's global one).

    Raises :class:`BadInput` when the ``otel`` extra is not installed."""
    global _TRACER
    try:
        from opentelemetry import trace
    except ImportError:
        raise BadInput(
            "tracing needs OpenTelemetry: pip install 'lb[otel]' (opentelemetry-api and -sdk)"
        ) from None
    from lb.version import __version__

    _TRACER = trace.get_tracer("lb", __version__, tracer_provider=provider)


def disable() -> None:
    global _TRACER
    _TRACER = None


def configure(exporter: str, path: str | None = None, service: str = "lb") -> Any:
    """Set up an SDK tracer provider for an ``lb`` command and :func:`enable` it.

    ``exporter``: ``otlp`` (OTLP over HTTP, to ``$OTEL_EXPORTER_OTLP_ENDPOINT``; needs
    ``opentelemetry-exporter-otlp-proto-http``) or ``console`` (one JSON object per line, to
    ``path`` or stderr; each span written when it ends, so a kill -9 loses none). Returns the
    provider (``shutdown()`` flushes it)."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        raise BadInput("--trace needs OpenTelemetry: pip install 'lb[otel]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter == "console":
        import sys

        out = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stderr  # noqa: SIM115
        console = ConsoleSpanExporter(
            out=out, formatter=lambda span: span.to_json(indent=None) + "\n"
        )
        provider.add_span_processor(SimpleSpanProcessor(console))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            raise BadInput(
                "--trace otlp needs pip install opentelemetry-exporter-otlp-proto-http"
            ) from None
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        raise BadInput(f"unknown trace exporter {exporter!r} (otlp or console)")
    import atexit

    from opentelemetry import trace

    atexit.register(provider.shutdown)  # flushes a batching exporter at a clean exit
    trace.set_tracer_provider(provider)  # the functions' own spans go with lb's
    enable(provider)
    return provider


# -- carriers: the trace context in a call record ---------------------------------------------
@_guarded
def carrier(span: Any) -> dict[str, str] | None:
    """The W3C trace context of ``span`` as a small dict, for a call record."""
    if span is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    out: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(out, context=trace.set_span_in_context(span))
    return out or None


def check_carrier(value: Any) -> dict[str, str] | None:
    """A call record's ``tc`` if it is a plausible trace context, else None: a malformed one
    is ignored (the call runs untraced), never a reason to refuse the call."""
    if not isinstance(value, dict) or len(value) > 4:
        return None
    size = 0
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            return None
        size += len(k) + len(v)
    return value if size <= _MAX_CARRIER else None


def _parent(tc: dict[str, str] | None) -> Any:
    if not tc:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(tc)


def _under(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


# -- spans --------------------------------------------------------------------------------------
@_guarded
def start_invoke(promise_id: str, func: str, group: str, wait: bool) -> Any:
    """An ``lb.invoke`` span under the caller's current span, or None when off."""
    if _TRACER is None:
        return None
    from opentelemetry.trace import SpanKind

    attrs = {"lb.promise_id": promise_id, "lb.function": func, "lb.group": group, "lb.wait": wait}
    return _TRACER.start_span("lb.invoke", kind=SpanKind.PRODUCER, attributes=attrs)


def _outage(error: BaseException) -> bool:
    from lb.broker.errors import RedisUnavailable

    return isinstance(error, RedisUnavailable)


@_guarded
def end(span: Any, error: BaseException | None = None, **attrs: Any) -> None:
    """End ``span`` (None: nothing), recording ``error`` as its status. What is not a failure
    is an ``lb.outcome`` instead: control flow (a suspension, a lost hold, a cancellation:
    not ``Exception``s) and a Redis outage (the step is left open for the re-run)."""
    if span is None:
        return
    if error is not None and (not isinstance(error, Exception) or _outage(error)):
        attrs.setdefault("outcome", "outage" if _outage(error) else type(error).__name__.lower())
        error = None
    for k, v in attrs.items():
        span.set_attribute(f"lb.{k}", v)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


@_guarded
def claimed(
    tc: dict[str, str] | None, promise_id: str, worker: str, waited_s: float, previous: str | None
) -> dict[str, str] | None:
    """Record an ``lb.claim`` span covering the call's wait (its entry's enqueue to now);
    ``previous``: the holder it was taken from. Returns the context the execution's spans
    join: the call's own, or for a call made untraced, this claim's (a trace of its own)."""
    if _TRACER is None:
        return None
    now = time.time_ns()
    start = now - max(0, int(waited_s * 1e9))
    attrs = {
        "lb.promise_id": promise_id,
        "lb.worker": worker,
        "lb.waited_ms": round(waited_s * 1000, 3),
        "lb.takeover": previous is not None,
    }
    if previous is not None:
        attrs["lb.previous_holder"] = previous
    span = _TRACER.start_span("lb.claim", context=_parent(tc), start_time=start, attributes=attrs)
    span.end(end_time=now)
    return tc or carrier(span)


@_guarded
def start_run(
    tc: dict[str, str] | None, promise_id: str, func: str, worker: str, attempt: int
) -> Any:
    if _TRACER is None:
        return None
    from opentelemetry.trace import SpanKind

    attrs = {
        "lb.promise_id": promise_id,
        "lb.function": func,
        "lb.worker": worker,
        "lb.attempt": attempt,
    }
    return _TRACER.start_span(
        "lb.run", context=_parent(tc), kind=SpanKind.CONSUMER, attributes=attrs
    )


@_guarded
def start_child(parent: Any, name: str, **attrs: Any) -> Any:
    """A span named ``name`` under ``parent`` (None when off or without a parent)."""
    if _TRACER is None or parent is None:
        return None
    return _TRACER.start_span(
        name, context=_under(parent), attributes={f"lb.{k}": v for k, v in attrs.items()}
    )


def current(span: Any) -> contextlib.AbstractContextManager[Any]:
    """Make ``span`` the current span for the block (user code's own spans nest under it)."""
    return _NULL if span is None else _Current(span)


class _Current:
    """``trace.use_span`` whose enter and exit never raise (see :func:`_guarded`)."""

    def __init__(self, span: Any) -> None:
        self._span = span
        self._cm: Any = None

    def __enter__(self) -> None:
        with contextlib.suppress(Exception):
            from opentelemetry import trace

            self._cm = trace.use_span(
                self._span, end_on_exit=False, record_exception=False,
                set_status_on_exception=False,
            )  # fmt: skip
            self._cm.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._cm is not None:
            with contextlib.suppress(Exception):
                self._cm.__exit__(*exc)


def invoking(
    promise_id: str, func: str, group: str, wait: bool
) -> contextlib.AbstractContextManager[dict[str, str] | None]:
    """An ``lb.invoke`` span for the block, under the caller's current span; yields the
    trace context to store in the call record (None when off)."""
    if _TRACER is None:
        return _NULL
    span = start_invoke(promise_id, func, group, wait)
    return _ending(span, carrier(span))


def child(parent: Any, name: str, **attrs: Any) -> contextlib.AbstractContextManager[Any]:
    """A span ``name`` under ``parent`` for the block; yields it (None when off)."""
    if _TRACER is None or parent is None:
        return _NULL
    span = start_child(parent, name, **attrs)
    return _ending(span, span)


def step(parent: Any, kind: str, step_id: str) -> contextlib.AbstractContextManager[Any]:
    """An ``lb.step`` span for the block (yields it, or None when off)."""
    return child(parent, "lb.step", step=kind, step_id=step_id, replayed=False)


@contextlib.contextmanager
def _ending(span: Any, value: Any) -> Iterator[Any]:
    """Yield ``value``; end ``span`` with the block: an exception as its error, a suspension,
    a lost hold, a cancellation or an outage as its ``lb.outcome`` (see :func:`end`)."""
    try:
        yield value
    except BaseException as exc:
        end(span, exc)
        raise
    else:
        end(span)


@_guarded
def mark(span: Any, **attrs: Any) -> None:
    """Set ``lb.<k>`` attributes on ``span`` (None: nothing)."""
    if span is not None:
        for k, v in attrs.items():
            span.set_attribute(f"lb.{k}", v)
