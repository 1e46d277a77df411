"""Datasets, mmdet-2.x pipeline transforms, samplers and loaders. Imports no ray."""
from .dataset import DATASETS, CocoDataset, DataWarning, SampleKey, ShapesDataset, sample_rng
from .loader import GroupSampler, ShardSampler, build_dataloader, collate
from .pipelines import PIPELINES, Compose, PolygonMasks


def build_dataset(cfg: dict, seed: int = 0, **overrides):
    """Build a dataset from ``dict(type=..., ...)``; ``seed`` seeds its augmentations."""
    cfg = dict(cfg)
    cfg.update(overrides)
    if "seed" not in cfg:
        cfg["seed"] = seed
    return DATASETS.build(cfg, "dataset")


__all__ = ["DATASETS", "PIPELINES", "CocoDataset", "ShapesDataset", "DataWarning", "SampleKey",
           "sample_rng", "GroupSampler", "ShardSampler", "build_dataloader", "build_dataset",
           "collate", "Compose", "PolygonMasks"]
