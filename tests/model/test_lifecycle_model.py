"""Model-based test of the promise/task lifecycle against a real redis-server.

A seeded driver plays random operations of three workers and a client (create, read and stall,
late acquire, take over, requeue of a dead worker's work, heartbeat, ctx.run steps, suspend,
resume, complete, clean release,
stale writes, cancel, time out, sweep with a short retention, Redis reload) through the real
broker API, keeps a small reference model of what each promise and task must be, and after
every single step checks the invariants of ARCHITECTURE.md's lifecycle section against what
Redis actually holds:

* one owner: an acquired task has exactly one pending stream entry, owned by its holder at the
  current version; a pending task's entry is on the stream; nothing else names the task;
* a resume is not a failure: a task is dead-lettered only after more than ``max_deliveries``
  deliveries in a row ended in nothing (no completion, suspension or clean release), or
  quarantined when a worker running it alone died ``max_deaths`` times in a row (no
  suspension in between); calls that shared a dying worker come back as suspects, never
  blamed; the death count and suspect mark in Redis are the model's;
* settled steps are final while their root lives: a settled step's record exists while its
  root is pending;
* deadlines first: a completion or settle after the promise's deadline finds it timed out;
* the model and Redis agree on every root's state and every task's holder.

Against the code before the lifecycle issue it fails on four of them (ten resumes dead-letter
a task; a late acquire deletes the entry another worker holds; a purge removes a settled step
of a pending root; a completion past the deadline resolves) - see the closing note.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.exceptions

from lb.broker import Broker, Fence, Keys, Settings, TaskQueue
from lb.broker.errors import Fenced, LbError
from tests.broker_tests.broker_helpers import redis_now, shutdown

GROUP = "m"
WORKERS = ("w1", "w2", "w3")
MAX_DELIVERIES = 3
MAX_DEATHS = 2  # at 2 a second death quarantines (no delayed redelivery in this model)
RETENTION_MS = 60
SEEDS = list(range(12))
STEPS = 160


@dataclass
class Task:
    """The model of one root promise with a task on GROUP."""

    id: str
    deadline: int
    state: str = "pending"  # promise state
    task: str = "pending"  # pending | acquired | suspended | fulfilled
    holder: tuple[str, str] | None = None  # (pid, version)
    strikes: int = 0  # deliveries in a row that ended in nothing (incl. the current one)
    deaths: int = 0  # deaths of a worker running it alone, since the last suspension
    suspect: bool = False  # its worker died running it beside others
    steps: dict[str, str] = field(default_factory=dict)  # child id -> state
    awaited: str | None = None
    counter: int = 0


class Violation(AssertionError):
    pass


class Driver:
    def __init__(self, url: str, prefix: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.settings = Settings.from_url(
            url,
            prefix=prefix,
            max_deliveries=MAX_DELIVERIES,
            max_deaths=MAX_DEATHS,
            retention_ms=RETENTION_MS,
            ttl_ms=1000,
        )
        self.client = Broker(self.settings)
        self.brokers = {w: Broker(self.settings, client_name=f"{prefix}-{w}") for w in WORKERS}
        self.queues = {w: TaskQueue(self.brokers[w], GROUP, w) for w in WORKERS}
        self.base = self.client.keys.base(0)
        self.stream = Keys.stream(self.base, GROUP)
        self.tasks: dict[str, Task] = {}
        self.reads: dict[str, list[tuple[str, str]]] = {w: [] for w in WORKERS}
        self.stale: list[Fence] = []
        self.log: list[str] = []
        self.n = 0
        self.can_reload = True

    async def close(self) -> None:
        await shutdown(self.client, *self.queues.values(), *self.brokers.values())

    # -- helpers ----------------------------------------------------------------------
    def held_by(self, w: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.holder and t.holder[0] == w]

    def fence(self, t: Task) -> Fence:
        assert t.holder is not None
        return Fence(t.id, t.holder[1], t.holder[0])

    def _claimed(self, w: str, held: list[Any], dead: list[str], takeover: bool = False) -> None:
        for c in held:
            t = self.tasks[c.task_id]
            if c.suspect != t.suspect:
                raise Violation(f"{t.id}: claimed with suspect={c.suspect}, model {t.suspect}")
            if t.holder:
                self.stale.append(self.fence(t))
            t.strikes += 1
            if t.strikes > MAX_DELIVERIES:
                raise Violation(f"{t.id} delivered again after {t.strikes - 1} empty deliveries")
            t.task, t.holder = "acquired", (w, c.version)
        for tid in dead:
            t = self.tasks[tid]
            if t.strikes + 1 <= MAX_DELIVERIES:
                raise Violation(
                    f"{tid} dead-lettered after {t.strikes} empty deliveries "
                    f"(max {MAX_DELIVERIES}): a resume or a clean release was counted"
                )
            self._settled(t, "rejected")

    def _settled(self, t: Task, state: str) -> None:
        if t.holder:
            self.stale.append(self.fence(t))
        t.state, t.task, t.holder, t.awaited = state, "fulfilled", None, None

    async def _expired(self, t: Task) -> bool:
        """True when the promise's deadline has certainly passed (Redis clock): a script times
        a promise out when its deadline is at or before the Redis time (lib.lua), so in the
        very millisecond of the deadline too."""
        return await redis_now(self.client) >= t.deadline

    def _timed_out_now(self, t: Task) -> None:
        if t.state == "pending":
            self._settled(t, "rejected_timedout")

    # -- operations -------------------------------------------------------------------
    async def op_create(self) -> None:
        self.n += 1
        tid = f"r{self.n}"
        short = self.rng.random() < 0.2
        timeout = self.rng.randint(5, 40) if short else 60_000
        _, p = await self.client.create(tid, b"x", group=GROUP, timeout_ms=timeout)
        self.tasks[tid] = Task(tid, p.timeout_at)

    async def op_read(self, w: str) -> None:
        """A read, as the worker's claim loop makes it: a call's first delivery is held (and
        run) from the read on, unacquired (the fast path); a first delivery near its deadline
        is acquired at once; any other entry may wait for a late acquire (op_acquire)."""
        got = await self.queues[w].read(self.rng.randint(1, 2), block_ms=1)
        for base, entries in got.items():
            fast, slow = self.queues[w].split(base, entries)
            self._claimed(w, fast, [])
            first = [e for e in slow if e.param is not None]
            if first:
                self._claimed(w, *await self.queues[w].acquire(base, first))
            self.reads[w] += [e for e in slow if e.param is None]

    async def op_acquire(self, w: str) -> None:
        entries, self.reads[w] = self.reads[w], []
        if entries:
            held, dead = await self.queues[w].acquire(self.base, entries)
            self._claimed(w, held, dead)

    async def op_takeover(self, w: str) -> None:
        # min idle 0: every other holder has "lapsed" (a stall past the ttl, in model time).
        held, dead = await self.queues[w].takeover(0, self.rng.randint(1, 2))
        for c in held:
            t = self.tasks[c.task_id]
            if t.holder is None and t.task != "pending":
                raise Violation(f"takeover of {t.id} in task state {t.task}")
        self._claimed(w, held, dead, takeover=True)

    async def op_heartbeat(self, w: str) -> None:
        for t in self.held_by(w):
            ok = await self.queues[w].holds(self.base, self.fence(t))
            if not ok:
                raise Violation(f"heartbeat of holder {t.holder} of {t.id} refused")
        if self.stale:
            f = self.rng.choice(self.stale)
            if await self.queues[f.pid].holds(self.base, f):
                t = self.tasks[f.task_id]
                if t.holder != (f.pid, f.version):
                    raise Violation(f"stale fence {f} renewed")

    async def op_step(self, w: str) -> None:
        """A ctx.run step: fenced create of a child, then fenced settle."""
        mine = self.held_by(w)
        if not mine:
            return
        t = self.rng.choice(mine)
        t.counter += 1
        cid = f"{t.id}:{t.counter}"
        try:
            await self.brokers[w].create(cid, fence=self.fence(t), timeout_ms=60_000)
            await self.brokers[w].settle(cid, "resolved", b"v", fence=self.fence(t))
        except Fenced:
            if await self._expired(t):
                self._timed_out_now(t)
                return
            raise Violation(f"holder {t.holder} of {t.id} fenced") from None
        t.steps[cid] = "resolved"

    async def op_suspend(self, w: str) -> None:
        mine = self.held_by(w)
        if not mine:
            return
        t = self.rng.choice(mine)
        t.counter += 1
        cid = f"{t.id}:{t.counter}"
        try:
            await self.brokers[w].create(cid, fence=self.fence(t), timeout_ms=60_000)
            outcome = await self.queues[w].suspend(self.fence(t), [cid])
        except Fenced:
            if await self._expired(t):
                self._timed_out_now(t)
                return
            raise Violation(f"holder {t.holder} of {t.id} fenced on suspend") from None
        if outcome != "suspended":
            raise Violation(f"suspend of {t.id} on a new promise answered {outcome}")
        self.stale.append(self.fence(t))
        t.task, t.holder, t.awaited, t.strikes, t.deaths = "suspended", None, cid, 0, 0
        t.suspect = False
        t.steps[cid] = "pending"

    async def op_resume(self) -> None:
        waiting = [t for t in self.tasks.values() if t.task == "suspended" and t.awaited]
        if not waiting:
            return
        t = self.rng.choice(waiting)
        assert t.awaited is not None
        await self.client.settle(t.awaited, "resolved", b"r")
        t.steps[t.awaited] = "resolved"
        t.task, t.awaited = "pending", None

    async def op_fulfill(self, w: str, claim_next: bool = False) -> None:
        """A completion; with ``claim_next``, one that also claims the group's next
        undelivered entry in the same step (fulfill_and_claim)."""
        mine = self.held_by(w)
        if not mine:
            return
        t = self.rng.choice(mine)
        late = await self._expired(t)
        held: list[Any] = []
        dead: list[str] = []
        try:
            if claim_next:
                state, held, dead = await self.queues[w].fulfill_and_claim(
                    self.fence(t), "resolved", b"done", self.base
                )
            else:
                state = (await self.queues[w].fulfill(self.fence(t), "resolved", b"done")).state
        except Fenced:
            if late:
                self._timed_out_now(t)
                return
            raise Violation(f"holder {t.holder} of {t.id} fenced on fulfill") from None
        if late and state != "rejected_timedout":
            raise Violation(f"{t.id} completed {state} after its deadline")
        if len(held) + len(dead) > 1:
            raise Violation(f"one completion claimed {len(held) + len(dead)} calls")
        self._settled(t, state)
        self._claimed(w, held, dead)

    async def op_release(self, w: str) -> None:
        mine = self.held_by(w)
        if not mine:
            return
        t = self.rng.choice(mine)
        try:
            res = await self.queues[w].release(self.fence(t))
        except Fenced:
            if await self._expired(t):
                self._timed_out_now(t)
                return
            raise
        if res != "released":
            raise Violation(f"clean release of {t.id} answered {res}")
        self.stale.append(self.fence(t))
        t.task, t.holder = "pending", None
        t.strikes -= 1  # a clean release is not a delivery that ended in nothing

    async def op_stale_write(self) -> None:
        if not self.stale:
            return
        f = self.rng.choice(self.stale)
        t = self.tasks[f.task_id]
        if t.holder == (f.pid, f.version):
            return
        try:
            await self.queues[f.pid].fulfill(f, "resolved", b"zombie")
        except Fenced:
            return
        raise Violation(f"stale fence {f} completed {t.id}")

    async def op_cancel(self) -> None:
        live = [t for t in self.tasks.values() if t.state == "pending"]
        if not live:
            return
        t = self.rng.choice(live)
        late = await self._expired(t)
        changed, p = await self.client.settle(t.id, "rejected_canceled")
        if late and (changed or p.state != "rejected_timedout"):
            raise Violation(f"cancel of expired {t.id}: changed={changed} state={p.state}")
        self._settled(t, p.state)

    async def op_tick(self) -> None:
        await asyncio.sleep(self.rng.choice((0.001, 0.01, 0.03, RETENTION_MS / 1000 * 1.5)))

    async def op_sweep(self) -> None:
        await self.queues[self.rng.choice(WORKERS)].sweep(2000)
        for t in self.tasks.values():
            if t.state == "pending" and await self._expired(t):
                p = await self.client.redis.hget(self.client.keys.promise(t.id), "state")
                if p not in (None, b"pending"):
                    self._settled(t, p.decode())

    async def op_requeue(self, w: str) -> None:
        """The liveness scanner found ``w`` dead (no connection): requeue.lua hands its work
        back. ``w`` may act again later, as a zombie whose every write must be refused."""
        res = await self.client.script(
            "requeue", [self.stream], [w, GROUP, MAX_DEATHS, 1000, MAX_DELIVERIES]
        )
        quarantined = {x.decode() if isinstance(x, bytes) else x for x in res[1]}
        mine = self.held_by(w)
        for t in mine:
            if len(mine) == 1:
                t.deaths += 1  # it ran alone: the death is its own
            if len(mine) == 1 and t.deaths >= MAX_DEATHS:
                if t.id not in quarantined:
                    raise Violation(f"{t.id}: {t.deaths} holder deaths and not quarantined")
                self._settled(t, "rejected")
            else:
                if t.id in quarantined:
                    raise Violation(f"{t.id} quarantined (deaths {t.deaths}, {len(mine)} held)")
                self.stale.append(self.fence(t))
                t.task, t.holder = "pending", None
                t.suspect = t.suspect or len(mine) > 1
        self.reads[w] = []  # entries it had read went back on the stream as new entries

    async def op_reload(self) -> None:
        """A Redis restart from its own data (DEBUG RELOAD: save, flush, load)."""
        if self.can_reload:
            try:
                await self.client.redis.execute_command("DEBUG", "RELOAD")
            except redis.exceptions.ResponseError:  # Redis 7 refuses DEBUG unless enabled
                self.can_reload = False

    async def step(self) -> None:
        w = self.rng.choice(WORKERS)
        ops: list[tuple[float, str, Any]] = [
            (3, "create", self.op_create),
            (3, "read", lambda: self.op_read(w)),
            (3, "acquire", lambda: self.op_acquire(w)),
            (1.5, "takeover", lambda: self.op_takeover(w)),
            (0.7, "requeue", lambda: self.op_requeue(w)),
            (1, "heartbeat", lambda: self.op_heartbeat(w)),
            (2, "step", lambda: self.op_step(w)),
            (2, "suspend", lambda: self.op_suspend(w)),
            (2, "resume", self.op_resume),
            (1.5, "fulfill", lambda: self.op_fulfill(w)),
            (1.5, "fulfill-next", lambda: self.op_fulfill(w, claim_next=True)),
            (1, "release", lambda: self.op_release(w)),
            (1, "stale-write", self.op_stale_write),
            (0.5, "cancel", self.op_cancel),
            (1, "tick", self.op_tick),
            (1, "sweep", self.op_sweep),
            (0.1, "reload", self.op_reload),
        ]
        _, name, fn = self.rng.choices(ops, [x for x, _, _ in ops])[0]
        self.log.append(f"{name}({w})")
        await fn()

    # -- invariants -------------------------------------------------------------------
    async def check(self) -> None:
        r = self.client.redis
        # A promise past its deadline may have been timed out (lazily, by any script, or by
        # the sweeper) and even purged since: the model follows Redis there.
        for t in self.tasks.values():
            if t.state == "pending" and await self._expired(t):
                got = await r.hget(self.client.keys.promise(t.id), "state")
                if got is None or got != b"pending":
                    self._settled(t, "rejected_timedout")
        pel = await r.xpending_range(self.stream, "lb", "-", "+", 10_000)
        owner = {row["message_id"].decode(): row["consumer"].decode() for row in pel}
        entries = {e[0].decode(): e[1] for e in await r.xrange(self.stream)}
        by_task: dict[str, list[str]] = {}
        for eid, fields in entries.items():
            by_task.setdefault(fields[b"t"].decode(), []).append(eid)
        for t in self.tasks.values():
            h = await r.hgetall(self.client.keys.task(t.id))
            state = h.get(b"state", b"").decode()
            eid = h.get(b"eid", b"").decode()
            if t.state != "pending":
                # A resolved call is its promise alone (its task hash went at settle); a
                # rejected one keeps a completed task for the post-mortem.
                if h and (t.state == "resolved" or state != "fulfilled"):
                    raise Violation(f"{t.id}: {t.state}, yet its task hash is {h}")
                continue  # settled: checked through the promise below
            if not h and t.task == "pending":
                continue  # resolved in Redis meanwhile (checked through the promise below)
            fast_held = t.holder is not None and t.holder[1].startswith("~")
            if state != t.task and not (fast_held and state == "pending"):
                raise Violation(f"{t.id}: task {state!r} in Redis, {t.task!r} in the model")
            deaths = int(h.get(b"deaths", b"0") or 0)
            if deaths != t.deaths:
                raise Violation(f"{t.id}: {deaths} holder deaths in Redis, {t.deaths} in model")
            if (h.get(b"suspect") == b"1") != t.suspect:
                raise Violation(f"{t.id}: suspect mark in Redis differs from the model")
            if t.holder and t.holder[1].startswith("~") and state == "pending":
                # Held straight from its first entry, not yet acquired by a write or a beat:
                # pending at version 0 on that very entry, which its holder owns.
                w, fe = t.holder[0], t.holder[1][1:]
                if (h[b"v"], eid, owner.get(eid), by_task.get(t.id)) != (b"0", fe, w, [fe]):
                    raise Violation(
                        f"{t.id}: fast-held by {t.holder}, Redis has v {h[b'v']!r} entry "
                        f"{eid} owned by {owner.get(eid)}, stream {by_task.get(t.id)}"
                    )
                continue
            if state == "acquired":
                pid, v = h[b"pid"].decode(), h[b"v"].decode()
                if t.holder and t.holder[1].startswith("~") and v == "1" and eid == t.holder[1][1:]:
                    v = t.holder[1]  # a fast delivery, acquired by its holder's write or beat
                if t.holder != (pid, v):
                    raise Violation(f"{t.id}: held by {(pid, v)} in Redis, {t.holder} in model")
                if by_task.get(t.id) != [eid] or owner.get(eid) != pid:
                    mine = by_task.get(t.id, [])
                    raise Violation(
                        f"one owner: acquired {t.id} (holder {pid}) has entries {mine} "
                        f"owned by {[owner.get(e) for e in mine]}"
                    )
            elif state == "pending" and (eid not in entries or by_task.get(t.id) != [eid]):
                raise Violation(f"{t.id}: pending with entry {eid}, stream has {by_task.get(t.id)}")
            elif state == "suspended" and by_task.get(t.id):
                raise Violation(f"{t.id}: suspended but still on the stream")
        for t in self.tasks.values():
            p = await r.hget(self.client.keys.promise(t.id), "state")
            got = p.decode() if p else None
            if t.state == "pending":
                if got is None:
                    raise Violation(f"{t.id}: pending root missing from Redis")
                if got != "pending" and not (got == "rejected_timedout" and await self._expired(t)):
                    raise Violation(f"{t.id}: {got} in Redis, pending in the model")
                for cid, cstate in t.steps.items():
                    c = await r.hget(self.client.keys.promise(cid), "state")
                    if c is None:
                        raise Violation(
                            f"settled steps are final: step {cid} ({cstate}) of pending root "
                            f"{t.id} was purged"
                        )
            elif got is not None and got != t.state:
                raise Violation(f"{t.id}: {got} in Redis, {t.state} in the model")
        await self._check_counts()

    async def _check_counts(self) -> None:
        """The call counters (lib.lua K_COUNTS) equal, state by state, the promises of calls
        (those naming a group, 'g'), counted key by key."""
        r = self.client.redis
        actual: dict[str, int] = {}
        async for key in r.scan_iter(match=f"{self.base}:p:*", count=1000):
            state, group = await r.hmget(key, ["state", "g"])
            if state is not None and group:
                actual[state.decode()] = actual.get(state.decode(), 0) + 1
        raw = await r.hgetall(Keys.counts(self.base))
        counted = {k.decode(): int(v) for k, v in raw.items() if int(v)}
        if counted != actual:
            raise Violation(f"call counters {counted} but the promises of calls are {actual}")


async def _run(url: str, prefix: str, seed: int) -> None:
    d = Driver(url, prefix, seed)
    await d.queues["w1"].ensure_group()
    try:
        for _ in range(STEPS):
            await d.step()
            try:
                await d.check()
            except Violation as exc:
                raise Violation(f"seed {seed}, after {d.log[-12:]}: {exc}") from None
    except LbError as exc:
        raise Violation(f"seed {seed}, after {d.log[-8:]}: {type(exc).__name__}: {exc}") from exc
    finally:
        await d.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_lifecycle_invariants_hold_under_random_operations(
    redis_url: str, prefix: str, seed: int
) -> None:
    asyncio.run(_run(redis_url, prefix, seed))
