"""The summary table printed at the end of a run, and the list of must-be-zero figures."""

from __future__ import annotations

from typing import Any

__all__ = ["must_be_zero", "render"]


def must_be_zero(res: dict[str, Any]) -> dict[str, int]:
    return {
        "lost": res["lost"]["lost"],
        "duplicated": res["duplicates"]["duplicated"],
        "zombie completions accepted": res["zombies"]["accepted"],
        "steps re-executed after checkpoint": res["steps"]["re_executed"],
        "late (liveness)": res["liveness"]["late"],
        "pending after drain": res["leaks"]["pending_after_drain"],
        "leaks": res["leaks"]["leaks"],
        "linearizability violations": res["linearizability"]["violations"],
        "wrongly rejected": res["rejections"]["wrongly_rejected"],
        "bad-input failures": res["corpus"]["fail"],
        "worker crashes": res["crashes"]["crashes"],
        "untyped client errors": len(res["client"]["untyped"]),
        "stuck waiters": res["waits"]["stuck"],
    }


def _f(x: Any, unit: str = "s") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x * 1000:.0f} ms" if unit == "s" and x < 10 else f"{x:.2f} {unit}"
    return str(x)


def render(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    add = rows.append
    add(("seed", str(res["seed"])))
    add(
        (
            "mode",
            f"{'short' if res['short'] else 'full'}, {res['duration']} s at {res['rate']}/s, "
            f"{res['workers']} workers (ttl {res['ttl']} s), redis {res['redis_version']}",
        )
    )
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(res["faults_by_kind"].items())) or "none"
    add(("faults", f"{len(res['faults'])}: {kinds}"))
    inv = res["invocations"]
    add(
        (
            "invocations",
            f"{inv['issued']} issued, {inv['acked']} acknowledged "
            f"({inv['creates']} creates, {inv['open_creates']} open-ended; "
            f"{inv['same_id_retries']} same-id retries, {inv['alt_args']} same id "
            f"+ other args, {inv['canceled']} canceled)",
        )
    )
    add(("by function", ", ".join(f"{k}={v}" for k, v in sorted(inv["by_func"].items()))))
    add(("final states", ", ".join(f"{k}={v}" for k, v in sorted(inv["states"].items()))))
    add(("lost", str(res["lost"]["lost"])))
    d = res["duplicates"]
    add(
        (
            "duplicated",
            f"{d['duplicated']} (done twice {d['n_done_twice']}, value changed "
            f"{d['n_value_changed']}, not journaled {d['n_not_journaled']}, not first "
            f"args {d['n_not_first_args']})",
        )
    )
    z = res["zombies"]
    add(
        (
            "zombie attempts",
            f"refused {z['refused']} ({z['refused_lines']} fenced/lost lines), "
            f"accepted {z['accepted']}",
        )
    )
    add(
        (
            "re-runs (at least once)",
            f"effects run twice {z['effects_rerun']}; executions abandoned on a Redis "
            f"error {z['abandoned_on_error']}",
        )
    )
    s = res["steps"]
    add(
        (
            "re-executed steps",
            f"{s['re_executed']} (zombie runs {s['zombie_runs']}; ran twice "
            f"before the checkpoint settled {s['ran_twice_before_checkpoint']}; lingers "
            f"past their retention {s['lingers_past_retention']}, re-executed "
            f"{s['lingers_re_executed']})",
        )
    )
    add(("clock jumps", f"{res.get('clock_jumps', 0)} on the jumping worker"))
    add(("poison calls", f"{res.get('poison_deaths', 0)} worker deaths (restarted), quarantined"))
    t = res["takeover"]
    add(
        (
            "takeover latency",
            f"p50 {_f(t['p50'])}, p99 {_f(t['p99'])} (n={t['n']}, "
            f"first per fault p50 {_f(t['first_p50'])}; {t['takeovers']} takeovers)",
        )
    )
    add(
        (
            "stalled tasks",
            f"{t['stalled_taken_over']} of {t['stalled_held']} held by a worker stalled past "
            f"ttl+1 s taken over during the stall ({t['n_stalled_missed']} not)",
        )
    )
    for phase, v in res["latency"].items():
        add((f"invoke->settle {phase}", f"p50 {_f(v['p50'])}, p99 {_f(v['p99'])} (n={v['n']})"))
    lv = res["liveness"]
    add(
        (
            "liveness",
            f"{lv['late']} not settled within ttl+5 s of their last heal (worst "
            f"+{lv['worst_over_s']} s; backlog max {lv['backlog_max']}); drained in "
            f"{res['drain_s']:.1f} s; "
            f"{res['leaks']['pending_after_drain']} promises still pending after it",
        )
    )
    lk = res["leaks"]
    add(
        (
            "leaks",
            f"{lk['leaks']} (stream {lk['stream_len']}, pending {lk['stream_pending']}, "
            f"outside prefix {lk['outside_prefix']}, no expiry {lk['no_expiry']}; "
            f"{lk['keys']} keys, {lk['dead_letters']} dead letters)",
        )
    )
    ok = lk.get("calls_counted") == lk.get("calls_actual")
    add(
        (
            "call counters",
            ("equal to the calls by state " if ok else "DIFFER: counted ")
            + (
                f"{lk.get('calls_actual')}"
                if ok
                else f"{lk.get('calls_counted')}, actual "
                f"{lk.get('calls_actual')} (counted as a leak)"
            ),
        )
    )
    li = res["linearizability"]
    add(
        (
            "linearizability",
            f"{li['violations']} violations ({li['promises']} promises, {li['ops']} ops)",
        )
    )
    rj = res["rejections"]
    add(("wrongly rejected", f"{rj['wrongly_rejected']} {rj['by_type'] or ''}".strip()))
    c = res["corpus"]
    add(
        (
            "bad inputs",
            f"{c['kinds']} kinds tried: {c['pass']} pass, {c['soft']} soft, "
            f"{c['fail']} fail; worker crashes {res['crashes']['crashes']}",
        )
    )
    add(
        (
            "client",
            f"untyped errors {len(res['client']['untyped'])}, waits "
            f"{res['waits']['n']} (stuck {res['waits']['stuck']})",
        )
    )
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    bad = {k: v for k, v in res["must_be_zero"].items() if v}
    lines.append("")
    lines.append(
        "RESULT: "
        + (
            "OK (every must-be-zero figure is 0)"
            if not bad
            else "FAIL " + ", ".join(f"{k}={v}" for k, v in bad.items())
        )
    )
    rule = "-" * max(len(x) for x in lines)
    return "\n".join([rule, *lines, rule])
