"""The ``lb dashboard`` web app (Starlette, served by uvicorn): a page and a small JSON API.

Routes:

* ``GET /``: the page (cli/dashboard_page.py: plain HTML, CSS and JavaScript, no build step);
  ``/dashboard.js`` and ``/dashboard.css`` its script and style.
* ``GET /api/snapshot``: the current frame (cli/dashboard_feed.py) as JSON.
* ``GET /api/events``: server-sent events, one ``frame`` event per new frame (every
  ``--interval``), a comment every KEEPALIVE_S otherwise. A page's EventSource reconnects by
  itself when the dashboard restarts.
* ``GET /api/promise/{id}``: one promise with its task, children and timeline
  (broker/lookup.py); 400 for an id broker/keys.py refuses, 404 for an unknown one, 503 while
  Redis does not answer.
* ``POST /api/promise/{id}``: settle it from outside (``action`` resolve, reject or cancel;
  ``value`` JSON for resolve and reject), the same transition as ``lb resolve / reject /
  cancel``: idempotent, a settled promise is left as it is (``changed: false``).

Write rule: a dashboard is read-only unless started with ``--allow-writes`` and a token. A
read-only dashboard answers every POST with 403 and its page has no buttons; a writable one
answers 403 to a POST without the token (``Authorization: Bearer <token>``, or a ``token``
field of a form or JSON body), compared in constant time. Pages are served with a strict
Content-Security-Policy (scripts and styles from the app only): the page writes every value
from Redis as text, never as markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lb.broker.client import Broker
from lb.broker.codec import encode
from lb.broker.errors import BadInput, LbError, NotFound, PayloadTooLarge, RedisUnavailable
from lb.broker.keys import check_id
from lb.broker.lookup import lookup
from lb.broker.settings import Settings
from lb.cli.dashboard_feed import Feed
from lb.cli.dashboard_page import CSS, JS, PAGE

__all__ = ["ACTIONS", "KEEPALIVE_S", "make_app"]

log = logging.getLogger("lb.dashboard")

KEEPALIVE_S = 15.0
STOP_WAIT_S = 5.0  # a stop waits this long at most for the feed to end
MAX_BODY = 1 << 20
ACTIONS = {"resolve": "resolved", "reject": "rejected", "cancel": "rejected_canceled"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_NO_STORE = {"Cache-Control": "no-store"}


def _json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=_NO_STORE)


def _err(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _static(text: str, media: str) -> Any:
    async def serve(request: Request) -> Response:
        headers = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", **_NO_STORE}  # fmt: skip
        return Response(text, media_type=media, headers=headers)

    return serve


async def _body(request: Request) -> dict[str, str]:
    """The fields of a form (urlencoded) or JSON body; BadInput for anything else."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise PayloadTooLarge(f"request body over {MAX_BODY} bytes")
    if not raw:
        return {}
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if ctype == "application/json":
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise BadInput("the JSON body must be an object")
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        if ctype in ("application/x-www-form-urlencoded", ""):
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
            return {k: v[-1] for k, v in form.items()}
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"unreadable request body ({str(exc)[:100]})") from None
    raise BadInput(f"unsupported content type {ctype!r}: send a form or JSON")


def make_app(settings: Settings, interval: float, token: str | None) -> Starlette:
    """The app for one deployment (``settings``: Redis URL and prefix). ``token`` not None
    allows writes with that token (module docstring); None is read-only."""
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = Broker(settings)
        feed = Feed(broker, interval, writes=token is not None)
        await feed.poll_once()  # the first page load already has data (or the outage)
        state.update(broker=broker, feed=feed)
        poller = asyncio.create_task(feed.run(), name="lb-dashboard-feed")
        try:
            yield
        finally:
            poller.cancel()
            await asyncio.wait({poller}, timeout=STOP_WAIT_S)  # a stop is bounded, whatever
            if poller.done() and not poller.cancelled() and poller.exception() is not None:
                log.warning("lb dashboard: the feed ended: %r", poller.exception())
            with contextlib.suppress(Exception):  # Redis may be gone: a stop is still clean
                await broker.close()

    async def api_snapshot(request: Request) -> Response:
        return Response(state["feed"].text, media_type="application/json", headers=_NO_STORE)

    async def api_events(request: Request) -> Response:
        feed: Feed = state["feed"]

        async def stream() -> AsyncIterator[str]:
            seen = 0
            yield "retry: 1000\n\n"
            while True:
                seen, text = await feed.next_text(seen, KEEPALIVE_S)
                yield ": keepalive\n\n" if text is None else f"event: frame\ndata: {text}\n\n"

        headers = {**_NO_STORE, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def api_promise(request: Request) -> Response:
        broker: Broker = state["broker"]
        try:
            pid = check_id(request.path_params["pid"])
            if request.method == "POST":
                return await _settle(request, broker, pid)
            return _json(await lookup(broker, pid))
        except NotFound as exc:
            return _err(404, str(exc))
        except BadInput as exc:
            return _err(400, str(exc))
        except RedisUnavailable as exc:
            return _err(503, f"Redis does not answer: {exc}")
        except LbError as exc:
            return _err(500, str(exc))

    def _authorized(request: Request, fields: dict[str, str]) -> bool:
        assert token is not None
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else fields.get("token", "")
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    async def _settle(request: Request, broker: Broker, pid: str) -> Response:
        if token is None:
            return _err(403, "read-only dashboard: start it with --allow-writes --token T")
        fields = await _body(request)
        if not _authorized(request, fields):
            return _err(403, "a write needs the dashboard's token (Authorization: Bearer T)")
        action = fields.get("action", "")
        if action not in ACTIONS:
            raise BadInput(f"action must be one of {', '.join(ACTIONS)}")
        value = b""
        text = fields.get("value", "")
        if text.strip() and action != "cancel":
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise BadInput(f"value is not valid JSON ({str(exc)[:100]})") from None
            value = encode(parsed, settings.max_payload, what="value")
        await broker.check_server()
        changed, p = await broker.settle(pid, ACTIONS[action], value)
        return _json({"id": pid, "state": p.state, "changed": changed})

    routes = [
        Route("/", _static(PAGE, "text/html; charset=utf-8")),
        Route("/dashboard.js", _static(JS, "text/javascript; charset=utf-8")),
        Route("/dashboard.css", _static(CSS, "text/css; charset=utf-8")),
        Route("/api/snapshot", api_snapshot),
        Route("/api/events", api_events),
        Route("/api/promise/{pid:path}", api_promise, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
