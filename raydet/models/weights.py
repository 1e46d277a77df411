"""Pretrained backbones and mmdet 2.x zoo checkpoints.

``checkpoint_path(spec)`` resolves mmdet's checkpoint names — ``torchvision://NAME``,
``open-mmlab://NAME`` (mmcv 1.x's model-zoo tables), an ``http(s)://`` URL
or a file path — to a file in torch hub's cache (``$TORCH_HOME/hub/checkpoints``, the file name
of the URL, as torchvision and mmcv name them). A missing file is downloaded unless
``RAYDET_OFFLINE=1`` or the network fails; then :class:`ConfigError` names the file to place.
:func:`resolve_pretrained` does that for every checkpoint a model config names, before mmcv's own
loader (``init_weights``) reads the files; mmdet's zoo checkpoints load as they are (the models
are mmdet's own).
"""
from __future__ import annotations

import json
import logging
import os

import torch

from ..errors import ConfigError

logger = logging.getLogger("raydet")


def _hub_table(name: str) -> dict:
    import mmcv
    path = os.path.join(os.path.dirname(mmcv.__file__), "model_zoo", name)
    with open(path) as f:
        return json.load(f)


def checkpoint_url(spec: str) -> str | None:
    """The download URL of ``spec`` (``None`` for a file path)."""
    if spec.startswith("torchvision://"):
        name = spec[len("torchvision://"):]
        table = _hub_table("torchvision_0.12.json")
        if name not in table:
            raise ConfigError(f"unknown checkpoint {spec!r}; torchvision:// names: {', '.join(sorted(table))}")
        return table[name]
    if spec.startswith(("open-mmlab://", "openmmlab://")):
        name = spec.split("://", 1)[1]
        name = _hub_table("deprecated.json").get(name, name)
        table = _hub_table("open_mmlab.json")
        if name not in table:
            raise ConfigError(f"unknown checkpoint {spec!r}; open-mmlab:// names: {', '.join(sorted(table))}")
        return table[name]
    if spec.startswith(("http://", "https://")):
        return spec
    return None


def checkpoint_path(spec: str) -> str:
    """A local file for ``spec`` (see the module doc); raises :class:`ConfigError` naming the
    file when it is absent and cannot be downloaded."""
    url = checkpoint_url(spec)
    if url is None:
        path = os.path.expanduser(spec)
        if not os.path.isfile(path):
            raise ConfigError(f"checkpoint file not found: {path}")
        return path
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
    if os.path.isfile(path):
        return path
    if os.environ.get("RAYDET_OFFLINE") == "1":
        raise ConfigError(f"{spec} is not in the cache and RAYDET_OFFLINE=1: download {url} and place it at {path}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, progress=False)
    except Exception as exc:  # no network, proxy refusal, HTTP error: the remedy is the same
        raise ConfigError(f"could not download {spec} ({type(exc).__name__}: {str(exc)[:120]}); "
                          f"download {url} and place it at {path}") from None
    return path


def resolve_pretrained(model_cfg, where: str = "model"):
    """A copy of ``model_cfg`` whose ``init_cfg=dict(type='Pretrained', checkpoint=SPEC)`` entries
    and older ``pretrained=SPEC`` keys name local files (:func:`checkpoint_path`: downloaded once
    into torch hub's cache, or a :class:`ConfigError` naming the file and where to put it).
    ``model_cfg`` itself is not changed."""
    def walk(node, path):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                sub = f"{path}.{key}"
                if key == "pretrained" and isinstance(value, str):
                    value = _local(value, sub)
                elif key == "init_cfg":
                    entries = value if isinstance(value, (list, tuple)) else [value]
                    fixed = [dict(e, checkpoint=_local(e["checkpoint"], f"{sub}.checkpoint"))
                             if isinstance(e, dict) and e.get("type") == "Pretrained" and isinstance(e.get("checkpoint"), str)
                             else e for e in entries]
                    value = fixed if isinstance(value, (list, tuple)) else fixed[0]
                else:
                    value = walk(value, sub)
                out[key] = value
            return type(node)(out) if not hasattr(node, "to_dict") else out
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v, f"{path}.{i}") for i, v in enumerate(node))
        return node

    def _local(spec, key):
        try:
            return checkpoint_path(spec)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None

    return walk(model_cfg, where)
