"""``lb top``: a live view of the spread and the recoveries, one frame per ``--interval``.

Per group, one row per worker: its state (broker/status.py: from the same signals the
liveness scanner acts on, so a kill -9'ed worker shows ``dead`` within about a second), how
many calls it runs now and its share of the group's running calls, completions and their
share, takeovers, and the calls it holds as short ids. A worker that took work over in the
last HIGHLIGHT_MS is highlighted, as is the worker it was taken from; the last takeovers are
listed under the groups. Counts are of calls (no ctx.run steps, no ctx.sleep timers). When
Redis stops answering, the last frame stays on screen under a "reconnecting" banner until it
answers again: an outage never ends the view.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from lb.broker.client import Broker
from lb.broker.errors import RedisUnavailable
from lb.broker.status import snapshot
from lb.cli.common import Seconds, handle_errors, prefix_option, redis_option, settings_from
from lb.cli.status import with_broker

__all__ = ["HIGHLIGHT_MS", "render", "share", "short_id", "top"]

HIGHLIGHT_MS = 10_000
TAKEOVERS_SHOWN = 5
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_STATE_STYLE = {"alive": "green", "stalled": "bold yellow", "dead": "bold red", "gone": "dim"}


def short_id(tid: str, width: int = 10) -> str:
    """A call id in at most ``width`` characters: a uuid's first 8 hex digits, a longer id cut
    with an ellipsis, a short one whole."""
    if _UUID.match(tid):
        return tid[:8]
    return tid if len(tid) <= width else tid[: width - 1] + "…"


def _clock(ms: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000))


def share(part: int, whole: int) -> str:
    """A worker's share of its group's ``whole`` as lb top and lb dashboard show it: a whole
    percent (``33%``), or ``-`` when the group has none."""
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _holds(held: list[str], running: int) -> str:
    shown = [short_id(t) for t in held[:4]]
    more = running - len(shown)
    return " ".join(shown) + (f" +{more}" if more > 0 else "") if running else "-"


def _group_table(name: str, grp: dict[str, Any]) -> Table:
    workers = grp["workers"]
    running = sum(w["running"] for w in workers.values())
    done = sum(w["done"] for w in workers.values())
    title = (
        f"[b]{name}[/b]  backlog {grp['backlog']}  running {grp['in_flight']}  "
        f"dead letters {grp['dead_letters']}"
        + (f"  ({grp['hidden']} gone: lb forget --gone)" if grp.get("hidden") else "")
    )
    t = Table(title=title, title_justify="left", expand=False, pad_edge=False, box=None)
    t.add_column("worker", no_wrap=True, overflow="ellipsis", max_width=18)
    t.add_column("state", no_wrap=True, min_width=7)
    for col, width in (("run", 3), ("%run", 4), ("done", 5), ("%done", 5), ("took", 4)):
        t.add_column(col, justify="right", no_wrap=True, min_width=width)
    t.add_column("holds", no_wrap=True, overflow="ellipsis")
    for w, wi in sorted(workers.items()):
        took = wi.get("takeover_age_ms")
        lost = wi.get("taken_from_age_ms")
        style = ""
        if took is not None and took < HIGHLIGHT_MS:
            style = "bold cyan"
        elif lost is not None and lost < HIGHLIGHT_MS:
            style = "red"
        t.add_row(
            w,
            Text(wi["state"], style=_STATE_STYLE.get(wi["state"], "")),
            str(wi["running"]),
            share(wi["running"], running),
            str(wi["done"]),
            share(wi["done"], done),
            str(wi["takeovers"]),
            _holds(wi["held"], wi["running"]),
            style=style,
        )
    if not workers:
        t.add_row("(no workers)", "", "", "", "", "", "", "")
    return t


def _takeovers(snap: dict[str, Any]) -> Table | None:
    events = [(g, e) for g, grp in snap["groups"].items() for e in grp.get("takeovers", [])]
    if not events:
        return None
    events.sort(key=lambda ge: -ge[1]["at_ms"])
    t = Table(title="recent takeovers", title_justify="left", box=None, pad_edge=False)
    for col in ("at (UTC)", "group", "call", "from", "to", "why"):
        t.add_column(col, no_wrap=True, overflow="ellipsis", max_width=22)
    for g, e in events[:TAKEOVERS_SHOWN]:
        why = "connection gone" if e["cause"] == "gone" else "silent past ttl"
        style = "bold cyan" if e["age_ms"] < HIGHLIGHT_MS else ""
        t.add_row(_clock(e["at_ms"]), g, short_id(e["id"]), e["from"], e["to"], why, style=style)
    return t


def render(
    snap: dict[str, Any] | None, down_since: float | None = None, error: str = ""
) -> RenderableType:
    """One frame. ``snap`` the last snapshot (None before the first); ``down_since`` the wall
    time Redis stopped answering (None while it answers), with its ``error``."""
    parts: list[RenderableType] = []
    if down_since is not None:
        parts.append(
            Text(
                f"reconnecting to Redis since {_clock(down_since * 1000)} UTC: {error}"[:200],
                style="bold yellow",
            )
        )
    if snap is None:
        parts.append(Text("waiting for the first answer from Redis"))
        return Group(*parts)
    head = f"lb top  {_clock(snap['now_ms'])} UTC  {snap['redis']}  prefix {snap['prefix']}"
    parts.append(Text(head, style="dim" if down_since is not None else "bold"))
    calls = snap["calls"]
    settled = sum(v for k, v in calls.items() if k != "pending")
    parts.append(
        Text(
            f"calls: pending {calls['pending']}  settled {settled} (resolved "
            f"{calls['resolved']}, rejected {settled - calls['resolved']})"
        )
    )
    if not snap.get("connections_known", True):
        parts.append(Text("no CLIENT LIST for this user: state from heartbeats", style="dim"))
    for name, grp in snap["groups"].items():
        parts.append(_group_table(name, grp))
    if not snap["groups"]:
        parts.append(Text("no groups yet: start a worker (lb worker --group NAME)"))
    tk = _takeovers(snap)
    if tk is not None:
        parts.append(tk)
    return Group(*parts)


async def _loop(settings: Any, interval: float, console: Console) -> None:
    from rich.live import Live

    broker = Broker(settings)
    last: dict[str, Any] | None = None
    down_since: float | None = None
    error = ""
    try:
        with Live(render(None), console=console, refresh_per_second=4) as live:
            while True:
                try:
                    last, down_since = await snapshot(broker), None
                except RedisUnavailable as exc:
                    down_since, error = down_since or time.time(), str(exc)
                live.update(render(last, down_since, error))
                await asyncio.sleep(interval)
    finally:
        await broker.close()


@click.command()
@click.option("--interval", default=0.5, show_default=True, type=Seconds(0.05, 60))
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@redis_option
@prefix_option
@handle_errors
def top(interval: float, once: bool, redis_url: str | None, prefix: str) -> None:
    """A live view of the spread, the running calls and the takeovers (Ctrl-C to quit).

    It keeps running through a Redis outage ("reconnecting") and shows the data again when
    Redis answers."""
    settings = settings_from(redis_url, prefix)
    console = Console()
    if once:
        console.print(render(asyncio.run(with_broker(settings, snapshot))))
        return
    try:
        asyncio.run(_loop(settings, interval, console))
    except KeyboardInterrupt:
        return
