"""Running a detector over an evaluation loader, on one rank or all."""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from .dist import broadcast_object, gather_objects, get_world_size, is_main


class ProgressBar:
    """A one-line text progress bar on stderr (rank 0 only)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream, self.start = total, 0, stream, time.time()

    def update(self, n: int = 1):
        self.done += n
        elapsed = time.time() - self.start
        fps = self.done / elapsed if elapsed > 0 else 0.0
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        eta = (self.total - self.done) / fps if fps > 0 else 0
        self.stream.write(f"\r[{'>' * filled}{' ' * (width - filled)}] {self.done}/{self.total}, "
                          f"{fps:.1f} task/s, elapsed: {int(elapsed)}s, ETA: {int(eta)}s")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


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
def inference(model, data_loader, progress: bool = False, autocast=None) -> list:
    """This rank's predictions over ``data_loader``, in loader order (``model`` left in eval mode);
    masks as RLE (:func:`encode_mask_results`).

    ``progress`` shows a bar over the whole dataset (rank 0 counts ``world_size`` images per image
    it predicts, as mmdet's multi_gpu_test does)."""
    model.eval()
    results = []
    bar = ProgressBar(len(data_loader.dataset)) if progress and is_main() else None
    for data in data_loader:
        if autocast is not None:
            with autocast():
                out = model(return_loss=False, rescale=True, **data)
        else:
            out = model(return_loss=False, rescale=True, **data)
        results.extend(encode_mask_results(r) for r in out)
        if bar:
            bar.update(min(len(out) * get_world_size(), bar.total - bar.done))
    return results


def evaluate_distributed(model, data_loader, eval_kwargs: dict, logger=None, progress=False, autocast=None):
    """Every rank predicts its shard; rank 0 gathers them in rank order (the shards are contiguous,
    so that is dataset order), runs ``dataset.evaluate`` and broadcasts the metrics. Every rank
    must call this. Returns ``(metrics, results)``; ``results`` is ``None`` except on rank 0."""
    part = inference(model, data_loader, progress=progress, autocast=autocast)
    parts = gather_objects(part)
    metrics, results = None, None
    if is_main():
        results = [r for p in parts for r in p]
        metrics = data_loader.dataset.evaluate(results, logger=logger, **eval_kwargs)
    return broadcast_object(metrics), results
