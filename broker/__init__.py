"""lb's broker: durable promises and group task queues in Redis (no user code here)."""

from lb.broker.client import Broker
from lb.broker.codec import decode, encode
from lb.broker.embedded import EmbeddedRedis
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
from lb.broker.keys import Keys
from lb.broker.records import Claimed, Fence, Promise
from lb.broker.settings import Settings
from lb.broker.tasks import TaskQueue

__all__ = [
    "BadInput",
    "BadTarget",
    "Broker",
    "Claimed",
    "EmbeddedRedis",
    "Fence",
    "Fenced",
    "Keys",
    "LbError",
    "NotFound",
    "PayloadTooLarge",
    "Promise",
    "PromiseRejected",
    "RedisUnavailable",
    "Settings",
    "TaskQueue",
    "Timeout",
    "UnknownFunction",
    "decode",
    "encode",
]
