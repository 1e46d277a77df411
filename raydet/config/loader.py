"""Load mmdet-2.x configs (python/yaml/json, ``_base_`` inheritance) through mmcv 1.x's ``Config``."""
from __future__ import annotations

import os
from typing import Mapping

from mmcv import Config

from ..errors import ConfigError
from .schema import check_values, normalize_config, validate_config


def load_config(path_or_cfg, cfg_options: Mapping | None = None) -> Config:
    """Return a validated, normalised :class:`mmcv.Config`.

    ``path_or_cfg`` is a file path (``.py``, ``.yaml``, ``.json``), a ``Config`` or a plain dict.
    ``cfg_options`` are ``--cfg-options``-style dotted overrides (``{'optimizer.lr': 0.01}``).
    Raises :class:`ConfigError` naming the file or key for a missing file, a syntax error or an
    unknown key (with the closest valid name).
    """
    if isinstance(path_or_cfg, Config):
        cfg = Config(path_or_cfg.to_dict(), filename=path_or_cfg.filename)
    elif isinstance(path_or_cfg, Mapping):
        cfg = Config(dict(path_or_cfg))
    else:
        path = os.fspath(path_or_cfg)
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        try:
            cfg = Config(_load_data_config(path), filename=path) if path.endswith(DATA_SUFFIXES) \
                else Config.fromfile(path, import_custom_modules=False)
        except ConfigError:
            raise
        except Exception as exc:  # mmcv raises many types for a bad file; name the file once
            raise ConfigError(f"cannot load config {path}: {type(exc).__name__}: {exc}") from exc
    if cfg_options:
        merge_overrides(cfg, cfg_options)
    try:
        import_custom_modules(cfg)  # before validation: they register the types the config names
        check_values(cfg)
        normalize_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.filename}: {exc}" if cfg.filename else str(exc)) from None
    validate_config(cfg, source=cfg.filename)
    return cfg


DATA_SUFFIXES = (".yaml", ".yml", ".json")


def _safe_loader():
    """PyYAML's SafeLoader plus the one harmless Python tag mmcv's dump writes: tuples."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node)))
    return Loader


_SafeLoader = None


def _load_data_config(path: str, seen: tuple = ()) -> dict:
    """A YAML/JSON config as a dict, read with safe loaders (mmcv's YAML loader can construct
    arbitrary Python objects, i.e. run code). Its ``_base_`` files are merged under it with
    mmcv's rules (``_delete_`` included) and must be YAML/JSON too: only a ``.py`` config runs
    code, by design."""
    import json

    import yaml
    global _SafeLoader
    _SafeLoader = _SafeLoader or _safe_loader()
    with open(path) as f:
        try:
            data = json.load(f) if path.endswith(".json") else yaml.load(f, Loader=_SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"cannot load config {path}{where}: {getattr(exc, 'problem', None) or exc}; "
                              "YAML configs are read with a safe loader (no Python tags)") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"cannot load config {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else list(bases):
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if not base_path.endswith(DATA_SUFFIXES):
            raise ConfigError(f"config {path}: _base_ {base!r} is not YAML/JSON; a YAML/JSON config may only "
                              "inherit from YAML/JSON files (Python configs run code)")
        if not os.path.isfile(base_path):
            raise ConfigError(f"config {path}: _base_ file not found: {base_path}")
        if base_path in seen:
            raise ConfigError(f"config {path}: _base_ {base_path} includes itself")
        for key, value in _load_data_config(base_path, seen + (base_path,)).items():
            if key in merged:
                raise ConfigError(f"config {path}: key '{key}' is set by two _base_ files")
            merged[key] = value
    data = _scales_as_tuples(data)
    return Config._merge_a_into_b(data, merged) if merged else data


#: keys whose value mmdet takes as a tuple ``(w, h)``, or a list of such tuples
SCALE_KEYS = ("img_scale", "crop_size", "size", "img_scales")


def _scales_as_tuples(node):
    """JSON and YAML have no tuples: ``img_scale=[1333, 800]`` means mmdet's ``(1333, 800)``
    (and ``[[1333, 640], [1333, 800]]`` a list of such scales), which its transforms assert."""
    if isinstance(node, dict):
        return {k: _scale(v) if k in SCALE_KEYS else _scales_as_tuples(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_scales_as_tuples(v) for v in node]
    return node


def _scale(value):
    pair = lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)  # noqa: E731
    if pair(value):
        return tuple(value)
    if isinstance(value, list) and value and all(pair(v) for v in value):
        return [tuple(v) for v in value]
    return value


def import_custom_modules(cfg) -> list:
    """mmcv's ``custom_imports = dict(imports=['my_pkg.my_head'], allow_failed_imports=False)``:
    import the user's modules, which register models, datasets, transforms or hooks. A module that
    fails to import is a :class:`ConfigError` naming it (a warning with ``allow_failed_imports``).
    Every process that builds from the config calls this (the driver, each Ray worker)."""
    import importlib
    import logging
    spec = cfg.get("custom_imports")
    if not spec:
        return []
    if not isinstance(spec, dict) or not isinstance(spec.get("imports"), (str, list, tuple)):
        raise ConfigError(f"custom_imports must be dict(imports=[module, ...], allow_failed_imports=False), got {spec!r}")
    extra = set(spec) - {"imports", "allow_failed_imports"}
    if extra:
        raise ConfigError(f"unknown config key 'custom_imports.{sorted(extra)[0]}'; known: imports, allow_failed_imports")
    names = [spec["imports"]] if isinstance(spec["imports"], str) else list(spec["imports"])
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:  # an ImportError, or the module's own error while registering
            if spec.get("allow_failed_imports", False):
                logging.getLogger("raydet").warning(f"custom_imports: {name} failed to import and is skipped: {exc}")
                continue
            raise ConfigError(f"custom_imports: cannot import {name!r}: {type(exc).__name__}: {exc}") from None
    return modules


def merge_overrides(cfg: Config, options: Mapping) -> Config:
    """Apply dotted overrides in place (list indices allowed: ``data.train.pipeline.0.type``)."""
    options = dict(options)
    for key, value in options.items():
        current = _lookup(cfg, key)
        if isinstance(value, dict) and current is not _MISSING and not isinstance(current, dict):
            # a dict over a non-dict (None, say): replace it; mmcv would refuse to merge
            options[key] = dict(value, _delete_=True)
    try:
        cfg.merge_from_dict(options)
    except Exception as exc:
        raise ConfigError(f"cannot apply --cfg-options {dict(options)}: {exc}") from exc
    return cfg


_MISSING = object()


def _lookup(cfg, dotted: str):
    """The value at a dotted key, or ``_MISSING``."""
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[int(part)] if isinstance(node, (list, tuple)) and part.isdigit() else node[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


#: what a run sets in its config as it goes (where it resumes from), left out of the saved copy so
#: that a restart does not make it differ
RUN_STATE = ("resume_from", "auto_resume")


def run_config_text(cfg) -> str:
    """The text of a run's config as its work_dir keeps it: resolved, without :data:`RUN_STATE`."""
    return Config({k: v for k, v in cfg.to_dict().items() if k not in RUN_STATE}).pretty_text


def save_run_config(text: str, work_dir: str, name: str, logger=None, source: str | None = None) -> str | None:
    """Write a run's config ``text`` (:func:`run_config_text`) to ``work_dir/<name>.py`` (mmdet's
    copy of the config in the work_dir). Nothing is written over: the user's own config at that
    path (``source``, a config kept in its work_dir) is left alone (``None`` is returned); an
    earlier run's copy that differs is renamed to ``<name>.<its time>.py`` first; an identical one
    is kept. Returns the path written or kept."""
    import time
    path = os.path.join(work_dir, os.path.splitext(os.path.basename(name))[0] + ".py")
    if source and os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
        if logger is not None:
            logger.info(f"the config {source} lives in the work_dir: its resolved form is not written over it")
        return None
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return path
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(os.path.getmtime(path)))
        old, n = f"{path[:-3]}.{stamp}.py", 1
        while os.path.exists(old):
            old, n = f"{path[:-3]}.{stamp}-{n}.py", n + 1
        os.rename(path, old)
        if logger is not None:
            logger.info(f"the config differs from this work_dir's earlier run's: that one is kept as {old}")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def _flat(node, prefix="") -> dict:
    """Dotted keys to leaf values, tuples as lists (a config's text keeps either)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    if isinstance(node, (list, tuple)):
        return {prefix[:-1]: [_flat(v)[""] if not isinstance(v, (dict, list, tuple)) else _flat(v) for v in node]}
    return {prefix[:-1]: node}


#: keys a run sets for itself, never a difference between two configs of one run
RUN_KEYS = RUN_STATE + ("work_dir", "seed", "deterministic")


def config_differences(saved_text: str, cfg, limit: int = 3) -> list[str]:
    """How ``cfg`` differs from the config a run was trained with (``saved_text``: the text its
    checkpoints carry in ``meta['config']``): up to ``limit`` lines ``key: old -> new`` and a
    count of the rest. Empty when they agree or the saved text cannot be read."""
    try:
        saved = Config.fromstring(saved_text, ".py").to_dict()
    except Exception:  # an unreadable text says nothing about a difference
        return []
    old, new = _flat({k: v for k, v in saved.items() if k not in RUN_KEYS}), \
        _flat({k: v for k, v in cfg.to_dict().items() if k not in RUN_KEYS})
    keys = sorted(k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>"))
    lines = [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"and {len(keys) - limit} more")
    return lines


def dump_config(cfg: Config, path: str) -> None:
    """Write the resolved config so that ``load_config(path)`` gives an identical config."""
    cfg.dump(path)
