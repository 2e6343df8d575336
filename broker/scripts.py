"""Loading of the Lua scripts in ``broker/lua``.

Each script file is one state transition; ``lib.lua`` is prepended to each of them. Scripts are
registered with redis-py's ``register_script``, which runs them by SHA and transparently loads
them again when Redis answers NOSCRIPT (after a restart or a SCRIPT FLUSH), in pipelines too.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["SCRIPT_NAMES", "Scripts", "command_at", "script_source"]

SCRIPT_NAMES = (
    "create",
    "create_many",
    "get",
    "settle",
    "fulfill",
    "acquire",
    "heartbeat",
    "suspend",
    "release",
    "takeover",
    "sweep",
    "search",
    "prune",
    "requeue",
    "lease",
)
# Scripts sent without lib.lua (they use none of it): its prelude costs ~17 us a call, which
# matters for a call every worker makes several times a second.
BARE = frozenset({"lease", "heartbeat"})


@cache
def script_source(name: str) -> str:
    """The full text sent to Redis for script ``name``: lib.lua, then the script (BARE
    scripts alone)."""
    lua = resources.files("lb.broker") / "lua"
    own = (lua / f"{name}.lua").read_text("utf-8")
    return own if name in BARE else (lua / "lib.lua").read_text("utf-8") + "\n" + own


@cache
def _by_sha() -> dict[str, str]:
    return {hashlib.sha1(script_source(n).encode()).hexdigest(): n for n in SCRIPT_NAMES}


def command_at(message: str) -> tuple[str, str] | None:
    """(script name, Redis command) on the script line an error points at (``call to
    f_<sha>`` and ``@user_script:N``), e.g. to name the command an ACL denied inside one of
    lb's scripts (Redis 6.2 does not name it)."""
    sha = re.search(r"(?:f_|script: )([0-9a-f]{40})", message)  # Redis 6.2 | 7
    line = re.search(r"@user_script:\s*(\d+)", message)
    name = _by_sha().get(sha.group(1)) if sha else None
    if name is None or line is None:
        return None
    lines = script_source(name).splitlines()
    n = int(line.group(1))
    call = re.search(r"redis\.call\('([A-Za-z]+)'", lines[n - 1]) if 1 <= n <= len(lines) else None
    return (name, call.group(1).upper()) if call else None


class Scripts:
    """The registered scripts of one async Redis client, by name."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    def sha(self, name: str) -> str:
        return str(self._scripts[name].sha)

    async def call(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        """Run script ``name``; ``client`` may be a pipeline (the call is then queued)."""
        return await self._scripts[name](keys=keys, args=args, client=client)
