"""Collate, aspect-ratio group samplers and the dataloader builder."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from .dataset import SampleKey


def _pad_stack(imgs: list[torch.Tensor], pad_value: float = 0.0) -> torch.Tensor:
    """Stack CHW tensors, zero-padding bottom/right to the batch's max H and W."""
    h = max(i.shape[-2] for i in imgs)
    w = max(i.shape[-1] for i in imgs)
    if all(i.shape[-2:] == (h, w) for i in imgs):
        return torch.stack(imgs)
    return torch.stack([F.pad(i, (0, w - i.shape[-1], 0, h - i.shape[-2]), value=pad_value) for i in imgs])


class Batch(dict):
    """A collated batch: a plain dict in use. Sent from a DataLoader worker, each list of
    per-image tensors (boxes, labels, masks) travels as one flat tensor and is split back into
    views on arrival, because torch passes every tensor through a shared-memory segment of its
    own: a batch of 16 images with boxes and labels took 21 ms to receive, ~5 ms packed."""

    def __reduce__(self):
        plain, packed = {}, {}
        for key, value in self.items():
            if (isinstance(value, list) and value and all(isinstance(t, torch.Tensor) for t in value)
                    and len({t.dtype for t in value}) == 1):
                packed[key] = (torch.cat([t.reshape(-1) for t in value]), [tuple(t.shape) for t in value])
            else:
                plain[key] = value
        return (_unpack, (plain, packed))


def _unpack(plain: dict, packed: dict) -> Batch:
    out = Batch(plain)
    for key, (flat, shapes) in packed.items():
        sizes = [math.prod(shape) for shape in shapes]
        out[key] = [part.view(shape) for part, shape in zip(torch.split(flat, sizes), shapes)]
    return out


def collate(batch: list[dict]) -> dict:
    """Batch samples as mmcv's ``collate`` and a one-device ``scatter`` would: a key mmdet's
    formatting marked to be stacked (a :class:`~raydet.data.pipeline.Sample`'s ``stacked``: ``img``,
    ``gt_semantic_seg``) -> one tensor ``[B, ...]`` padded with its ``padding_value`` (mmcv's
    ``collate`` does it); a bare ``img`` (``ImageToTensor``) -> zero-padded ``[B, C, H, W]``;
    everything else -> a list per image (``img_metas``, ``gt_bboxes``, ...). Test-time augmented
    samples (values are lists over augmentations) collate per augmentation."""
    stacked = getattr(batch[0], "stacked", {})

    def one(key, values):
        if key in stacked:
            return _mmcv_stack(values, *stacked[key])
        return _pad_stack(values) if key == "img" else values

    out = Batch()
    for key in batch[0]:
        values = [sample[key] for sample in batch]
        if isinstance(values[0], list):  # MultiScaleFlipAug: one entry per augmentation
            out[key] = [one(key, list(v)) for v in zip(*values)]
        else:
            out[key] = one(key, values)
    return out


def _mmcv_stack(values: list, padding_value, pad_dims) -> torch.Tensor:
    """mmcv's ``collate`` of ``DataContainer(value, stack=True, padding_value, pad_dims)``s."""
    from mmcv.parallel import DataContainer
    from mmcv.parallel import collate as mmcv_collate
    batch = [DataContainer(v, stack=True, padding_value=padding_value, pad_dims=pad_dims) for v in values]
    return mmcv_collate(batch, samples_per_gpu=len(batch)).data[0]


def batch_to_device(batch: dict, device) -> dict:
    """A collated batch with its tensors (also inside lists) on ``device``; ``img_metas`` stays
    on the host."""
    def move(value):
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        return [move(v) for v in value] if isinstance(value, list) else value
    return {k: (v if k == "img_metas" else move(v)) for k, v in batch.items()}


class GroupSampler(Sampler):
    """Aspect-ratio grouped, shuffled, optionally sharded sampler (mmdet's (Distributed)GroupSampler).

    Each batch holds images of one ``dataset.flag`` group. Per epoch, from a generator seeded with
    ``seed + epoch``: each group's indices are shuffled and padded by repetition to a multiple of
    ``samples_per_gpu``, cut into batches, and the batches permuted. That global batch order does
    not depend on ``num_replicas``. ``set_epoch(epoch, start_batch)`` skips the first
    ``start_batch`` global batches (consumed before a resume, possibly by another number of
    replicas); the rest is padded with the epoch's first batches to a multiple of ``num_replicas``
    (the padding an uninterrupted run on as many replicas has) and rank ``r``
    takes its batches ``r, r + R, r + 2R, ...``, so one training step consumes the next ``R``
    global batches, every rank takes the same number of steps, and every sample of the epoch is
    seen exactly once apart from that padding. Yields :class:`SampleKey` ``(index, epoch)``.
    """

    def __init__(self, dataset, samples_per_gpu: int = 1, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.flag = np.asarray(getattr(dataset, "flag", np.zeros(len(dataset), np.uint8)))
        self.samples_per_gpu, self.num_replicas, self.rank = samples_per_gpu, num_replicas, rank
        self.seed, self.shuffle = int(seed), shuffle
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch's order; ``start_batch`` global batches of it are already consumed."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def global_batches(self) -> list[list[int]]:
        """The epoch's batches in global order (before sharding)."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        batches = []
        spg = self.samples_per_gpu
        for group in np.unique(self.flag):
            idx = np.flatnonzero(self.flag == group)
            if self.shuffle:
                idx = idx[torch.randperm(len(idx), generator=g).numpy()]
            extra = (-len(idx)) % spg
            idx = np.concatenate([idx, np.resize(idx, extra)]) if extra else idx
            batches += [idx[i:i + spg].tolist() for i in range(0, len(idx), spg)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def _total(self) -> int:
        return sum(math.ceil(int((self.flag == gr).sum()) / self.samples_per_gpu) for gr in np.unique(self.flag))

    def num_batches(self) -> int:
        """Steps in a full epoch for one rank."""
        return math.ceil(self._total() / self.num_replicas)

    def remaining_steps(self) -> int:
        """Steps left in the epoch after ``start_batch`` (each rank takes as many)."""
        return math.ceil(max(self._total() - self.start_batch, 0) / self.num_replicas)

    def __iter__(self):
        batches = self.global_batches()
        rest = batches[self.start_batch:]
        # padded with the epoch's first batches, as an uninterrupted run on this world size pads
        extra = self.remaining_steps() * self.num_replicas - len(rest) if rest else 0
        rest += (batches * math.ceil(extra / len(batches)))[:extra] if extra else []
        for batch in rest[self.rank::self.num_replicas]:
            for i in batch:
                yield SampleKey(int(i), self.epoch)

    def __len__(self):
        return self.remaining_steps() * self.samples_per_gpu


class ShardSampler(Sampler):
    """Sequential, disjoint, unpadded shards for evaluation: rank ``r`` gets the ``r``-th
    contiguous block, so gathering the ranks' results in rank order restores dataset order."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0):
        n = len(dataset)
        per = math.ceil(n / num_replicas)
        self.indices = list(range(min(rank * per, n), min((rank + 1) * per, n)))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class OrderedGroupBatchSampler:
    """Batches of up to ``batch_size`` consecutive indices of ``sampler`` that share an aspect
    group: the order is kept (results gather back into dataset order) and a batch never mixes
    image sizes, so no image is padded for another's sake and a prediction does not depend on
    which images share its batch or rank (GroupNorm statistics would include the padding)."""

    def __init__(self, sampler, flag, batch_size: int):
        self.sampler, self.flag, self.batch_size = sampler, np.asarray(flag), batch_size

    def __iter__(self):
        batch = []
        for i in self.sampler:
            if batch and (len(batch) == self.batch_size or self.flag[i] != self.flag[batch[0]]):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def __len__(self):
        return sum(1 for _ in self)


def _worker_init(_, opencv_threads=None):
    # Each dataloader worker is a CPU-bound process; one thread each avoids oversubscription.
    torch.set_num_threads(1)
    if opencv_threads is not None:
        import cv2
        cv2.setNumThreads(opencv_threads)


#: the longest path a unix socket can bind (``sun_path`` is 108 bytes with its terminating NUL)
SOCKET_PATH_MAX = 107
#: what multiprocessing adds to the temp dir for a loader worker's socket
SOCKET_SUFFIX = len("/pymp-XXXXXXXX/listener-XXXXXXXX")


def _check_socket_room() -> None:
    """Loader workers hand batches back as file descriptors through a unix socket that
    multiprocessing makes at ``$TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX``; when that path is longer
    than a socket path may be, the socket cannot bind, in a thread of the worker, and the loader
    waits for a batch forever instead of failing."""
    import tempfile

    from torch.multiprocessing import get_sharing_strategy

    from ..errors import ConfigError
    base = tempfile.gettempdir()
    if get_sharing_strategy() == "file_descriptor" and len(base) + SOCKET_SUFFIX > SOCKET_PATH_MAX:
        raise ConfigError(f"data.workers_per_gpu > 0 with the temp directory {base!r} ({len(base)} characters): "
                          f"its loader workers' sockets would be longer than {SOCKET_PATH_MAX} characters; "
                          f"set TMPDIR to a path of at most {SOCKET_PATH_MAX - SOCKET_SUFFIX} characters, or "
                          f"data.workers_per_gpu=0")


def build_dataloader(dataset, samples_per_gpu: int, workers_per_gpu: int, num_replicas: int = 1,
                     rank: int = 0, shuffle: bool = True, seed: int = 0,
                     persistent_workers: bool = True, pin_memory: bool = False,
                     mp_start_method: str | None = None, opencv_num_threads: int | None = None) -> DataLoader:
    """A training loader (``shuffle=True``: :class:`GroupSampler`) or an evaluation loader
    (``shuffle=False``: this rank's :class:`ShardSampler` shard in :class:`OrderedGroupBatchSampler`
    batches). The loader has its own ``torch.Generator`` so that
    creating an iterator never consumes the global torch RNG (which would break exact resume).
    ``mp_start_method`` and ``opencv_num_threads`` are mmdet's keys of the same names: the loader
    workers' start method and each worker's OpenCV thread count (``None``: torch's and OpenCV's
    defaults). Raises :class:`~raydet.errors.ConfigError` when loader workers could not pass
    batches back (a temp directory path too long for a socket)."""
    import functools
    workers = workers_per_gpu > 0
    if workers:
        _check_socket_room()
    common = dict(num_workers=workers_per_gpu, collate_fn=collate, pin_memory=pin_memory,
                  persistent_workers=persistent_workers and workers,
                  multiprocessing_context=mp_start_method if workers else None,
                  worker_init_fn=functools.partial(_worker_init, opencv_threads=opencv_num_threads),
                  generator=torch.Generator())
    if shuffle:
        sampler = GroupSampler(dataset, samples_per_gpu, num_replicas, rank, seed=seed)
        return DataLoader(dataset, batch_size=samples_per_gpu, sampler=sampler, drop_last=False, **common)
    flag = getattr(dataset, "flag", np.zeros(len(dataset), np.uint8))
    batches = OrderedGroupBatchSampler(ShardSampler(dataset, num_replicas, rank), flag, samples_per_gpu)
    return DataLoader(dataset, batch_sampler=batches, **common)
