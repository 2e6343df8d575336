"""How calls, values and errors are laid out inside promises (msgpack, never pickle).

* params of a function call: ``{"func": name, "args": [...], "kwargs": {...}, "v": version}``
  (version 0: the highest a worker has) plus ``"parent": id`` for children of ``ctx.rpc`` and
  ``"tc": {"traceparent": ...}`` (W3C trace context) for a call made while tracing;
* a resolved value: the msgpack of the value itself;
* a rejected value: ``{"type": exception type name, "message": str(exception)}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lb.broker.codec import decode, encode
from lb.broker.errors import BadInput
from lb.broker.keys import check_func_name
from lb.sdk.tracing import check_carrier

__all__ = ["Call", "decode_error", "encode_error", "safe_str"]


@dataclass(frozen=True)
class Call:
    func: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    version: int = 0  # 0: whichever version is the highest on the worker that runs it
    parent: str | None = None
    tc: dict[str, str] | None = None  # the invoking span's trace context (sdk/tracing)

    def encode(self, max_payload: int) -> bytes:
        body: dict[str, Any] = {
            "func": self.func,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "v": self.version,
        }
        if self.parent:
            body["parent"] = self.parent
        if self.tc:
            body["tc"] = self.tc
        return encode(body, max_payload, what=f"arguments of {self.func}")

    @classmethod
    def decode(cls, data: bytes, max_payload: int) -> Call:
        """Parse params; raises :class:`BadInput` for anything that is not a well-formed call."""
        body = decode(data, max_payload, what="task params")
        if not isinstance(body, dict):
            raise BadInput("task params are not a call record")
        func = check_func_name(body.get("func"))
        args = body.get("args", [])
        kwargs = body.get("kwargs", {})
        version = body.get("v", 0)
        parent = body.get("parent")
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise BadInput("task params have malformed args/kwargs")
        if not all(isinstance(k, str) for k in kwargs):
            raise BadInput("task params have non-string keyword names")
        bad_version = isinstance(version, bool) or not isinstance(version, int) or version < 0
        if bad_version or (parent is not None and not isinstance(parent, str)):
            raise BadInput("task params have a malformed version or parent")
        return cls(func, args, kwargs, version, parent, check_carrier(body.get("tc")))


def safe_str(exc: BaseException | None) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises (never raises itself)."""
    if exc is None:
        return ""
    try:
        return str(exc)
    except BaseException as err:  # a broken __str__ must not escape the retry policy
        return f"<str() of {type(exc).__name__} raised {type(err).__name__}>"


def encode_error(exc: BaseException, max_payload: int) -> bytes:
    message = safe_str(exc)[:4000]
    return encode({"type": type(exc).__name__, "message": message}, max_payload, what="error")


def decode_error(data: bytes, max_payload: int) -> tuple[str, str]:
    """(type, message) of a rejected value; tolerant of values settled by hand."""
    if not data:
        return ("Rejected", "")
    try:
        body = decode(data, max_payload, what="error")
    except BadInput:
        return ("Rejected", repr(data[:200]))
    if isinstance(body, dict) and "type" in body:
        return (str(body.get("type")), str(body.get("message", "")))
    return ("Rejected", repr(body)[:4000])
