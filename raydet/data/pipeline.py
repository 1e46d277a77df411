"""mmdet's own pipelines (``mmdet.datasets.pipelines``), run reproducibly per sample.

mmdet's transforms draw from the process-global generators (``random``, numpy's, torch's).
:func:`seeded` makes those draws a pure function of the sample's key ``(seed, epoch, index)``,
whichever loader process runs it, and restores the generators afterwards, so that loading a
batch in the training process (``workers_per_gpu=0``) never moves the training's own random
stream. A pipeline's outputs are returned without mmcv's ``DataContainer`` wrappers: raydet's
collate batches them (``img`` padded and stacked, everything else a list per image).
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from ..errors import ConfigError
from ..ops import mmdet_fixes
from ..registry import Registry

mmdet_fixes.apply()  # mmdet's datasets, samplers and evaluation on this numpy (and without CUDA)


def _mmdet_pipelines() -> dict:
    from mmdet.datasets.builder import PIPELINES as MMDET_PIPELINES
    return MMDET_PIPELINES.module_dict


#: the transforms a pipeline may name: mmdet's (and a user's registered in mmdet's ``PIPELINES``)
PIPELINES = Registry("pipeline transform", fallback=_mmdet_pipelines)


@contextlib.contextmanager
def seeded(*key: int):
    """Seed ``random``, numpy's and torch's global generators from ``key`` (ints) for the
    duration of the block, then give them back their states."""
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    words = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(3)
    random.seed(int(words[0]))
    np.random.seed(int(words[1]))
    torch.manual_seed(int(words[2]))
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


def uncontain(value):
    """A pipeline output with every ``DataContainer`` replaced by what it holds (lists too)."""
    from mmcv.parallel import DataContainer
    if isinstance(value, DataContainer):
        return value.data
    if isinstance(value, dict):
        return {k: uncontain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [uncontain(v) for v in value]
    return value


class Sample(dict):
    """A sample as raydet's datasets give it: mmdet's pipeline output without its
    ``DataContainer`` wrappers, and in ``stacked`` each key that mmdet's formatting marked to be
    stacked into one batch tensor (``DataContainer(stack=True)``: ``img``, ``gt_semantic_seg``)
    with its ``(padding_value, pad_dims)``, which :func:`raydet.data.collate` batches with
    mmcv's own ``collate``. Every other key batches as a list."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stacked: dict = {}

    @classmethod
    def of(cls, output: dict) -> "Sample":
        """The sample of a pipeline output (a dict of values and ``DataContainer``s)."""
        from mmcv.parallel import DataContainer
        sample = cls(uncontain(output))
        for key, item in output.items():
            first = item[0] if isinstance(item, list) and item else item  # MultiScaleFlipAug: one per view
            if isinstance(first, DataContainer) and first.stack:
                sample.stacked[key] = (first.padding_value, first.pad_dims)
        return sample


class Pipeline:
    """mmdet's ``Compose`` of ``steps`` (dicts of mmdet's ``PIPELINES``), returning a
    :class:`Sample`, or ``None`` where a transform drops the sample."""

    def __init__(self, steps, where: str = "pipeline"):
        from mmdet.datasets.pipelines import Compose
        steps = list(steps or [])
        for j, step in enumerate(steps):
            PIPELINES.check(step, f"{where}.{j}")
        try:
            self.compose = Compose(steps)
        except (KeyError, TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"{where}: {type(exc).__name__}: {exc}") from None
        self.steps = steps

    def __call__(self, results: dict):
        out = self.compose(results)
        return None if out is None else Sample.of(out)

    def __repr__(self):
        return f"Pipeline({[s.get('type') for s in self.steps]})"
