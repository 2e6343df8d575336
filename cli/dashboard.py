"""``lb dashboard``: the live web view of a deployment (cli/dashboard_app.py) on one port.

Read-only by default. ``--allow-writes`` with a token (``--token`` or
``LB_DASHBOARD_TOKEN``) lets the page settle or cancel a pending promise; a write without the
token is refused (403). Needs the ``dashboard`` extra (Starlette and uvicorn, pure-Python
wheels): without it the command says what to install and exits 2. A port that cannot be bound
exits 2 with the reason; a Redis outage never ends it (the page says "reconnecting").
"""

from __future__ import annotations

import asyncio
import socket
import sys

import click

from lb.broker.errors import BadInput
from lb.cli.common import Seconds, handle_errors, prefix_option, redis_option, settings_from

__all__ = ["dashboard"]

INSTALL_HINT = "pip install 'lb[dashboard]'"


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is a clear error (exit 2)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadInput(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BadInput(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@click.command()
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              envvar="LB_DASHBOARD_PORT", help="Port to serve on (0: any free one).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, envvar="LB_DASHBOARD_HOST")
@click.option("--interval", default=0.5, show_default=True, type=Seconds(0.05, 60),
              envvar="LB_DASHBOARD_INTERVAL", help="Seconds between two frames.")  # fmt: skip
@click.option("--allow-writes", is_flag=True, envvar="LB_DASHBOARD_ALLOW_WRITES",
              help="Let the page settle and cancel pending promises (needs --token).")  # fmt: skip
@click.option("--token", default=None, envvar="LB_DASHBOARD_TOKEN",
              help="The token every write must carry (Authorization: Bearer TOKEN).")  # fmt: skip
@redis_option
@prefix_option
@handle_errors
def dashboard(
    port: int, host: str, interval: float, allow_writes: bool, token: str | None,
    redis_url: str | None, prefix: str,
) -> None:  # fmt: skip
    """Serve a live web view: groups, workers (running, held, done, shares), the backlog over
    time, takeovers, dead letters and poison calls, and a promise lookup (Ctrl-C to quit).

    Read-only unless --allow-writes with a --token: then the page can resolve, reject or
    cancel a pending promise, and every write must carry the token."""
    try:
        import uvicorn

        from lb.cli.dashboard_app import make_app
    except ImportError as exc:
        raise BadInput(
            f"lb dashboard needs the dashboard extra ({exc.name or exc} is missing): {INSTALL_HINT}"
        ) from None
    if allow_writes and not (token and token.strip()):
        raise BadInput("--allow-writes needs a token: --token T or LB_DASHBOARD_TOKEN")
    settings = settings_from(redis_url, prefix)
    app = make_app(settings, interval, token.strip() if allow_writes and token else None)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    mode = "writes allowed with the token" if allow_writes else "read-only"
    click.echo(f"lb dashboard: http://{shown}:{bound}/ ({mode})", err=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if not server.started:
        sys.exit(1)
