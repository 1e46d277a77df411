"""mmdet 2.x's ``apis/inference.py``: ``init_detector``, ``inference_detector``,
``show_result_pyplot``, on mmdet's models and test pipelines."""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from ..engine.inference import predict_samples
from ..errors import ConfigError, DataError

logger = logging.getLogger("raydet")


def init_detector(config, checkpoint: str | None = None, device: str = "cpu", cfg_options: dict | None = None):
    """A detector ready for :func:`inference_detector`: built from ``config`` (a path, a dict
    or a Config; ``cfg_options`` are dotted overrides), the weights of ``checkpoint`` loaded
    (every tensor must fit: :class:`CheckpointError` otherwise; ``None`` keeps the initial
    weights, with a warning; a dict ``{state_dict, meta}`` is a checkpoint already in memory,
    loaded strictly), on ``device``, in eval mode. ``model.cfg`` is the config and
    ``model.CLASSES`` the class names, from the checkpoint's meta (else the test dataset's)."""
    from ..config import load_config
    from ..data import DATASETS
    from ..run.build import trained_detector
    cfg = load_config(config, cfg_options)
    model, classes = trained_detector(cfg, checkpoint, logger)
    if checkpoint is None:
        logger.warning("init_detector: no checkpoint, the detector keeps its initial weights")
    if not classes:
        test = (cfg.get("data") or {}).get("test") or {}
        classes = test.get("classes") or getattr(DATASETS.get(test["type"]), "CLASSES", None) if test else None
    model.CLASSES = list(classes) if classes else [str(i) for i in range(_num_classes(model))]
    model.cfg = cfg
    return model.to(device).eval()


def _num_classes(model) -> int:
    """The detector's number of classes: its heads' ``num_classes`` (the RPN's excepted)."""
    from mmdet.models.dense_heads import RPNHead
    nums = [m.num_classes for m in model.modules() if hasattr(m, "num_classes") and not isinstance(m, RPNHead)]
    return int(nums[-1]) if nums else 0


def build_test_pipeline(cfg, from_array: bool):
    """The config's test pipeline, reading an array instead of a file when ``from_array``
    (mmdet swaps in ``LoadImageFromWebcam``)."""
    from ..data.pipeline import Pipeline
    test = (cfg.get("data") or {}).get("test")
    if not test:
        raise ConfigError("inference needs the config's data.test.pipeline")
    while "pipeline" not in test and "dataset" in test:  # a wrapper: its dataset's pipeline
        test = test["dataset"]
    pipeline = copy.deepcopy(list(test["pipeline"]))
    if from_array:
        if pipeline[0].get("type") != "LoadImageFromFile":
            raise ConfigError(f"data.test.pipeline starts with {pipeline[0].get('type')!r}, not LoadImageFromFile")
        pipeline[0] = dict(pipeline[0], type="LoadImageFromWebcam")
    return Pipeline(pipeline, "data.test.pipeline")


def decode_sample(pipeline, data: bytes, filename: str) -> dict:
    """The test-pipeline sample of an encoded image (``data``: the bytes of a JPEG/PNG/... file
    named ``filename``), decoded as ``LoadImageFromFile`` decodes (``pipeline``: from
    :func:`build_test_pipeline` with ``from_array=True``). Raises :class:`DataError` naming the file
    when it is not a decodable image."""
    import mmcv
    img = mmcv.imfrombytes(data, flag="color", channel_order="bgr") if data else None
    if img is None:
        raise DataError(f"cannot decode image (corrupt or not an image): {filename}")
    sample = pipeline(dict(img=img, filename=filename))
    for meta in sample["img_metas"]:  # mmdet's LoadImageFromWebcam leaves the name None: it is known here
        meta.update(filename=filename, ori_filename=filename)
    return sample


def inference_detector(model, imgs):
    """Detect objects in ``imgs``: a path or a BGR ``uint8 [H, W, 3]`` array, or a list of them
    (one batch). Returns, per image, mmdet's result: a list over classes of float32 ``[N, 5]``
    arrays ``(x1, y1, x2, y2, score)`` in the image's own pixels, and for Mask R-CNN a tuple
    ``(bbox_result, segm_result)`` with ``segm_result[c][j]`` a boolean ``[H, W]`` mask; a
    single image gives its result alone."""
    single = not isinstance(imgs, (list, tuple))
    imgs = [imgs] if single else list(imgs)
    if not imgs:
        return []
    pipelines = {}
    samples = []
    for img in imgs:
        from_array = isinstance(img, np.ndarray)
        pipeline = pipelines.setdefault(from_array, build_test_pipeline(model.cfg, from_array))
        samples.append(pipeline(dict(img=img) if from_array else dict(img_info=dict(filename=str(img)),
                                                                      img_prefix=None)))
    results = predict_samples(model, samples)
    return results[0] if single else results


def result_to_records(result, classes, file_name: str, score_thr: float = 0.0) -> list[dict]:
    """One image's mmdet ``result`` as COCO-style records, one per detection scoring at least
    ``score_thr``: ``{file_name, category_id (the class index), category (its name), bbox:
    [x, y, w, h] in the image's pixels, score}``, plus ``segmentation`` (an RLE) for masks."""
    from ..data.dataset import coco_detections
    records = []
    for label, bbox, score, rle in coco_detections(result):
        if score >= score_thr:
            record = dict(file_name=file_name, category_id=label, category=str(classes[label]), bbox=bbox, score=score)
            if rle is not None:
                record["segmentation"] = rle
            records.append(record)
    return records


def show_result_pyplot(model, img, result, score_thr: float = 0.3, title: str = "result", wait_time: float = 0,
                       out_file: str | None = None):
    """Draw ``result`` on ``img`` with the detector's own ``show_result`` (mmdet's drawing, its
    ``CLASSES``) and show it with matplotlib (in a notebook, inline), or write it to ``out_file``.
    Returns the drawn BGR image."""
    import matplotlib.pyplot as plt
    import mmcv
    from ..engine.dist import unwrap
    drawn = unwrap(model).show_result(img, result, score_thr=score_thr)  # no out_file: mmdet returns the image
    if out_file is not None:
        mmcv.imwrite(drawn, out_file)
    else:
        plt.figure(figsize=(15, 10))
        plt.imshow(drawn[..., ::-1])
        plt.title(title)
        plt.axis("off")
        plt.tight_layout()
        plt.show(block=not wait_time)
        if wait_time:
            plt.pause(wait_time)
    return drawn
