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
    """The full text sent to Redis for script ``name``: the parts of lib.lua it uses (directly
    or through other parts), then the script; BARE scripts alone. Every helper a script does
    not use would still be created on each of its calls (a closure per ``local function``):
    ~19 us of Redis time a call for the whole of lib.lua, cold."""
    lua = resources.files("lb.broker") / "lua"
    own = (lua / f"{name}.lua").read_text("utf-8")
    if name in BARE:
        return own
    return "".join(lib_parts_for(own, (lua / "lib.lua").read_text("utf-8"))) + "\n" + own


_DEFINES = re.compile(r"^local\s+(?:function\s+)?([A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[A-Za-z_]\w*)*)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def lib_parts_for(script: str, lib: str) -> list[str]:
    """The top-level definitions of ``lib`` (each starts at a column-0 ``local``, with the
    comment lines before it) that ``script`` needs, in lib's order (a Lua local must be
    defined before the code that uses it: lib's order already is such an order)."""
    parts: list[tuple[list[str], str]] = []  # (names defined, text)
    pending: list[str] = []
    for line in lib.splitlines(keepends=True):
        m = _DEFINES.match(line)
        if m:
            names = [n.strip() for n in m.group(1).split(",")]
            parts.append((names, "".join(pending) + line))
            pending = []
        elif parts and not line.startswith("--") and line.strip():
            names, text = parts[-1]
            parts[-1] = (names, "".join([text, *pending, line]))
            pending = []
        else:
            pending.append(line)
    need = set(_WORD.findall(_code(script)))
    keep = [False] * len(parts)
    changed = True
    while changed:  # to a fixed point: parts pull in the parts they use
        changed = False
        for i, (names, text) in enumerate(parts):
            if not keep[i] and need.intersection(names):
                keep[i] = changed = True
                need.update(_WORD.findall(_code(text)))
    return [text for (_, text), k in zip(parts, keep, strict=True) if k]


def _code(text: str) -> str:
    """Lua text without its ``--`` comments (names in comments pull in nothing)."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


@cache
def script_sha(name: str) -> str:
    """The SHA1 Redis knows script ``name`` by (EVALSHA)."""
    return hashlib.sha1(script_source(name).encode()).hexdigest()


def _by_sha() -> dict[str, str]:
    return {script_sha(n): n for n in SCRIPT_NAMES}


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
