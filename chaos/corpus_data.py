"""The hostile inputs of the bad-input corpus, as data (see ``chaos/corpus.py`` for the rules)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from lb.sdk.encoding import Call

__all__ = ["cli_args", "nest", "param_payloads", "stream_entries", "subprocess_args"]

MB = 1 << 20
Pid = Callable[[str], str]


def nest(depth: int) -> Any:
    v: Any = 0
    for _ in range(depth):
        v = [v]
    return v


def _pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def cli_args(pid: Pid, max_payload: int) -> list[tuple[str, list[str]]]:
    """(kind, argv) run in-process through click's CliRunner."""
    inv = ["invoke", "--target", "poll://any@chaos", "--func", "echo", "--args", "[1]"]
    to = ["invoke", "--target", "chaos", "--func"]
    huge = '["' + "x" * (max_payload + 10) + '"]'
    return [
        ("cli_invoke_id_newline", [*inv, "--id", "a\nb"]),
        ("cli_invoke_id_nul", [*inv, "--id", "a\x00b"]),
        ("cli_invoke_target_http", ["invoke", "--target", "http://x", "--func", "echo"]),
        ("cli_invoke_target_dotdot", ["invoke", "--target", "../x", "--func", "echo"]),
        ("cli_invoke_target_10k", ["invoke", "--target", "poll://any@" + "g" * 10_000]),
        ("cli_invoke_group_braces", ["invoke", "--target", "poll://any@a{b}", "--func", "echo"]),
        ("cli_invoke_args_not_list", [*to, "echo", "--args", '{"a":1}']),
        ("cli_invoke_args_bad_json", [*to, "echo", "--args", "[1,"]),
        ("cli_invoke_args_over_limit", [*to, "sink", "--args", huge]),
        ("cli_invoke_func_malformed", [*to, "../x"]),
        ("cli_invoke_func_unknown", [*to, "no_such_function", "--args", "[]"]),
        ("cli_invoke_bad_redis_url", [*to, "echo", "--redis", "http://x"]),
        ("cli_invoke_prefix_hostile", [*to, "echo", "--prefix", "a{b}"]),
        ("cli_invoke_timeout_negative", [*inv, "--wait", "--timeout", "-1"]),
        ("cli_get_missing", ["get", pid("missing")]),
        ("cli_get_id_10k", ["get", "x" * 10_000]),
        ("cli_get_id_nul", ["get", "a\x00b"]),
        ("cli_resolve_bad_json", ["resolve", pid("missing"), "--value", "{bad"]),
        ("cli_cancel_id_newline", ["cancel", "a\nb"]),
        ("cli_unknown_option", ["invoke", "--bogus"]),
        ("cli_worker_concurrency_zero", ["worker", "--group", "chaos", "--concurrency", "0"]),
    ]


def subprocess_args(pid: Pid) -> list[tuple[str, list[str]]]:
    """(kind, argv) run as real ``python -m cli.main`` processes."""
    return [
        ("cli_proc_get_missing", ["get", pid("missing")]),
        ("cli_proc_worker_bad_group", ["worker", "--group", "a{b}", "--app", "chaos.app:register"]),
        ("cli_proc_invoke_bad_target", ["invoke", "--target", "http://x", "--func", "echo"]),
        ("cli_proc_bad_option_value", ["invoke", "--timeout", "-1", "--wait"]),
    ]


def stream_entries(pid: Pid, settled_id: str) -> list[tuple[str, dict[Any, Any]]]:
    """(kind, fields) XADDed raw to the group stream."""
    return [
        ("stream_no_t", {"x": "1"}),
        ("stream_t_garbage", {"t": b"\xff\xfe\x00garbage"}),
        ("stream_t_empty", {"t": ""}),
        ("stream_t_unknown", {"t": pid("no-such-task")}),
        ("stream_t_1mb", {"t": "x" * MB}),
        ("stream_t_settled", {"t": settled_id}),
        ("stream_t_braces", {"t": "}{evil:0}:t:x"}),
        ("stream_many_fields", {f"f{i}": "v" for i in range(100)}),
    ]


def param_payloads(max_payload: int) -> list[tuple[str, bytes]]:
    """(kind, params) of tasks created with ``Broker.create(param=..., group="chaos")``."""
    good = Call("echo", [1]).encode(MB)
    return [
        ("param_garbage", b"\xc1\xc1\xc1\xff"),
        ("param_truncated", good[:-3]),
        ("param_trailing_bytes", good + b"\x00"),
        ("param_ext_type", _pack({"func": "echo", "args": [msgpack.ExtType(5, b"x")]})),
        ("param_ext_timestamp", _pack({"func": "echo", "args": [msgpack.Timestamp(1, 0)]})),
        ("param_deep_stack", b"\x91" * 100_000 + b"\xc0"),
        ("param_deep_args", _pack({"func": "echo", "args": [nest(40)]})),
        ("param_huge_array_len", b"\xdd\xff\xff\xff\xff"),
        ("param_huge_str_len", b"\xdb\xff\xff\xff\xffabc"),
        ("param_huge_map_len", b"\xdf\xff\xff\xff\xff"),
        ("param_unknown_func", Call("no_such_function", [1]).encode(MB)),
        ("param_bad_func_name", _pack({"func": "../x", "args": []})),
        ("param_func_not_str", _pack({"func": 42, "args": []})),
        ("param_not_a_map", _pack([1, 2, 3])),
        ("param_args_not_list", _pack({"func": "echo", "args": "abc"})),
        ("param_kwargs_bad_keys", _pack({"func": "echo", "args": [], "kwargs": {1: 2}})),
        ("param_version_bad", _pack({"func": "echo", "v": "x"})),
        ("param_parent_bad", _pack({"func": "echo", "parent": 5})),
        ("param_empty", b""),
        ("param_nil", b"\xc0"),
        ("param_at_limit_garbage", b"\xc1" * max_payload),
    ]
