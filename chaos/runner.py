"""One chaos run, end to end: set up, bad inputs, load + faults, drain, checks, report."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from chaos import checks, leaks
from chaos.cluster import ROOT, Cluster
from chaos.corpus import Corpus
from chaos.drain import Reader
from chaos.faults import Injector
from chaos.history import History
from chaos.journal import read_journal
from chaos.load import Load
from chaos.logs import parse_events
from chaos.proxy import Proxy
from chaos.report import must_be_zero, render
from chaos.sampler import Sampler
from chaos.schedule import make_schedule
from lb.sdk import Resonate

__all__ = ["Options", "run"]

TTL = 2.0


@dataclass(frozen=True)
class Options:
    seed: int
    duration: float
    short: bool
    workers: int
    rate: float
    json_path: str | None
    keep: bool
    verbose: bool
    sabotage: bool = False


def _say(opts: Options, msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(opts: Options) -> tuple[int, dict[str, Any]]:
    workdir = tempfile.mkdtemp(prefix=f"lb-chaos-{opts.seed}-")
    prefix = f"chaos{opts.seed}"
    cluster = Cluster(workdir, prefix, opts.workers, TTL)
    proxy: Proxy | None = None
    client: Resonate | None = None
    try:
        cluster.start_redis()
        proxy = Proxy(cluster.redis.port).start()
        names = [f"cw{i}" for i in range(opts.workers)]
        proxied = names[0]
        cluster.jumpy = names[-1] if len(names) > 1 else ""  # its time.time() jumps
        for name in names:
            cluster.add_worker(name, proxy.url if name == proxied else cluster.url)
            cluster.start_worker(name)
        for name in names:
            if not cluster.wait_joined(name, 60):
                raise RuntimeError(
                    f"worker {name} did not join: {cluster.workers[name].lines[-5:]}"
                )
        _say(
            opts,
            f"redis {cluster.redis.version()} on {cluster.url}, workers {names} "
            f"({proxied} through the proxy on {proxy.port}), data in {workdir}",
        )
        client = Resonate.remote(cluster.url, group="chaos", prefix=prefix)
        history = History()

        corpus = Corpus(cluster.url, prefix, opts.seed, client, ROOT)
        corpus.api_cases()
        corpus.cli_cases(subprocesses=True)
        corpus.inject()
        _say(opts, f"bad-input corpus: {len(corpus.cases)} kinds thrown")

        schedule = make_schedule(opts.seed, opts.duration, opts.short, names, TTL)
        short_timeouts = threading.Event()
        load = Load(client, opts.seed, opts.rate, history, short_timeouts)
        injector = Injector(cluster, proxy, proxied, short_timeouts, opts.seed)
        _say(
            opts,
            f"load {opts.rate}/s for {opts.duration} s; {len(schedule)} faults: "
            + ", ".join(f"{f.kind}@{f.start:.1f}s" for f in schedule),
        )
        sampler = Sampler(cluster.url, prefix)
        sampler.start()
        t0 = time.time()
        lt = threading.Thread(target=load.run, args=(opts.duration,), name="chaos-load")
        lt.start()
        stop = threading.Event()
        injector.run(schedule, t0, stop)
        for d in injector.done:
            if opts.verbose:
                _say(opts, f"fault {d.to_json()}")
        while lt.is_alive():
            injector.watch()
            lt.join(0.2)
        load_end = time.time()
        for d in injector.done:
            d.notes["queue"] = sampler.during(d.at, d.healed)
        last_heal = max([d.healed for d in injector.done], default=t0)
        _say(opts, f"load done: {load.issued} invocations; draining")

        reader = Reader(cluster.url, prefix, history)
        invs = dict(history.invocations)
        # Calls with a short retention of their own (linger) are checked by what the load saw
        # settle: they are gone from Redis by now.
        short_lived = {pid for pid, inv in invs.items() if inv.func == "linger"}
        acked = [pid for pid, inv in invs.items() if inv.acked_at and pid not in short_lived]
        drain_s, left = reader.drain(
            acked, timeout=max(30.0, opts.duration), on_poll=injector.watch
        )
        _say(opts, f"drained in {drain_s:.1f} s ({len(left)} not settled)")
        sabotaged: dict[str, Any] = {}
        if opts.sabotage:
            from chaos.sabotage import sabotage

            sabotaged = sabotage(cluster.url, prefix, cluster.journal, invs)
            _say(opts, f"sabotaged on purpose: {sabotaged}")
        sampler.halt.set()
        final, reads = reader.final([pid for pid in invs if pid not in short_lived])
        chain_steps = [
            f"{pid}:{n}" for pid, inv in invs.items() if inv.func == "chain" for n in (1, 2, 3)
        ]
        steps = reader.run(reader.read_all(chain_steps, record=False))
        corpus_ids = [c.pid for c in corpus.cases if c.pid and c.result == "pending"]
        corpus_recs = reader.run(reader.read_all(corpus_ids, record=False))
        time.sleep(0.5)
        leak = leaks.check_leaks(cluster.url, prefix)
        dl = leaks.dead_letter_reasons(cluster.url, prefix)
        corpus.verify(
            lambda pid: _need(corpus_recs.get(pid), pid),
            lambda eid: leaks.entry_present(cluster.url, prefix, eid),
            dl.get,
        )
        injector.watch()  # a worker a poison call killed is restarted, not a crash
        alive = {n: cluster.workers[n].alive for n in names}
        codes = cluster.shutdown_workers()
        lines = cluster.all_lines()
        tracebacks = sorted({ln.worker for ln in lines if "Traceback" in ln.text})
        events = parse_events(lines)
        journal = read_journal(cluster.journal)

        res: dict[str, Any] = {
            "seed": opts.seed,
            "duration": opts.duration,
            "rate": opts.rate,
            "short": opts.short,
            "workers": opts.workers,
            "ttl": TTL,
            "redis_version": cluster.redis.version(),
            "workdir": workdir,
            "faults": [d.to_json() for d in injector.done],
            "faults_by_kind": dict(Counter(d.fault.kind for d in injector.done)),
            "drain_s": drain_s,
            "load_end": load_end,
            "last_heal": last_heal,
            "sabotaged": sabotaged,
        }
        res["invocations"] = _invocation_stats(load.issued, invs, history, final)
        res["lost"] = checks.check_lost(invs, final)
        res["duplicates"] = checks.check_duplicates(invs, final, reads, journal, events, history)
        res["zombies"] = checks.check_zombies(invs, final, journal, events)
        res["steps"] = checks.check_steps(journal, steps)
        res["liveness"] = checks.check_liveness(
            invs, final, [(d.at, d.healed) for d in injector.done], TTL, sampler.samples
        )
        res["rejections"] = checks.check_rejections(invs, final)
        res["leaks"] = leak
        res["linearizability"] = checks.check_linearizable(history)
        res["takeover"] = checks.takeover_latency(injector.done, events, TTL)
        res["latency"] = checks.latency_by_phase(invs, final, injector.done)
        res["corpus"] = {**corpus.summary(), "cases": [c.to_json() for c in corpus.cases]}
        crashes = [n for n, a in alive.items() if not a] + tracebacks + injector.unexpected_exits
        res["crashes"] = {
            "crashes": len(crashes),
            "dead_at_end": [n for n, a in alive.items() if not a],
            "tracebacks_in": tracebacks,
            "unexpected_exits": injector.unexpected_exits,
            "exit_codes_on_sigterm": codes,
        }
        res["client"] = {"untyped": history.client_exceptions[:20]}
        res["waits"] = _waits(history, final)
        res["journal_bad_lines"] = journal.bad_lines
        res["clock_jumps"] = len(journal.clock_jumps)
        res["poison_deaths"] = injector.poison_deaths
        res["must_be_zero"] = must_be_zero(res)
        res["ok"] = not any(res["must_be_zero"].values())
        print(render(res), flush=True)
        if opts.json_path:
            with open(opts.json_path, "w") as fh:
                json.dump(
                    {**res, "history": history.to_json() if opts.verbose else None},
                    fh,
                    indent=1,
                    default=str,
                )
        return (0 if res["ok"] else 1), res
    finally:
        if client is not None:
            client.stop()
        if proxy is not None:
            proxy.stop()
        cluster.close()
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"[chaos] kept {workdir}", flush=True)


def _need(p: Any, pid: str) -> Any:
    from lb.broker.errors import NotFound

    if p is None:
        raise NotFound(f"{pid} not found")
    return p


def _invocation_stats(
    issued: int, invs: dict[str, Any], h: History, final: dict[str, Any]
) -> dict[str, Any]:
    creates = [o for o in h.ops if o.op == "create"]
    states = Counter((final[p].state if final.get(p) else "missing") for p in invs)
    return {
        "issued": issued,
        "acked": sum(1 for i in invs.values() if i.acked_at),
        "creates": len(creates),
        "open_creates": sum(1 for o in creates if o.open),
        "same_id_retries": sum(max(0, i.creates - 1 - len(i.alt_args)) for i in invs.values()),
        "alt_args": sum(len(i.alt_args) for i in invs.values()),
        "canceled": sum(1 for i in invs.values() if i.canceled),
        "by_func": dict(Counter(i.func for i in invs.values())),
        "states": dict(states),
        "gets": sum(1 for o in h.ops if o.op == "get"),
    }


def _waits(h: History, final: dict[str, Any]) -> dict[str, Any]:
    stuck = 0
    for w in h.waits:
        p = final.get(w["pid"])
        late = p is not None and p.settled and p.settled_at / 1000.0 < w["end"] - 5.0
        if w.get("outcome") == "timeout" and late:
            stuck += 1
    return {
        "n": len(h.waits),
        "stuck": stuck,
        "outcomes": dict(Counter(str(w.get("outcome")) for w in h.waits)),
    }
