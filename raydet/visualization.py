"""Detections drawn on an image, in mmdet 2.x's look (``imshow_det_bboxes``): one colour per
class, the box outlined, ``class|score`` on a filled label above it, masks blended in."""
from __future__ import annotations

import os

import cv2
import numpy as np


def palette(num_classes: int) -> np.ndarray:
    """``uint8 [num_classes, 3]`` BGR colours, the same for every call (mmdet draws a random
    palette from ``RandomState(42)`` too, so colours stay put between images and runs)."""
    return np.random.RandomState(42).randint(0, 256, (max(num_classes, 1), 3)).astype(np.uint8)


def draw_det_result(img, result, class_names, score_thr: float = 0.3, thickness: int = 2,
                    font_scale: float = 0.5, mask_alpha: float = 0.5, out_file: str | None = None,
                    scores: bool = True, scale: float = 1.0) -> np.ndarray:
    """Draw mmdet's ``result`` for one image (a list over classes of ``[N, 5]`` arrays, or
    ``(bbox_result, segm_result)``) on ``img`` (a path or a BGR ``uint8 [H, W, 3]`` array, left
    unchanged), enlarged ``scale`` times first (small images: the boxes and labels stay legible).
    Only detections with score >= ``score_thr`` are drawn; labels read ``class|score``, or
    ``class`` alone without ``scores`` (ground truth), on a plate of the class colour kept inside
    the image; boxes and text are outlined in black, so that any colour shows on any background.
    Returns the drawn BGR image; ``out_file`` (``.png``/``.jpg``) also writes it, creating its
    directory."""
    if isinstance(img, (str, os.PathLike)):
        path = str(img)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read image {path}")
    canvas = np.ascontiguousarray(np.clip(img, 0, 255), dtype=np.uint8).copy()
    if scale != 1:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    bbox_result, segm_result = result if isinstance(result, tuple) else (result, None)
    colors = palette(len(bbox_result))
    for label, dets in enumerate(bbox_result):
        dets = np.asarray(dets, dtype=np.float32).reshape(-1, 5)
        keep = dets[:, 4] >= score_thr
        color = tuple(int(c) for c in colors[label])
        if segm_result is not None:
            for mask in (m for m, k in zip(segm_result[label], keep) if k):
                mask = _as_binary(mask)
                if scale != 1:
                    mask = cv2.resize(mask.astype(np.uint8), canvas.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
                canvas[mask] = (canvas[mask] * (1 - mask_alpha) + np.array(color) * mask_alpha).astype(np.uint8)
        for x1, y1, x2, y2, score in dets[keep]:
            name = class_names[label] if label < len(class_names) else str(label)
            _draw_box(canvas, [int(round(v * scale)) for v in (x1, y1, x2, y2)], color,
                      f"{name}|{score:.2f}" if scores else name, thickness, font_scale)
    if out_file is not None:
        _write_picture(out_file, canvas)
    return canvas


def _write_picture(path: str, canvas: np.ndarray) -> None:
    """``canvas`` to ``path`` (``.png``/``.jpg``), its directory created; ``ValueError`` otherwise."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, canvas):
        raise ValueError(f"cannot write {path}: use a .png or .jpg name")


def _draw_box(canvas, box, color, text: str, thickness: int, font_scale: float) -> None:
    """One box in ``color`` over a black outline, and its label: a plate of ``color`` above the
    box (below its top edge where there is no room above), moved left or down to stay inside the
    image, with the text in black or white (the colour's contrast) inside a black outline."""
    x1, y1, x2, y2 = box
    height, width = canvas.shape[:2]
    cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 0, 0), thickness + 2)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    left = int(np.clip(x1, 0, max(width - w - 4, 0)))
    top = y1 - h - base - thickness if y1 - h - base - thickness >= 0 else min(y1 + thickness, height - h - base)
    top = max(top, 0)
    cv2.rectangle(canvas, (left, top), (left + w + 3, top + h + base), color, cv2.FILLED)
    luma = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink, edge = ((0, 0, 0), (255, 255, 255)) if luma > 128 else ((255, 255, 255), (0, 0, 0))
    x, y = left + 2, top + h
    # the outline: the text shifted a pixel each way (a thicker stroke would also widen the glyphs)
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        cv2.putText(canvas, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, font_scale, edge, 1, cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1, cv2.LINE_AA)


def _as_binary(mask) -> np.ndarray:
    if isinstance(mask, dict):  # an RLE, as raydet test's results hold them
        from pycocotools import mask as mask_util
        return mask_util.decode(mask).astype(bool)
    return np.asarray(mask, dtype=bool)


#: transforms left out when browsing, as mmdet's browse_dataset does: the image stays a viewable
#: BGR array (not normalised, not a tensor) and every annotation stays in the results
BROWSE_SKIP = ("DefaultFormatBundle", "Normalize", "ImageToTensor", "Collect")


def _without(cfg, skip):
    """A dataset config with ``skip`` dropped from every pipeline in it (wrappers included)."""
    if isinstance(cfg, dict):
        return {k: ([t for t in v if t.get("type") not in skip] if k == "pipeline" else _without(v, skip))
                for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_without(c, skip) for c in cfg]
    return cfg


#: the file in a ``browse`` output folder listing the drawings browse wrote there (which a later
#: browse may write over; any other file it does not touch)
BROWSE_RECORD = ".raydet-browse.json"


def claim_outputs(out_dir: str, names: list[str], record: str) -> list[str]:
    """The paths of ``names`` (relative paths) in ``out_dir``, each either free or written there
    by an earlier run of the same command (listed in ``out_dir/record``, which this call extends
    before anything is written: a drawing cut short is still the command's own). Raises
    ``FileExistsError`` naming a file of a target's name that the command did not write."""
    import json
    record_path = os.path.join(out_dir, record)
    mine = set(json.load(open(record_path))) if os.path.exists(record_path) else set()
    targets = [os.path.join(out_dir, n) for n in names]
    taken = [t for t, n in zip(targets, names) if os.path.exists(t) and n not in mine]
    if taken:
        raise FileExistsError(f"{taken[0]} exists; raydet does not overwrite a file it did not write")
    os.makedirs(out_dir, exist_ok=True)
    with open(record_path, "w") as f:
        json.dump(sorted(mine | set(names)), f)
    return targets


def browse_dataset(dataset_cfg, out_dir: str, num: int | None = None, seed: int = 0, shuffle: bool = False,
                   scale: float = 1.0):
    """Draw the ground truth of ``num`` training samples after the dataset's pipeline (less
    :data:`BROWSE_SKIP`) into ``out_dir/<index>_<image name>.png``, as the model will see them:
    resized, flipped, cropped; enlarged ``scale`` times. The first ``num`` samples, or with
    ``shuffle`` ``num`` drawn with ``seed`` (which also seeds the augmentations). Yields
    ``(path, results)`` per sample. A drawing an earlier browse wrote into ``out_dir`` (listed in
    :data:`BROWSE_RECORD`) is written over; any other file of a target's name raises
    ``FileExistsError`` before anything is drawn."""
    from .data import build_dataset
    dataset = build_dataset(_without(dict(dataset_cfg), BROWSE_SKIP), seed=seed)
    count = len(dataset) if num is None else min(num, len(dataset))
    order = np.random.RandomState(seed).permutation(len(dataset))[:count] if shuffle else range(count)
    samples = [(int(i), dataset[int(i)]) for i in order]
    stem = lambda r, i: os.path.splitext(os.path.basename(r.get("ori_filename") or str(i)))[0]  # noqa: E731
    targets = claim_outputs(out_dir, [f"{i:06d}_{stem(r, i)}.png" for i, r in samples], BROWSE_RECORD)  # lossless
    for path, (_, results) in zip(targets, samples):
        _draw_ground_truth(results, dataset.CLASSES, path, scale)
        yield path, results


def _per_class(boxes, labels, num_classes: int) -> list:
    """Ground-truth ``boxes [N, 4]`` with ``labels [N]`` as a result: per class, ``[n, 5]`` with score 1."""
    boxes, labels = np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels).reshape(-1)
    return [np.concatenate([boxes[labels == c], np.ones((int((labels == c).sum()), 1), np.float32)], axis=1)
            for c in range(num_classes)]


def _style(shape, scale: float) -> dict:
    """Line width and label size for a picture of ``shape`` enlarged ``scale`` times: small
    pictures, thin lines and small labels."""
    side = min(shape[:2]) * scale
    return dict(thickness=1 if side < 200 else 2, scale=scale, font_scale=float(np.clip(side / 400, 0.25, 0.5)))


def _draw_ground_truth(results: dict, names, path: str, scale: float) -> None:
    labels = np.asarray(results["gt_labels"])
    per_class = _per_class(results["gt_bboxes"], labels, len(names))
    drawn = results["img"]
    style = dict(score_thr=0, scores=False, out_file=path, **_style(drawn.shape, scale))
    if "gt_masks" in results:
        h, w = drawn.shape[:2]
        masks = results["gt_masks"].to_ndarray().astype(bool)[:, :h, :w]  # mmdet's BitmapMasks or PolygonMasks
        per_mask = [[m for m, lab in zip(masks, labels) if lab == c] for c in range(len(names))]
        draw_det_result(drawn, (per_class, per_mask), names, **style)
    else:
        draw_det_result(drawn, per_class, names, **style)


def draw_truth_and_result(image: str, annotation: dict, result, names, score_thr: float = 0.0, scale: float = 1.0,
                          overlay: bool = False, out_file: str | None = None) -> np.ndarray:
    """mmdet's ``imshow_gt_det_bboxes`` layout for one image (a path): its ground truth
    (``annotation['bboxes']``/``['labels']``, mmdet's ``get_ann_info``; labels without scores)
    above its predictions (``result``, those scoring ``score_thr``), or both on one picture with
    ``overlay`` (boxes only: masks are drawn in the stacked layout); enlarged ``scale`` times.
    Returns the BGR picture; ``out_file`` also writes it."""
    img = cv2.imread(image, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {image}")
    style = _style(img.shape, scale)
    truth = draw_det_result(img, _per_class(annotation["bboxes"], annotation["labels"], len(names)), names,
                            score_thr=0, scores=False, **style)
    if overlay:  # onto the enlarged truth: the boxes enlarged alike, the picture not again
        boxes = result[0] if isinstance(result, tuple) else result
        boxes = [np.asarray(d, np.float32).reshape(-1, 5) * np.float32([scale] * 4 + [1]) for d in boxes]
        canvas = draw_det_result(truth, boxes, names, score_thr=score_thr, **dict(style, scale=1.0))
    else:
        gap = np.full((max(2, int(4 * scale)), truth.shape[1], 3), 255, np.uint8)
        canvas = np.concatenate([truth, gap, draw_det_result(img, result, names, score_thr=score_thr, **style)])
    if out_file is not None:
        _write_picture(out_file, canvas)
    return canvas


def draw_predictions(model, dataset, out_dir: str, count: int = 3, score_thr: float = 0.3,
                     keep_existing: bool = True) -> list[str]:
    """Predict the first ``count`` images of ``dataset`` (a test-mode dataset) with ``model``
    (a detector, or DDP around one) and draw them, full size, into ``out_dir/<image name>.png``;
    with ``keep_existing`` a file already there is moved aside first (a user's, or an earlier
    run's), else written over (a resumed run's own). Returns the paths. The model is left in
    eval mode."""
    from .engine.inference import predict_samples
    from .engine.checkpoint import move_aside
    from .engine.dist import unwrap
    module = unwrap(model)
    module.eval()
    names = list(getattr(dataset, "CLASSES", None) or [])
    written = []
    for i in range(min(count, len(dataset))):
        (result,) = predict_samples(module, [dataset[i]])
        info = dataset.data_infos[i]
        source = os.path.join(dataset.img_prefix, info["filename"]) if dataset.img_prefix else info["filename"]
        path = os.path.join(out_dir, os.path.splitext(os.path.basename(info["filename"]))[0] + ".png")
        if keep_existing:
            move_aside(path)
        draw_det_result(source, result, names, score_thr=score_thr, out_file=path)
        written.append(path)
    return written
