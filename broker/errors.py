"""The one exception tree of lb.

Every error lb raises on purpose derives from :class:`LbError` and carries a message that says
what went wrong and what to do about it. The CLI prints ``str(error)`` on one line and exits with
``error.exit_code``; nothing else is shown to a user.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "AuthenticationFailed",
    "BadInput",
    "BadTarget",
    "Fenced",
    "FunctionAborted",
    "LbError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PromiseRejected",
    "RedisOutOfMemory",
    "RedisReadOnly",
    "RedisUnavailable",
    "Timeout",
    "UnknownFunction",
    "UnsafeRedisConfig",
    "WorkerDied",
]


class LbError(Exception):
    """Root of every error lb raises on purpose."""

    exit_code = 1


class BadInput(LbError, ValueError):
    """Raised when an id, group, name, argument or payload is malformed or hostile."""

    exit_code = 2


class PayloadTooLarge(BadInput):
    """Raised when encoded params or a value exceed the configured size limit."""


class BadTarget(BadInput):
    """Raised when a target is not ``poll://any@<group>`` or ``poll://uni@<group>/<pid>``."""


class UnknownFunction(LbError):
    """Raised when no function of that name is registered where it was looked up."""

    exit_code = 3


class AlreadyRegistered(BadInput):
    """Raised when a second function is registered under a name (and version) already taken:
    rename one of them, or give it another ``version``."""


class NotFound(LbError, KeyError):
    """Raised when a promise or task with that id does not exist (or has expired)."""

    exit_code = 4

    def __str__(self) -> str:  # KeyError quotes its message; we want plain words.
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(LbError):
    """Raised when an id is reused in a way the caller asked to be strict about."""


class Fenced(LbError):
    """Raised when a worker-side mutation carries a stale (task id, version, pid).

    The task was taken over by another worker (or finished); this worker must stop that
    execution and must not settle anything for it. Seeing this error is normal after a stall.
    """

    exit_code = 5


class Timeout(LbError, TimeoutError):
    """Raised when waiting for a promise took longer than the caller allowed.

    The promise itself is untouched: it may still settle later.
    """

    exit_code = 6


class RedisUnavailable(LbError, ConnectionError):
    """Raised when Redis cannot be reached; nothing was changed by the failed call."""

    exit_code = 7


class RedisOutOfMemory(RedisUnavailable):
    """Redis refused a write: it is at ``maxmemory`` under ``noeviction``. Nothing was changed
    by the refused call. A worker holds what it has and carries on when room returns."""

    exit_code = 9


class RedisReadOnly(RedisUnavailable):
    """The server lb reached is a read-only replica (or a failover is in progress). Nothing
    was changed by the refused call; workers wait and carry on once a primary answers."""

    exit_code = 10


class PermissionDenied(LbError):
    """The Redis user lacks a permission lb needs (NOPERM); the message names the command."""

    exit_code = 11


class AuthenticationFailed(LbError):
    """Redis refused the credentials (wrong user name or password): not an outage."""

    exit_code = 12


class UnsafeRedisConfig(LbError):
    """Redis is configured so that lb would lose acknowledged work (an evicting
    ``maxmemory-policy``); the message says how to fix it or to override the check."""

    exit_code = 13


class WorkerDied(LbError):
    """A worker's own machinery (its I/O loop, claim or takeover loop) stopped: the process
    must exit so that its tasks are taken over."""

    exit_code = 14


class FunctionAborted(LbError):
    """A function raised ``SystemExit``, ``KeyboardInterrupt`` or another ``BaseException``
    that is not an ``Exception``: that call fails (no function retry), the worker lives on."""


class PromiseRejected(LbError):
    """Raised by ``result()`` when the promise settled rejected, canceled or timed out.

    ``state`` holds the promise state, ``error_type`` and ``error_message`` what the function
    raised (when it raised).
    """

    exit_code = 8

    def __init__(self, promise_id: str, state: str, error_type: str, error_message: str) -> None:
        self.promise_id = promise_id
        self.state = state
        self.error_type = error_type
        self.error_message = error_message
        why = {
            "rejected_timedout": "timed out: its deadline passed before any worker settled it "
            "(is a worker of its group running and serving its function?)",
            "rejected_canceled": "was canceled",
        }
        if error_message or state not in why:
            text = f"promise {promise_id!r} {state}: {error_type}: {error_message}"
        else:
            text = f"promise {promise_id!r} {why[state]}"
        super().__init__(text)
