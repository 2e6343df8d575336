"""The ``lb`` command line. Commands are thin: all behaviour lives in ``broker`` and ``sdk``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
import time
import uuid
from typing import Any

import click

from lb.broker.client import Broker
from lb.broker.codec import decode
from lb.broker.embedded import EmbeddedRedis
from lb.broker.errors import BadInput, LbError, RedisUnavailable, UnknownFunction
from lb.broker.keys import check_func_name, check_group, check_id, check_root_id
from lb.broker.status import known_functions
from lb.cli import logs
from lb.cli.alive import keep_alive_file
from lb.cli.common import (
    Seconds,
    app_loader,
    handle_errors,
    parse_json,
    prefix_option,
    redis_option,
    retention_ms,
    retention_option,
    settings_from,
    start_tracing,
    trace_option,
)
from lb.sdk.encoding import decode_error
from lb.sdk.resonate import Resonate
from lb.sdk.target import parse_target
from lb.version import __version__

__all__ = ["cli", "main"]

log = logging.getLogger("lb.cli")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LB"})
@click.version_option(__version__, prog_name="lb")
def cli() -> None:
    """lb: durable, load-balanced RPC on Redis."""


@cli.command()
@click.option("--port", default=6379, show_default=True, envvar="LB_PORT", type=int)
@click.option("--dir", "directory", default=".lb-data", show_default=True, envvar="LB_DIR")
@handle_errors
def server(port: int, directory: str) -> None:
    """Run the embedded Redis in the foreground (AOF on) until Ctrl-C."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the start: a stop is never lost
        signal.signal(sig, lambda *_: done.set())
    srv = EmbeddedRedis(port=port, directory=directory).start()
    click.echo(f"lb server: redis {srv.version()} on {srv.url} (data in {directory}, AOF on)")
    while not done.wait(0.5):
        if srv.proc is None or srv.proc.poll() is not None:
            click.echo(f"error: redis-server exited: {srv.log_tail()}", err=True)
            sys.exit(7)
    srv.stop()


@cli.command()
@click.option("--group", default="workers", show_default=True, envvar="LB_GROUP")
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 4096),
    envvar="LB_CONCURRENCY",
)
@click.option(
    "--ttl",
    default=5.0,
    show_default=True,
    type=Seconds(0.2, 3600),
    envvar="LB_TTL",
    help="Seconds without heartbeat before a task is taken over.",
)
@click.option("--app", default="lb.demo.app:register", show_default=True, envvar="LB_APP")
@click.option("--name", default=None, envvar="LB_NAME", help="Worker name (default host-pid-rand).")
@click.option("--quiet", is_flag=True, envvar="LB_QUIET", help="Same as --log-level warning.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    envvar="LB_LOG_LEVEL",
    help="info: a line per call started and done; warning: takeovers, losses, outages.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="LB_LOG_FORMAT",
    help="json: one object per line (event, id, func, attempt, worker, duration_ms).",
)
@click.option(
    "--alive-file",
    default=None,
    envvar="LB_ALIVE_FILE",
    help="Write the time here every second while the worker lives (for `lb alive` probes).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="LB_METRICS_PORT",
    help="Serve /metrics (Prometheus), /livez and /readyz on this port.",
)
@click.option("--metrics-host", default="0.0.0.0", show_default=True, envvar="LB_METRICS_HOST")
@trace_option
@retention_option
@redis_option
@prefix_option
@handle_errors
def worker(
    group: str,
    concurrency: int,
    ttl: float,
    app: str,
    name: str | None,
    quiet: bool,
    log_level: str,
    log_format: str,
    alive_file: str | None,
    metrics_port: int | None,
    metrics_host: str,
    trace: str,
    trace_file: str | None,
    retention: float | None,
    redis_url: str | None,
    prefix: str,
) -> None:
    """Serve the group's functions until SIGTERM (running tasks are handed back at once)."""
    if name is not None:
        check_group(name, "--name")  # same alphabet as group names: it becomes a Redis client name
    setup = app_loader(app)
    settings = settings_from(
        redis_url, prefix, ttl_ms=int(ttl * 1000), retention_ms=retention_ms(retention)
    )
    logs.setup("warning" if quiet and log_level == "info" else log_level, log_format)
    start_tracing(trace, trace_file, "lb-worker")
    r = Resonate(settings, group, pid=name, concurrency=concurrency, on_event=logs.event_logger())
    setup(r)
    if metrics_port is not None:
        port = r.serve_metrics(metrics_port, metrics_host)
        log.info("metrics, /livez and /readyz on %s:%d", metrics_host, port)
    if alive_file:
        keep_alive_file(r, alive_file)  # live while it waits for Redis, too
    _start_patiently(r)
    r.serve()


def _start_patiently(r: Resonate) -> None:
    """Join the group, waiting (one line when it starts, one when it ends) while Redis is
    down, full or read-only: a worker started before its Redis, or during a failover, comes
    up by itself. Errors no wait can fix (bad config, permissions, password) exit at once."""
    waited = 0.0
    while True:
        try:
            r.start()
        except RedisUnavailable as exc:
            if waited == 0.0:
                log.warning("waiting for Redis: %s", exc)
            delay = min(5.0, 0.5 + waited / 4)
            time.sleep(delay)
            waited += delay
            continue
        if waited:
            log.warning("Redis answered after %.0f s", waited)
        return


@cli.command()
@click.option("--func", default="compute_something", show_default=True, envvar="LB_FUNC")
@click.option(
    "--args",
    "args_json",
    default=None,
    envvar="LB_ARGS",
    help="JSON list of arguments (default for the demo: [id, cost]).",
)
@click.option(
    "--cost",
    type=Seconds(0, 86400),
    default=None,
    envvar="LB_COST",
    help="Demo cost in seconds (default random 1-10).",
)
@click.option("--id", "promise_id", default=None, envvar="LB_ID", help="Promise id (default uuid).")
@click.option("--target", default="poll://any@workers", show_default=True, envvar="LB_TARGET")
@click.option(
    "--wait", is_flag=True, envvar="LB_WAIT", help="Wait and print the value alone (JSON)."
)
@click.option("--json", "as_json", is_flag=True, help='One JSON object: {"id": ..., "value": ...}.')
@click.option(
    "--timeout",
    type=Seconds(0.001),
    default=None,
    envvar="LB_TIMEOUT",
    help="Seconds to wait with --wait (the promise itself is untouched).",
)
@trace_option
@retention_option
@redis_option
@prefix_option
@handle_errors
def invoke(
    func: str,
    args_json: str | None,
    cost: float | None,
    promise_id: str | None,
    target: str,
    wait: bool,
    as_json: bool,
    timeout: float | None,
    trace: str,
    trace_file: str | None,
    retention: float | None,
    redis_url: str | None,
    prefix: str,
) -> None:
    """Invoke a function durably on a group; prints its id, or with --wait its value alone
    (errors name the id), or with --json one JSON object."""
    import random

    group = parse_target(target)
    check_func_name(func)
    pid = check_root_id(promise_id or str(uuid.uuid4()), "--id")
    args = parse_json(args_json, "--args")
    if args is None:
        args = (
            [pid, cost if cost is not None else random.randint(1, 10)]
            if func == "compute_something"
            else []
        )
    if not isinstance(args, list):
        raise BadInput("--args must be a JSON list")
    settings = settings_from(redis_url, prefix)
    start_tracing(trace, trace_file, "lb-invoke")
    known = asyncio.run(_known(settings, group))
    if known is not None and func not in known:
        raise UnknownFunction(
            f"no live worker of group {group!r} serves {func!r} "
            f"(they serve: {', '.join(sorted(known)) or 'nothing'})"
        )
    r = Resonate(settings, group)
    try:
        handle = r.options(target=target, retention=retention).begin_rpc(pid, func, *args)
        if not wait:
            click.echo(json.dumps({"id": pid}) if as_json else pid)
            return
        value = handle.result(timeout)
        # The value alone on stdout (so `| jq` works); --json: one object with the id.
        out = {"id": pid, "state": "resolved", "value": value} if as_json else value
        click.echo(json.dumps(out, default=repr))
    finally:
        r.stop()


async def _known(settings: Any, group: str) -> set[str] | None:
    b = Broker(settings)
    try:
        return await known_functions(b, group)
    finally:
        await b.close()


async def _get(settings: Any, pid: str) -> dict[str, Any]:
    b = Broker(settings)
    try:
        p = await b.get(pid)
    finally:
        await b.close()
    rec = p.to_json()
    if p.state == "resolved" and p.value:
        rec["value"] = decode(p.value, settings.max_payload)
    elif p.settled:
        t, m = decode_error(p.value, settings.max_payload)
        rec["error"] = {"type": t, "message": m}
    return rec


@cli.command()
@click.argument("promise_id")
@click.option("--json", "as_json", is_flag=True)
@redis_option
@prefix_option
@handle_errors
def get(promise_id: str, as_json: bool, redis_url: str | None, prefix: str) -> None:
    """Show a promise: state, value, timestamps."""
    rec = asyncio.run(_get(settings_from(redis_url, prefix), check_id(promise_id)))
    if as_json:
        click.echo(json.dumps(rec, default=repr))
        return
    for k, v in rec.items():
        if k.endswith("_at") and isinstance(v, int):  # Redis-clock ms: shown as times (UTC)
            shown = _when(v)
        else:
            shown = v if isinstance(v, str) else json.dumps(v, default=repr)
        click.echo(f"{k:<11} {shown}")


def _when(ms: int) -> str:
    if ms <= 0:
        return "-"
    t = time.gmtime(ms / 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{ms % 1000:03d} UTC"


def _settle_cmd(
    state: str, promise_id: str, value: str | None, redis_url: str | None, prefix: str
) -> None:
    settings = settings_from(redis_url, prefix)
    check_id(promise_id)
    r = Resonate(settings, "default")
    try:
        p = r.settle(promise_id, state, parse_json(value, "--value"))
    finally:
        r.stop()
    click.echo(f"{promise_id} {p.state}")


for _state, _name, _help in (
    ("rejected_canceled", "cancel", "Cancel a pending promise."),
    ("resolved", "resolve", "Resolve a pending promise."),
    ("rejected", "reject", "Reject a pending promise."),
):

    def _make(state: str) -> Any:
        @click.argument("promise_id")
        @click.option("--value", default=None, help="JSON value to store.")
        @redis_option
        @prefix_option
        @handle_errors
        def cmd(promise_id: str, value: str | None, redis_url: str | None, prefix: str) -> None:
            _settle_cmd(state, promise_id, value, redis_url, prefix)

        return cmd

    cli.command(_name, help=_help)(_make(_state))


def main() -> None:
    from lb.cli.acl import acl
    from lb.cli.alive import alive
    from lb.cli.dashboard import dashboard
    from lb.cli.demo import demo
    from lb.cli.exporter import exporter
    from lb.cli.status import forget, status
    from lb.cli.top import top

    cli.add_command(acl)
    cli.add_command(alive)
    cli.add_command(status)
    cli.add_command(top)
    cli.add_command(forget)
    cli.add_command(exporter)
    cli.add_command(dashboard)
    cli.add_command(demo)
    for command in cli.commands.values():  # every LB_* variable shows in --help
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True
    try:
        code = cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:  # bad options: one line, like every other error
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except LbError as exc:  # pragma: no cover - commands report their own
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
