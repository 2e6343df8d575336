"""Pure units: key layout, hash tags and shards, name checks, and the Broker refusing bad
input before any I/O. No Redis is needed."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from redis.crc import key_slot

from lb.broker import BadInput, Broker, Keys, PayloadTooLarge, RedisUnavailable, Settings, TaskQueue
from lb.broker.keys import check_func_name, check_group, check_id, root_of

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
