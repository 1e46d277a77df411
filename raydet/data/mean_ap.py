"""mmdet 2.x's ``eval_map``: per-class average precision at one IoU threshold (VOC's metric).

For each class, all detections of the dataset sorted by score: a detection whose best-matching
ground truth (IoU ``>= iou_thr``) is ignored (VOC ``difficult``) counts as neither true nor false
positive; one matching a not yet covered box is a true positive (the box is then covered); any
other is a false positive. ``recall = tp / #(not ignored boxes)``, ``precision = tp / (tp + fp)``.
AP is the area under the precision envelope (``mode='area'``), or the mean of the best
precision at recalls 0, 0.1, ..., 1 (``'11points'``, VOC2007's). mAP averages the classes that
have ground truth. With ``use_legacy_coordinate`` (mmdet's VOC setting) widths are ``x2 - x1 + 1``.
"""
from __future__ import annotations

import logging

import numpy as np


def bbox_overlaps(a: np.ndarray, b: np.ndarray, legacy: bool = False) -> np.ndarray:
    """IoU of ``[N, 4]`` against ``[M, 4]`` ``(x1, y1, x2, y2)`` boxes: ``[N, M]``."""
    extra = 1.0 if legacy else 0.0
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = np.clip(rb - lt + extra, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = np.maximum(area_a[:, None] + area_b[None, :] - inter, np.finfo(np.float32).eps)
    return inter / union


def average_precision(recalls: np.ndarray, precisions: np.ndarray, mode: str = "area") -> float:
    """AP from a class's recall/precision curve (``recalls`` ascending)."""
    if mode == "area":
        mrec = np.concatenate([[0.0], recalls, [1.0]])
        mpre = np.concatenate([[0.0], precisions, [0.0]])
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        idx = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
    if mode == "11points":
        ap = 0.0
        for thr in np.arange(0, 1.1, 0.1):
            precs = precisions[recalls >= thr]
            ap += precs.max() if precs.size else 0.0
        return float(ap / 11)
    raise ValueError(f"mode must be 'area' or '11points', got {mode!r}")


def _tpfp(dets: np.ndarray, gts: np.ndarray, ignored: np.ndarray, iou_thr: float, legacy: bool):
    """True/false positive flags of one image's detections of one class (sorted by score)."""
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    if len(gts) == 0:
        fp[:] = 1
        return tp, fp
    ious = bbox_overlaps(dets[:, :4], gts, legacy)
    best, which = ious.max(axis=1), ious.argmax(axis=1)
    covered = np.zeros(len(gts), bool)
    for i in np.argsort(-dets[:, 4], kind="stable"):
        if best[i] >= iou_thr:
            g = which[i]
            if ignored[g]:
                continue
            if not covered[g]:
                covered[g] = True
                tp[i] = 1
            else:
                fp[i] = 1
        else:
            fp[i] = 1
    return tp, fp


def eval_map(det_results, annotations, iou_thr: float = 0.5, mode: str = "area", classes=None,
             logger: logging.Logger | None = None, use_legacy_coordinate: bool = False):
    """``(mean_ap, per_class)``. ``det_results[i][c]``: float ``[K, 5]`` detections of class ``c``
    in image ``i``; ``annotations[i]``: ``dict(bboxes [N, 4], labels [N], bboxes_ignore [M, 4],
    labels_ignore [M])``. ``per_class[c] = dict(num_gts, num_dets, recall, ap)``. The table is
    logged when ``logger`` is given."""
    num_classes = len(det_results[0]) if det_results else len(classes or ())
    per_class = []
    for c in range(num_classes):
        scores, tps, fps, num_gts = [], [], [], 0
        for result, ann in zip(det_results, annotations):
            dets = np.asarray(result[c], np.float32).reshape(-1, 5)
            keep = ann["labels"] == c
            gts = np.asarray(ann["bboxes"], np.float32).reshape(-1, 4)[keep]
            ign_keep = np.asarray(ann.get("labels_ignore", np.zeros(0, np.int64))) == c
            ign = np.asarray(ann.get("bboxes_ignore", np.zeros((0, 4))), np.float32).reshape(-1, 4)[ign_keep]
            num_gts += len(gts)
            tp, fp = _tpfp(dets, np.concatenate([gts, ign]), np.r_[np.zeros(len(gts), bool), np.ones(len(ign), bool)],
                           iou_thr, use_legacy_coordinate)
            scores.append(dets[:, 4])
            tps.append(tp)
            fps.append(fp)
        score = np.concatenate(scores) if scores else np.zeros(0)
        order = np.argsort(-score, kind="stable")
        tp = np.cumsum(np.concatenate(tps)[order]) if scores else np.zeros(0)
        fp = np.cumsum(np.concatenate(fps)[order]) if scores else np.zeros(0)
        eps = np.finfo(np.float32).eps
        recalls = tp / max(num_gts, eps)
        precisions = tp / np.maximum(tp + fp, eps)
        per_class.append(dict(num_gts=num_gts, num_dets=len(score), ap=average_precision(recalls, precisions, mode),
                              recall=float(recalls[-1]) if len(recalls) else 0.0))
    aps = [r["ap"] for r in per_class if r["num_gts"] > 0]
    mean_ap = float(np.mean(aps)) if aps else 0.0
    if logger is not None:
        names = list(classes) if classes is not None else [str(c) for c in range(num_classes)]
        rows = [f"| {'class':<15} | {'gts':>5} | {'dets':>6} | {'recall':>6} | {'ap':>6} |"]
        rows += [f"| {n:<15} | {r['num_gts']:>5} | {r['num_dets']:>6} | {r['recall']:6.3f} | {r['ap']:6.3f} |"
                 for n, r in zip(names, per_class)]
        rows.append(f"| {'mAP':<15} | {'':>5} | {'':>6} | {'':>6} | {mean_ap:6.3f} |")
        logger.info(f"AP at IoU {iou_thr} ({mode}):\n" + "\n".join(rows))
    return mean_ap, per_class
