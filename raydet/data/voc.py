"""Pascal VOC-style datasets: mmdet 2.x's ``XMLDataset`` and ``VOCDataset`` (instances of them,
evaluated by their own ``evaluate``: mmdet's ``eval_map``) over raydet's compact index.

Layout: ``img_prefix`` (e.g. ``data/VOCdevkit/VOC2007/``) holds ``JPEGImages/<id>.jpg`` and
``Annotations/<id>.xml``; ``ann_file`` is an ``ImageSets/Main/*.txt`` list of ids. A box marked
``difficult``, or smaller than ``min_size`` on a side, is an *ignored* box (``bboxes_ignore``):
not a training target, and neither a hit nor a miss in evaluation. Training mode drops images
smaller than 32 pixels and, with ``filter_empty_gt``, images with no object of ``CLASSES``.
"""
from __future__ import annotations

import hashlib
import json
import os.path as osp
import xml.etree.ElementTree as ET

from mmdet.datasets import voc as mmdet_voc, xml_style as mmdet_xml

from ..errors import ConfigError, DataError, MissingFileError
from .dataset import DATASETS, ImageSet, check_images
from .index import AnnIndex, IndexBuilder, InfoView, file_stamp, index_key, load_or_build
from .pipeline import Pipeline


@DATASETS.register()
class XMLDataset(ImageSet, mmdet_xml.XMLDataset):
    """A VOC-layout dataset of any classes (``classes`` is required unless a subclass has them).
    Raises :class:`DataError` naming the file for a missing list or XML file, malformed XML, or
    an object without a valid box."""

    CLASSES = None

    def __init__(self, ann_file, pipeline=(), classes=None, data_root=None, img_prefix="", seg_prefix=None,
                 proposal_file=None, test_mode=False, filter_empty_gt=True, min_size=None,
                 img_subdir="JPEGImages", ann_subdir="Annotations", file_client_args=None, seed=0):
        if data_root is not None:
            ann_file = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
            img_prefix = img_prefix if not img_prefix or osp.isabs(img_prefix) else osp.join(data_root, img_prefix)
        if proposal_file is not None:
            raise ConfigError(f"{type(self).__name__}.proposal_file: precomputed proposals are not supported "
                              "(raydet's VOC reader has no proposal files yet)")
        if classes is not None:
            self.CLASSES = (classes,) if isinstance(classes, str) else tuple(classes)
        if self.CLASSES is None:
            raise ConfigError(f"{type(self).__name__} needs classes=(...)")
        self.ann_file, self.img_prefix, self.test_mode, self.seed = ann_file, img_prefix, test_mode, seed
        self.img_subdir, self.ann_subdir, self.min_size = img_subdir, ann_subdir, min_size
        self.cat2label = {c: i for i, c in enumerate(self.CLASSES)}
        ids = self._read_list(ann_file)
        key = index_key(type(self).__name__, ann=file_stamp(ann_file), classes=self.CLASSES, test_mode=bool(test_mode),
                        filter_empty_gt=bool(filter_empty_gt), min_size=min_size, img_subdir=img_subdir,
                        ann_subdir=ann_subdir,
                        # every XML file's version: editing one must not leave a stale index
                        xml=hashlib.sha256(json.dumps([self._stamp(self._xml_path(i)) for i in ids]).encode()).hexdigest(),
                        img_prefix=osp.abspath(self.img_prefix) if self.img_prefix else "")
        self.index, self.index_source = load_or_build(key, lambda: self._build_index(ids, filter_empty_gt), ann_file,
                                                        self.img_prefix)
        self.data_infos, self.ann_infos = InfoView(self.index), InfoView(self.index, "ann")
        self.flag = self.index.flag()
        self.pipeline = Pipeline(pipeline)

    @staticmethod
    def _stamp(path):
        try:
            return file_stamp(path)[1]
        except FileNotFoundError:
            return None  # the build names the missing file

    def _build_index(self, ids, filter_empty_gt) -> AnnIndex:
        infos = self._load_list(ids)
        anns = [self._parse(info) for info in infos]
        if not self.test_mode:
            keep = [i for i, (info, ann) in enumerate(zip(infos, anns))
                    if min(info["width"], info["height"]) >= 32
                    and (not filter_empty_gt or ann["has_class"])]
            infos, anns = [infos[i] for i in keep], [anns[i] for i in keep]
        check_images(infos, self.img_prefix, self.ann_file)
        builder = IndexBuilder(ignore=True)
        for info, ann in zip(infos, anns):
            builder.add(info["id"], info["filename"], info["width"], info["height"], ann["bboxes"], ann["labels"],
                        bboxes_ignore=ann["bboxes_ignore"], labels_ignore=ann["labels_ignore"])
        return builder.build(dict(classes=list(self.CLASSES)))

    def _xml_path(self, img_id):
        return osp.join(self.img_prefix, self.ann_subdir, f"{img_id}.xml")

    @staticmethod
    def _read_list(ann_file) -> list[str]:
        if not osp.isfile(ann_file):
            raise MissingFileError(f"image list not found: {ann_file}", ann_file)
        with open(ann_file) as f:
            return [line.strip() for line in f if line.strip()]

    def _load_list(self, ids):
        infos = []
        for img_id in ids:
            root = self._xml(img_id)
            size = root.find("size")
            if size is not None and size.find("width") is not None:
                width, height = int(size.find("width").text), int(size.find("height").text)
            else:  # mmdet reads the image for its size
                import mmcv
                path = osp.join(self.img_prefix, self.img_subdir, f"{img_id}.jpg")
                img = mmcv.imread(path)
                if img is None:
                    raise DataError(f"{self._xml_path(img_id)} gives no size and {path} cannot be read")
                height, width = img.shape[:2]
            infos.append(dict(id=img_id, filename=f"{self.img_subdir}/{img_id}.jpg", width=width, height=height))
        return infos

    def _xml(self, img_id):
        path = self._xml_path(img_id)
        if not osp.isfile(path):
            raise MissingFileError(f"annotation file not found: {path}", path)
        try:
            return ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise DataError(f"malformed annotation xml {path}: {exc}") from None

    def _parse(self, info) -> dict:
        path = self._xml_path(info["id"])
        bboxes, labels, ignored, ignored_labels, has_class = [], [], [], [], False
        for obj in self._xml(info["id"]).findall("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in self.cat2label:
                continue
            has_class = True
            difficult = int(obj.findtext("difficult") or 0)
            box = obj.find("bndbox")
            try:
                bbox = [int(float(box.find(k).text)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                raise DataError(f"{path}: object '{name}' has no valid bndbox (xmin, ymin, xmax, ymax)") from None
            small = self.min_size is not None and (bbox[2] - bbox[0] < self.min_size or bbox[3] - bbox[1] < self.min_size)
            (ignored if difficult or small else bboxes).append(bbox)
            (ignored_labels if difficult or small else labels).append(self.cat2label[name])
        return dict(bboxes=bboxes, labels=labels, bboxes_ignore=ignored, labels_ignore=ignored_labels,
                    has_class=has_class)

    METRICS = ("mAP", "recall")

    @staticmethod
    def metric_keys(metrics, iou_thr=0.5, proposal_nums=(100, 300, 1000)) -> list[str]:
        """The keys mmdet's ``evaluate`` returns for ``metrics``."""
        thrs = [iou_thr] if isinstance(iou_thr, (int, float)) else list(iou_thr)
        keys = []
        for m in [metrics] if isinstance(metrics, str) else metrics:
            if m == "mAP":
                keys += [f"AP{int(t * 100):02d}" for t in thrs] + ["mAP"]
            else:
                keys += [f"recall@{n}@{t}" for n in proposal_nums for t in thrs]
                keys += [f"AR@{n}" for n in proposal_nums] if len(thrs) > 1 else []
        return keys


@DATASETS.register()
class VOCDataset(XMLDataset, mmdet_voc.VOCDataset):
    """Pascal VOC: its 20 classes; evaluated with VOC2007's 11-point AP when ``img_prefix``
    names ``VOC2007``, the area under the curve for ``VOC2012`` (mmdet's ``evaluate``, which infers
    the year as mmdet's constructor does; a prefix naming neither is refused)."""

    CLASSES = mmdet_voc.VOCDataset.CLASSES

    @staticmethod
    def metric_keys(metrics, **kwargs) -> list[str]:
        """mmdet's VOC ``evaluate`` puts ``mAP`` first (so ``save_best='auto'`` keeps by it)."""
        return sorted(XMLDataset.metric_keys(metrics, **kwargs), key=lambda k: k != "mAP")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "VOC2007" in self.img_prefix:
            self.year = 2007
        elif "VOC2012" in self.img_prefix:
            self.year = 2012
        else:
            raise ConfigError(f"VOCDataset: cannot infer the VOC year from img_prefix={self.img_prefix!r} "
                              "(it must contain VOC2007 or VOC2012; use XMLDataset for other VOC-style data)")
