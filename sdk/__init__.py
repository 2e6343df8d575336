"""lb's SDK: Resonate-style durable functions on lb's Redis broker."""

from lb.broker.errors import (
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
from lb.sdk.context import AsyncContext, Context
from lb.sdk.resonate import Handle, Options, Resonate
from lb.sdk.retry import Constant, Exponential, Never, RetryPolicy

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
