"""``raydet infer``: a trained detector over a directory, a glob, a list file or a bucket prefix,
on Ray Data.

The images stream through three stages: Ray Data's file reading (CPU tasks), decoding and the
config's test pipeline (:func:`_prepare`, CPU tasks; Ray Data fuses them into the model's actors
when both only ask for CPUs, which saves moving float tensors through the object store), and the
detector in a pool of stateful actors (:class:`_Predictor`, ``map_batches`` with a class; a fixed
size or ``(min, max)`` for autoscaling; one GPU each with ``use_gpu``). The driver writes each
batch's records as it arrives, so no stage holds the whole input. The weights travel through
the object store: nodes need the images, not the checkpoint file.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import pickle
import tempfile
import time

import numpy as np
import ray
import ray.data

from ..apis.inference import build_test_pipeline, decode_sample, init_detector, result_to_records
from ..engine.inference import predict_samples
from ..errors import DataError, RaydetError
from .driver import _as_raydet_error, _deterministic, _init_ray

logger = logging.getLogger("raydet")

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp")
OUTPUT_EXTENSIONS = (".json", ".jsonl")


def resolve_inputs(source: str):
    """``(paths, filesystem, root, scheme)`` for Ray Data's reader: ``source`` is a bucket URI
    (``s3://bucket/prefix?endpoint_override=...``: every image under the prefix, or one
    object), a directory (its images, recursively), a glob (``imgs/**/*.jpg``), a text file of
    image paths (one per line, relative to the file; ``#`` starts a comment) or one image.
    ``root`` is what drawn file names are relative to. Raises :class:`DataError` naming what is
    missing."""
    if "://" in source:
        from pyarrow import fs
        try:
            filesystem, path = fs.FileSystem.from_uri(source)
            info = filesystem.get_file_info(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{source}: cannot open: {exc}") from None
        if info.type == fs.FileType.NotFound:
            raise DataError(f"{source}: no such bucket prefix or object")
        root = path if info.type == fs.FileType.Directory else os.path.dirname(path)
        return [path], filesystem, root, source.split("://", 1)[0] + "://"
    if glob.has_magic(source):
        paths = sorted(p for p in glob.glob(source, recursive=True) if _is_image(p) and os.path.isfile(p))
        if not paths:
            raise DataError(f"{source}: the glob matches no image ({', '.join(IMAGE_EXTENSIONS)})")
        return paths, None, os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]), ""
    if os.path.isdir(source):
        return [os.path.abspath(source)], None, os.path.abspath(source), ""
    if not os.path.isfile(source):
        raise DataError(f"{source}: no such file, directory or bucket prefix")
    if _is_image(source):
        return [os.path.abspath(source)], None, os.path.dirname(os.path.abspath(source)), ""
    return _list_file(source)


def count_images(paths: list, filesystem=None) -> int:
    """How many images Ray Data will read from ``paths`` (files, and directories or bucket
    prefixes listed recursively, as :func:`ray.data.read_binary_files` does)."""
    from pyarrow import fs
    filesystem = filesystem or fs.LocalFileSystem()
    count = 0
    for path in paths:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.Directory:
            found = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
            count += sum(f.type == fs.FileType.File and _is_image(f.path) for f in found)
        else:
            count += 1
    return count


def _is_image(path: str) -> bool:
    return path.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


def _list_file(source: str):
    base = os.path.dirname(os.path.abspath(source))
    paths = []
    with open(source, errors="replace") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            path = os.path.join(base, line)
            if not os.path.isfile(path):
                raise DataError(f"{source}, line {number}: no such image: {line}")
            paths.append(os.path.abspath(path))
    if not paths:
        raise DataError(f"{source}: lists no image")
    return paths, None, os.path.commonpath([os.path.dirname(p) for p in paths]), ""


def _prepare(batch: dict, cfg: dict, scheme: str, keep_bytes: bool) -> dict:
    """Ray Data batch of files (``bytes``, ``path``) -> test-pipeline samples, named by their
    full path or URI (``file_name``)."""
    pipeline = build_test_pipeline(cfg, from_array=True)
    names = [scheme + str(p) for p in batch["path"]]
    # one pickled dict a row, whatever its tensors' shapes: a binary column Arrow holds as it is
    samples = np.array([pickle.dumps(decode_sample(pipeline, bytes(data), name))
                        for data, name in zip(batch["bytes"], names)], dtype=object)
    out = dict(file_name=np.array(names, dtype=object), sample=samples)
    if keep_bytes:
        out["bytes"] = batch["bytes"]
    return out


class _Predictor:
    """One model replica (a Ray Data actor): samples -> one json list of records per image."""

    def __init__(self, cfg: dict, checkpoint: dict, score_thr: float, show_dir: str | None, show_score_thr: float,
                 root: str, scheme: str):
        import torch
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.model = init_detector(cfg, ray.get(checkpoint[0]), device=device)  # (ref,): see infer
        self.score_thr, self.show_dir, self.show_score_thr = score_thr, show_dir, show_score_thr
        self.root, self.scheme = root, scheme

    def __call__(self, batch: dict) -> dict:
        results = predict_samples(self.model, [pickle.loads(sample) for sample in batch["sample"]])
        names = [str(n) for n in batch["file_name"]]
        records = [json.dumps(result_to_records(r, self.model.CLASSES, n, self.score_thr))
                   for r, n in zip(results, names)]
        if self.show_dir:
            import mmcv
            for data, name, result in zip(batch["bytes"], names, results):
                out_file = os.path.join(self.show_dir, os.path.relpath(name[len(self.scheme):], self.root))
                self.model.show_result(mmcv.imfrombytes(bytes(data)), result, score_thr=self.show_score_thr,
                                       out_file=out_file)
        return dict(file_name=np.array(names, dtype=object), records=np.array(records, dtype=object))


def check_outputs(out: str, show_dir: str | None) -> None:
    """Refuse, before any work, an ``out`` that is not ``.json``/``.jsonl`` or already exists,
    and a ``show_dir`` that holds files (raydet does not overwrite what it did not write)."""
    if not out.endswith(OUTPUT_EXTENSIONS):
        raise RaydetError(f"--out {out}: use a .json (one list) or .jsonl (a record per line) file name")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise RaydetError(f"--out {out}: the folder {os.path.dirname(os.path.abspath(out))} does not exist")
    if show_dir and os.path.exists(show_dir) and not os.path.isdir(show_dir):
        raise RaydetError(f"--show-dir {show_dir} is a file, not a folder")
    if os.path.exists(out):
        raise RaydetError(f"{out} exists; raydet does not overwrite a file it did not write: give another --out")
    if show_dir and os.path.isdir(show_dir) and os.listdir(show_dir):
        raise RaydetError(f"--show-dir {show_dir} is not empty; raydet does not overwrite files it did not write")


def _write_records(batches, out: str, total: int | None = None) -> tuple[int, int, tuple | None]:
    """Write the records of the model's ``batches`` to ``out`` (one json list for ``.json``, a
    record a line otherwise) through a new temporary file beside it, renamed when complete (removed
    on failure: only what this call wrote); with ``total`` (images), log a line at each 10% done.
    Returns ``(images, detections, first)``: ``first`` is ``(time, images)`` of the first batch
    back, when the actors' start-up was over."""
    images = detections = 0
    first = None
    next_pct = 10
    # a name no file has (mkstemp creates it), so the clean-up below removes only what this call wrote
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.tmp-", dir=os.path.dirname(os.path.abspath(out)))
    try:
        with os.fdopen(fd, "w") as f:
            as_list = out.endswith(".json")
            for batch in batches:
                if first is None:
                    first = (time.perf_counter(), len(batch["records"]))
                for records in batch["records"]:
                    images += 1
                    for record in json.loads(records):
                        line = json.dumps(record)
                        f.write((",\n" if detections else "[\n") + line if as_list else line + "\n")
                        detections += 1
                while total and images * 100 >= next_pct * total and next_pct <= 100:
                    logger.info(f"inference: {images}/{total} images ({images * 100 // total}%), {detections} "
                                f"detections, {time.perf_counter() - first[0]:.1f} s since the first batch")
                    next_pct = images * 100 // total // 10 * 10 + 10
            if as_list:
                f.write("\n]\n" if detections else "[]\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return images, detections, first


def infer(config, checkpoint: str, source: str, out: str, *, batch_size: int = 4, concurrency=1,
          use_gpu: bool = False, cpus_per_actor: float = 1, score_thr: float = 0.0, show_dir: str | None = None,
          show_score_thr: float = 0.3, address: str | None = None, cfg_options: dict | None = None) -> dict:
    """Detect objects in every image of ``source`` (see :func:`resolve_inputs`) with the detector
    of ``config`` and ``checkpoint``, and write the detections to ``out``: COCO-style records
    (:func:`raydet.apis.inference.result_to_records`; ``file_name`` is the image's path or URI),
    one json list (``.json``) or one record per line (``.jsonl``), written to a new temporary
    file beside it and renamed when complete. ``concurrency``: the number of model actors, or ``(min, max)`` to
    let Ray Data scale the pool; each takes ``cpus_per_actor`` CPUs and, with ``use_gpu``, one
    GPU. ``show_dir``: each image drawn with its detections (scores >= ``show_score_thr``),
    under its path relative to the input's root (a path every actor's node can write).

    Returns ``{images, detections, seconds, images_per_s, out}``: ``seconds`` from the dataset's
    start (the actors' start-up included) to the last record written, ``images_per_s`` after the
    first batch came back (``None`` when there was one batch). Raises :class:`DataError` for missing or
    undecodable images, :class:`CheckpointError` when the checkpoint does not fit the model,
    :class:`RaydetError` for bad arguments; whatever else Ray raises passes through."""
    check_outputs(out, show_dir)
    if batch_size < 1:
        raise RaydetError(f"--batch-size must be >= 1, got {batch_size}")
    sizes = concurrency if isinstance(concurrency, (tuple, list)) else (concurrency, concurrency)
    if len(sizes) != 2 or not 1 <= sizes[0] <= sizes[1]:
        raise RaydetError(f"--concurrency must be N or MIN,MAX with 1 <= MIN <= MAX, got {concurrency}")
    paths, filesystem, root, scheme = resolve_inputs(source)
    model = init_detector(config, checkpoint, cfg_options=cfg_options)  # a checkpoint that does not fit fails here
    cfg = model.cfg.to_dict()
    weights = dict(state_dict=model.state_dict(), meta=dict(CLASSES=list(model.CLASSES)))
    del model

    _init_ray(address)
    # Ray Data's execution INFO lines, and its progress logged as a 9-line block every 10 s where
    # the console is not a terminal (a terminal keeps its live bars): raydet logs one line per 10%
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data's documented logger
    # the weights by reference, in a tuple (an argument that is a bare ObjectRef would be resolved
    # by Ray): the actors' constructor arguments stay small, not a copy in the object store each
    weights = (ray.put(weights),)
    pool = ray.data.ActorPoolStrategy(size=sizes[0]) if sizes[0] == sizes[1] else \
        ray.data.ActorPoolStrategy(min_size=sizes[0], max_size=sizes[1])
    start = time.perf_counter()
    try:
        total = count_images(paths, filesystem)  # one listing (of a bucket too), for the blocks and the progress
        ds = _dataset(paths, filesystem, total, batch_size, pool, cpus_per_actor, use_gpu,
                      dict(cfg=cfg, scheme=scheme, keep_bytes=bool(show_dir)),
                      dict(cfg=cfg, checkpoint=weights, score_thr=score_thr,
                           show_dir=os.path.abspath(show_dir) if show_dir else None,
                           show_score_thr=show_score_thr, root=root, scheme=scheme))
        images, detections, first = _write_records(ds.iter_batches(batch_size=None, batch_format="numpy"), out,
                                                   total=total)
    except Exception as exc:
        found = _deterministic(exc) or _no_input(exc, source)
        if found:
            raise _as_raydet_error(*found) from None
        raise
    end = time.perf_counter()
    steady = (images - first[1]) / (end - first[0]) if first and images > first[1] and end > first[0] else None
    return dict(images=images, detections=detections, seconds=end - start, images_per_s=steady, out=out)


def _dataset(paths, filesystem, total: int, batch_size, pool, cpus_per_actor, use_gpu, prepare_kwargs,
             predictor_kwargs):
    """The lazy Ray Data pipeline: files -> samples (:func:`_prepare`) -> records (:class:`_Predictor`)."""
    # Listing and reading files is I/O: the reads ask for no CPU (a pool of actors that takes every
    # CPU would otherwise starve its own input) and at most a few run at once.
    # blocks of at most 256 images, at least 20 of them: results stream back (and progress is
    # seen) in steps of 5% or less; Ray would make one block a read task
    ds = ray.data.read_binary_files(paths, include_paths=True, filesystem=filesystem, num_cpus=0, concurrency=4,
                                    file_extensions=list(IMAGE_EXTENSIONS),  # Ray ignores their case
                                    override_num_blocks=max(1, min(total, max(20, -(-total // 256)))))
    ds = ds.map_batches(_prepare, batch_size=batch_size, num_cpus=1, fn_kwargs=prepare_kwargs)
    return ds.map_batches(_Predictor, batch_size=batch_size, compute=pool, num_cpus=cpus_per_actor,
                          num_gpus=1 if use_gpu else 0, fn_constructor_kwargs=predictor_kwargs)


def _no_input(exc: BaseException, source: str) -> tuple[str, str] | None:
    """Ray Data's error for a directory or prefix without a single image, as a DataError."""
    if "No input files found" in str(exc) or "No files found" in str(exc):
        return "DataError", f"{source}: holds no image ({', '.join(IMAGE_EXTENSIONS)})"
    return None
