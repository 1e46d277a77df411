"""A run's config is read-only: what a run decides for itself (where it lives, which checkpoint it
starts from, its seed) is in its :class:`~raydet.run.plan.RunPlan`, never written into the config.

:func:`freeze` gives the run its own copy, whose dicts refuse every write at any depth with a
:class:`ConfigError` naming the key (lists inside stay lists: mmdet's transforms check their
types). Copies of it (``copy()``, ``copy.deepcopy``, ``dict(...)`` of a section's items through
``ConfigDict``) are ordinary, writable configs: mmdet's builders pop keys from their copies.
"""
from __future__ import annotations

import copy
from typing import Mapping

from mmcv import Config, ConfigDict

from ..errors import ConfigError


class FrozenConfigDict(ConfigDict):
    """A :class:`ConfigDict` that refuses writes once :func:`_seal` has run over it."""

    def _refuse(self, what: str, key=None):
        if self.__dict__.get("_sealed"):
            where = f" {key!r}" if key is not None else ""
            raise ConfigError(f"the run's config is read-only after loading: {what}{where} refused (a run's own "
                              "decisions are in its RunPlan; edit a config before handing it to raydet)")

    def __setitem__(self, key, value):
        self._refuse("setting", key)
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._refuse("deleting", key)
        super().__delitem__(key)

    def __delattr__(self, name):
        self._refuse("deleting", name)
        super().__delattr__(name)

    def pop(self, key, *default):
        self._refuse("popping", key)
        return super().pop(key, *default)

    def popitem(self):
        self._refuse("popitem")
        return super().popitem()

    def setdefault(self, key, default=None):
        if key not in self:
            self._refuse("setdefault", key)
        return super().setdefault(key, default)

    def update(self, *args, **kwargs):
        self._refuse("update")
        super().update(*args, **kwargs)

    def clear(self):
        self._refuse("clear")
        super().clear()

    def copy(self):
        return ConfigDict(thaw(self))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return ConfigDict(copy.deepcopy(thaw(self), memo))

    def __reduce__(self):  # pickles (Ray's object store) as the plain dict it holds
        return ConfigDict, (thaw(self),)


def thaw(node):
    """Plain dicts and lists of ``node``, recursively (a writable copy)."""
    if isinstance(node, dict):
        return {k: thaw(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(thaw(v) for v in node)
    return node


def _seal(node) -> None:
    if isinstance(node, FrozenConfigDict):
        object.__setattr__(node, "_sealed", True)
    if isinstance(node, dict):
        for value in node.values():
            _seal(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _seal(value)


class FrozenConfig(Config):
    """A :class:`mmcv.Config` over a :class:`FrozenConfigDict`; ``merge_from_dict`` is refused too.
    ``copy.deepcopy`` gives a writable :class:`mmcv.Config`."""

    def merge_from_dict(self, options, allow_list_keys=True):
        raise ConfigError(f"the run's config is read-only after loading: merge_from_dict({options!r}) refused")

    def __deepcopy__(self, memo):
        return _config(Config, copy.deepcopy(thaw(self._cfg_dict), memo), self.filename, self.text)

    def __copy__(self):
        return _config(Config, thaw(self._cfg_dict), self.filename, self.text)

    def __reduce__(self):
        return _config, (Config, thaw(self._cfg_dict), self.filename, self.text)


def _config(cls, data: dict, filename, text):
    """A ``cls`` config of ``data`` that names ``filename`` without reading it (it may not exist
    in this process: a Ray worker on another node)."""
    cfg = cls(data)
    super(Config, cfg).__setattr__("_filename", filename)
    super(Config, cfg).__setattr__("_text", text or "")
    return cfg


def freeze(cfg: Config | Mapping) -> FrozenConfig:
    """A read-only copy of ``cfg`` (an already loaded :class:`mmcv.Config` or a plain dict of
    one: nothing is validated again); a frozen config is returned as it is."""
    if isinstance(cfg, FrozenConfig):
        return cfg
    data = thaw(cfg._cfg_dict if isinstance(cfg, Config) else dict(cfg))
    frozen = _config(FrozenConfig, {}, getattr(cfg, "filename", None), getattr(cfg, "text", ""))
    # mmcv's Config wraps its dict in a ConfigDict; the frozen one takes its place, then is sealed
    sealed = FrozenConfigDict(data)
    _seal(sealed)
    super(Config, frozen).__setattr__("_cfg_dict", sealed)
    return frozen
