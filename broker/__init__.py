"""lb's broker: durable promises and group task queues in Redis (no user code here)."""

from broker.client import Broker
from broker.codec import decode, encode
from broker.embedded import EmbeddedRedis
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
from broker.keys import Keys
from broker.records import Claimed, Fence, Promise
from broker.settings import Settings
from broker.tasks import TaskQueue

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
