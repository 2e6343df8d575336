"""``lb status`` and ``lb forget``: read a deployment's state, drop workers that are gone.
(``lb top``, the live view, is cli/top.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from lb.broker.client import Broker
from lb.broker.errors import BadInput
from lb.broker.status import forget as forget_workers
from lb.broker.status import snapshot
from lb.cli.common import handle_errors, prefix_option, redis_option, settings_from

__all__ = ["forget", "status", "with_broker"]


async def with_broker(settings: Any, fn: Any) -> Any:
    """``await fn(broker)`` on a Broker of ``settings`` that is closed afterwards."""
    b = Broker(settings)
    try:
        return await fn(b)
    finally:
        await b.close()


@click.command()
@click.option("--json", "as_json", is_flag=True)
@redis_option
@prefix_option
@handle_errors
def status(as_json: bool, redis_url: str | None, prefix: str) -> None:
    """Groups, workers (state, running, done, takeovers, holds), backlog, calls by state."""
    snap = asyncio.run(with_broker(settings_from(redis_url, prefix), snapshot))
    if as_json:
        click.echo(json.dumps(snap))
        return
    click.echo(f"redis {snap['redis']}  prefix {snap['prefix']}")
    click.echo("calls: " + "  ".join(f"{k}={v}" for k, v in snap["calls"].items()))
    click.echo("promises: " + "  ".join(f"{k}={v}" for k, v in snap["promises"].items()))
    mb = snap.get("retained_bytes_estimate", 0) / 1e6
    click.echo(f"retained: {snap.get('retained', 0)} settled calls, about {mb:.1f} MB")
    for g, info in snap["groups"].items():
        click.echo(
            f"group {g}: backlog={info['backlog']} in_flight={info['in_flight']} "
            f"dead_letters={info['dead_letters']}"
            + (f" hidden_gone={info['hidden']}" if info.get("hidden") else "")
        )
        for w, wi in sorted(info["workers"].items()):
            click.echo(
                f"  {w:<32} {wi['state']:<7} running={wi['running']:<4} done={wi['done']:<6}"
                f" takeovers={wi['takeovers']:<4} holds={','.join(wi['held']) or '-'}"
                + (f" abandoned={wi['abandoned']}" if wi.get("abandoned") else "")
            )


@click.command()
@click.argument("workers", nargs=-1)
@click.option("--gone", is_flag=True, help="Every worker with no connection and no work.")
@redis_option
@prefix_option
@handle_errors
def forget(workers: tuple[str, ...], gone: bool, redis_url: str | None, prefix: str) -> None:
    """Drop workers that are gone from the registry and the stats (lb status, lb top).

    Name them, or pass --gone for every worker with no connection that holds nothing. A
    worker that is connected or holds work is refused: nothing in flight is touched."""
    if bool(workers) == gone:
        raise BadInput("name the workers to forget, or pass --gone (not both)")
    settings = settings_from(redis_url, prefix)
    dropped = asyncio.run(
        with_broker(settings, lambda b: forget_workers(b, None if gone else list(workers)))
    )
    missing = sorted(set(workers) - set(dropped))
    if missing:
        raise BadInput(f"no such worker: {', '.join(missing)}")
    click.echo(f"forgot {len(dropped)} worker(s)" + (f": {' '.join(dropped)}" if dropped else ""))
