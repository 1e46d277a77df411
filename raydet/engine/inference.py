"""Running a detector over an evaluation loader, on one rank or all."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..progress import ProgressBar
from .dist import broadcast_object, gather_objects, get_world_size, is_main


def _default_sigterm() -> None:
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# A forked child (mmdet's eval_map pool, a loader worker) inherits its parent's Python SIGTERM
# handler: Ray's drivers and workers install one that raises SystemExit. A pool's terminate()
# whose signal lands while the child runs a __del__ has that SystemExit swallowed, and the parent
# then waits for the child forever (seen: a VOC evaluation hung 30 min). Children take the
# default action again: SIGTERM ends them in the kernel, whatever they run.
os.register_at_fork(after_in_child=_default_sigterm)


def encode_mask_results(result):
    """mmdet's ``encode_mask_results``: a ``(bbox_result, segm_result)`` prediction with each
    binary ``HxW`` mask as a COCO RLE (a few hundred bytes instead of ``H*W``, which is what
    crosses to rank 0 and into ``--out`` files); a box-only prediction is returned as it is."""
    if not isinstance(result, tuple):
        return result
    from pycocotools import mask as mask_util
    bbox_result, segm_result = result[0], result[1]
    encoded = [[m if isinstance(m, dict) else mask_util.encode(np.asfortranarray(np.asarray(m, dtype=np.uint8)))
                for m in masks] for masks in segm_result]
    return (bbox_result, encoded) + tuple(result[2:])


@torch.no_grad()
def inference(model, data_loader, progress: bool = False, autocast=None, progress_log=None) -> list:
    """This rank's predictions over ``data_loader``, in loader order (``model`` left in eval mode);
    masks as RLE (:func:`encode_mask_results`).

    ``progress`` shows a bar over the whole dataset (rank 0 counts ``world_size`` images per image
    it predicts, as mmdet's multi_gpu_test does); ``progress_log``: where a bar that is not on a
    terminal writes its lines (see :class:`ProgressBar`)."""
    from ..data.loader import batch_to_device
    model.eval()
    # a bare detector on a GPU (raydet test) gets host tensors from the loader; DDP moves them itself
    device = next(model.parameters(), torch.empty(0)).device
    results = []
    bar = ProgressBar(len(data_loader.dataset), log=progress_log, desc="inference: ") if progress and is_main() else None
    for data in data_loader:
        data = batch_to_device(data, device)
        if autocast is not None:
            with autocast():
                out = model(return_loss=False, rescale=True, **data)
        else:
            out = model(return_loss=False, rescale=True, **data)
        results.extend(encode_mask_results(r) for r in out)
        if bar:
            bar.update(min(len(out) * get_world_size(), bar.total - bar.done))
    return results


def evaluate_distributed(model, data_loader, eval_kwargs: dict, logger=None, progress=False, autocast=None,
                         progress_log=None):
    """Every rank predicts its shard; rank 0 gathers them in rank order (the shards are contiguous,
    so that is dataset order), runs ``dataset.evaluate`` and broadcasts the metrics. Every rank
    must call this. Returns ``(metrics, results)``; ``results`` is ``None`` except on rank 0."""
    part = inference(model, data_loader, progress=progress, autocast=autocast, progress_log=progress_log)
    parts = gather_objects(part)
    metrics, results = None, None
    if is_main():
        results = [r for p in parts for r in p]
        metrics = data_loader.dataset.evaluate(results, logger=logger, **eval_kwargs)
    return broadcast_object(metrics), results


@torch.no_grad()
def _input_shape(sample: dict) -> tuple:
    images = sample["img"] if isinstance(sample["img"], (list, tuple)) else [sample["img"]]
    return tuple(tuple(getattr(image, "shape", ())) for image in images)


def predict_samples(model, samples: list[dict]) -> list:
    """mmdet's per-image results (see :func:`inference_detector`) for test-pipeline ``samples``,
    in their order, on the model's device: samples of one input shape run as one batch, so no
    image is padded to another's shape (padding changes what GroupNorm and the heads see: a
    batch of mixed portrait and landscape images gave other boxes, some inside the padding,
    than the same images one at a time); the results are those of batch size 1."""
    from ..data.loader import batch_to_device, collate
    device = next(model.parameters()).device
    groups: dict[tuple, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(_input_shape(sample), []).append(i)
    results = [None] * len(samples)
    for members in groups.values():
        batch = batch_to_device(collate([samples[i] for i in members]), device)
        for i, result in zip(members, model(return_loss=False, rescale=True, **batch)):
            results[i] = result
    return results
