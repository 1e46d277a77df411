"""mmdet 2.x's dataset wrappers, indexed by sample keys: ``RepeatDataset``, ``ConcatDataset``,
``ClassBalancedDataset`` are mmdet's own classes (their ``CLASSES``, ``flag``, ``get_cat_ids``,
repeat factors and ``evaluate``) with one method of raydet's, ``__getitem__``.

Augmentation stays a pure function of the sample (see :mod:`raydet.data.dataset`): a wrapper
passes its child a :class:`SampleKey` whose ``stream`` tells apart the copies it makes — the
``k``-th repetition of an image, or the ``i``-th concatenated dataset, draws from stream
``stream * n + k`` (``n``: the number of copies or datasets at that level), so copy 0 of dataset 0
draws exactly what the unwrapped dataset draws, and two copies of one image are augmented
independently (mmdet's wrappers pass a plain index, and its loader seeds per process).
"""
from __future__ import annotations

import bisect

import numpy as np
from mmdet.datasets import dataset_wrappers as mmdet_wrappers

from ..errors import ConfigError
from .dataset import DATASETS, SampleKey, as_key


class _Keyed:
    """What raydet's wrappers add to mmdet's: the datasets' ``METRICS``/``metric_keys`` (the
    metrics a run asks for are checked, and their names known, before training)."""

    @property
    def METRICS(self):  # noqa: N802 (the datasets' attribute name)
        return getattr(self.dataset, "METRICS", None)

    def metric_keys(self, metrics):
        return self.dataset.metric_keys(metrics) if hasattr(self.dataset, "metric_keys") else None

    def _child(self, key, index, copy, copies):
        key = as_key(key)
        return self.dataset[SampleKey(index, key.epoch, key.stream * copies + copy)]


@DATASETS.register()
class RepeatDataset(_Keyed, mmdet_wrappers.RepeatDataset):
    """``dataset`` repeated ``times`` times (one "epoch" is ``times`` passes over it): fewer
    epoch ends, loader restarts and evaluations for a small dataset."""

    def __init__(self, dataset, times: int):
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ConfigError(f"RepeatDataset.times must be an int >= 1, got {times!r}")
        super().__init__(dataset, times)

    def __getitem__(self, key):
        index = as_key(key).index
        return self._child(key, index % self._ori_len, index // self._ori_len, self.times)


@DATASETS.register()
class ConcatDataset(_Keyed, mmdet_wrappers.ConcatDataset):
    """``datasets`` one after another. ``CLASSES`` are the first's (mmdet's rule). With
    ``separate_eval`` (the default) :meth:`evaluate` is mmdet's: each dataset evaluated on its
    slice of the results, the metrics prefixed with the dataset's position (``0_bbox_mAP``,
    ``1_bbox_mAP``). Evaluating them as one whole is refused, as mmdet refuses it for COCO: raydet's
    datasets keep their annotations in per-dataset indexes that cannot be concatenated."""

    def __init__(self, datasets, separate_eval: bool = True):
        datasets = list(datasets)
        if not datasets:
            raise ConfigError("ConcatDataset needs at least one dataset")
        try:
            super().__init__(datasets, separate_eval)
        except NotImplementedError as exc:
            raise ConfigError(f"ConcatDataset(separate_eval={separate_eval}): {exc}") from None

    @property
    def dataset(self):  # the first dataset answers for the metrics (mmdet: CLASSES are the first's)
        return self.datasets[0]

    def metric_keys(self, metrics):
        keys = super().metric_keys(metrics)
        return None if keys is None else [f"{i}_{k}" for i in range(len(self.datasets)) for k in keys]

    def __getitem__(self, key):
        key = as_key(key)
        if not 0 <= key.index < len(self):
            raise IndexError(f"index {key.index} out of range for a ConcatDataset of {len(self)}")
        which = bisect.bisect_right(self.cumulative_sizes, key.index)
        local = key.index - (self.cumulative_sizes[which - 1] if which else 0)
        return self.datasets[which][SampleKey(local, key.epoch, key.stream * len(self.datasets) + which)]

    def evaluate(self, results, logger=None, **kwargs):
        if len(results) != len(self):
            raise ValueError(f"{len(results)} results for a ConcatDataset of {len(self)} images")
        if not self.separate_eval:
            raise ConfigError("ConcatDataset(separate_eval=False): evaluating concatenated datasets as a whole "
                              "is not supported (mmdet refuses it for COCO too); set separate_eval=True")
        return super().evaluate(results, logger=logger, **kwargs)


@DATASETS.register()
class ClassBalancedDataset(_Keyed, mmdet_wrappers.ClassBalancedDataset):
    """Repeats images that hold rare categories (mmdet's, from LVIS): with ``f(c)`` the fraction
    of images holding category ``c`` and ``t = oversample_thr``, ``r(c) = max(1, sqrt(t / f(c)))``;
    an image appears ``ceil`` of its categories' largest ``r(c)`` times."""

    def __init__(self, dataset, oversample_thr: float, filter_empty_gt: bool = True):
        if not isinstance(oversample_thr, (int, float)) or isinstance(oversample_thr, bool) or oversample_thr <= 0:
            raise ConfigError(f"ClassBalancedDataset.oversample_thr must be a number > 0, got {oversample_thr!r}")
        super().__init__(dataset, oversample_thr, filter_empty_gt)
        # arrays, not mmdet's lists of python ints: loader processes share them with their parent
        # (no reference counts to write); copy_of[i]: which copy of its image sample i is
        self.repeat_indices = np.asarray(self.repeat_indices, np.int64)
        starts = np.flatnonzero(np.r_[True, self.repeat_indices[1:] != self.repeat_indices[:-1]])
        counts = np.diff(np.r_[starts, len(self.repeat_indices)])
        self.copy_of = np.arange(len(self.repeat_indices), dtype=np.int64) - np.repeat(starts, counts)
        self._copies = int(counts.max()) if len(counts) else 1

    def __getitem__(self, key):
        index = as_key(key).index
        return self._child(key, int(self.repeat_indices[index]), int(self.copy_of[index]), self._copies)

    def get_cat_ids(self, idx):  # mmdet's has get_ann_info only; a wrapper around this one asks for these
        return self.dataset.get_cat_ids(int(self.repeat_indices[idx]))


WRAPPERS = {"RepeatDataset": "dataset", "ClassBalancedDataset": "dataset", "ConcatDataset": "datasets"}
#: per-dataset lists of mmdet's ``ann_file=[a, b]`` form; other keys are shared
PER_FILE_KEYS = ("ann_file", "img_prefix", "seg_prefix", "proposal_file")


def split_ann_files(cfg: dict) -> list[dict]:
    """mmdet's ``_concat_dataset``: ``ann_file=[a, b]`` (with ``img_prefix``, ``seg_prefix``,
    ``proposal_file`` lists of the same length, or one value for all) as one config per file."""
    files = list(cfg["ann_file"])
    out = []
    for i in range(len(files)):
        one = {k: v for k, v in cfg.items() if k != "separate_eval"}
        for key in PER_FILE_KEYS:
            value = cfg.get(key)
            if isinstance(value, (list, tuple)):
                if len(value) != len(files):
                    raise ConfigError(f"{key} has {len(value)} entries for {len(files)} ann_file entries")
                one[key] = value[i]
        out.append(one)
    return out
