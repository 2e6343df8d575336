"""Registered functions, by (name, version), as in Resonate's SDKs.

A call names a function and optionally a version: version 0 (the default) runs the highest
version this worker has, any other version exactly that one. A worker that lacks what a call
asks for hands it back (see the worker), so old and new workers can share a group.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lb.broker.errors import AlreadyRegistered, BadInput, UnknownFunction
from lb.broker.keys import check_func_name
from lb.sdk.retry import Exponential, RetryPolicy

__all__ = ["Function", "Registry"]


@dataclass(frozen=True)
class Function:
    """A function the worker can run: ``fn(ctx, *args, **kwargs)``."""

    fn: Callable[..., Any]
    name: str
    version: int = 1
    retry: RetryPolicy = field(default_factory=Exponential)

    @cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


class Registry:
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], Function] = {}
        self._latest: dict[str, Function] = {}

    def add(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        version: int = 1,
        retry: RetryPolicy | None = None,
    ) -> Function:
        """Register ``fn``; :class:`AlreadyRegistered` when another function has the name and
        version. Registering the very same function again (same name, version and policy) is a
        no-op, so an app module imported twice does not fail."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise BadInput(f"version must be a positive integer, not {version!r}")
        entry = Function(fn, check_func_name(name or fn.__name__), version, retry or Exponential())
        key = (entry.name, entry.version)
        old = self._by_key.get(key)
        if old is not None and old != entry:
            raise AlreadyRegistered(
                f"function {entry.name!r} version {entry.version} is already registered (to "
                f"{getattr(old.fn, '__qualname__', old.fn)!r}); register the other one under "
                "another name or version"
            )
        self._by_key[key] = entry
        latest = self._latest.get(entry.name)
        if latest is None or latest.version < entry.version:
            self._latest[entry.name] = entry
        return entry

    def get(self, name: str, version: int = 0) -> Function:
        """The function ``name`` at ``version`` (0: the highest registered), else
        :class:`UnknownFunction`."""
        found = self._latest.get(name) if version == 0 else self._by_key.get((name, version))
        if found is None:
            what = f"function {name!r}" + (f" version {version}" if version else "")
            raise UnknownFunction(f"{what} is not registered here")
        return found

    def names(self) -> list[str]:
        return sorted(self._latest)

    def entries(self) -> list[Function]:
        """Every registered (name, version), sorted."""
        return [self._by_key[k] for k in sorted(self._by_key)]
