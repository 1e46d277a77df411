"""The built-in ``shapes`` dataset: a real COCO-format detection/instance-segmentation set,
generated deterministically from a seed into a cache directory the first time it is asked for.

Frozen parameters (tests pin them; changing any changes the dataset, so bump ``VERSION``):

* 3 classes: ``rectangle``, ``ellipse``, ``triangle`` (COCO category ids 1, 2, 3).
* Image sizes (width x height) ``128x96`` and ``96x128``, half each, so aspect-ratio grouping
  has two groups.
* 0-3 objects per image: an image is empty with probability 5%, otherwise it holds 1-3 objects
  (uniform). Objects may overlap; later ones are painted over earlier ones.
* Object size: the longer side is 10-45% of the image's shorter side; the aspect ratio w/h is
  log-uniform in [0.5, 2]. Rectangles and ellipses are axis-aligned; a triangle's three
  vertices touch its box's top, bottom and one side, so the box is tight.
* Colours: each object a random RGB colour at least ``MIN_CONTRAST`` away (L2, 0-255 scale) from
  its background's base colour; backgrounds are a random base colour plus a random linear
  gradient and Gaussian noise (sigma 12), objects get a little noise of their own (sigma 6).
* 4,000 train and 500 val images; JPEG quality 90; annotations ``instances_{train,val}.json`` with
  ``bbox`` (tight, pixels, ``[x, y, w, h]``), ``area`` (mask area), ``iscrowd=0`` and
  ``segmentation`` as one polygon per object (the exact polygon that was painted).

Every image is drawn from its own generator seeded by ``(seed, split, index)``, so the output is
byte-identical for the same seed regardless of order or process.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import tempfile

import cv2
import numpy as np

from ..errors import DataError
from ..progress import ProgressBar
from .index import data_home

VERSION = 1
CLASSES = ("rectangle", "ellipse", "triangle")
IMAGE_SIZES = ((128, 96), (96, 128))  # (width, height)
NUM_IMAGES = {"train": 4000, "val": 500}
MAX_OBJECTS = 3
EMPTY_PROB = 0.05
SIDE_RANGE = (0.10, 0.45)  # longer object side, as a fraction of the image's shorter side
ASPECT_RANGE = (0.5, 2.0)  # object w / h
MIN_CONTRAST = 80.0
JPEG_QUALITY = 90
ELLIPSE_POINTS = 32
_SPLIT_ID = {"train": 0, "val": 1}


def sizes(num_images: dict | None = None) -> dict:
    """The split sizes: :data:`NUM_IMAGES` with ``num_images``'s overrides; each a count >= 1."""
    out = {**NUM_IMAGES, **(num_images or {})}
    for split, count in out.items():
        if split not in NUM_IMAGES:
            raise DataError(f"shapes num_images: unknown split {split!r}; the splits are {', '.join(NUM_IMAGES)}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise DataError(f"shapes num_images[{split!r}]={count!r}: expected an int >= 1 (an empty split "
                            "cannot train or evaluate)")
    return out


def default_root(seed: int = 0, num_images: dict | None = None) -> str:
    """Cache directory of the dataset (``$RAYDET_DATA`` or ``~/.cache/raydet``), keyed by
    everything that shapes it: the version, ``seed`` and the split sizes (when not the default)."""
    base = data_home()
    counts = sizes(num_images)
    tail = "" if counts == NUM_IMAGES else "-" + "-".join(f"{k}{v}" for k, v in counts.items())
    return os.path.join(base, f"shapes-v{VERSION}-seed{seed}{tail}")


MANIFEST = "shapes.json"


def _held(root: str) -> dict | None:
    """What the dataset in ``root`` is (``version``, ``seed``, ``num_images``), from its
    manifest, or for a dataset of an older raydet without one, from its annotation files;
    ``None`` when ``root`` holds no complete shapes dataset."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    held = {"num_images": {}}
    for split in NUM_IMAGES:
        try:
            with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
                data = json.load(f)
            desc = data["info"]["description"]  # "raydet shapes v1, seed 0, split train"
            version, seed = desc.split(", ")[0].split(" v")[1], desc.split(", ")[1].split(" ")[1]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None
        held.update(version=int(version), seed=int(seed))
        held["num_images"][split] = len(data["images"])
    return held


def _polygon(kind: int, x: float, y: float, w: float, h: float, rng: np.random.Generator) -> np.ndarray:
    if kind == 0:
        pts = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    elif kind == 1:
        t = np.linspace(0, 2 * math.pi, ELLIPSE_POINTS, endpoint=False)
        pts = np.stack([x + w / 2 + w / 2 * np.cos(t), y + h / 2 + h / 2 * np.sin(t)], 1)
    else:
        apex = x + rng.uniform(0, w)
        if rng.random() < 0.5:  # apex on top, base at the bottom
            pts = [(apex, y), (x + w, y + h), (x, y + h)]
        else:
            pts = [(apex, y + h), (x, y), (x + w, y)]
    return np.asarray(pts, dtype=np.float64)


def _draw_image(rng: np.random.Generator, num_objects: int | None = None):
    """One image and its objects: ``(bgr uint8 HxWx3, [(class_index, polygon Nx2), ...])``."""
    width, height = IMAGE_SIZES[int(rng.integers(len(IMAGE_SIZES)))]
    if num_objects is None:
        num_objects = 0 if rng.random() < EMPTY_PROB else int(rng.integers(1, MAX_OBJECTS + 1))
    base = rng.uniform(0, 255, size=3)
    gx, gy = rng.uniform(-40, 40, size=(2, 3))
    xs = np.linspace(-0.5, 0.5, width)[None, :, None]
    ys = np.linspace(-0.5, 0.5, height)[:, None, None]
    img = base + gx * xs + gy * ys + rng.normal(0, 12, size=(height, width, 3))
    objects = []
    short = min(width, height)
    for _ in range(num_objects):
        kind = int(rng.integers(len(CLASSES)))
        longer = rng.uniform(*SIDE_RANGE) * short
        aspect = math.exp(rng.uniform(math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])))
        w, h = (longer, longer / aspect) if aspect >= 1 else (longer * aspect, longer)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        while True:
            color = rng.uniform(0, 255, size=3)
            if np.linalg.norm(color - base) >= MIN_CONTRAST:
                break
        poly = _polygon(kind, x, y, w, h, rng)
        mask = np.zeros((height, width), np.uint8)
        # cv2 draws integer vertices; 4 fractional bits keep the painted shape on the float polygon
        cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        paint = color + rng.normal(0, 6, size=(height, width, 3))
        img = np.where(mask[..., None].astype(bool), paint, img)
        objects.append((kind, poly))
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _split_annotations(split: str, seed: int, out_dir: str, count: int, bar=None) -> dict:
    images, annotations = [], []
    for index in range(count):
        if bar is not None:
            bar.update()
        rng = np.random.default_rng([seed, _SPLIT_ID[split], index])
        img, objects = _draw_image(rng)
        name = f"{index:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        with open(os.path.join(out_dir, split, name), "wb") as f:
            f.write(buf.tobytes())
        images.append(dict(id=index + 1, file_name=name, width=img.shape[1], height=img.shape[0]))
        for kind, poly in objects:
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            area = float(cv2.contourArea(poly.astype(np.float32)))
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index + 1, category_id=kind + 1, iscrowd=0,
                bbox=[round(float(x0), 2), round(float(y0), 2),
                      round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                area=round(area, 2),
                segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]]))
    return dict(
        info=dict(description=f"raydet shapes v{VERSION}, seed {seed}, split {split}"),
        images=images, annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory="shape") for i, n in enumerate(CLASSES)])


def generate(root: str, seed: int = 0, num_images: dict | None = None) -> str:
    """Write the dataset into ``root`` (``train/``, ``val/``, ``annotations/``, and the manifest
    ``shapes.json`` saying what it is); returns ``root``.

    ``num_images`` overrides the split sizes (tests use small ones); image ``i`` of a split is the
    same whatever the split size. A ``root`` that already holds this dataset (same version and
    seed, and the sizes ``num_images`` asks for; with ``num_images=None`` whatever sizes it has) is
    used as it is; one holding another shapes dataset, or anything else, is a
    :class:`DataError`: raydet neither reuses a dataset of other sizes nor deletes a directory it
    did not create.

    Written into a temporary sibling directory and renamed into place, under a file lock, so
    concurrent callers (several workers on one node) generate it once and nobody ever sees a
    half-written dataset.
    """
    wanted = dict(version=VERSION, seed=int(seed), num_images=sizes(num_images))

    def ready() -> bool:
        if not os.path.isdir(root) or not os.listdir(root):
            return False
        held = _held(root)
        if held == wanted or (num_images is None and held is not None
                              and (held.get("version"), held.get("seed")) == (VERSION, int(seed))):
            return True
        if held is None:
            raise DataError(f"{root} exists and is not a complete shapes dataset (no {MANIFEST}, no readable "
                            f"annotations); raydet does not delete a directory it did not create: remove it or "
                            f"give another root")
        raise DataError(f"{root} holds the shapes dataset {held}, not the one asked for {wanted}; give another "
                        f"root (without one, the cache directory is keyed by seed and sizes)")

    if ready():
        return root
    parent = os.path.dirname(os.path.abspath(root)) or "."
    os.makedirs(parent, exist_ok=True)
    with open(os.path.join(parent, f".{os.path.basename(root)}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return root
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}-", dir=parent)
        try:
            for split in NUM_IMAGES:
                os.makedirs(os.path.join(tmp, split))
            os.makedirs(os.path.join(tmp, "annotations"))
            # a terminal gets a bar; a pipe or a log a line at 50% and 100% (the main job's first run)
            bar = ProgressBar(sum(wanted["num_images"].values()), desc=f"generating the shapes dataset in {root}: ",
                              every=50)
            for split, count in wanted["num_images"].items():
                coco = _split_annotations(split, seed, tmp, count, bar)
                with open(os.path.join(tmp, "annotations", f"instances_{split}.json"), "w") as f:
                    json.dump(coco, f, separators=(",", ":"))
            with open(os.path.join(tmp, MANIFEST), "w") as f:
                json.dump(wanted, f)
            if os.path.isdir(root):  # empty: ready() refused any other
                os.rmdir(root)
            os.rename(tmp, root)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_shapes(root: str | None = None, seed: int = 0, num_images: dict | None = None) -> str:
    """Return the dataset root for ``seed``, generating it first if absent."""
    return generate(root or default_root(seed, num_images), seed, num_images)
