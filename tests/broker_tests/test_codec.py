"""Pure units: the bounded msgpack codec (round trips, ext types, truncation, garbage, depth
and size limits). No Redis is needed."""

from __future__ import annotations

import contextlib
import datetime
import random

import msgpack
import pytest

from lb.broker import BadInput, PayloadTooLarge
from lb.broker.codec import MAX_DEPTH, decode, encode

# ----------------------------------------------------------------------------------- codec

ROUNDTRIP = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    "",
    "é😀",
    b"",
    b"\x00\xff" * 10,
    [],
    [1, [2, [3]]],
    {},
    {"a": {"b": [1, None, b"x"]}},
    {1: "int key"},
    {b"bin": 1},
    "x" * 10_000,
]


@pytest.mark.parametrize("value", ROUNDTRIP, ids=lambda v: repr(v)[:30])
def test_codec_roundtrip(value: object) -> None:
    """encode then decode returns an equal value for every native msgpack type."""
    assert decode(encode(value)) == value


def test_codec_tuple_becomes_list() -> None:
    """Tuples are accepted and come back as lists (msgpack has one array type)."""
    assert decode(encode((1, (2, 3)))) == [1, [2, 3]]


def test_decode_refuses_ext_type() -> None:
    """An ext type in a payload is refused with BadInput (never handed to user code)."""
    for code in (0, 5, 127):
        with pytest.raises(BadInput):
            decode(msgpack.packb(msgpack.ExtType(code, b"x")))
        with pytest.raises(BadInput):
            decode(msgpack.packb({"nested": [msgpack.ExtType(code, b"x")]}))


def test_decode_refuses_timestamp_ext() -> None:
    """The built-in timestamp extension (ext -1) is an ext type too and must be refused."""
    with pytest.raises(BadInput):
        decode(msgpack.packb(msgpack.Timestamp(1, 0)))


@pytest.mark.parametrize(
    "value",
    [msgpack.ExtType(5, b"x"), {"when": msgpack.Timestamp(1, 0)}, {(1, 2): "tuple key"}],
    ids=["ext", "timestamp", "tuple-key"],
)
def test_encode_refuses_what_decode_refuses(value: object) -> None:
    """encode must refuse what decode refuses (ext types, list map keys): BadInput up front.

    Today these are stored and only fail when read back (ext, tuple key), or come back as a
    msgpack.Timestamp object (see test_decode_refuses_timestamp_ext).
    """
    with pytest.raises(BadInput):
        encode(value)


def test_decode_refuses_every_truncation() -> None:
    """Every proper prefix of a valid payload (a container) is refused with BadInput."""
    data = msgpack.packb({"a": [1, 2.5, "str", b"bin", {"k": None}], "b": "x" * 300})
    for n in range(len(data)):
        with pytest.raises(BadInput):
            decode(data[:n])


def test_decode_refuses_trailing_bytes() -> None:
    """A valid payload followed by anything (even another valid object) is refused."""
    data = msgpack.packb([1, 2, 3])
    for extra in (b"\x00", b"\xc0", data):
        with pytest.raises(BadInput):
            decode(data + extra)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never-used byte
        b"\xdb\xff\xff\xff\xff",  # str32 claiming 4 GB
        b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion items
        b"\xdf\xff\xff\xff\xff",  # map32 claiming 4 billion pairs
        b"\x81\x91\x01\x02",  # map with a list as key (unhashable)
        b"\x91" * 100_000 + b"\xc0",  # 100 000 levels of nesting
        "not bytes",
    ],
    ids=["c1", "str32", "array32", "map32", "list-key", "deep", "str"],
)
def test_decode_refuses_garbage(data: bytes) -> None:
    """Hostile inputs (bad bytes, absurd lengths, unhashable keys, huge nesting) -> BadInput."""
    with pytest.raises(BadInput):
        decode(data)


def test_decode_fuzz_raises_only_badinput() -> None:
    """Random bytes and mutated valid payloads either decode or raise BadInput, nothing else."""
    rng = random.Random(1234)
    valid = msgpack.packb({"a": [1, 2.5, "s", b"b", {"k": [None, True]}]})
    for i in range(3000):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        else:
            buf = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            data = bytes(buf)
        with contextlib.suppress(BadInput):
            decode(data)


def _nested_list(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _nested_dict(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize("build", [_nested_list, _nested_dict])
def test_depth_limit(build) -> None:  # type: ignore[no-untyped-def]
    """Nesting of exactly MAX_DEPTH (32) levels passes both ways; 33 is refused both ways."""
    ok = build(MAX_DEPTH)
    assert decode(encode(ok)) == ok
    too_deep = build(MAX_DEPTH + 1)
    with pytest.raises(BadInput):
        encode(too_deep)
    with pytest.raises(BadInput):
        decode(msgpack.packb(too_deep))


def test_encode_refuses_self_reference() -> None:
    """A list that contains itself is BadInput (not RecursionError)."""
    loop: list = []
    loop.append(loop)
    with pytest.raises(BadInput):
        encode(loop)


@pytest.mark.parametrize("limit", [64, 1000, 1 << 20])
def test_size_limit_exact_and_one_over(limit: int) -> None:
    """A payload of exactly max_payload bytes passes; one byte more is PayloadTooLarge."""
    # bin header: 2 bytes up to 255, 3 bytes up to 65535, 5 bytes above.
    header = 2 if limit - 2 < 256 else 3 if limit - 3 < 65536 else 5
    exact = b"x" * (limit - header)
    data = encode(exact, max_payload=limit)
    assert len(data) == limit
    assert decode(data, max_payload=limit) == exact
    with pytest.raises(PayloadTooLarge):
        encode(exact + b"x", max_payload=limit)
    over = msgpack.packb(exact + b"x")
    assert len(over) == limit + 1
    with pytest.raises(PayloadTooLarge):
        decode(over, max_payload=limit)
    assert issubclass(PayloadTooLarge, BadInput)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        frozenset(),
        datetime.datetime(2024, 1, 1),
        1j,
        2**64,
        -(2**63) - 1,
        {"nested": [object()]},
        Exception("x"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_encode_refuses_unencodable(value: object) -> None:
    """Types msgpack cannot represent natively (and out-of-range ints) are BadInput."""
    with pytest.raises(BadInput):
        encode(value)
