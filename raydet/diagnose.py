"""What mmdetection 2.x's ``tools/analysis_tools`` tell about a model, on built objects: the
confusion matrix (mmdet's own ``confusion_matrix.py``), each image's AP (mmdet's ``eval_map``),
inference speed (``benchmark.py``'s loop, on CPU or GPU) and parameters with FLOPs
(``get_flops.py``'s question, counted by torch). The CLI builds the model, dataset and results."""
from __future__ import annotations

import importlib.util
import itertools
import os
import time

import numpy as np
import torch

from .errors import DataError, RaydetError


def mmdet_tool(name: str):
    """mmdet's own script ``tools/<name>.py`` as a module, from the copy its wheel ships
    (``mmdet/.mim/tools``, mim's layout) or, for a source checkout, the repository's ``tools/``.
    Raises :class:`RaydetError` when this mmdet has neither."""
    import mmdet
    package = os.path.dirname(mmdet.__file__)
    for root in (os.path.join(package, ".mim", "tools"), os.path.join(os.path.dirname(package), "tools")):
        path = os.path.join(root, name + ".py")
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("mmdet_tools." + name.replace("/", "."), path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise RaydetError(f"mmdet's tools/{name}.py is not installed with mmdet ({package}): reinstall "
                      "mmdet==2.28.2 from its wheel, which ships its tools")


def check_results(results, dataset, source: str) -> None:
    """``results`` (mmdet's test results, as ``raydet test --out x.pkl`` writes them) fit
    ``dataset``: one per image, each a list over its classes of ``[N, 5]`` arrays (or a
    ``(boxes, masks)`` tuple). Raises :class:`DataError` naming ``source`` otherwise."""
    if not isinstance(results, (list, tuple)) or len(results) != len(dataset):
        count = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
        raise DataError(f"{source}: {count} results for the {len(dataset)} images of the test set; give the "
                        "results of `raydet test CONFIG CKPT --out RESULTS.pkl` with this config")
    boxes = [r[0] if isinstance(r, tuple) else r for r in results]
    classes = len(dataset.CLASSES)
    for i, per_class in enumerate(boxes):
        if not isinstance(per_class, (list, tuple)) or len(per_class) != classes or \
                any(np.asarray(d).ndim != 2 or np.asarray(d).shape[1] != 5 for d in per_class):
            raise DataError(f"{source}: result {i} is not a list of {classes} [N, 5] box arrays (one per class of "
                            f"{tuple(dataset.CLASSES)}); was it predicted with another config?")


def confusion_matrix(dataset, results, score_thr: float = 0.3, tp_iou_thr: float = 0.5,
                     nms_iou_thr: float | None = None) -> np.ndarray:
    """mmdet's confusion matrix (its ``analyze_per_img_dets`` per image): ``[C + 1, C + 1]``
    counts, rows the ground-truth class, columns the predicted one, the last row and column
    background (a detection matching no object; an object no detection found). A detection
    counts once it scores ``score_thr`` and overlaps an object by ``tp_iou_thr``;
    ``nms_iou_thr`` re-runs NMS first."""
    tool = mmdet_tool("analysis_tools/confusion_matrix")
    matrix = np.zeros((len(dataset.CLASSES) + 1,) * 2)
    for i, result in enumerate(results):  # calculate_confusion_matrix's loop, without its console bar
        annotation = dataset.get_ann_info(i)
        tool.analyze_per_img_dets(matrix, annotation["bboxes"], annotation["labels"],
                                  result[0] if isinstance(result, tuple) else result, score_thr=score_thr,
                                  tp_iou_thr=tp_iou_thr, nms_iou_thr=nms_iou_thr)
    return matrix


def matrix_table(matrix: np.ndarray, classes) -> str:
    """The confusion matrix's counts as text, a row per ground-truth class, a column per
    predicted class (``background`` last in both)."""
    names = list(classes) + ["background"]
    corner = "truth \\ predicted"
    first, width = max(len(corner), *(len(n) for n in names)) + 1, max(8, *(len(n) for n in names)) + 1
    lines = [corner.ljust(first) + "".join(n.rjust(width) for n in names)]
    lines += [name.ljust(first) + "".join(f"{int(v)}".rjust(width) for v in row) for name, row in zip(names, matrix)]
    return "\n".join(lines)


def plot_confusion_matrix(matrix: np.ndarray, labels, path: str, color_theme: str = "plasma") -> None:
    """mmdet's picture of the matrix (each row as percentages of its sum, ground truth down,
    predictions across), sized for its labels: mmdet's own ``plot_confusion_matrix`` gives each
    class half an inch, which leaves a few classes' labels on top of one another."""
    import matplotlib
    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = matrix.astype(np.float64) / matrix.sum(axis=1, keepdims=True) * 100
    n = len(labels)
    side = max(4.5, 0.5 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side * 0.85), dpi=120)
    image = ax.imshow(percent, cmap=plt.get_cmap(color_theme), vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title("Normalized Confusion Matrix", fontweight="bold")
    ax.set_xlabel("Prediction Label")
    ax.set_ylabel("Ground Truth Label")
    ax.set_xticks(range(n), labels, rotation=45, ha="left", rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    ax.tick_params(axis="x", bottom=False, top=True, labelbottom=False, labeltop=True)
    for i in range(n):
        for j in range(n):
            text = "-" if np.isnan(percent[i, j]) else f"{int(percent[i, j])}%"
            ax.text(j, i, text, ha="center", va="center", color="w" if percent[i, j] < 60 else "k", size=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def image_ap(result, annotation: dict) -> float:
    """One image's AP as mmdet's ``analyze_results.py`` scores it (``bbox_map_eval``): the mean
    over IoU thresholds 0.50:0.05:0.95 of ``eval_map``'s mAP (over the classes the image has),
    computed here in-process rather than in a pool per image."""
    from mmdet.core.evaluation import eval_map
    boxes = [result[0] if isinstance(result, tuple) else result]
    thresholds = np.linspace(.5, .95, int(np.round((.95 - .5) / .05)) + 1, endpoint=True)
    return float(np.mean([eval_map(boxes, [annotation], iou_thr=float(t), logger="silent", nproc=1)[0]
                          for t in thresholds]))


def best_and_worst(dataset, results, topk: int = 20) -> tuple[list, list, list]:
    """``(best, worst, unranked)``: lists of ``(index, AP)`` of the ``topk`` images of
    ``dataset`` with the highest and the lowest :func:`image_ap` (``topk`` at most half the
    ranked images, as mmdet's ``ResultVisualizer`` takes them), best first and worst first, and
    the indices of the images without objects: they have no AP (mmdet's ranking scores them 0,
    which fills its worst list with every empty image whatever was detected on it)."""
    if topk < 1:
        raise RaydetError(f"--topk must be >= 1, got {topk}")
    annotations = [dataset.get_ann_info(i) for i in range(len(results))]
    unranked = [i for i, a in enumerate(annotations) if len(a["labels"]) == 0]
    scored = sorted(((i, image_ap(results[i], a)) for i, a in enumerate(annotations) if len(a["labels"])),
                    key=lambda s: s[1])
    topk = max(1, min(topk, len(scored) // 2))
    return scored[::-1][:topk], scored[:topk], unranked


def complexity(model: torch.nn.Module, shape: tuple[int, int]) -> dict:
    """Parameters and FLOPs of ``model`` (an mmdet detector, on the CPU) on one ``3 x H x W``
    image (``shape = (H, W)``), as mmdet's ``get_flops.py`` measures it: through
    ``forward_dummy`` (backbone, neck and heads; no post-processing). FLOPs are torch's count
    (``torch.utils.flop_counter``: the operators torch has formulas for, convolutions and matrix
    products, a multiply-add being 2 FLOPs); mmcv's counter reports about half (multiply-adds).
    Returns ``{'params': int, 'trainable': int, 'flops': int, 'parts': [(name, params, flops)]}``.
    Raises :class:`RaydetError` for a model without ``forward_dummy``."""
    from torch.utils.flop_counter import FlopCounterMode
    if not hasattr(model, "forward_dummy"):
        raise RaydetError(f"{type(model).__name__} has no forward_dummy: its FLOPs cannot be counted")
    counter = FlopCounterMode(display=False)
    model.eval()
    with torch.no_grad(), counter:
        model.forward_dummy(torch.zeros(1, 3, *shape))
    # torch names the outermost modules called by their class: a part's own (backbone) or, for a part
    # whose forward_dummy calls its children (an RoI head), theirs
    outermost = {k: sum(v.values()) for k, v in counter.get_flop_counts().items() if "." not in k and k != "Global"}
    parts = []
    for name, child in model.named_children():
        classes = {type(m).__name__ for m in child.modules()}
        parts.append((name, sum(p.numel() for p in child.parameters()),
                      sum(outermost.pop(k) for k in list(outermost) if k in classes)))
    return {"params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "flops": counter.get_total_flops(), "parts": parts}


def measure_speed(model, loader, max_iter: int = 2000, warmup: int = 5, log_interval: int = 50, log=print) -> dict:
    """mmdet's ``benchmark.py`` loop on any device: ``model`` (in eval mode, on its device)
    predicts the batches of ``loader`` (cycled when it has fewer) until ``max_iter`` batches
    after ``warmup`` untimed ones; only the model's time counts (the batch on the device, the
    CUDA queue drained), not loading. ``log`` gets mmdet's lines every ``log_interval``
    batches. Returns ``{'images', 'seconds', 'images_per_s', 'ms_per_image'}``."""
    from .data.loader import batch_to_device
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if len(loader) == 0:
        raise DataError("the test set is empty: nothing to time")
    model.eval()
    images, seconds, done = 0, 0.0, 0
    cycled = (batch for _ in itertools.count() for batch in loader)  # a fresh pass each time, nothing kept
    with torch.no_grad():
        for n, batch in enumerate(cycled):
            batch = batch_to_device(batch, device)
            sync()
            start = time.perf_counter()
            count = len(model(return_loss=False, rescale=True, **batch))
            sync()
            if n < warmup:
                continue
            images, seconds, done = images + count, seconds + time.perf_counter() - start, done + 1
            if done % log_interval == 0:
                log(f"Done batch [{done:<3}/ {max_iter}] ({images} images), fps: {images / seconds:.1f} img / s, "
                    f"times per image: {1000 * seconds / images:.1f} ms / img")
            if done >= max_iter:
                break
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds,
            "ms_per_image": 1000 * seconds / images}
