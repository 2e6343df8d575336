"""Bytes per settled call, for sizing Redis (the operations issue, item 12):
``python -m bench.memory``.

Runs lb's real lifecycle through its scripts (create with a task, read, acquire, fulfill:
what a worker does, without user code) for ``--n`` calls per value size, then divides
Redis's ``used_memory`` growth by the number of calls. What remains per call is everything a
settled call keeps until its retention ends: the promise hash and the index entries (state,
gc); a resolved call's task hash goes at settle. Prints that per value size and the memory a
retention needs at 100, 1,000 and 10,000 calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

import msgpack
import redis

from lb.broker.client import Broker
from lb.broker.embedded import EmbeddedRedis
from lb.broker.settings import Settings
from lb.broker.tasks import TaskQueue
from lb.sdk.encoding import Call

SIZES = (10, 100, 1000, 10000)
RATES = (100, 1000, 10000)
GB = 1 << 30


async def _settle_many(url: str, n: int, value_size: int) -> float:
    prefix = "m" + uuid.uuid4().hex[:6]
    b = Broker(Settings.from_url(url, prefix=prefix))
    tq = TaskQueue(b, "mem", "m")
    await tq.ensure_group()
    base = b.keys.base(0)
    param = Call("echo", [1, "x" * 16]).encode(1 << 20)
    value = msgpack.packb("v" * value_size)
    r = b.redis
    await tq.read(1, 1)
    before = int((await r.info("memory"))["used_memory"])
    for start in range(0, n, 200):
        ids = [f"call-{uuid.uuid4().hex[:12]}-{i}" for i in range(start, min(n, start + 200))]
        await asyncio.gather(*(b.create(i, param, group="mem") for i in ids))
        got = await tq.read(len(ids), 1)
        held, _ = await tq.acquire(base, got[base])
        await asyncio.gather(*(tq.fulfill(c.fence("m"), "resolved", value) for c in held))
    after = int((await r.info("memory"))["used_memory"])
    await tq.close()
    await b.close()
    return (after - before) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis-url")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--json")
    a = ap.parse_args()
    server = None
    url = a.redis_url
    if not url:
        server = EmbeddedRedis(appendfsync="everysec").start()
        url = server.url
    out: dict[str, Any] = {"redis_version": redis.Redis.from_url(url).info()["redis_version"]}
    try:
        for size in SIZES:
            per = asyncio.run(_settle_many(url, a.n, size))
            out[f"bytes_per_settled_call_value_{size}B"] = round(per)
            for rate in RATES:
                out[f"gb_per_day_{rate}_per_s_value_{size}B"] = round(per * rate * 86400 / GB, 2)
        print(json.dumps(out, indent=2))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2)
    finally:
        if server:
            server.cleanup()


if __name__ == "__main__":
    main()
