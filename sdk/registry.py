"""Registered functions, by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lb.broker.errors import AlreadyRegistered, UnknownFunction
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

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


class Registry:
    def __init__(self) -> None:
        self._by_name: dict[str, Function] = {}

    def add(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        version: int = 1,
        retry: RetryPolicy | None = None,
    ) -> Function:
        """Register ``fn``; :class:`AlreadyRegistered` when another function has the name.

        Registering the very same function again (same name, version and policy) is a no-op,
        so an app module imported twice does not fail."""
        entry = Function(fn, check_func_name(name or fn.__name__), version, retry or Exponential())
        old = self._by_name.get(entry.name)
        if old is not None and old != entry:
            raise AlreadyRegistered(
                f"function name {entry.name!r} is already registered (to "
                f"{getattr(old.fn, '__qualname__', old.fn)!r}); register the other one under "
                "another name"
            )
        self._by_name[entry.name] = entry
        return entry

    def get(self, name: str) -> Function:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownFunction(f"function {name!r} is not registered here") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)
