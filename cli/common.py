"""What every command shares: the --redis option, error reporting, app loading."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lb.broker.errors import BadInput, LbError, RedisUnavailable
from lb.broker.settings import Settings

__all__ = [
    "Seconds",
    "app_loader",
    "handle_errors",
    "lb_argv",
    "parse_json",
    "redis_option",
    "retention_ms",
    "retention_option",
    "settings_from",
]

F = TypeVar("F", bound=Callable[..., Any])


class Seconds(click.FloatRange):
    """A float range that also refuses NaN (``click.FloatRange`` lets ``nan`` through, since
    every comparison with it is false) and infinities."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        out = super().convert(value, param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return out


_redis_url_option = click.option(
    "--redis",
    "redis_url",
    envvar="LB_REDIS_URL",
    default=None,
    show_envvar=True,
    help="Redis URL (redis://, rediss://, unix://); default redis://127.0.0.1:6379/0.",
)


def _to_env(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            os.environ[name] = str(value)

    return store


_TLS = (
    ("--tls-ca", "LB_TLS_CA", "CA bundle that signed the server's certificate (rediss://)."),
    ("--tls-cert", "LB_TLS_CERT", "Client certificate, for a server that asks for one."),
    ("--tls-key", "LB_TLS_KEY", "Private key of the client certificate."),
)


def redis_option(fn: F) -> F:
    """``--redis`` plus the TLS files (``--tls-ca/--tls-cert/--tls-key``, or ``LB_TLS_*``);
    the TLS options reach the settings through their environment variables."""
    for flag, env, text in _TLS:
        fn = click.option(
            flag,
            envvar=env,
            show_envvar=True,
            default=None,
            expose_value=False,
            is_eager=True,
            callback=_to_env(env),
            type=click.Path(dir_okay=False),
            help=text,
        )(fn)
    return _redis_url_option(fn)


prefix_option = click.option(
    "--prefix",
    envvar="LB_PREFIX",
    default="lb",
    show_default=True,
    show_envvar=True,
    help="Key prefix of this lb deployment.",
)

retention_option = click.option(
    "--retention",
    type=Seconds(0, 100 * 365 * 86400),
    envvar="LB_RETENTION",
    default=None,
    show_envvar=True,
    help="Seconds a settled call (and its steps) is kept [default: 7 days].",
)


def trace_option(fn: F) -> F:
    """``--trace otlp|console`` and ``--trace-file``: OpenTelemetry spans of the calls this
    command makes or runs (sdk/tracing; the ``otel`` extra). Off by default."""
    fn = click.option(
        "--trace-file",
        envvar="LB_TRACE_FILE",
        default=None,
        show_envvar=True,
        help="With --trace console: append the spans here (one JSON per line), not stderr.",
    )(fn)
    return click.option(
        "--trace",
        type=click.Choice(["off", "console", "otlp"]),
        envvar="LB_TRACE",
        default="off",
        show_default=True,
        show_envvar=True,
        help="OpenTelemetry traces: otlp ($OTEL_EXPORTER_OTLP_ENDPOINT) or console.",
    )(fn)


def start_tracing(trace: str, trace_file: str | None, service: str) -> None:
    """Turn tracing on for this process as ``--trace`` asks (nothing for ``off``)."""
    if trace != "off":
        from lb.sdk import tracing

        tracing.configure(trace, trace_file, service)


def retention_ms(seconds: float | None) -> int | None:
    """``--retention`` in ms (None: the settings' default, or ``$LB_RETENTION``)."""
    return None if seconds is None else round(seconds * 1000)


def lb_argv() -> list[str]:
    """The command line that runs the installed ``lb`` CLI in a child process.

    ``-P`` keeps the child's current directory off ``sys.path``, so a folder named ``lb`` (or
    anything else) in the directory a user runs from can never shadow the installed package.
    """
    return [sys.executable, "-P", "-m", "lb"]


def settings_from(redis_url: str | None, prefix: str = "lb", **over: Any) -> Settings:
    return Settings.from_url(redis_url, prefix=prefix, **over)


def handle_errors(fn: F) -> F:
    """Print lb errors on one line and exit with their code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LbError as exc:
            url = str(kwargs.get("redis_url") or os.environ.get("LB_REDIS_URL") or "")
            hint = ""
            tls = url.startswith("rediss://") and "TLS" not in str(exc)
            if isinstance(exc, RedisUnavailable) and tls:
                hint = " (over TLS: check --tls-ca, --tls-cert and --tls-key too)"
            click.echo(f"error: {exc}{hint}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} is not valid JSON ({exc.msg} at position {exc.pos})") from None
    except (ValueError, RecursionError) as exc:  # too deep, or an integer too long to convert
        raise BadInput(f"{what} is not usable JSON ({str(exc)[:100]})") from None


def app_loader(spec: str) -> Callable[[Any], None]:
    """Resolve ``module:attr`` to something that registers functions on a Resonate.

    ``attr`` may be a callable taking the Resonate (``register(resonate)``), a Resonate whose
    registered functions are copied, or a list of functions.
    """
    if ":" not in spec:
        raise BadInput(f"--app {spec!r} must be module:attribute")
    mod_name, attr = spec.split(":", 1)
    # Like `celery -A` and streaq: the user's own project directory is importable.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
        target = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise BadInput(f"cannot load --app {spec!r}: {exc}") from None

    def setup(resonate: Any) -> None:
        if hasattr(target, "registry") and hasattr(target.registry, "names"):
            for f in target.registry.entries():
                resonate.register(f.fn, name=f.name, version=f.version, retry=f.retry)
        elif isinstance(target, list | tuple):
            for f in target:
                resonate.register(f)
        elif callable(target) and len(inspect.signature(target).parameters) == 1:
            target(resonate)
        else:
            raise BadInput(
                f"--app {spec!r} is not a register(resonate) function, a Resonate, "
                "or a list of functions"
            )

    return setup
