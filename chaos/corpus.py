"""The bad-input corpus: hostile inputs thrown at the client API, the CLI, the group stream and
the task params, with what each must produce.

Surfaces and expectations:

* ``api``: a typed :class:`broker.errors.LbError` subclass (named per case) raised before
  anything is stored, or, for inputs that are valid by design (ids with braces, colons, stars;
  arguments exactly at the size limit), acceptance and a normal result;
* ``cli``: one ``error:`` line, a non-zero exit, no Traceback (a click usage error - non-zero,
  no Traceback, but not the documented one-line format - counts as *soft*);
* ``stream``: a raw entry (garbage / missing ``t``) that is dead-lettered or dropped;
* ``param``: a task whose params are hostile, created with ``Broker.create(param=..., group=)``:
  the promise must end ``rejected`` with ``DeadLettered``.

Workers must survive all of it: the checkers verify afterwards that every worker process is
alive and no worker log holds a Traceback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import redis

from chaos.corpus_data import cli_args, nest, param_payloads, stream_entries, subprocess_args
from lb.broker import Broker, Settings
from lb.broker.errors import LbError
from lb.broker.keys import Keys
from lb.cli.common import lb_argv
from lb.sdk import Resonate
from lb.sdk.encoding import Call

__all__ = ["Case", "Corpus"]

MB = 1 << 20


@dataclass
class Case:
    kind: str
    surface: str  # api | cli | stream | param
    expect: str  # an error class name, "accept", "dead", "waits", "dropped", "cli-error"
    result: str = "pending"  # pass | soft | fail
    detail: str = ""
    pid: str = ""  # promise id to verify after the drain (param / accepted cases)
    eid: str = ""  # stream entry id to verify after the drain

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _run_main(args: list[str], env: dict[str, str]) -> tuple[int, str, BaseException | None]:
    """Run the real ``lb`` entry point (``cli.main.main``) in-process on ``args``."""
    from click.testing import CliRunner

    from lb.cli.main import main

    code, exc = 0, None
    saved = sys.argv
    with CliRunner().isolation(env=env) as (out, err, _):
        sys.argv = ["lb", *args]
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception as e:  # a crash of the entry point itself
            code, exc = 1, e
        finally:
            sys.argv = saved
        text = err.getvalue().decode("utf-8", "replace") + out.getvalue().decode("utf-8", "replace")
    return code, text, exc


def _begin_on(r: Resonate, target: str, pid: str, timeout: float | None = None) -> Any:
    return r.options(target=target, timeout=timeout).begin_rpc(pid, "echo", 1)


class Corpus:
    def __init__(self, url: str, prefix: str, seed: int, client: Resonate, root: str) -> None:
        self.url = url
        self.prefix = prefix
        self.seed = seed
        self.r = client
        self.root = root
        self.max_payload = client.settings.max_payload
        self.cases: list[Case] = []

    def pid(self, kind: str) -> str:
        return f"corp-{self.seed}-{kind}"

    # -- api ------------------------------------------------------------------------------
    def _api(self, kind: str, expect: str, fn: Callable[[], Any], pid: str = "") -> None:
        case = Case(kind, "api", expect, pid=pid)
        self.cases.append(case)
        try:
            got = fn()
        except LbError as exc:
            names = {c.__name__ for c in type(exc).__mro__}
            if expect == "accept":
                case.result, case.detail = "fail", f"refused: {type(exc).__name__}: {exc}"[:300]
            else:
                case.result = "pass" if expect in names else "fail"
                case.detail = f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        except Exception as exc:  # untyped: a finding
            case.result, case.detail = "fail", f"untyped {type(exc).__name__}: {exc}"[:300]
            return
        if isinstance(got, Resonate):
            got.stop()
        if expect in ("accept", "dead", "waits") or expect.endswith("|dead"):
            case.result, case.detail = "pending", "accepted; verified after the drain"
        else:
            case.result, case.detail = "fail", f"accepted (expected {expect})"

    def _evicting(self) -> Any:
        """A fresh client of a Redis switched to allkeys-lru must refuse it (switched back at
        once: running workers checked the policy when they started)."""
        admin = redis.Redis.from_url(self.url)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        fresh = Resonate.remote(self.url, group="chaos", prefix=self.prefix)
        try:
            return fresh.begin_rpc(self.pid("evict"), "echo", 1)
        finally:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.close()
            fresh.stop()

    def api_cases(self) -> None:
        r, url, px = self.r, self.url, self.prefix
        opts = r.options(target="poll://any@chaos")
        self._api("evicting_policy", "UnsafeRedisConfig", self._evicting)
        for kind, bad in (
            ("id_empty", ""),
            ("id_nul", "a\x00b"),
            ("id_newline", "a\nb"),
            ("id_1mb", "x" * MB),
        ):
            self._api(kind, "BadInput", partial(opts.begin_rpc, bad, "echo", 1))
        hostile = self.pid("id_braces") + "{x}*}{evil/0}*"
        self._api("id_braces_star", "accept", lambda: opts.begin_rpc(hostile, "echo", 7), hostile)
        # ':' is kept for step ids (root:1): a root id with one could equal another's step.
        self._api("id_colon", "BadInput", partial(opts.begin_rpc, self.pid("id") + ":1", "echo", 1))
        for kind, g in (
            ("group_braces", "a{b}"),
            ("group_colon", "a:b"),
            ("group_star", "a*"),
            ("group_newline", "a\nb"),
            ("group_nul", "a\x00b"),
            ("group_1mb", "g" * MB),
        ):
            self._api(kind, "BadInput", partial(Resonate.remote, url, group=g, prefix=px))
        for kind, t in (
            ("target_empty_group", "poll://any@"),
            ("target_http", "http://x"),
            ("target_dotdot", "../x"),
            ("target_10k", "poll://any@" + "g" * 10_000),
            ("target_nul", "poll://any@ch\x00aos"),
            ("target_uni", "poll://uni@chaos/x"),
        ):
            self._api(
                kind,
                "BadTarget",
                partial(_begin_on, r, t, self.pid(kind)),
            )
        big = self._at_limit()
        at = self.pid("args_at_limit")
        self._api("args_at_limit", "accept", lambda: opts.begin_rpc(at, "sink", big), at)
        self._api(
            "args_over_limit",
            "PayloadTooLarge",
            lambda: opts.begin_rpc(self.pid("over"), "sink", big + "x"),
        )
        self._api(
            "args_unencodable",
            "BadInput",
            lambda: opts.begin_rpc(self.pid("unenc"), "echo", object()),
        )
        self._api(
            "args_deep_nesting",
            "BadInput",
            lambda: opts.begin_rpc(self.pid("deep"), "echo", nest(40)),
        )
        self._api(
            "args_bigint", "BadInput", lambda: opts.begin_rpc(self.pid("bigint"), "echo", 2**70)
        )
        # A function no worker has waits for one that has it, until its deadline (3 s here).
        short = r.options(target="poll://any@chaos", timeout=3)
        pid = self.pid("func_unknown")
        self._api(
            "func_unknown", "waits", partial(short.begin_rpc, pid, "no_such_function", 1), pid
        )
        for kind, fn in (
            ("func_malformed", "../x"),
            ("func_empty", ""),
        ):
            pid = self.pid(kind)
            self._api(kind, "BadInput|dead", partial(opts.begin_rpc, pid, fn, 1), pid)
        for kind, tmo in (
            ("timeout_negative", -1.0),
            ("timeout_nan", float("nan")),
            ("timeout_inf", float("inf")),
        ):
            self._api(
                kind,
                "BadInput",
                partial(_begin_on, r, "chaos", self.pid(kind), tmo),
            )
        self._api("settle_bad_state", "BadInput", lambda: r.settle(hostile, "bogus"))
        self._api("settle_missing", "NotFound", lambda: r.settle(self.pid("missing"), "resolved"))
        self._api("get_missing", "NotFound", lambda: r.promise(self.pid("missing")))
        self._api("settle_unencodable", "BadInput", lambda: r.settle(hostile, "resolved", object()))
        self._api("url_bad_scheme", "BadInput", lambda: Resonate.remote("http://x:1", prefix=px))
        self._api("prefix_hostile", "BadInput", lambda: Resonate.remote(url, prefix="a{b}"))
        self._api(
            "tags_hostile",
            "BadInput",
            lambda: self._broker(lambda b: b.create(self.pid("tags"), tags={"a=b": "c"})),
        )
        self._api(
            "param_over_limit",
            "BadInput",
            lambda: self._broker(
                lambda b: b.create(
                    self.pid("pol"), param=b"x" * (self.max_payload + 1), group="chaos"
                )
            ),
        )
        # "BadInput|dead": refusing at the call or dead-lettering later are both acceptable.
        for c in self.cases:
            if (
                c.expect == "BadInput|dead"
                and c.result == "fail"
                and c.detail.startswith("BadInput")
            ):
                c.result = "pass"

    def _at_limit(self) -> str:
        """A string argument making sink's encoded call exactly ``max_payload`` bytes."""
        n = self.max_payload - 64
        while len(Call("sink", ["x" * n]).encode(1 << 30)) < self.max_payload:
            n += 1
        while len(Call("sink", ["x" * n]).encode(1 << 30)) > self.max_payload:
            n -= 1
        return "x" * n

    def _broker(self, fn: Callable[[Broker], Any]) -> Any:
        async def go() -> Any:
            b = Broker(Settings.from_url(self.url, prefix=self.prefix))
            try:
                return await fn(b)
            finally:
                await b.close()

        return asyncio.run(go())

    # -- cli ------------------------------------------------------------------------------
    def cli_cases(self, subprocesses: bool = True) -> None:
        env = {"LB_REDIS_URL": self.url, "LB_PREFIX": self.prefix}
        for kind, args in cli_args(self.pid, self.max_payload):
            code, out, exc = _run_main(args, env)
            self._judge(kind, code, out, exc)
        if subprocesses:
            sub = subprocess_args(self.pid)
            for kind, args in sub:
                try:
                    p = subprocess.run(
                        [*lb_argv(), *args],
                        cwd=self.root,
                        env={**os.environ, **env},
                        capture_output=True,
                        text=True,
                        timeout=30,
                    )
                    self._judge(kind, p.returncode, p.stderr + p.stdout, None)
                except subprocess.TimeoutExpired:
                    self.cases.append(
                        Case(kind, "cli", "cli-error", "fail", "did not exit in 30 s")
                    )

    def _judge(self, kind: str, code: int, out: str, exc: BaseException | None) -> None:
        case = Case(kind, "cli", "cli-error")
        self.cases.append(case)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("error:")]
        if exc is not None and not isinstance(exc, SystemExit):
            case.result, case.detail = "fail", f"uncaught {type(exc).__name__}: {exc}"[:300]
        elif "Traceback" in out:
            case.result, case.detail = "fail", "Traceback: " + out[-300:]
        elif code == 0:
            case.result, case.detail = "fail", f"exit 0: {out[:200]}"
        elif len(errs) == 1 and len(lines) == 1:
            case.result, case.detail = "pass", f"exit {code}: {errs[0][:200]}"
        else:
            case.result, case.detail = "soft", f"exit {code}, not one error: line: {out[:200]!r}"

    # -- raw stream entries and hostile params ---------------------------------------------
    def inject(self) -> None:
        import redis

        base = Keys(self.prefix).base(0)
        stream = Keys.stream(base, "chaos")
        cl = redis.Redis.from_url(self.url)
        settled = self.pid("id_braces") + "{x}:*:}{evil:0}*"
        entries = stream_entries(self.pid, settled)
        try:
            for kind, fields in entries:
                eid = cl.xadd(stream, fields)
                eid_s = eid.decode() if isinstance(eid, bytes) else str(eid)
                self.cases.append(Case(kind, "stream", "dropped", "pending", eid=eid_s))
        finally:
            cl.close()
        params = param_payloads(self.max_payload)

        async def create_all() -> None:
            b = Broker(Settings.from_url(self.url, prefix=self.prefix))
            try:
                for kind, data in params:
                    waits = kind == "param_unknown_func"  # see func_unknown
                    case = Case(kind, "param", "waits" if waits else "dead", pid=self.pid(kind))
                    self.cases.append(case)
                    try:
                        await b.create(
                            case.pid,
                            param=data,
                            group="chaos",
                            timeout_ms=3000 if waits else None,
                        )
                    except LbError as exc:
                        case.result, case.detail = "fail", f"create refused: {exc}"[:300]
            finally:
                await b.close()

        asyncio.run(create_all())

    # -- verification after the drain ------------------------------------------------------
    def verify(
        self,
        get: Callable[[str], Any],
        entry_present: Callable[[str], bool],
        dead_letter_reason: Callable[[str], str | None],
    ) -> None:
        """Settle the verdict of every case left pending (needs the drained system)."""
        from lb.sdk.encoding import decode_error

        for c in self.cases:
            if c.result != "pending":
                continue
            if c.surface == "stream":
                if entry_present(c.eid):
                    c.result, c.detail = "fail", "entry still in the stream"
                else:
                    reason = dead_letter_reason(c.eid)
                    c.result, c.detail = "pass", f"dead-lettered: {reason}" if reason else "dropped"
                continue
            try:
                p = get(c.pid)
            except LbError as exc:
                c.result, c.detail = "fail", f"cannot read back: {exc}"[:300]
                continue
            etype = decode_error(p.value, MB)[0] if p.state != "resolved" else ""
            if c.expect == "accept":
                ok = p.state == "resolved"
            elif c.expect == "waits":
                ok = p.state == "rejected_timedout"
            else:
                ok = p.state == "rejected" and etype == "DeadLettered"
            c.result = "pass" if ok else "fail"
            c.detail = f"{p.state} {etype}".strip()

    def summary(self) -> dict[str, int]:
        out = {"kinds": len(self.cases), "pass": 0, "soft": 0, "fail": 0, "pending": 0}
        for c in self.cases:
            out[c.result] = out.get(c.result, 0) + 1
        return out
