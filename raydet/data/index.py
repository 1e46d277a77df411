"""The annotation index of a dataset as a few flat numpy arrays, cached on disk and shareable.

A COCO-train-sized annotation file parsed into python dicts and lists takes ~2 GB per process,
and every process that reads those objects (each dataloader worker, after ``fork``) writes their
reference counts and so copies the pages it touches. :class:`AnnIndex` keeps the same content in
about a dozen arrays — per-image offsets into per-box arrays, polygon coordinates flat with two
levels of offsets, file names in one byte buffer — so that

- a forked dataloader worker shares them with its parent page for page (numpy never writes to an
  array's data when reading it);
- pickling moves a dozen buffers, which Ray's object store maps zero-copy into every worker of a
  node (:func:`provide` installs what the launcher put there); :mod:`multiprocessing` (a
  ``spawn`` dataloader's workers) passes an index mapped from its cache file as the file's path;
- it is saved once as a file of raw arrays in the dataset cache directory (``$RAYDET_DATA/index`` or
  ``~/.cache/raydet/index``), keyed by what it was built from (the annotation file's path and
  content hash, and the dataset's arguments), so a restarted or second worker group
  loads it in well under a second instead of parsing the json again; loading maps the file, so
  every process of a machine that loads it shares its pages (one copy per node without Ray too).

Samples come out as before: :meth:`AnnIndex.info` and :meth:`AnnIndex.ann` build one image's
``img_info`` and ``ann_info`` dicts (fresh copies: a transform may change them) on demand.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import tempfile
from collections.abc import Sequence
from multiprocessing.reduction import ForkingPickler
from typing import Callable

import numpy as np

from ..errors import DataError

logger = logging.getLogger("raydet")

#: bump when the arrays or their meaning change: older cache files are then not used
FORMAT = 1

#: indexes the launcher built once and shared (by key); see :func:`provide`
_provided: dict[str, "AnnIndex"] = {}
#: where :func:`collecting` gathers the indexes built while it is active
_collecting: list[dict] = []


def _offsets(lengths) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _pack_strings(strings) -> tuple[np.ndarray, np.ndarray]:
    data = [s.encode() for s in strings]
    return np.frombuffer(b"".join(data), np.uint8).copy(), _offsets([len(d) for d in data])


class IndexBuilder:
    """Collects images one at a time (what a parser finds), then packs them into an
    :class:`AnnIndex`. ``masks``: boxes carry polygons; ``ignore``: images carry ignored boxes
    (``bboxes_ignore``/``labels_ignore``, VOC's difficult ones)."""

    def __init__(self, masks: bool = False, ignore: bool = False):
        self.masks, self.ignore = masks, ignore
        self.ids, self.names, self.widths, self.heights = [], [], [], []
        self.boxes, self.labels, self.counts = [], [], []
        self.ign_boxes, self.ign_labels, self.ign_counts = [], [], []
        self.parts_per_box, self.part_lengths, self.coords = [], [], []

    def add(self, id, filename: str, width: int, height: int, bboxes, labels, masks=None,
            bboxes_ignore=(), labels_ignore=()) -> None:
        """One image: ``bboxes`` ``[[x1, y1, x2, y2], ...]``, ``labels`` (0-based), ``masks`` one list
        of flat polygon arrays per box (with ``masks=True``), the ignored boxes and labels."""
        self.ids.append(id)
        self.names.append(filename)
        self.widths.append(width)
        self.heights.append(height)
        self.boxes.extend(bboxes)
        self.labels.extend(labels)
        self.counts.append(len(labels))
        if self.masks:
            for polygons in masks:
                self.parts_per_box.append(len(polygons))
                for p in polygons:
                    self.part_lengths.append(len(p))
                    self.coords.append(np.asarray(p, np.float64))
        if self.ignore:
            self.ign_boxes.extend(bboxes_ignore)
            self.ign_labels.extend(labels_ignore)
            self.ign_counts.append(len(labels_ignore))

    def build(self, meta: dict) -> "AnnIndex":
        """The packed index; ``meta`` (json-able) travels with it (classes, category ids, ...)."""
        a = {}
        if all(isinstance(i, (int, np.integer)) for i in self.ids):
            a["ids"] = np.asarray(self.ids, np.int64)
        else:
            a["id_buf"], a["id_off"] = _pack_strings(str(i) for i in self.ids)
        a["name_buf"], a["name_off"] = _pack_strings(self.names)
        a["width"], a["height"] = np.asarray(self.widths, np.int32), np.asarray(self.heights, np.int32)
        a["box_off"] = _offsets(self.counts)
        a["bboxes"] = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        a["labels"] = np.asarray(self.labels, np.int32)
        if self.masks:
            a["mask_off"] = _offsets(self.parts_per_box)
            a["part_off"] = _offsets(self.part_lengths)
            a["coords"] = np.concatenate(self.coords) if self.coords else np.zeros(0, np.float64)
        if self.ignore:
            a["ign_off"] = _offsets(self.ign_counts)
            a["bboxes_ignore"] = np.asarray(self.ign_boxes, np.float32).reshape(-1, 4)
            a["labels_ignore"] = np.asarray(self.ign_labels, np.int32)
        return AnnIndex(a, meta)


class AnnIndex:
    """A dataset's images and annotations as flat arrays (see the module docstring).

    ``arrays``: ``ids`` int64 ``[N]`` (or string ids in ``id_buf``/``id_off``), file names in
    ``name_buf``/``name_off``, ``width``/``height`` int32 ``[N]``; boxes of image ``i`` are
    ``bboxes[box_off[i]:box_off[i+1]]`` (float32 ``[x1, y1, x2, y2]``) with int32 ``labels``;
    optionally ``mask_off``/``part_off``/``coords`` (box ``j``'s polygons are parts
    ``mask_off[j]:mask_off[j+1]``, part ``p`` is ``coords[part_off[p]:part_off[p+1]]``) and
    ``ign_off``/``bboxes_ignore``/``labels_ignore``. ``meta``: json-able facts of the build."""

    def __init__(self, arrays: dict, meta: dict, path: str | None = None):
        self.arrays, self.meta = arrays, meta
        self.path = path  # the cache file the arrays map, if they do
        self._int_ids = "ids" in arrays

    def __reduce__(self):  # only the arrays travel: Ray's pickle moves them out of band, zero-copy
        return AnnIndex, (self.arrays, self.meta)

    def __len__(self) -> int:
        return len(self.arrays["width"])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def _string(self, buf: str, off: str, i: int) -> str:
        o = self.arrays[off]
        return self.arrays[buf][o[i]:o[i + 1]].tobytes().decode()

    def image_id(self, i: int):
        return int(self.arrays["ids"][i]) if self._int_ids else self._string("id_buf", "id_off", i)

    def image_ids(self) -> list:
        return self.arrays["ids"].tolist() if self._int_ids else [self.image_id(i) for i in range(len(self))]

    def filename(self, i: int) -> str:
        return self._string("name_buf", "name_off", i)

    def info(self, i: int) -> dict:
        """``img_info`` of image ``i``: ``id``, ``filename`` (and COCO's ``file_name``), ``width``, ``height``."""
        i = range(len(self))[i]  # IndexError out of range; a negative index counts from the end
        name = self.filename(i)
        out = dict(id=self.image_id(i), filename=name, width=int(self.arrays["width"][i]),
                   height=int(self.arrays["height"][i]))
        if self._int_ids:
            out["file_name"] = name
        return out

    def labels_of(self, i: int) -> np.ndarray:
        o = self.arrays["box_off"]
        return self.arrays["labels"][o[i]:o[i + 1]]

    def ann(self, i: int) -> dict:
        """``ann_info`` of image ``i``: ``bboxes`` float32 ``[n, 4]``, ``labels`` int64 ``[n]``, with
        ``masks`` (per box a list of float64 polygon arrays) and ``bboxes_ignore``/``labels_ignore``
        where the index has them. Copies: nothing returned shares memory with the index."""
        a = self.arrays
        i = range(len(self))[i]
        b0, b1 = int(a["box_off"][i]), int(a["box_off"][i + 1])
        out = dict(bboxes=a["bboxes"][b0:b1].copy(), labels=a["labels"][b0:b1].astype(np.int64))
        if "mask_off" in a:
            mo, po, coords = a["mask_off"], a["part_off"], a["coords"]
            out["masks"] = [[coords[po[p]:po[p + 1]].copy() for p in range(mo[j], mo[j + 1])] for j in range(b0, b1)]
        if "ign_off" in a:
            g0, g1 = int(a["ign_off"][i]), int(a["ign_off"][i + 1])
            out["bboxes_ignore"] = a["bboxes_ignore"][g0:g1].copy()
            out["labels_ignore"] = a["labels_ignore"][g0:g1].astype(np.int64)
        return out

    def flag(self) -> np.ndarray:
        """1 for landscape images (w / h > 1), else 0: the samplers' aspect groups."""
        return (self.arrays["width"] > self.arrays["height"]).astype(np.uint8)

    # ------------------------------------------------------------------ the cache file
    MAGIC = b"RAYDETIX"
    ALIGN = 64

    def save(self, path: str) -> None:
        """Write to ``path`` atomically (a temporary file in its directory, fsynced, renamed):
        ``MAGIC``, the header's length (8 bytes, little-endian), a json header (``meta``, each
        array's name, dtype, shape and offset), then each array's bytes at a 64-byte boundary."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        entries, offset = [], 0
        for name, a in self.arrays.items():
            entries.append(dict(name=name, dtype=a.dtype.str, shape=list(a.shape), offset=offset))
            offset += -(-a.nbytes // self.ALIGN) * self.ALIGN
        header = json.dumps(dict(meta=self.meta, arrays=entries, data_bytes=offset)).encode()
        start = -(-(len(self.MAGIC) + 8 + len(header)) // self.ALIGN) * self.ALIGN
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.MAGIC + len(header).to_bytes(8, "little") + header)
                for entry, a in zip(entries, self.arrays.values()):
                    f.seek(start + entry["offset"])
                    f.write(np.ascontiguousarray(a).tobytes())
                f.truncate(start + offset)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str) -> "AnnIndex":
        """Map a file :meth:`save` wrote, read-only: the arrays are views of the page cache, so
        every process of a machine that loads it shares one copy, and nothing is read until used.
        Raises ``OSError``/``ValueError`` for a missing, truncated or foreign file."""
        with open(path, "rb") as f:
            head = f.read(len(cls.MAGIC) + 8)
            if len(head) < len(cls.MAGIC) + 8 or head[:len(cls.MAGIC)] != cls.MAGIC:
                raise ValueError("not a raydet index file")
            size = int.from_bytes(head[len(cls.MAGIC):], "little")
            header = json.loads(f.read(size).decode())
            start = -(-(len(cls.MAGIC) + 8 + size) // cls.ALIGN) * cls.ALIGN
            if os.fstat(f.fileno()).st_size != start + header["data_bytes"]:
                raise ValueError(f"{os.fstat(f.fileno()).st_size} bytes where its header says "
                                 f"{start + header['data_bytes']} (truncated?)")
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        arrays = {}
        for e in header["arrays"]:
            dtype = np.dtype(e["dtype"])
            count = int(np.prod(e["shape"], dtype=np.int64))
            arrays[e["name"]] = np.frombuffer(mapped, dtype, count, start + e["offset"]).reshape(e["shape"])
        return cls(arrays, header["meta"], path)

    @classmethod
    def _remap(cls, path: str, key: str) -> "AnnIndex":
        try:
            index = cls.load(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"the annotation index cache {path} went away while the run used it ({exc})") from None
        if index.meta.get("key") != key:
            raise DataError(f"the annotation index cache {path} was replaced by another index while the run used it")
        return index


def _reduce_for_processes(index: AnnIndex):
    """How :mod:`multiprocessing` (a ``spawn`` dataloader's workers) pickles an index: one mapped
    from a cache file travels as the file's path, and the other process maps the same pages.
    Ray and plain ``pickle`` move the arrays (a node elsewhere has no such file)."""
    if index.path is not None and index.meta.get("key"):
        return AnnIndex._remap, (index.path, index.meta["key"])
    return index.__reduce__()


ForkingPickler.register(AnnIndex, _reduce_for_processes)


class InfoView(Sequence):
    """``dataset.data_infos`` (or ``ann_infos`` with ``what='ann'``) as a read-only sequence of
    dicts made on demand from the index: mmdet's attribute, without holding a dict per image."""

    def __init__(self, index: AnnIndex, what: str = "info"):
        self._index, self._get = index, getattr(index, what)

    def __len__(self):
        return len(self._index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        return self._get(i % n)


def data_home() -> str:
    """raydet's dataset cache directory: ``$RAYDET_DATA`` or ``~/.cache/raydet`` (the shapes
    dataset, the index cache, the benchmarks' generated files)."""
    return os.environ.get("RAYDET_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "raydet")


def cache_dir() -> str:
    """Where indexes are cached: ``$RAYDET_DATA/index`` or ``~/.cache/raydet/index``."""
    return os.path.join(data_home(), "index")


def file_stamp(path: str) -> list:
    """What identifies a file's version for the cache: its absolute path and the sha256 of its
    content (~0.4 s for a 257 MB json here; a size and modification time would miss a
    rewrite of the same length within the clock's granularity)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return [os.path.abspath(path), h.hexdigest()]


def index_key(kind: str, **parts) -> str:
    """The cache key of an index built by ``kind`` from ``parts`` (json-able: file stamps and the
    dataset arguments that change what is kept)."""
    text = json.dumps(dict(format=FORMAT, kind=kind, **parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def images_stamp(index: AnnIndex, img_prefix: str | None) -> str:
    """What identifies the versions of ``index``'s image files: a hash of each one's name, size and
    modification time (``os.stat``: ~3 us an image, a third of a second for COCO's train2017), a
    missing file counted as such. The build checks every image (decodable, of the annotated
    size); a cached index is used only while this is unchanged, so an image removed, emptied or
    replaced after the index was cached is checked, and named, before training."""
    h = hashlib.sha256()
    for i in range(len(index)):
        name = index.filename(i)
        path = os.path.join(img_prefix, name) if img_prefix else name
        try:
            st = os.stat(path)
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()


def load_or_build(key: str, build: Callable[[], AnnIndex], source: str,
                  img_prefix: str | None = None) -> tuple[AnnIndex, str]:
    """The index of ``key``: the one the launcher shared (:func:`provide`), else the cache file
    while its images are unchanged (:func:`images_stamp` of their files under ``img_prefix``),
    else ``build()`` (then cached; a cache that cannot be written is logged, not raised).
    ``source`` names the annotation file in log lines. Returns ``(index, where)`` with ``where``
    one of ``'shared'``, ``'cache'``, ``'built'``."""
    if key in _provided:
        index, where = _provided[key], "shared"
    else:
        path = os.path.join(cache_dir(), f"{key}.idx")
        index, where = None, "cache"
        if os.path.isfile(path):
            try:
                index = AnnIndex.load(path)
                if index.meta.get("key") != key:
                    raise ValueError(f"it holds the index of another key ({index.meta.get('key')})")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning(f"index cache {path} of {source} is unreadable ({type(exc).__name__}: {exc}); "
                               "building the index again")
                index = None
            if index is not None and index.meta.get("images") != images_stamp(index, img_prefix):
                logger.info(f"the images of {source} changed since its index was cached; checking them again")
                index = None
        if index is None:
            index, where = build(), "built"
            index.meta["key"] = key
            index.meta["images"] = images_stamp(index, img_prefix)
            try:
                index.save(path)
                index = AnnIndex.load(path)  # the mapped file, shared with this machine's other processes
            except OSError as exc:
                logger.warning(f"cannot write the index cache {path} ({exc}); the next build parses {source} again")
    how = {"shared": "shared through Ray's object store", "cache": f"from the cache {cache_dir()}",
           "built": "parsed and cached"}[where]
    logger.info(f"annotation index of {source}: {len(index)} images, {index.nbytes / 2**20:.1f} MiB, {how}")
    for got in _collecting:
        got[key] = index
    return index, where


def provide(indexes: dict) -> None:
    """Use these indexes (``{key: AnnIndex}``, e.g. mapped from Ray's object store) for the
    datasets of the same keys built in this process from now on."""
    _provided.update(indexes)


@contextlib.contextmanager
def collecting():
    """``with collecting() as got:`` gathers ``{key: AnnIndex}`` of every index the datasets
    built inside the block use (what a launcher shares with its workers)."""
    got: dict = {}
    _collecting.append(got)
    try:
        yield got
    finally:
        _collecting.remove(got)
