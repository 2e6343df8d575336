"""Pure units: key layout and name checks, the msgpack codec, Settings. No Redis is needed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import random
import zlib

import msgpack
import pytest
from redis.crc import key_slot

from broker import BadInput, Broker, Keys, PayloadTooLarge, RedisUnavailable, Settings, TaskQueue
from broker.codec import MAX_DEPTH, decode, encode
from broker.keys import check_func_name, check_group, check_id, root_of

# ------------------------------------------------------------------------------------ keys


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes (the cluster spec's rule)."""
    start = key.find("{")
    if start == -1:
        return key
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


def test_key_shapes() -> None:
    """Every key builder yields ``{prefix:shard}:<kind>:<name>`` exactly as lib.lua builds it."""
    k = Keys("p", 1)
    b = k.base(0)
    assert b == "{p:0}"
    assert k.promise("a") == "{p:0}:p:a"
    assert k.task("a") == "{p:0}:t:a"
    assert k.callbacks("a") == "{p:0}:cb:a"
    assert k.listeners("a") == "{p:0}:ls:a"
    assert Keys.stream(b, "g") == "{p:0}:q:g"
    assert Keys.dead_letters(b, "g") == "{p:0}:dlq:g"
    assert Keys.timeouts(b) == "{p:0}:timeouts"
    assert Keys.gc(b) == "{p:0}:gc"
    assert Keys.sweep_lease(b) == "{p:0}:lease"
    assert Keys.groups(b) == "{p:0}:groups"
    assert Keys.inbox(b, "c1") == "{p:0}:inbox:c1"
    assert Keys.state_index(b, "pending") == "{p:0}:ix:s:pending"
    assert Keys.tag_index(b, "k", "v") == "{p:0}:ix:t:k=v"
    assert Keys.workers(b, "g") == "{p:0}:w:g"
    assert Keys.worker_info(b, "w1") == "{p:0}:wi:w1"
    assert Keys("p", 8).all_bases() == [f"{{p:{i}}}" for i in range(8)]


ROOTS = ["order-17", "a{b}c", "{x}", "}{", "x*y?[z]", "é😀", "r" * 500]


@pytest.mark.parametrize("shards", [1, 8])
@pytest.mark.parametrize("root", ROOTS)
def test_family_shares_one_hash_tag(shards: int, root: str) -> None:
    """A promise and its children (``id:1``, ``id:1.2``) map every key to one ``{prefix:shard}``.

    Ids with braces must not move the hash tag: it is always the base's, so one Lua script
    (which derives all keys from the base) touches a single cluster slot.
    """
    k = Keys("pfx", shards)
    family = [root, f"{root}:1", f"{root}:1.2", f"{root}:3.4.5"]
    shard = k.shard_of(root)
    expected_tag = f"pfx:{shard}"
    assert 0 <= shard < shards
    if shards > 1:
        assert shard == zlib.crc32(root.encode()) % shards
    slots = set()
    for pid in family:
        assert k.shard_of(pid) == shard
        assert root_of(pid) == root
        for key in (k.promise(pid), k.task(pid), k.callbacks(pid), k.listeners(pid)):
            assert hash_tag(key) == expected_tag, key
            slots.add(key_slot(key.encode()))
    base = k.base(shard)
    for key in (
        Keys.stream(base, "g"),
        Keys.dead_letters(base, "g"),
        Keys.timeouts(base),
        Keys.gc(base),
        Keys.inbox(base, "c"),
        Keys.state_index(base, "pending"),
        Keys.tag_index(base, "k}{", "v{}"),
        Keys.sweep_lease(base),
    ):
        assert hash_tag(key) == expected_tag, key
        slots.add(key_slot(key.encode()))
    assert len(slots) == 1


def test_shards_spread_roots() -> None:
    """With 8 shards, 200 different roots land on every shard (the key space really splits)."""
    k = Keys("p", 8)
    assert {k.shard_of(f"job-{i}") for i in range(200)} == set(range(8))
    assert Keys("p", 1).shard_of("anything") == 0


GOOD_IDS = ["a", "a{b}c", "{x}", "}", "a:b:c", "*", "a*b?[c]", "é", "x" * 512, "é" * 256, " "]
BAD_IDS = [
    "",
    "\x00",
    "a\x00b",
    "a\nb",
    "\r",
    "a\tb",
    "\x7f",
    "\x1b[31m",
    "x" * 513,
    "é" * 256 + "x",
    "x" * (1 << 20),
    None,
    b"bytes",
    5,
]


@pytest.mark.parametrize("value", GOOD_IDS, ids=repr)
def test_id_accepted(value: str) -> None:
    """Ids of 1-512 UTF-8 bytes without control characters pass, braces/colons/stars too."""
    assert check_id(value) == value


@pytest.mark.parametrize("value", BAD_IDS, ids=lambda v: repr(v)[:30])
def test_id_refused(value: object) -> None:
    """Empty, control characters (NUL, newline...), over 512 bytes, 1 MB, non-str: BadInput."""
    with pytest.raises(BadInput):
        check_id(value)


GOOD_GROUPS = ["g", "a-b_c.d", "G" * 64, "0"]
BAD_GROUPS = [
    "",
    "a{b}",
    "{g}",
    "}",
    "a:b",
    "a*",
    "a b",
    "a\x00",
    "\na",
    "a\nb",
    "g" * 65,
    "x" * (1 << 20),
    "é",
    "a/b",
    "a=b",
    None,
    5,
]


@pytest.mark.parametrize("value", GOOD_GROUPS)
def test_group_accepted(value: str) -> None:
    """Groups of 1-64 letters, digits, '_', '.', '-' pass."""
    assert check_group(value) == value


@pytest.mark.parametrize("value", BAD_GROUPS, ids=lambda v: repr(v)[:30])
def test_group_refused(value: object) -> None:
    """Braces, colons, stars, spaces, control chars, 65+ chars, non-ASCII, non-str: BadInput."""
    with pytest.raises(BadInput):
        check_group(value)


GOOD_FUNCS = ["f", "mod.fn", "pkg.mod:fn", "_x", "a-b", "f" * 128]
BAD_FUNCS = [
    "",
    "1f",
    "a b",
    "a\nb",
    "a\x00",
    "f" * 129,
    "x" * (1 << 20),
    "{f}",
    "a*",
    "-a",
    ".a",
    None,
]


@pytest.mark.parametrize("value", GOOD_FUNCS)
def test_function_name_accepted(value: str) -> None:
    """Identifier-like names (dots, colons, dashes inside) up to 128 characters pass."""
    assert check_func_name(value) == value


@pytest.mark.parametrize("value", BAD_FUNCS, ids=lambda v: repr(v)[:30])
def test_function_name_refused(value: object) -> None:
    """Empty, leading digit/dot/dash, spaces, control chars, braces, 129+ chars: BadInput."""
    with pytest.raises(BadInput):
        check_func_name(value)


@pytest.mark.parametrize("check", [check_group, check_func_name], ids=["group", "function"])
def test_trailing_newline_refused(check) -> None:  # type: ignore[no-untyped-def]
    """A name ending in a newline is refused like any other control character."""
    with pytest.raises(BadInput):
        check("name\n")


def test_prefix_trailing_newline_refused() -> None:
    """A key prefix ending in a newline is refused by Settings."""
    with pytest.raises(BadInput):
        Settings.from_url("redis://h", prefix="lb\n")


def test_broker_refuses_bad_input_before_any_io() -> None:
    """Against a port where nothing listens, hostile names fail with BadInput, not a network error.

    The last call is valid and must reach the network (RedisUnavailable), which proves the
    earlier BadInputs were raised before any I/O was attempted.
    """

    async def scenario() -> None:
        b = Broker(Settings.from_url("redis://127.0.0.1:1/0", prefix="p", max_payload=64))
        try:
            bad_calls = [
                b.create("a\x00b"),
                b.create(""),
                b.create("x" * 513),
                b.create("ok", group="a:b"),
                b.create("ok", group="{g}"),
                b.create("ok", tags={"a=b": "v"}),
                b.create("ok", tags={"": "v"}),
                b.create("ok", tags={"k": 5}),  # type: ignore[dict-item]
                b.create("ok", timeout_ms=-1),
                b.create("ok", b"x" * 65),
                b.get("a\nb"),
                b.settle("ok", "pending"),
                b.settle("ok", "rejected_timedout"),
                b.settle("ok", "bogus"),
                b.settle("ok", "resolved", b"x" * 65),
                b.search(),
                b.search(state="bogus"),
            ]
            for call in bad_calls:
                with pytest.raises(BadInput):
                    await call
            with pytest.raises(BadInput):
                TaskQueue(b, "a b", "w")
            with pytest.raises(RedisUnavailable):
                await b.get("ok")
        finally:
            await b.close()

    asyncio.run(scenario())


def test_broker_oversized_payload_is_payload_too_large() -> None:
    """Params or a value over max_payload are refused with PayloadTooLarge (a BadInput)."""

    async def scenario() -> None:
        b = Broker(Settings.from_url("redis://127.0.0.1:1/0", prefix="p", max_payload=64))
        try:
            with pytest.raises(PayloadTooLarge):
                await b.create("ok", b"x" * 65)
            with pytest.raises(PayloadTooLarge):
                await b.settle("ok", "resolved", b"x" * 60, value_headers=b"y" * 5)
        finally:
            await b.close()

    asyncio.run(scenario())


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


# -------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://h",
        "rediss://user:pw@h:6380/2",
        "unix:///tmp/redis.sock",
        "unix:///tmp/redis.sock?db=3",
    ],
)
def test_settings_accepts_redis_urls(url: str) -> None:
    """redis://, rediss:// and unix:// URLs are accepted and kept."""
    s = Settings.from_url(url, prefix="p")
    assert s.url == url
    assert s.prefix == "p"


@pytest.mark.parametrize(
    "url", ["http://h:6379", "https://h", "localhost:6379", "ftp://x", "file:///tmp/x", "tcp://h"]
)
def test_settings_refuses_other_schemes(url: str) -> None:
    """Any other scheme is refused with BadInput."""
    with pytest.raises(BadInput):
        Settings.from_url(url)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a URL, $LB_REDIS_URL and $LB_PREFIX are used; then the local default."""
    monkeypatch.setenv("LB_REDIS_URL", "redis://envhost:1234/5")
    monkeypatch.setenv("LB_PREFIX", "envp")
    s = Settings.from_url()
    assert (s.url, s.prefix) == ("redis://envhost:1234/5", "envp")
    monkeypatch.delenv("LB_REDIS_URL")
    monkeypatch.delenv("LB_PREFIX")
    s = Settings.from_url()
    assert (s.url, s.prefix) == ("redis://127.0.0.1:6379/0", "lb")


@pytest.mark.parametrize(
    "overrides",
    [
        {"prefix": "a b"},
        {"prefix": "{p}"},
        {"prefix": "p:q"},
        {"prefix": "x" * 65},
        {"shards": 0},
        {"shards": 1025},
        {"max_payload": 63},
        {"ttl_ms": 199},
    ],
    ids=str,
)
def test_settings_validation(overrides: dict) -> None:
    """Bad prefix, shard count, payload limit or ttl is refused with BadInput."""
    with pytest.raises(BadInput):
        Settings.from_url("redis://h", **overrides)
    with pytest.raises(BadInput):
        Settings.from_url("redis://h").with_(**overrides)


def test_settings_is_frozen() -> None:
    """Settings cannot be changed in place (safe to share between threads)."""
    s = Settings.from_url("redis://h")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.prefix = "other"  # type: ignore[misc]


SECRET = "s3cr3t-PaSS"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@h:6379/0",
        f"redis://user:{SECRET}@h/0",
        f"rediss://user:{SECRET}@h:6380/1",
        f"unix://:{SECRET}@/tmp/r.sock",
    ],
)
def test_settings_never_show_password(url: str) -> None:
    """repr, str, safe_url (and repr of a modified copy) never contain the password."""
    s = Settings.from_url(url, prefix="p")
    shown = [repr(s), str(s), s.safe_url, f"{s}", repr(s.with_(prefix="q")), repr([s])]
    for text in shown:
        assert SECRET not in text, text
    assert "***" in s.safe_url
    assert s.url == url  # the real URL is still there for connecting


@pytest.mark.parametrize(
    "url", [f"unix:///tmp/r.sock?password={SECRET}", f"redis://h:6379/0?password={SECRET}"]
)
def test_settings_hide_password_in_query(url: str) -> None:
    """A password passed in the query string is hidden too."""
    s = Settings.from_url(url)
    for text in (repr(s), str(s), s.safe_url):
        assert SECRET not in text, text
