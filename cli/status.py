"""``lb status`` and ``lb top``: read-only views of a deployment."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from lb.broker.client import Broker
from lb.broker.status import snapshot
from lb.cli.common import Seconds, handle_errors, prefix_option, redis_option, settings_from

__all__ = ["render", "status", "top"]


async def _snap(settings: Any) -> dict[str, Any]:
    b = Broker(settings)
    try:
        return await snapshot(b)
    finally:
        await b.close()


@click.command()
@click.option("--json", "as_json", is_flag=True)
@redis_option
@prefix_option
@handle_errors
def status(as_json: bool, redis_url: str | None, prefix: str) -> None:
    """Groups, live workers and what each holds, backlog, promise counts by state."""
    snap = asyncio.run(_snap(settings_from(redis_url, prefix)))
    if as_json:
        click.echo(json.dumps(snap))
        return
    click.echo(f"redis {snap['redis']}  prefix {snap['prefix']}")
    click.echo("promises: " + "  ".join(f"{k}={v}" for k, v in snap["promises"].items()))
    mb = snap.get("retained_bytes_estimate", 0) / 1e6
    click.echo(f"retained: {snap.get('retained', 0)} settled calls, about {mb:.1f} MB")
    for g, info in snap["groups"].items():
        click.echo(
            f"group {g}: backlog={info['backlog']} in_flight={info['in_flight']} "
            f"dead_letters={info['dead_letters']}"
        )
        for w, wi in sorted(info["workers"].items()):
            state = "alive" if wi.get("alive") else "gone"
            click.echo(
                f"  {w:<32} {state:<5} done={wi['done']:<6} takeovers={wi['takeovers']:<4}"
                f" holds={','.join(wi['held']) or '-'}"
                + (f" abandoned={wi['abandoned']}" if wi.get("abandoned") else "")
            )


def render(snap: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"lb top  {time.strftime('%H:%M:%S')}  {snap['redis']}")
    for col in ("group", "worker", "state", "done", "share", "takeovers", "holds"):
        table.add_column(col)
    for g, info in snap["groups"].items():
        total = sum(w["done"] for w in info["workers"].values()) or 1
        for w, wi in sorted(info["workers"].items()):
            table.add_row(
                g,
                w,
                "alive" if wi.get("alive") else "gone",
                str(wi["done"]),
                f"{100 * wi['done'] / total:.0f}%",
                str(wi["takeovers"]),
                ",".join(wi["held"][:6]) + ("..." if len(wi["held"]) > 6 else ""),
            )
        table.add_row(
            g,
            "(backlog)",
            "",
            "",
            "",
            "",
            f"{info['backlog']} waiting, "
            f"{info['in_flight']} in flight, {info['dead_letters']} dead",
        )
    counts = "  ".join(f"{k}={v}" for k, v in snap["promises"].items())
    table.caption = counts
    return table


@click.command()
@click.option("--interval", default=0.5, show_default=True, type=Seconds(0.05, 60))
@redis_option
@prefix_option
@handle_errors
def top(interval: float, redis_url: str | None, prefix: str) -> None:
    """A live view of which worker runs what, the spread and the takeovers (Ctrl-C to quit)."""
    from rich.live import Live

    settings = settings_from(redis_url, prefix)
    with Live(render(asyncio.run(_snap(settings))), refresh_per_second=4) as live:
        while True:
            time.sleep(interval)
            live.update(render(asyncio.run(_snap(settings))))
