"""Detectors: mmdetection 2.x's own, from ``mmdet.models.build_detector`` and its registries.

raydet adds its demo backbone (``GNConvNet``, in mmdet's ``BACKBONES``), resolves the checkpoints
a model config names to local files before mmcv's ``init_weights`` reads them
(:func:`raydet.models.weights.resolve_pretrained`), and turns the builders' errors (a type not in
a registry, an argument a class does not take) into one :class:`ConfigError` naming the config
key. A user's own models register themselves in mmdet's registries (``@DETECTORS.register_module()``)
and are loaded with the config's ``custom_imports``.
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import re

import torch

import raydet.ops  # noqa: F401  (mmcv._ext before mmdet.models imports mmcv.ops)
from ..errors import ConfigError
from ..ops import mmdet_fixes
from .backbones import GNConvNet

mmdet_fixes.apply()

logger = logging.getLogger("raydet")


@contextlib.contextmanager
def _quiet_mmcv():
    """mmcv's ``init_weights`` prints every parameter's initialisation at INFO; keep its warnings
    (pretrained keys that did not load) only."""
    mmcv_logger = logging.getLogger("mmcv")
    level = mmcv_logger.level
    mmcv_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        mmcv_logger.setLevel(level)


def _paths_of_type(node, name: str, path: str = "model") -> list[str]:
    """Dotted paths of the dicts in ``node`` whose ``type`` is ``name``."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == name:
            found.append(path)
        for key, value in node.items():
            found += _paths_of_type(value, name, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += _paths_of_type(value, name, f"{path}.{i}")
    return found


def _registry_names() -> list[str]:
    from mmcv.cnn import CONV_LAYERS, NORM_LAYERS, PLUGIN_LAYERS, UPSAMPLE_LAYERS
    from mmdet.core.anchor.builder import PRIOR_GENERATORS
    from mmdet.core.bbox.builder import BBOX_ASSIGNERS, BBOX_CODERS, BBOX_SAMPLERS
    from mmdet.models.builder import MODELS
    names = set()
    for reg in (MODELS, CONV_LAYERS, NORM_LAYERS, PLUGIN_LAYERS, UPSAMPLE_LAYERS, PRIOR_GENERATORS, BBOX_ASSIGNERS,
                BBOX_CODERS, BBOX_SAMPLERS):
        names.update(reg.module_dict)
        for child in reg.children.values():
            names.update(child.module_dict)
    return sorted(names)


def _class_args(class_name: str) -> list[str]:
    from mmdet.models.builder import MODELS
    cls = MODELS.get(class_name)
    if cls is None:
        return []
    names = []
    for klass in inspect.getmro(cls):
        if "__init__" in vars(klass):
            names += [p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "args", "kwargs")]
    return names


def config_error(exc: Exception, cfg: dict, where: str = "model") -> ConfigError:
    """One :class:`ConfigError` naming the key of ``cfg`` (the dict at ``where``) that mmcv's
    ``build_from_cfg`` refused: a ``type`` not in a registry (with the closest registered name),
    an argument the class does not take or lacks (with its closest argument), or any other error
    of a constructor (named with the class)."""
    text = str(exc.args[0]) if exc.args else str(exc)
    missing = re.search(r"([\w.-]+) is not in the (.+?) registry", text)
    if missing:
        name, registry = missing.group(1), missing.group(2)
        paths = _paths_of_type(cfg, name, where) or [where]
        close = difflib.get_close_matches(name, _registry_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else " (a typo, or a module missing from custom_imports?)"
        return ConfigError(f"{paths[0]}.type={name!r} is not in mmdet's {registry} registry{hint}")
    classes = re.findall(r"(\w+): ", text.split("__init__()")[0]) if "__init__()" in text else []
    arg = re.search(r"unexpected keyword argument '(\w+)'", text)
    if classes and arg:
        owner, key = classes[-1], arg.group(1)
        paths = [p for p in _paths_of_type(cfg, owner, where)] or [where]
        close = difflib.get_close_matches(key, _class_args(owner), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"unknown config key '{paths[0]}.{key}': {owner} takes no argument {key!r}{hint}")
    required = re.search(r"missing \d+ required positional arguments?: (.+)$", text)
    if classes and required:
        owner = classes[-1]
        paths = _paths_of_type(cfg, owner, where) or [where]
        return ConfigError(f"{paths[0]}: {owner} needs {required.group(1)}")
    if not text or text.endswith(": "):  # an assert without a message: say where it failed
        import traceback
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        parts = frame.filename.split("site-packages/")
        text = f"{text}`{frame.line}` failed ({parts[-1]}:{frame.lineno})"
    chain = re.findall(r"(\w+): ", text)
    owner = next((c for c in reversed(chain) if _paths_of_type(cfg, c, where)), None)
    if owner:  # the innermost part of the config that refused, and its own words
        detail = text.split(f"{owner}: ", 1)[1]
        return ConfigError(f"{_paths_of_type(cfg, owner, where)[0]} ({owner}): {type(exc).__name__}: {detail}")
    return ConfigError(f"{where}: {type(exc).__name__}: {text}")


def build_detector(cfg: dict, logger: logging.Logger | None = None, train_cfg=None, test_cfg=None,
                   init: bool = True) -> torch.nn.Module:
    """mmdet's ``build_detector(cfg, train_cfg, test_cfg)`` (the older top-level
    ``train_cfg``/``test_cfg`` are merged into the model dict, as mmdet does), then, with
    ``init``, mmcv's ``init_weights()``: ``init_cfg`` initialisers and pretrained weights
    (``Pretrained``/``pretrained=``, resolved to local files first). Raises :class:`ConfigError`
    naming the key of a config mmdet's builders refuse, or a checkpoint that is absent and cannot
    be downloaded."""
    from mmdet.models import build_detector as mmdet_build

    from .weights import resolve_pretrained
    cfg = dict(cfg)
    for key, value in (("train_cfg", train_cfg), ("test_cfg", test_cfg)):
        if value is not None:
            if cfg.get(key) is not None:
                raise ConfigError(f"{key} is set both at the top level and in model; keep model.{key}")
            cfg[key] = value
    if init:
        cfg = resolve_pretrained(cfg)
    from mmcv import ConfigDict
    try:
        model = mmdet_build(ConfigDict(cfg))  # mmdet reads its train_cfg/test_cfg by attribute
    except (KeyError, TypeError, ValueError, AssertionError, AttributeError, NotImplementedError,
            RuntimeError) as exc:
        raise config_error(exc, cfg) from None
    except OSError as exc:  # a file the constructor itself reads (a distillation teacher's checkpoint)
        error = config_error(exc, cfg)
        raise ConfigError(f"{error}: a file or download the model's own constructor needs (e.g. teacher_ckpt): "
                          "place the file and point the config at it") from None
    if init:
        with _quiet_mmcv():
            model.init_weights()
    return model


def validate_model(cfg: dict, train_cfg=None, test_cfg=None) -> None:
    """Build ``cfg`` with mmdet's builders, without initialising or loading weights, as the config
    check: a :class:`ConfigError` names what they refuse. Built on the meta device (no memory,
    no time) where the model allows it."""
    try:
        with torch.device("meta"):
            build_detector(cfg, train_cfg=train_cfg, test_cfg=test_cfg, init=False)
        return
    except ConfigError as exc:
        if "meta" not in str(exc):
            raise
    # a constructor that computes with its tensors (Swin's .item()) cannot run on the meta device
    build_detector(cfg, train_cfg=train_cfg, test_cfg=test_cfg, init=False)


__all__ = ["GNConvNet", "build_detector", "config_error", "validate_model"]
