"""Carrying out the fault schedule against a running cluster (blocking, main thread)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chaos.app import POISON_EXIT
from chaos.cluster import Cluster
from chaos.proxy import Proxy
from chaos.schedule import Fault
from lb.broker.keys import CONSUMER_GROUP, Keys

__all__ = ["Done", "Injector"]


@dataclass
class Done:
    """A fault as it really happened (wall-clock times)."""

    fault: Fault
    at: float = 0.0
    healed: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.fault.to_json(), "at": self.at, "healed": self.healed, **self.notes}


class Injector:
    def __init__(
        self,
        cluster: Cluster,
        proxy: Proxy,
        proxied: str,
        short_timeouts: threading.Event,
        seed: int,
    ) -> None:
        self.c = cluster
        self.proxy = proxy
        self.proxied = proxied
        self.short_timeouts = short_timeouts
        self.rng = random.Random(f"inject-{seed}")
        self.done: list[Done] = []
        self.unexpected_exits: list[str] = []
        self.poison_deaths = 0

    def run(self, schedule: list[Fault], t0: float, stop: threading.Event) -> None:
        """Apply each fault at ``t0 + start`` (never before the previous one healed)."""
        for f in schedule:
            while not stop.is_set() and time.time() < t0 + f.start:
                self.watch()
                time.sleep(0.05)
            if stop.is_set():
                return
            d = Done(f, at=time.time())
            try:
                getattr(self, f"_{f.kind}")(f, d)
            finally:
                d.healed = time.time()
                self.done.append(d)
            self.watch()

    def watch(self) -> None:
        """Restart any worker that exited without us killing it (recorded as a crash)."""
        for w in self.c.workers.values():
            if w.proc is not None and not w.alive and not w.stopped:
                rc = w.proc.returncode
                if rc == POISON_EXIT:  # a poison call killed it: expected, restart it
                    self.poison_deaths += 1
                    self.c.start_worker(w.name)
                    self.c.wait_joined(w.name, 20)
                elif rc is not None and rc != -9:
                    self.unexpected_exits.append(f"{w.name} exited rc={rc}")
                    self.c.start_worker(w.name)
                    self.c.wait_joined(w.name, 20)

    def _held(self, name: str) -> list[str]:
        """Task ids in ``name``'s pending list right now (best effort)."""
        cl = self.c.client()
        try:
            stream = Keys.stream(Keys(self.c.prefix).base(0), "chaos")
            rows: Any = cl.xpending_range(stream, CONSUMER_GROUP, "-", "+", 1000, name)
            out: list[str] = []
            for row in rows:
                eid = row["message_id"]
                got: Any = cl.xrange(stream, eid, eid)
                tid = got[0][1].get(b"t") if got and got[0][1] else None
                if isinstance(tid, bytes):
                    out.append(tid.decode("utf-8", "replace"))
            return out
        except Exception:
            return []
        finally:
            cl.close()

    def _until(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(min(0.05, max(0.0, end - time.time())))

    # -- one method per fault kind --------------------------------------------------------
    def _worker_kill(self, f: Fault, d: Done) -> None:
        held = self._held(f.target)
        for _ in range(20):  # mid-task: wait (briefly) until it holds something
            if held:
                break
            time.sleep(0.05)
            held = self._held(f.target)
        d.at = time.time()
        d.notes["held"] = held
        self.c.kill_worker(f.target)
        self._until(f.duration)
        self.c.start_worker(f.target)
        d.notes["rejoined"] = self.c.wait_joined(f.target, 30)

    def _worker_stop(self, f: Fault, d: Done) -> None:
        d.notes["held"] = self._held(f.target)
        d.at = time.time()
        self.c.stop_worker(f.target)
        self._until(f.duration)
        self.c.cont_worker(f.target)

    def _redis_stop(self, f: Fault, d: Done) -> None:
        self.c.pause_redis()
        self._until(f.duration)
        self.c.resume_redis()

    def _redis_full(self, f: Fault, d: Done) -> None:
        """maxmemory under what Redis uses (noeviction): every write is refused for a while;
        clients get RedisOutOfMemory (typed), workers hold what they have."""
        cl = self.c.client()
        try:
            used = int(cl.info("memory")["used_memory"])
            cl.config_set("maxmemory", str(max(1 << 20, used - 500_000)))
            self._until(f.duration)
        finally:
            cl.config_set("maxmemory", "0")
            cl.close()

    def _redis_kill(self, f: Fault, d: Done) -> None:
        self.c.kill_redis()
        self._until(f.duration)
        d.notes["restart_s"] = round(self.c.restart_redis(), 3)

    def _proxy_latency(self, f: Fault, d: Done) -> None:
        d.notes["worker"] = self.proxied
        self.proxy.latency(f.param)
        self._until(f.duration)
        self.proxy.heal()

    def _proxy_blackhole(self, f: Fault, d: Done) -> None:
        d.notes["worker"] = self.proxied
        d.notes["held"] = self._held(self.proxied)
        d.at = time.time()
        self.proxy.blackhole()
        self._until(f.duration)
        self.proxy.heal()

    def _proxy_reset(self, f: Fault, d: Done) -> None:
        d.notes["worker"] = self.proxied
        end = time.time() + f.duration
        resets = 0
        while time.time() < end:
            resets += self.proxy.reset()
            self._until(min(self.rng.uniform(0.3, 0.8), max(0.0, end - time.time())))
        d.notes["connections_reset"] = resets
        self.proxy.heal()

    def _client_retry(self, f: Fault, d: Done) -> None:
        self.short_timeouts.set()
        self._until(f.duration)
        self.short_timeouts.clear()
