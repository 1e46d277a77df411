"""A plain ``{type name: factory}`` table per kind of object, with did-you-mean errors.

Builders use :meth:`Registry.build` to turn a ``dict(type=..., **kwargs)`` config into an object;
the config validator uses :meth:`Registry.check` to reject unknown types and arguments before
anything is built.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Callable, Iterable

from .errors import ConfigError


def suggest(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(keys: Iterable[str], allowed: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` for the first key not in ``allowed``, naming ``where.key``."""
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{suggest(key, allowed)}")


def accepted_kwargs(fn: Callable) -> set[str] | None:
    """Keyword arguments ``fn`` accepts; ``None`` when it takes arbitrary ``**kwargs``.

    For a class, the ``__init__`` signatures along the MRO are united, so a subclass that passes
    ``**kwargs`` to its base is checked against the base's named arguments."""
    inits = ([c.__dict__["__init__"] for c in fn.__mro__ if "__init__" in c.__dict__ and c is not object]
             if inspect.isclass(fn) else [fn])
    allowed: set[str] = set()
    for init in inits:
        params = inspect.signature(init).parameters
        allowed |= {n for n, p in params.items()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
    last = inspect.signature(inits[-1]).parameters.values() if inits else []
    if any(p.kind is p.VAR_KEYWORD for p in last):
        return None
    return allowed


def check_call(fn: Callable, kwargs: dict, where: str, skip: Iterable[str] = ()) -> None:
    """Reject keyword arguments ``fn`` does not take (unless it takes arbitrary ``**kwargs``)."""
    allowed = accepted_kwargs(fn)
    if allowed is not None:
        check_keys([k for k in kwargs if k not in skip], sorted(allowed), where)


class Registry:
    """Maps type names to classes or factory functions."""

    def __init__(self, kind: str, key: str = "type", fallback: Callable[[], dict] | None = None):
        self.kind, self.key = kind, key  # key: the config key that names an entry, for messages
        self._table: dict[str, Callable] = {}
        # another library's registry (name -> class), asked for names this one does not have
        self.fallback = fallback

    def register(self, name: str | None = None, obj: Callable | None = None):
        """Register ``obj`` under ``name`` (its ``__name__`` by default); usable as a decorator."""
        def add(o):
            key = name or o.__name__
            if key in self._table and self._table[key] is not o:
                raise KeyError(f"{self.kind} '{key}' is already registered")
            self._table[key] = o
            return o
        return add(obj) if obj is not None else add

    def owns(self, name: str) -> bool:
        """Whether ``name`` is this registry's own entry (not its fallback's)."""
        return name in self._table

    def _others(self) -> dict:
        return self.fallback() if self.fallback is not None else {}

    def __contains__(self, name: str) -> bool:
        return name in self._table or name in self._others()

    def names(self) -> list[str]:
        return sorted(set(self._table) | set(self._others()))

    def get(self, name: str, where: str = "") -> Callable:
        if name not in self._table and name in self._others():
            return self._others()[name]
        if name not in self._table:
            loc = f"{where}.{self.key}" if where else self.key
            what = f"{self.kind} type" if self.key == "type" else self.kind
            raise ConfigError(f"unknown {what} '{name}' at {loc}{suggest(name, self.names())}"
                              f"; known: {', '.join(self.names())}")
        return self._table[name]

    def check(self, cfg: dict, where: str, skip: Iterable[str] = ()) -> Callable:
        """Validate a ``dict(type=...)`` config without building it; returns the factory."""
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"{where} must be a dict with a 'type' key, got {cfg!r}")
        fn = self.get(cfg["type"], where)
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        check_call(fn, kwargs, where, skip=skip)
        return fn

    def build(self, cfg: dict, where: str = "", **extra):
        """Build ``cfg['type'](**cfg_without_type, **extra)``."""
        fn = self.check(cfg, where or self.kind, skip=extra)
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        kwargs.update(extra)
        return fn(**kwargs)
