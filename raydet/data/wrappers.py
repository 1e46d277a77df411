"""mmdet 2.x's dataset wrappers: ``RepeatDataset``, ``ConcatDataset``, ``ClassBalancedDataset``.

They hold their children (built datasets), expose ``CLASSES``, ``flag`` (aspect groups, for the
samplers) and ``get_cat_ids``, and map an index onto a child's. Augmentation stays a pure
function of the sample (see :mod:`raydet.data.dataset`): a wrapper passes its child a
:class:`SampleKey` whose ``stream`` tells apart the copies it makes — the ``k``-th repetition of an
image, or the ``i``-th concatenated dataset, draws from stream ``stream * n + k`` (``n``: the
number of copies or datasets at that level), so copy 0 of dataset 0 draws exactly what the
unwrapped dataset draws, and two copies of one image are augmented independently.
"""
from __future__ import annotations

import bisect
import logging
import math
from collections import defaultdict

import numpy as np

from ..errors import ConfigError
from .dataset import DATASETS, SampleKey

logger = logging.getLogger("raydet")


def _key(key) -> SampleKey:
    return key if isinstance(key, SampleKey) else SampleKey(int(key), 0)


class _Wrapper:
    def __init__(self, dataset):
        self.dataset = dataset
        self.CLASSES = dataset.CLASSES

    @property
    def METRICS(self):  # noqa: N802 (the datasets' attribute name)
        return getattr(self.dataset, "METRICS", None)

    def metric_keys(self, metrics):
        keys = self.dataset.metric_keys(metrics) if hasattr(self.dataset, "metric_keys") else None
        if keys is not None and isinstance(self, ConcatDataset):
            keys = [f"{i}_{k}" for i in range(len(self.datasets)) for k in keys]
        return keys

    def _child(self, key, index, copy, copies):
        key = _key(key)
        return self.dataset[SampleKey(index, key.epoch, key.stream * copies + copy)]


@DATASETS.register()
class RepeatDataset(_Wrapper):
    """``dataset`` repeated ``times`` times (one "epoch" is ``times`` passes over it): fewer
    epoch ends, loader restarts and evaluations for a small dataset."""

    def __init__(self, dataset, times: int):
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ConfigError(f"RepeatDataset.times must be an int >= 1, got {times!r}")
        super().__init__(dataset)
        self.times = times
        self._ori_len = len(dataset)
        self.flag = np.tile(np.asarray(dataset.flag), times)

    def __len__(self):
        return self.times * self._ori_len

    def __getitem__(self, key):
        index = _key(key).index
        return self._child(key, index % self._ori_len, index // self._ori_len, self.times)

    def get_cat_ids(self, idx):
        return self.dataset.get_cat_ids(idx % self._ori_len)


@DATASETS.register()
class ConcatDataset(_Wrapper):
    """``datasets`` one after another. ``CLASSES`` are the first's (mmdet's rule). With
    ``separate_eval`` (the default) :meth:`evaluate` evaluates each on its slice of the results
    and prefixes the metrics with the dataset's position (``0_bbox_mAP``, ``1_bbox_mAP``);
    COCO-style datasets cannot be evaluated as one whole (mmdet refuses it too)."""

    def __init__(self, datasets, separate_eval: bool = True):
        datasets = list(datasets)
        if not datasets:
            raise ConfigError("ConcatDataset needs at least one dataset")
        super().__init__(datasets[0])
        self.datasets, self.separate_eval = datasets, separate_eval
        self.cumulative_sizes = np.cumsum([len(d) for d in datasets]).tolist()
        self.flag = np.concatenate([np.asarray(d.flag) for d in datasets])

    def __len__(self):
        return self.cumulative_sizes[-1]

    def _locate(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a ConcatDataset of {len(self)}")
        which = bisect.bisect_right(self.cumulative_sizes, index)
        return which, index - (self.cumulative_sizes[which - 1] if which else 0)

    def __getitem__(self, key):
        key = _key(key)
        which, local = self._locate(key.index)
        return self.datasets[which][SampleKey(local, key.epoch, key.stream * len(self.datasets) + which)]

    def get_cat_ids(self, idx):
        which, local = self._locate(idx)
        return self.datasets[which].get_cat_ids(local)

    def evaluate(self, results, logger=None, **kwargs):
        if len(results) != len(self):
            raise ValueError(f"{len(results)} results for a ConcatDataset of {len(self)} images")
        if not self.separate_eval:
            raise ConfigError("ConcatDataset(separate_eval=False): evaluating concatenated COCO-style datasets "
                              "as a whole is not supported (as in mmdet); set separate_eval=True")
        out, start = {}, 0
        for i, (dataset, end) in enumerate(zip(self.datasets, self.cumulative_sizes)):
            for key, value in dataset.evaluate(results[start:end], logger=logger, **kwargs).items():
                out[f"{i}_{key}"] = value
            start = end
        return out


@DATASETS.register()
class ClassBalancedDataset(_Wrapper):
    """Repeats images that hold rare categories (mmdet's ``ClassBalancedDataset``, from LVIS).

    With ``f(c)`` the fraction of images holding category ``c`` and ``t = oversample_thr``:
    ``r(c) = max(1, sqrt(t / f(c)))``, an image's factor is the largest ``r(c)`` of its
    categories (1 for an image without any), and it appears ``ceil(factor)`` times. With
    ``filter_empty_gt=False`` images without boxes count as one more category of their own.
    """

    def __init__(self, dataset, oversample_thr: float, filter_empty_gt: bool = True):
        if not isinstance(oversample_thr, (int, float)) or isinstance(oversample_thr, bool) or oversample_thr <= 0:
            raise ConfigError(f"ClassBalancedDataset.oversample_thr must be a number > 0, got {oversample_thr!r}")
        super().__init__(dataset)
        self.oversample_thr, self.filter_empty_gt = float(oversample_thr), filter_empty_gt
        self.repeat_factors = self._repeat_factors(dataset, self.oversample_thr)
        # arrays, not lists of python ints: loader processes share them with their parent (no
        # reference counts to write)
        self.repeat_factors = np.asarray(self.repeat_factors, np.float64)
        copies = np.ceil(self.repeat_factors).astype(np.int64)
        self.repeat_indices = np.repeat(np.arange(len(copies), dtype=np.int64), copies)
        starts = np.repeat(np.cumsum(copies) - copies, copies)
        self.copy_of = np.arange(len(self.repeat_indices), dtype=np.int64) - starts
        self._copies = int(copies.max()) if len(copies) else 1
        self.flag = np.asarray(dataset.flag)[self.repeat_indices]

    def _cats(self, dataset, idx):
        cats = {int(c) for c in dataset.get_cat_ids(idx)}
        if not cats and not self.filter_empty_gt:
            cats = {len(self.CLASSES)}
        return cats

    def _repeat_factors(self, dataset, thr):
        n = len(dataset)
        cats = [self._cats(dataset, i) for i in range(n)]
        freq = defaultdict(int)
        for image_cats in cats:
            for c in image_cats:
                freq[c] += 1
        repeat = {c: max(1.0, math.sqrt(thr / (count / n))) for c, count in freq.items()}
        return [max(repeat[c] for c in image_cats) if image_cats else 1.0 for image_cats in cats]

    def __len__(self):
        return len(self.repeat_indices)

    def __getitem__(self, key):
        index = _key(key).index
        return self._child(key, int(self.repeat_indices[index]), int(self.copy_of[index]), self._copies)

    def get_cat_ids(self, idx):
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
