"""COCO-format datasets: mmdet 2.x's ``CocoDataset`` over raydet's compact annotation index.

The pipelines are mmdet's own (:mod:`raydet.data.pipeline`). **Augmentation randomness is a
pure function of (seed, epoch, sample index).** ``__getitem__`` takes either an index or a
:class:`SampleKey` ``(index, epoch)`` (what raydet's samplers yield) and runs the pipeline with
the global generators, which mmdet's transforms draw from, seeded from ``(dataset seed, epoch,
index)``. This deliberately differs from mmdet, which seeds each dataloader worker with
``num_workers * rank + worker_id + seed``: here a run resumed mid-epoch, or run on a different
number of Ray workers or dataloader workers, sees exactly the same augmented samples.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os.path as osp
import warnings
from typing import NamedTuple

import numpy as np
from mmdet.datasets import coco as mmdet_datasets_coco

from ..errors import DataError, MissingFileError
from ..registry import Registry
from .index import AnnIndex, IndexBuilder, InfoView, file_stamp, index_key, load_or_build
from .pipeline import Pipeline
from . import shapes

def mmdet_datasets() -> dict:
    """mmdet's dataset registry (its datasets and wrappers, and a user's), by name."""
    from mmdet.datasets.builder import DATASETS as MMDET_DATASETS
    return MMDET_DATASETS.module_dict


#: raydet's own datasets (COCO, VOC and the shapes on the compact index; the wrappers), then mmdet's
DATASETS = Registry("dataset", fallback=mmdet_datasets)

#: arguments of mmdet's CocoDataset that raydet's does not take: a config that sets one gets mmdet's
MMDET_ONLY_COCO_ARGS = ("seg_prefix", "proposal_file", "file_client_args")


def own_dataset(cfg: dict) -> bool:
    """Whether raydet builds ``cfg`` itself (its compact COCO/VOC/shapes datasets, its wrappers)
    rather than mmdet's own class (:mod:`raydet.data.mmdet_datasets`)."""
    kind = cfg.get("type")
    if not DATASETS.owns(kind):
        return False
    return not (kind == "CocoDataset" and any(cfg.get(k) is not None for k in MMDET_ONLY_COCO_ARGS))
logger = logging.getLogger("raydet")


class DataWarning(UserWarning):
    """An annotation was repaired or dropped (the message names the image)."""


class SampleKey(NamedTuple):
    """What samplers yield: the sample index and the epoch it is drawn for; ``stream`` tells apart
    copies of one image that dataset wrappers make (:mod:`raydet.data.wrappers`)."""
    index: int
    epoch: int
    stream: int = 0


#: how many repaired or dropped annotations are warned about one by one before the rest are counted
WARN_FIRST = 5


def warn_problems(problems: list[str], source: str) -> None:
    """One :class:`DataWarning` for each of the first :data:`WARN_FIRST` images with repaired or
    dropped annotations, then one counting the rest (the full list goes to the debug log)."""
    for text in problems[:WARN_FIRST]:
        warnings.warn(text, DataWarning, stacklevel=3)
    if len(problems) > WARN_FIRST:
        warnings.warn(f"{source}: {len(problems) - WARN_FIRST} more images with repaired or dropped annotations "
                      f"({len(problems)} in all; each is listed at log level DEBUG)", DataWarning, stacklevel=3)
    for text in problems:
        logger.debug(text)


#: EXIF orientations that turn an image by 90 degrees (its decoded width and height swap)
_TRANSPOSED = {5, 6, 7, 8}


def check_images(infos, img_prefix: str, source: str) -> None:
    """Every image of ``infos`` exists, is an image and has the ``width``/``height`` its
    annotations give, read from the file's header (no full decode: ~0.1 ms an image), so a bad
    image is found when the dataset is built, not epochs later. The size may also be the
    transposed one when the file's EXIF orientation turns it (the decoder applies it). Raises
    :class:`DataError` naming the image (and ``source``, the annotation file)."""
    from PIL import Image, UnidentifiedImageError
    for info in infos:
        path = osp.join(img_prefix, info["filename"]) if img_prefix else info["filename"]
        try:
            with Image.open(path) as im:
                size = im.size
                turned = im.getexif().get(0x0112) in _TRANSPOSED
        except FileNotFoundError:
            raise DataError(f"image file not found: {path} (listed in {source})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            what = "is empty (0 bytes)" if osp.isfile(path) and osp.getsize(path) == 0 else \
                f"is not a readable image ({type(exc).__name__}: {exc})"
            raise DataError(f"image {path} {what}") from None
        expected = (info["width"], info["height"])
        if size != expected and not (turned and size[::-1] == expected):
            raise DataError(f"image {path} is {size[0]}x{size[1]} but {source} gives width={expected[0]}, "
                            f"height={expected[1]}")


#: how often a sample's augmentation is drawn again when a transform drops it
MAX_REDRAWS = 10


def _load_failure(path: str | None, exc: Exception) -> str | None:
    """Why the image at ``path`` did not load, when that is why the pipeline failed."""
    if path is None:
        return None
    if not osp.isfile(path):
        return f"image file not found: {path}"
    import mmcv
    try:
        ok = osp.getsize(path) > 0 and mmcv.imread(path) is not None
    except Exception:  # OpenCV raises for some truncated files
        ok = False
    return None if ok else f"cannot decode image (corrupt or not an image): {path}"


def run_pipeline(pipeline, make_results, seed: int, key: SampleKey, name: str, path: str | None = None):
    """``pipeline(make_results())`` with the global generators seeded from ``(seed, epoch, index,
    stream)`` (:func:`raydet.data.pipeline.seeded`). When a transform drops the sample (returns
    ``None``: a random crop without any box), it is drawn again with ``attempt`` added to the
    key, up to :data:`MAX_REDRAWS` times, so the epoch still sees this image and the result stays
    a pure function of the key; then :class:`DataError` names the image. A transform that fails
    (an image that no longer decodes, say) is a :class:`DataError` naming the image too."""
    from .pipeline import seeded
    for attempt in range(MAX_REDRAWS + 1):
        with seeded(seed, key.epoch, key.index, key.stream, attempt):
            try:
                out = pipeline(make_results())
            except DataError:
                raise
            except Exception as exc:  # mmdet's transforms raise many types; name the image once
                raise DataError(_load_failure(path, exc) or f"image {name} (index {key.index}): the pipeline "
                                f"failed: {type(exc).__name__}: {exc}") from exc
        if out is not None:
            return out
    raise DataError(f"the pipeline dropped {name} (index {key.index}) {MAX_REDRAWS + 1} times in a row")


def as_key(key) -> SampleKey:
    """An index, an ``(index, epoch[, stream])`` tuple or a :class:`SampleKey` as a SampleKey."""
    return key if isinstance(key, SampleKey) else SampleKey(*key) if isinstance(key, tuple) else SampleKey(int(key), 0)


class ImageSet:
    """What the COCO and VOC datasets share once loaded: ``index`` (an :class:`AnnIndex`),
    ``data_infos`` and ``ann_infos`` (read-only views of it: ``filename``, ``width``, ``height``
    per image; ``bboxes``, ``labels``, ...), ``img_prefix``, ``test_mode``, ``seed`` and
    ``pipeline``; indexing by a :class:`SampleKey`."""

    def __len__(self):
        return len(self.index)

    def get_cat_ids(self, idx: int) -> list[int]:
        """The labels (0-based, in ``CLASSES`` order) of image ``idx``'s boxes."""
        return self.index.labels_of(idx).tolist()

    def get_ann_info(self, idx: int) -> dict:
        """Image ``idx``'s ``ann_info`` (a fresh copy)."""
        return self.index.ann(idx)

    def __getitem__(self, key):
        key = as_key(key)
        info = self.index.info(key.index)

        def results():  # mmdet's CustomDataset.pre_pipeline fields
            out = dict(img_info=dict(info), img_prefix=self.img_prefix, seg_prefix=None, proposal_file=None,
                       bbox_fields=[], mask_fields=[], seg_fields=[])
            if not self.test_mode:
                out["ann_info"] = self.index.ann(key.index)
            return out
        path = osp.join(self.img_prefix, info["filename"]) if self.img_prefix else info["filename"]
        return run_pipeline(self.pipeline, results, self.seed, key, info["filename"], path)


@DATASETS.register()
class CocoDataset(ImageSet, mmdet_datasets_coco.CocoDataset):
    """COCO instances json + image folder: mmdet's ``CocoDataset`` (an instance of it: its
    ``results2json``/``format_results``, its proposal recall and its ``evaluate`` as
    :meth:`mmdet_evaluate`) over raydet's compact index, which replaces mmdet's per-image dicts
    and its ``coco`` object (read from the file when evaluation first asks for it).

    ``CLASSES`` come from ``classes`` or the json's categories (in id order). ``flag[i]`` is 1
    for landscape images (w / h > 1), else 0, for aspect-ratio grouping. In training mode
    (``test_mode=False``) images smaller than ``min_size`` and, with ``filter_empty_gt``, images
    without boxes are dropped. Invalid boxes are repaired or dropped once, at load time, with a
    :class:`DataWarning` naming the image. Raises :class:`DataError` naming the file for a
    missing or malformed annotation file.
    """

    CLASSES = None  # mmdet's are COCO's 80; raydet's are the json's categories unless ``classes`` says
    PALETTE = None
    METRICS = ("bbox", "segm", "proposal", "proposal_fast")

    @staticmethod
    def metric_keys(metrics) -> list[str]:
        """The keys :meth:`evaluate` returns for ``metrics`` (mmdet's names for proposal recall)."""
        keys = []
        for m in metrics:
            if m == "proposal_fast":
                keys += ["AR@100", "AR@300", "AR@1000"]
            elif m == "proposal":
                keys += ["AR@100", "AR@300", "AR@1000", "AR_s@1000", "AR_m@1000", "AR_l@1000"]
            else:
                keys += [f"{m}_{n}" for n in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")]
        return keys

    def __init__(self, ann_file, pipeline=(), classes=None, data_root=None, img_prefix="",
                 test_mode=False, filter_empty_gt=True, min_size=0, seed=0):
        if data_root is not None:
            ann_file = osp.join(data_root, ann_file) if not osp.isabs(ann_file) else ann_file
            img_prefix = osp.join(data_root, img_prefix) if img_prefix and not osp.isabs(img_prefix) else img_prefix
        self.ann_file, self.img_prefix = ann_file, img_prefix
        self.test_mode, self.filter_empty_gt, self.seed = test_mode, filter_empty_gt, seed
        if not osp.isfile(ann_file):
            raise MissingFileError(f"annotation file not found: {ann_file}", ann_file)
        classes = None if classes is None else (classes,) if isinstance(classes, str) else tuple(classes)
        key = index_key("coco", ann=file_stamp(ann_file), classes=classes, test_mode=bool(test_mode),
                        filter_empty_gt=bool(filter_empty_gt), min_size=min_size,
                        img_prefix=osp.abspath(img_prefix) if img_prefix else "")
        self.index, self.index_source = load_or_build(
            key, lambda: self._build_index(ann_file, classes, img_prefix, test_mode, filter_empty_gt, min_size), ann_file,
            img_prefix)
        meta = self.index.meta
        warn_problems(meta["problems"], ann_file)
        self.CLASSES, self.cat_ids = tuple(meta["classes"]), list(meta["cat_ids"])
        self.cat2label = {cat: i for i, cat in enumerate(self.cat_ids)}
        self.filtered = meta["filtered"]
        self.data_infos, self.ann_infos = InfoView(self.index), InfoView(self.index, "ann")
        self.flag = self.index.flag()
        self.pipeline = Pipeline(pipeline)

    @property
    def img_ids(self) -> list[int]:
        """The COCO image ids of this dataset's images, in order."""
        return self.index.image_ids()

    @property
    def coco(self):
        """The annotation file as a pycocotools ``COCO`` (evaluation's ground truth), read when
        first asked for, once: training never needs it."""
        if getattr(self, "_coco", None) is None:
            from mmdet.datasets.api_wrappers import COCO  # pycocotools' with mmdet's method names
            coco = COCO()
            coco.dataset = self._load_json(self.ann_file)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    coco.createIndex()
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"malformed annotation json {self.ann_file}: {type(exc).__name__}: {exc}") from None
            self._coco = coco
        return self._coco

    def __getstate__(self):  # the ground truth of evaluation stays where it was read
        return {k: v for k, v in self.__dict__.items() if k not in ("_coco", "_fast_coco")}

    @classmethod
    def _build_index(cls, ann_file, classes, img_prefix, test_mode, filter_empty_gt, min_size) -> AnnIndex:
        """Parse and check ``ann_file`` into an :class:`AnnIndex` (what the cache holds): images in
        id order, boxes repaired or dropped (the reasons in ``meta['problems']``), training-mode
        filtering, and every kept image's header checked."""
        data = cls._load_json(ann_file)
        cats = sorted((c for c in data["categories"] if isinstance(c, dict)), key=lambda c: c["id"])
        names = tuple(c["name"] for c in cats) if classes is None else classes
        name_to_id = {c["name"]: c["id"] for c in cats}
        missing = [c for c in names if c not in name_to_id]
        if missing:
            raise DataError(f"{ann_file}: classes {missing} are not among its categories "
                            f"{sorted(name_to_id)}")
        cat_ids = [name_to_id[c] for c in names]
        cat2label = {cat: i for i, cat in enumerate(cat_ids)}
        anns_of: dict = {}
        for ann in data["annotations"]:
            anns_of.setdefault(ann["image_id"], []).append(ann)
        images = {img["id"]: img for img in data["images"]}
        builder = IndexBuilder(masks=True)
        problems, kept, small_count, empty_count = [], [], 0, 0
        for img_id in sorted(images):
            info = images[img_id]
            w, h = int(info["width"]), int(info["height"])
            ann = cls._parse_ann(anns_of.get(img_id, ()), cat2label, w, h,
                                 osp.join(img_prefix, info["file_name"]), problems)
            if not test_mode:
                small = min(w, h) < min_size
                empty = filter_empty_gt and len(ann[1]) == 0
                small_count += small
                empty_count += empty and not small
                if small or empty:
                    continue
            builder.add(img_id, info["file_name"], w, h, *ann)
            kept.append(dict(filename=info["file_name"], width=w, height=h))
        check_images(kept, img_prefix, ann_file)
        filtered = {} if test_mode else {"images": len(images), f"smaller than min_size={min_size}": small_count,
                                         "without boxes (filter_empty_gt)": empty_count}
        return builder.build(dict(classes=list(names), cat_ids=cat_ids, problems=problems, filtered=filtered))

    @staticmethod
    def _load_json(ann_file) -> dict:
        """The annotation json, checked for what training and evaluation rely on; raises
        :class:`DataError` naming the file (and image or annotation) otherwise."""
        if not osp.isfile(ann_file):
            raise MissingFileError(f"annotation file not found: {ann_file}", ann_file)
        try:
            with open(ann_file) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"malformed annotation json {ann_file}: {exc}") from None
        if not isinstance(data, dict):
            raise DataError(f"malformed annotation json {ann_file}: top level is not an object")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"malformed annotation json {ann_file}: '{key}' list is missing")
        for img in data["images"]:
            if not isinstance(img, dict):
                raise DataError(f"{ann_file}: an image entry is a {type(img).__name__}, not an object")
            for key in ("id", "file_name", "width", "height"):
                if key not in img:
                    raise DataError(f"{ann_file}: image entry {img.get('id', img.get('file_name', '?'))!r} has no "
                                    f"'{key}'")
            if not all(isinstance(img[k], (int, float)) and not isinstance(img[k], bool) and img[k] > 0
                       and float(img[k]).is_integer() for k in ("width", "height")):
                raise DataError(f"{ann_file}: image {img['file_name']}: width={img['width']!r}, height={img['height']!r} "
                                "must be positive whole numbers")
        images = {img["id"]: img for img in data["images"]}
        if len(images) != len(data["images"]):
            seen = set()
            dup = next(img["id"] for img in data["images"] if img["id"] in seen or seen.add(img["id"]))
            raise DataError(f"malformed annotation json {ann_file}: image id {dup!r} appears more than once")
        categories = set()
        for c in data["categories"]:
            if not isinstance(c, dict) or "id" not in c or "name" not in c:
                raise DataError(f"malformed annotation json {ann_file}: category {c!r} needs 'id' and 'name'")
            categories.add(c["id"])
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                raise DataError(f"{ann_file}: an annotation is a {type(ann).__name__}, not an object")
            where = f"{ann_file}: annotation {ann.get('id', '?')}"
            for key in ("id", "image_id", "category_id", "bbox"):
                if key not in ann:
                    raise DataError(f"{where} has no '{key}'")
            if ann["image_id"] not in images:
                raise DataError(f"{where}: image_id {ann['image_id']!r} is not among the images")
            name = images[ann["image_id"]]["file_name"]
            if ann["category_id"] not in categories:
                raise DataError(f"{where} (image {name}): category_id {ann['category_id']!r} is not among the "
                                f"categories {sorted(categories)}")
            box = ann["bbox"]
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in box)):
                raise DataError(f"{where} (image {name}): bbox {box!r} must be 4 finite numbers [x, y, w, h]")
        return data

    @staticmethod
    def _parse_ann(anns, cat2label, w_img, h_img, path, problems: list) -> tuple[list, list, list]:
        """``(bboxes, labels, masks)`` of one image's annotations: boxes ``[x1, y1, x2, y2]``
        clipped to the image; crowd, ignored and other categories' boxes skipped; negative,
        zero-area and out-of-image boxes dropped; masks the polygons (the box's outline when an
        annotation has none). An image with such boxes adds a line naming ``path`` to ``problems``."""
        bboxes, labels, masks, mine = [], [], [], []
        for ann in anns:
            if ann.get("ignore", False) or ann["category_id"] not in cat2label:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd", 0):
                continue
            if w < 0 or h < 0:
                mine.append(f"annotation {ann.get('id')} has negative size w={w:g} h={h:g}")
                continue
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(w_img)), min(y + h, float(h_img))
            if x2 <= x1 or y2 <= y1:
                mine.append(f"annotation {ann.get('id')} box {ann['bbox']} has zero area inside "
                            f"the {w_img}x{h_img} image")
                continue
            if (x1, y1, x2, y2) != (x, y, x + w, y + h):
                mine.append(f"annotation {ann.get('id')} box {ann['bbox']} clipped to the image")
            bboxes.append([x1, y1, x2, y2])
            labels.append(cat2label[ann["category_id"]])
            seg = ann.get("segmentation")
            masks.append(seg if isinstance(seg, list) and seg else [[x1, y1, x2, y1, x2, y2, x1, y2]])
        if mine:
            problems.append(f"{path}: " + "; ".join(mine))
        return bboxes, labels, masks

    # ------------------------------------------------------------------ evaluation
    def _to_coco_json(self, results, metric):
        dets = []
        for img_id, result in zip(self.img_ids, results):
            for label, bbox, score, rle in coco_detections(result, with_masks=metric == "segm"):
                det = dict(image_id=img_id, category_id=self.cat_ids[label], score=score, bbox=bbox)
                if rle is not None:
                    det["segmentation"] = rle
                dets.append(det)
        return dets

    def results_to_json(self, results) -> list[dict]:
        """COCO's results format for ``results`` (one per image of this dataset, in order):
        ``{image_id, category_id, bbox: [x, y, w, h], score}`` per detection, with
        ``segmentation`` (an RLE) when the results have masks. What a COCO test server takes."""
        if len(results) != len(self):
            raise ValueError(f"{len(results)} results for a dataset of {len(self)} images")
        with_masks = bool(results) and isinstance(results[0], tuple)
        return self._to_coco_json(results, "segm" if with_masks else "bbox")

    def _fast_gt(self):
        """faster-coco-eval's view of the ground truth, read from the annotation file where
        evaluation runs, once."""
        if getattr(self, "_fast_coco", None) is None:
            from faster_coco_eval import COCO
            self._fast_coco = COCO(self._load_json(self.ann_file))
        return self._fast_coco

    def mmdet_evaluate(self, results, metric="bbox", logger=None, **kwargs) -> dict:
        """mmdet's own ``CocoDataset.evaluate`` on this dataset (its ``coco``, ``img_ids``,
        ``cat_ids``): what :meth:`evaluate` returns for proposals, and the reference its faster
        bbox/segm path is tested against."""
        return mmdet_datasets_coco.CocoDataset.evaluate(self, results, metric=metric,
                                                        logger=logger or globals()["logger"], **kwargs)

    def evaluate(self, results, metric=("bbox",), logger=None, classwise=False, jsonfile_prefix=None,
                 proposal_nums=None, iou_thrs=None, metric_items=None):
        """COCO mAP, computed by faster-coco-eval's C++ COCOeval (the same 12 numbers as
        pycocotools' on the same input, checked by ``tests/test_dataset.py``; ~10x faster on a
        COCO-val-sized result set, ``benchmarks/coco_eval.py``).

        ``results[i]`` belongs to image ``i`` of this dataset: a list over classes of float
        ``[N, 5]`` arrays ``(x1, y1, x2, y2, score)`` in original image pixels, or a tuple
        ``(bbox_result, segm_result)`` whose ``segm_result[c][j]`` is a binary ``HxW`` mask or an
        RLE. Returns ``{f'{m}_mAP', f'{m}_mAP_50', _75, _s, _m, _l, f'{m}_mAP_copypaste'}`` for
        each metric ``m`` in ``bbox``/``segm``; ``classwise`` also logs each category's AP.
        ``proposal``/``proposal_fast`` (``results[i]``: an ``[N, 5]`` array of proposals) are mmdet's
        own evaluation (``AR@100``, ...), and so is every metric when one of mmdet's other arguments
        (``jsonfile_prefix``, ``proposal_nums``, ``iou_thrs``, ``metric_items``) is given.
        """
        from faster_coco_eval import COCOeval_faster
        metrics = [metric] if isinstance(metric, str) else list(metric)
        if len(results) != len(self):
            raise ValueError(f"{len(results)} results for a dataset of {len(self)} images")
        given = {k: v for k, v in dict(jsonfile_prefix=jsonfile_prefix, proposal_nums=proposal_nums,
                                       iou_thrs=iou_thrs, metric_items=metric_items).items() if v is not None}
        if given:
            return self.mmdet_evaluate(results, metrics, logger, classwise=classwise, **given)
        out = {}
        names = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
        proposals = [m for m in metrics if m in ("proposal", "proposal_fast")]
        if proposals:  # proposal recall: mmdet's own CocoDataset.evaluate, on the same files
            out.update(self.mmdet_evaluate(results, proposals, logger))
        for m in [m for m in metrics if m not in proposals]:
            if m not in ("bbox", "segm"):
                raise ValueError(f"metric must be one of {self.METRICS}, got {m!r}")
            dets = self._to_coco_json(results, m)
            if not dets:
                for n in names:
                    out[f"{m}_{n}"] = 0.0
                out[f"{m}_mAP_copypaste"] = " ".join(["0.0000"] * 6)
                continue
            lines = []
            gt = self._fast_gt()
            ev = COCOeval_faster(gt, gt.loadRes(dets), m, print_function=lines.append)
            ev.params.catIds = self.cat_ids
            ev.params.imgIds = self.img_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            (logger or globals()["logger"]).info("\n" + "\n".join(str(line) for line in lines))
            if classwise:  # mmdet's per-category AP table: AP@[.5:.95], all areas, 100 detections
                precision = ev.eval["precision"]  # [IoU thresholds, recalls, categories, areas, max dets]
                rows = []
                for k, name in enumerate(self.CLASSES):
                    p = precision[:, :, k, 0, -1]
                    p = p[p > -1]
                    rows.append(f"| {name:<20} | {float(p.mean()) if p.size else float('nan'):.3f} |")
                (logger or globals()["logger"]).info(f"{m} AP per category:\n| {'category':<20} | AP    |\n"
                                                     + "\n".join(rows))
            for i, n in enumerate(names):  # mmdet 2.28's rounding and copypaste line
                out[f"{m}_{n}"] = float(f"{ev.stats[i]:.4f}")
            out[f"{m}_mAP_copypaste"] = " ".join(f"{ev.stats[i]:.4f}" for i in range(6))
        return out


def coco_detections(result, with_masks: bool = True):
    """Yield ``(label, [x, y, w, h], score, rle)`` for each detection of one image's mmdet
    ``result`` (per class ``[N, 5]`` arrays, or ``(bbox_result, segm_result)``), boxes in COCO's
    xywh, ``rle`` the mask as a json-ready RLE when the result has masks and ``with_masks``,
    else ``None``."""
    bbox_result, segm_result = result if isinstance(result, tuple) else (result, None)
    for label, boxes in enumerate(bbox_result):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1).tolist()
        for j, (bbox, score) in enumerate(zip(xywh, boxes[:, 4].tolist())):
            yield label, bbox, score, (_as_rle(segm_result[label][j]) if with_masks and segm_result is not None
                                       else None)


def _as_rle(mask) -> dict:
    """A binary ``HxW`` mask or an RLE as a json-ready RLE dict."""
    if not isinstance(mask, dict):
        from pycocotools import mask as mask_util
        mask = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle = dict(mask)
    if isinstance(rle["counts"], bytes):
        rle["counts"] = rle["counts"].decode()
    return rle


@DATASETS.register()
class ShapesDataset(CocoDataset):
    """The built-in synthetic dataset (:mod:`raydet.data.shapes`), generated on first use.

    ``split`` is ``'train'`` or ``'val'``; ``root`` defaults to the cache directory of
    ``data_seed``; ``num_images`` overrides the split sizes (tests).
    """

    CLASSES = shapes.CLASSES

    def __init__(self, split="train", pipeline=(), root=None, data_seed=0, num_images=None,
                 test_mode=False, filter_empty_gt=True, classes=None, seed=0):
        if split not in shapes.NUM_IMAGES:
            raise ValueError(f"ShapesDataset.split must be one of {list(shapes.NUM_IMAGES)}, got {split!r}")
        root = shapes.ensure_shapes(root, data_seed, num_images)
        super().__init__(osp.join(root, "annotations", f"instances_{split}.json"), pipeline,
                         classes=classes, img_prefix=osp.join(root, split), test_mode=test_mode,
                         filter_empty_gt=filter_empty_gt, seed=seed)
