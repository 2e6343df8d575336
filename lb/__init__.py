"""lb: durable, load-balanced RPC for Python on nothing but Redis.

The one import package of the ``lb`` distribution. Its subpackages are ``lb.broker`` (the Redis
data model and Lua transitions, no user code), ``lb.sdk`` (the Resonate-style API, execution
and replay) and ``lb.cli`` (the ``lb`` command, also ``python -m lb``). The names below are
the public API; everything else may change between releases.
"""

from lb.broker.errors import (
    AlreadyRegistered,
    AuthenticationFailed,
    BadInput,
    BadTarget,
    Fenced,
    FunctionAborted,
    LbError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PromiseRejected,
    RedisOutOfMemory,
    RedisReadOnly,
    RedisUnavailable,
    Timeout,
    UnknownFunction,
    UnsafeRedisConfig,
    WorkerDied,
)
from lb.broker.settings import Settings
from lb.sdk.context import AsyncContext, Context, StepOptions
from lb.sdk.resonate import Handle, Options, Resonate
from lb.sdk.retry import Constant, Exponential, Never, RetryPolicy
from lb.version import __version__

__all__ = [
    "AlreadyRegistered",
    "AsyncContext",
    "AuthenticationFailed",
    "BadInput",
    "BadTarget",
    "Constant",
    "Context",
    "Exponential",
    "Fenced",
    "FunctionAborted",
    "Handle",
    "LbError",
    "Never",
    "NotFound",
    "Options",
    "PayloadTooLarge",
    "PermissionDenied",
    "PromiseRejected",
    "RedisOutOfMemory",
    "RedisReadOnly",
    "RedisUnavailable",
    "Resonate",
    "RetryPolicy",
    "Settings",
    "StepOptions",
    "Timeout",
    "UnknownFunction",
    "UnsafeRedisConfig",
    "WorkerDied",
    "__version__",
]
