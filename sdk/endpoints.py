"""The worker's HTTP port (``lb worker --metrics-port N``, ``Resonate.serve_metrics``):

* ``/metrics``: the worker's Prometheus metrics (sdk/metrics.py), text format;
* ``/livez``: 200 while the worker process makes progress - before it joins (waiting for
  Redis is by design, not a fault) and then while its event loop ticks and its loops run;
  503 with the reason otherwise. What a Kubernetes liveness probe should call: it never
  asks Redis, so a Redis outage never restarts the fleet;
* ``/readyz``: 200 once joined, while Redis answers and the worker claims; 503 with the
  reason while it waits for Redis, rides out an outage or stops.

A daemon thread with a small threaded HTTP server: a slow scrape never touches the worker's
event loop (the numbers are read from plain attributes).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lb.broker.errors import BadInput

if TYPE_CHECKING:
    from lb.sdk.resonate import Resonate

__all__ = ["Endpoints"]


class Endpoints:
    """Serve /metrics, /livez and /readyz of ``resonate``'s worker on ``host:port``."""

    def __init__(self, resonate: Resonate, port: int, host: str = "0.0.0.0") -> None:
        self.resonate = resonate
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, ctype, body = owner.answer(self.path.split("?", 1)[0])
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes and probes are not worker events

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise BadInput(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="lb-metrics", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for ``path``."""
        if path == "/metrics":
            w = self.resonate.worker
            if w is None or w.metrics is None:
                return 200, CONTENT_TYPE_LATEST, b"# the worker has not joined yet\n"
            return 200, CONTENT_TYPE_LATEST, generate_latest(w.metrics.registry)
        if path in ("/livez", "/healthz"):
            ok, why = self.live()
        elif path == "/readyz":
            ok, why = self.ready()
        else:
            return 404, "text/plain; charset=utf-8", b"not found: /metrics, /livez, /readyz\n"
        return (200 if ok else 503), "text/plain; charset=utf-8", (why + "\n").encode()

    def live(self) -> tuple[bool, str]:
        r = self.resonate
        if r._stopped.is_set():
            return False, "stopped"
        w = r.worker
        if w is None:
            return True, "ok: waiting to join"
        if w.died is not None:
            return False, f"died: {w.died}"
        stalled = time.monotonic() - w.watch.tick
        if stalled >= w.watch.stall_after:
            return False, f"event loop blocked for {stalled:.1f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        w = self.resonate.worker
        if w is None:
            return False, "not joined yet (waiting for Redis?)"
        if w.died is not None or self.resonate._stopped.is_set() or w._stopping:
            return False, "stopping"
        if w.outage.on:
            return False, f"Redis unavailable ({w.outage.kind})"
        return True, "ok"
