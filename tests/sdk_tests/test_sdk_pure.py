"""Pure-logic units of the SDK: targets, call encoding, retry policies, child ids, app loading.

No Redis here; everything that touches Redis is tested against a real server elsewhere.
"""

from __future__ import annotations

import pytest

from lb.broker.arguments import timeout_ms_or
from lb.broker.codec import encode
from lb.broker.errors import BadInput, BadTarget
from lb.sdk.durations import check_seconds, seconds_to_ms
from lb.sdk.encoding import Call, decode_error, encode_error
from lb.sdk.retry import Constant, Exponential, Never
from lb.sdk.target import parse_target


@pytest.mark.parametrize(
    ("target", "group"),
    [("poll://any@workers", "workers"), ("workers", "workers"), ("poll://any@a.b-c_1", "a.b-c_1")],
)
def test_good_targets(target: str, group: str) -> None:
    """A poll://any@<group> target (or a bare group name) names its group."""
    assert parse_target(target) == group


@pytest.mark.parametrize(
    "target",
    [
        "poll://any@",
        "http://x",
        "../x",
        "x" * 10_000,
        "poll://any@wo\x00rk",
        "",
        "poll://uni@workers/pid-1",
        "poll://any@a{b}",
        "poll://any@a:b",
        "poll://some@x",
    ],
)
def test_bad_targets(target: str) -> None:
    """Malformed, foreign or hostile targets raise BadTarget (a BadInput), never anything else."""
    with pytest.raises(BadTarget):
        parse_target(target)


def test_call_roundtrip() -> None:
    """A call survives encoding with args, kwargs, version and parent."""
    c = Call("f", [1, "a", [2]], {"k": b"v"}, 3, "root")
    assert Call.decode(c.encode(1 << 20), 1 << 20) == c


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never-used msgpack byte
        b"\x92\x01",  # truncated array
        encode([1, 2, 3]),  # not a map
        encode({"args": []}),  # no func
        encode({"func": "bad name!", "args": []}),
        encode({"func": "f", "args": "notalist"}),
        encode({"func": "f", "kwargs": {1: 2}}),
        encode({"func": "f", "v": "one"}),
        b"\xd4\x01\x00",  # ext type
    ],
)
def test_malformed_calls_are_bad_input(payload: bytes) -> None:
    """Every malformed params blob raises BadInput (the worker dead-letters it)."""
    with pytest.raises(BadInput):
        Call.decode(payload, 1 << 20)


def test_oversized_arguments() -> None:
    """Arguments over the limit are refused before anything is sent."""
    with pytest.raises(BadInput):
        Call("f", ["x" * 2000]).encode(1000)


def test_error_roundtrip_and_hand_settled_values() -> None:
    """Errors keep type and message; values settled by hand still decode to something."""
    assert decode_error(encode_error(ValueError("nope"), 1 << 20), 1 << 20) == (
        "ValueError",
        "nope",
    )
    assert decode_error(b"", 1 << 20) == ("Rejected", "")
    assert decode_error(encode({"a": 1}), 1 << 20)[0] == "Rejected"
    assert decode_error(b"\xc1", 1 << 20)[0] == "Rejected"


def test_retry_policies() -> None:
    """Never gives up at once; Constant and Exponential stop after max_retries."""
    assert Never().delay(1) is None
    assert [Constant(0.1, 2).delay(i) for i in (1, 2, 3)] == [0.1, 0.1, None]
    e = Exponential(initial=1.0, factor=2.0, max_delay=3.0, max_retries=3)
    d = [e.delay(i) for i in (1, 2, 3, 4)]
    assert d[3] is None
    assert 0.9 <= d[0] <= 1.1 and 1.8 <= d[1] <= 2.2 and 2.7 <= d[2] <= 3.3  # type: ignore[operator]


def test_app_loader_errors() -> None:
    """--app values that do not resolve are BadInput with the reason."""
    from lb.cli.common import app_loader

    for spec in ("nocolon", "no_such_module_xyz:attr", "json:no_such_attr"):
        with pytest.raises(BadInput):
            app_loader(spec)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -1.0, "5", True, 1e306])
def test_bad_call_timeouts_are_bad_input(bad: object) -> None:
    """Regression (found by the chaos corpus): a NaN or infinite timeout escaped as an untyped
    ValueError / OverflowError from int(). Both layers now refuse it with BadInput."""
    with pytest.raises(BadInput):
        check_seconds(bad)
    with pytest.raises(BadInput):
        timeout_ms_or(bad, 0)


def test_good_call_timeouts() -> None:
    assert check_seconds(None) is None and check_seconds(2) == 2.0
    assert timeout_ms_or(None, 7) == 7 and timeout_ms_or(1500.7, 0) == 1500
    assert seconds_to_ms(0.0001) == 1 and seconds_to_ms(0) == 0 and seconds_to_ms(2.5) == 2500
    with pytest.raises(BadInput):
        timeout_ms_or(10**15, 0)


def test_constants_spelled_in_two_languages_agree() -> None:
    """Lua cannot import Python: the few figures both sides rely on must match."""
    import re

    from lb.broker.heartbeat import SCAN_LEASE_MS
    from lb.broker.liveness import LEASE_MS
    from lb.broker.scripts import script_source
    from lb.sdk.upkeep import SWEEP_IDLE_S

    lib = script_source("create")
    found = re.search(r"local SWEEP_IDLE_MS = (\d+)", lib)
    assert found and int(found.group(1)) == round(SWEEP_IDLE_S * 1000)
    assert SCAN_LEASE_MS == LEASE_MS
