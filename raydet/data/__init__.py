"""Datasets (mmdet 2.x's interface over raydet's compact annotation index), mmdet's own pipelines,
samplers and loaders. Imports no ray."""
from .dataset import DATASETS, CocoDataset, DataWarning, SampleKey, ShapesDataset, own_dataset
from .loader import GroupSampler, ShardSampler, build_dataloader, collate
from .pipeline import PIPELINES, Pipeline
from .voc import VOCDataset, XMLDataset
from .wrappers import WRAPPERS, ClassBalancedDataset, ConcatDataset, RepeatDataset, split_ann_files
from ..errors import ConfigError


def build_dataset(cfg, seed: int = 0, where: str = "dataset", **overrides):
    """Build a dataset from ``dict(type=..., ...)`` as mmdet 2.x's ``build_dataset`` does: a list
    of configs, ``ConcatDataset(datasets=[...])`` and ``ann_file=[a, b]`` become a
    :class:`ConcatDataset`; ``RepeatDataset``/``ClassBalancedDataset`` build their ``dataset``.
    ``seed`` seeds the augmentations; ``overrides`` (e.g. ``test_mode``) go to the datasets that
    read files, not to the wrappers."""
    if isinstance(cfg, (list, tuple)):
        return ConcatDataset([build_dataset(c, seed, f"{where}.{i}", **overrides) for i, c in enumerate(cfg)])
    cfg = dict(cfg)
    kind = cfg.get("type")
    if kind in WRAPPERS:
        field = WRAPPERS[kind]
        children = cfg.pop(field, None)
        if children is None:
            raise ConfigError(f"{where}: {kind} needs '{field}'")
        if field == "datasets":
            cfg[field] = [build_dataset(c, seed, f"{where}.{field}.{i}", **overrides) for i, c in enumerate(children)]
        else:
            cfg[field] = build_dataset(children, seed, f"{where}.{field}", **overrides)
        return DATASETS.build(cfg, where)
    if not own_dataset(cfg):  # another type of mmdet's registry: mmdet's own class, keyed by raydet
        from .mmdet_datasets import build_mmdet_dataset
        cfg.pop("seed", None)
        return build_mmdet_dataset(cfg, seed, where, overrides.get("test_mode"))
    if isinstance(cfg.get("ann_file"), (list, tuple)):
        parts = split_ann_files(cfg)
        return ConcatDataset([build_dataset(c, seed, f"{where}.ann_file.{i}", **overrides) for i, c in enumerate(parts)],
                             separate_eval=cfg.get("separate_eval", True))
    cfg.update(overrides)
    if "seed" not in cfg:
        cfg["seed"] = seed
    return DATASETS.build(cfg, where)


__all__ = ["DATASETS", "PIPELINES", "CocoDataset", "ShapesDataset", "RepeatDataset", "ConcatDataset",
           "ClassBalancedDataset", "VOCDataset", "XMLDataset", "DataWarning", "SampleKey",
           "GroupSampler", "ShardSampler", "build_dataloader", "build_dataset",
           "collate", "Pipeline"]
