"""``lb exporter``: the fleet-wide gauges (broker/fleet_metrics.py) on one HTTP port, for
Prometheus and an autoscaler. Run one per deployment (a Deployment of 1 replica): the gauges
come from Redis, so any number of exporters show the same numbers, but one is enough."""

from __future__ import annotations

import signal
import threading
from typing import Any

import click
from prometheus_client import CollectorRegistry, start_http_server

from lb.broker.errors import BadInput
from lb.broker.fleet_metrics import FleetCollector
from lb.cli.common import handle_errors, prefix_option, redis_option, settings_from

__all__ = ["exporter"]


@click.command()
@click.option("--port", default=9400, show_default=True, type=click.IntRange(0, 65535),
              envvar="LB_EXPORTER_PORT")  # fmt: skip
@click.option("--host", default="0.0.0.0", show_default=True, envvar="LB_EXPORTER_HOST")
@redis_option
@prefix_option
@handle_errors
def exporter(port: int, host: str, redis_url: str | None, prefix: str) -> None:
    """Serve the fleet's gauges (backlog, oldest waiting call, calls by state, workers by
    state, takeovers, dead letters, retained memory) at /metrics until SIGTERM or Ctrl-C.
    A Redis outage is lb_exporter_up 0, not an exit."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(settings_from(redis_url, prefix)))
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise BadInput(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    click.echo(f"lb exporter: http://{host}:{server.server_address[1]}/metrics", err=True)
    done = threading.Event()

    def stop(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done.wait()
    server.shutdown()
