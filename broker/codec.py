"""msgpack encoding of params and values, with size and shape limits. Never pickle.

Guarantees: :func:`encode` refuses anything over ``max_payload`` bytes and any type msgpack cannot
represent natively (with :class:`BadInput` / :class:`PayloadTooLarge`, before anything is sent);
:func:`decode` refuses ext types, inputs over the size limit, truncated or trailing bytes, and
nesting deeper than :data:`MAX_DEPTH`, raising :class:`BadInput` and never anything else.
"""

from __future__ import annotations

from typing import Any

import msgpack

from lb.broker.errors import BadInput, PayloadTooLarge

__all__ = ["MAX_DEPTH", "decode", "encode"]

MAX_DEPTH = 32


def _refuse_ext(code: int, data: bytes) -> Any:
    raise BadInput(f"msgpack ext type {code} is not accepted")


def encode(value: Any, max_payload: int = 1 << 20, what: str = "value") -> bytes:
    """Pack ``value`` (None, bool, int, float, str, bytes, list, tuple, dict) to msgpack."""
    _check_shape(value)
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadInput(
            f"{what} cannot be encoded ({exc}); use None, bool, int, float, str, bytes, "
            "list, tuple or dict"
        ) from None
    if len(data) > max_payload:
        raise PayloadTooLarge(
            f"{what} is {len(data)} bytes encoded, over the {max_payload}-byte limit; "
            "store large data elsewhere and pass a reference"
        )
    return data


def decode(data: bytes, max_payload: int = 1 << 20, what: str = "payload") -> Any:
    """Unpack msgpack ``data`` with the limits above."""
    if len(data) > max_payload:
        raise PayloadTooLarge(f"{what} is {len(data)} bytes, over the {max_payload}-byte limit")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            ext_hook=_refuse_ext,
            use_list=True,
        )
    except BadInput:
        raise
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise BadInput(f"{what} is not valid msgpack ({type(exc).__name__}: {exc})") from None
    _check_shape(value)
    return value


_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _check_shape(value: Any) -> None:
    """Refuse nesting past MAX_DEPTH, ext types (Timestamp included) and container map keys.
    Scalars of the exact built-in types are never pushed on the stack (the common case: a
    call's arguments and values are mostly flat), which keeps this cheap per call."""
    if type(value) in _SCALARS:
        return
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, msgpack.ExtType | msgpack.Timestamp):  # ExtType is a tuple: first
            raise BadInput("msgpack ext types (timestamps included) are not accepted")
        if isinstance(item, dict):
            if item and depth + 1 > MAX_DEPTH:
                raise BadInput(f"payload nests deeper than {MAX_DEPTH} levels")
            for k, v in item.items():
                if type(k) not in _SCALARS:
                    if isinstance(k, list | tuple | dict):
                        raise BadInput(
                            "map keys must be scalars (str, bytes, int, float, bool, None)"
                        )
                    stack.append((k, depth + 1))
                if type(v) not in _SCALARS:
                    stack.append((v, depth + 1))
        elif isinstance(item, list | tuple):
            if item and depth + 1 > MAX_DEPTH:
                raise BadInput(f"payload nests deeper than {MAX_DEPTH} levels")
            stack.extend((v, depth + 1) for v in item if type(v) not in _SCALARS)
