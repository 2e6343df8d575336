"""Connection and behaviour settings: one frozen dataclass, built from a URL.

Guarantees: a :class:`Settings` never shows its password (``repr``/``str``/``safe_url``); every
field has a default that works against a local Redis; ``from_url`` accepts ``redis://``,
``rediss://`` and ``unix://`` URLs and rejects anything else with :class:`BadInput`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.connection import parse_url

from lb.broker.errors import BadInput

__all__ = ["DEFAULT_URL", "Settings"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _retention_ms(text: str, what: str) -> int:
    """Seconds (a number from 0 to a century) as whole milliseconds, or :class:`BadInput`."""
    try:
        seconds = float(text)
    except ValueError:
        raise BadInput(f"{what} must be a number of seconds, not {text[:40]!r}") from None
    if not 0 <= seconds <= 100 * 365 * 86400:  # also refuses NaN
        raise BadInput(f"{what} must be from 0 s to a century, not {text[:40]!r}")
    return round(seconds * 1000)


@dataclass(frozen=True)
class Settings:
    """Everything a broker client needs to know; immutable, safe to share between threads."""

    url: str = field(default=DEFAULT_URL, repr=False)
    prefix: str = "lb"
    shards: int = 1
    max_payload: int = 1 << 20
    retention_ms: int = 7 * 24 * 3600 * 1000
    default_timeout_ms: int = 24 * 3600 * 1000
    ttl_ms: int = 5000
    max_deliveries: int = 10
    max_deaths: int = 2
    max_failures: int = 3
    max_inflight: int = 1024
    max_connections: int = 64
    socket_timeout: float | None = None
    connect_timeout: float = 2.0
    allow_eviction: bool = False
    tls_ca: str | None = None  # CA bundle that signed the server's certificate (rediss://)
    tls_cert: str | None = None  # client certificate, for servers that ask for one (mutual)
    tls_key: str | None = None  # its private key
    tls_verify: bool = True  # check the server's certificate and host name (never off in prod)

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise BadInput(
                f"prefix {self.prefix!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
            )
        if not 1 <= self.shards <= 1024:
            raise BadInput("shards must be between 1 and 1024")
        if self.max_payload < 64:
            raise BadInput("max_payload must be at least 64 bytes")
        if not 1 <= self.max_deaths <= 100:
            raise BadInput("max_deaths must be between 1 and 100")
        if self.ttl_ms < 200:
            raise BadInput("ttl must be at least 0.2 s")
        try:
            parts = urlsplit(self.url)
            _ = parts.port
        except ValueError as exc:
            raise BadInput(f"Redis URL is malformed ({exc})") from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise BadInput(
                f"Redis URL scheme {parts.scheme[:20]!r} is not supported: "
                "use redis://, rediss:// or unix://"
            )
        try:
            parse_url(self.url)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:  # message never includes the URL (password)
            raise BadInput(f"Redis URL is malformed ({str(exc)[:120]})") from None

    @classmethod
    def from_url(cls, url: str | None = None, **overrides: Any) -> Settings:
        """Build settings from ``url`` (default: ``$LB_REDIS_URL``, then the local default)."""
        chosen = url or os.environ.get("LB_REDIS_URL") or DEFAULT_URL
        prefix = overrides.pop("prefix", None) or os.environ.get("LB_PREFIX") or "lb"
        for name in ("tls_ca", "tls_cert", "tls_key"):
            env = os.environ.get(f"LB_{name.upper()}")
            if overrides.get(name) is None and env:
                overrides[name] = env
        if "tls_verify" not in overrides and os.environ.get("LB_TLS_VERIFY") in ("0", "false"):
            overrides["tls_verify"] = False
        if "allow_eviction" not in overrides and os.environ.get("LB_ALLOW_EVICTION"):
            overrides["allow_eviction"] = os.environ["LB_ALLOW_EVICTION"] not in ("0", "")
        env_shards = os.environ.get("LB_SHARDS")
        if overrides.get("shards") is None and env_shards:
            try:
                overrides["shards"] = int(env_shards)
            except ValueError:
                raise BadInput(f"LB_SHARDS must be a whole number, not {env_shards!r}") from None
        elif "shards" in overrides and overrides["shards"] is None:
            del overrides["shards"]
        env_ret = os.environ.get("LB_RETENTION")
        if overrides.get("retention_ms") is None and env_ret:
            overrides["retention_ms"] = _retention_ms(env_ret, "LB_RETENTION")
        elif "retention_ms" in overrides and overrides["retention_ms"] is None:
            del overrides["retention_ms"]
        return cls(url=chosen, prefix=prefix, **overrides)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def tls_kwargs(self) -> dict[str, Any]:
        """redis-py connection arguments for TLS (empty unless the URL is ``rediss://``).
        The files are checked here, so a wrong path is a clear BadInput, not an SSL error."""
        if not self.url.startswith("rediss://"):
            if self.tls_ca or self.tls_cert or self.tls_key:
                raise BadInput("TLS files were given but the Redis URL is not rediss://")
            return {}
        out: dict[str, Any] = {"ssl_cert_reqs": "required" if self.tls_verify else "none"}
        if not self.tls_verify:
            out["ssl_check_hostname"] = False
        for name, arg in (
            ("tls_ca", "ssl_ca_certs"),
            ("tls_cert", "ssl_certfile"),
            ("tls_key", "ssl_keyfile"),
        ):
            path = getattr(self, name)
            if path:
                if not os.path.isfile(path):
                    raise BadInput(f"{name.replace('_', ' ')} file {path[:200]!r} does not exist")
                out[arg] = path
        if bool(self.tls_cert) != bool(self.tls_key):
            raise BadInput("a TLS client certificate needs its key, and a key its certificate")
        return out

    @property
    def live_ms(self) -> int:
        """How long a worker counts as live after its last heartbeat: 3 ttl, at least 3 s.
        Its info hash expires after this, and status views ignore older heartbeats."""
        return max(3 * self.ttl_ms, 3000)

    @property
    def safe_url(self) -> str:
        """The URL with any password replaced by ``***``: the only form that is ever printed."""
        parts = urlsplit(self.url)
        query = (
            "&".join(
                "password=***" if kv.split("=", 1)[0].lower() == "password" else kv
                for kv in parts.query.split("&")
            )
            if parts.query
            else ""
        )
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    def __repr__(self) -> str:
        return (
            f"Settings(url={self.safe_url!r}, prefix={self.prefix!r}, shards={self.shards}, "
            f"ttl_ms={self.ttl_ms}, max_payload={self.max_payload})"
        )

    __str__ = __repr__
