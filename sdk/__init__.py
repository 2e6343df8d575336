"""lb's SDK: Resonate-style durable functions on lb's Redis broker."""

from broker.errors import (
    BadInput,
    BadTarget,
    Fenced,
    LbError,
    NotFound,
    PayloadTooLarge,
    PromiseRejected,
    RedisUnavailable,
    Timeout,
    UnknownFunction,
)
from sdk.context import AsyncContext, Context
from sdk.resonate import Handle, Options, Resonate
from sdk.retry import Constant, Exponential, Never, RetryPolicy

__all__ = [
    "AsyncContext",
    "BadInput",
    "BadTarget",
    "Constant",
    "Context",
    "Exponential",
    "Fenced",
    "Handle",
    "LbError",
    "Never",
    "NotFound",
    "Options",
    "PayloadTooLarge",
    "PromiseRejected",
    "RedisUnavailable",
    "Resonate",
    "RetryPolicy",
    "Timeout",
    "UnknownFunction",
]
