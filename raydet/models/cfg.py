"""Reading mmdet 2.x model dicts: every key is honoured or rejected by name.

A builder wraps each config dict in :class:`Keys`, asks for every key it understands (with
mmdet's default), and calls :meth:`Keys.done`, which raises :class:`ConfigError` for any key it
did not ask for. Each read is recorded under the component's type (``'ResNet'``, ``'FPN'``...),
so the compatibility table in ``docs/mmdet_compat.md`` is checked against what the builders
really read (``tests/test_mmdet_compat.py``).
"""
from __future__ import annotations

from functools import partial

from torch import nn

from ..errors import ConfigError
from ..registry import suggest

_MISSING = object()
#: ``{component type: {key, ...}}``: every key a builder has read, for the docs check.
READ_KEYS: dict[str, set[str]] = {}


class Keys:
    """One config dict being read. ``where`` names it in errors (``'model.rpn_head'``);
    ``component`` is the type recorded in :data:`READ_KEYS` (defaults to ``cfg['type']``).
    ``aliases`` maps older mmdet key names onto current ones."""

    def __init__(self, cfg: dict | None, where: str, component: str | None = None,
                 aliases: dict[str, str] | None = None):
        if cfg is not None and not isinstance(cfg, dict):
            raise ConfigError(f"{where} must be a dict, got {type(cfg).__name__} {cfg!r}")
        self.cfg = dict(cfg or {})
        self.where = where
        self.component = component or self.cfg.get("type", where)
        self.used = {"type"}
        for old, new in (aliases or {}).items():
            if old in self.cfg:
                if new in self.cfg:
                    raise ConfigError(f"{where} sets both '{old}' (older mmdet name) and '{new}'; keep '{new}'")
                self.cfg[new] = self.cfg.pop(old)

    def _record(self, key: str) -> None:
        self.used.add(key)
        READ_KEYS.setdefault(self.component, set()).add(key)

    def __contains__(self, key: str) -> bool:
        return key in self.cfg

    def __call__(self, key: str, default=_MISSING, *, choices=None, kind=None):
        """The value of ``key`` (``default`` when absent; required without one). ``choices``:
        the values raydet honours (others are a ConfigError saying so); ``kind``: a type or
        tuple of types the value must have."""
        self._record(key)
        if key not in self.cfg:
            if default is _MISSING:
                raise ConfigError(f"{self.where}.{key} is required")
            return default
        value = self.cfg[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if kind is not None and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.where}.{key} must be {names}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self.where}.{key}={value!r} is not supported; raydet supports "
                              + ", ".join(repr(c) for c in choices))
        return value

    def only(self, key: str, supported, why: str):
        """A key raydet honours with one value only (mmdet's default); any other value is
        rejected with ``why`` — what torchvision does instead or lacks."""
        value = self(key, supported)
        if value != supported:
            raise ConfigError(f"{self.where}.{key}={value!r} is not supported ({why}); "
                              f"raydet supports only {supported!r}")
        return value

    def sub(self, key: str, default=None, component: str | None = None,
            aliases: dict[str, str] | None = None) -> "Keys":
        """The nested dict ``key`` as :class:`Keys` (``default`` when absent)."""
        value = self(key, default)
        return Keys(value, f"{self.where}.{key}", component, aliases)

    def type(self, choices) -> str:
        """``cfg['type']``, which must be one of ``choices``."""
        name = self.cfg.get("type")
        if name not in choices:
            raise ConfigError(f"{self.where}.type={name!r} is not supported{suggest(str(name), choices)}; "
                              f"raydet supports {', '.join(repr(c) for c in choices)}")
        READ_KEYS.setdefault(self.component, set())
        return name

    def done(self) -> None:
        """Raise :class:`ConfigError` for the first key no builder read."""
        for key in self.cfg:
            if key not in self.used:
                known = sorted(self.used - {"type"})
                raise ConfigError(f"unknown config key '{self.where}.{key}'{suggest(key, known)}; "
                                  f"{self.component} takes: {', '.join(known)}")


def norm_layer(norm_cfg: dict | None, where: str):
    """``(factory(num_channels) -> nn.Module, requires_grad)`` for mmcv's ``norm_cfg``: ``BN``,
    ``SyncBN`` (built as BatchNorm; the trainer converts it where ranks can synchronise, see
    :func:`raydet.apis.train.sync_batchnorm`), ``GN`` (``num_groups``) with ``eps``,
    ``momentum`` (torch's convention, as mmcv) and ``requires_grad``. ``None`` gives ``(None, True)``."""
    if norm_cfg is None:
        return None, True
    k = Keys(norm_cfg, where, "norm_cfg")
    kind = k.type(("BN", "SyncBN", "GN", "BN2d"))
    requires_grad = k("requires_grad", True, kind=bool)
    if kind == "GN":
        groups = k("num_groups", kind=int)
        eps, affine = k("eps", 1e-5, kind=(int, float)), k("affine", True)

        def factory(num_channels):
            if groups < 1 or num_channels % groups:
                raise ConfigError(f"{where}.num_groups={groups} does not divide the {num_channels} channels of a "
                                  f"layer it normalises")
            return nn.GroupNorm(groups, num_channels, eps=eps, affine=affine)
    else:
        factory = partial(nn.BatchNorm2d, eps=k("eps", 1e-5, kind=(int, float)),
                          momentum=k("momentum", 0.1, kind=(int, float)), affine=k("affine", True))
    k.done()
    return factory, requires_grad


def act_layer(act_cfg: dict | None, where: str):
    """An activation module factory for mmcv's ``act_cfg`` (``ReLU``, ``ReLU6``) or ``None``."""
    if act_cfg is None:
        return None
    k = Keys(act_cfg, where, "act_cfg")
    kind = k.type(("ReLU", "ReLU6"))
    k("inplace", True)
    k.done()
    return {"ReLU": nn.ReLU, "ReLU6": nn.ReLU6}[kind]


def freeze_norms(module: nn.Module) -> None:
    """``requires_grad=False`` on every norm layer's affine parameters (mmcv's
    ``norm_cfg.requires_grad=False``)."""
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            for p in m.parameters():
                p.requires_grad_(False)

