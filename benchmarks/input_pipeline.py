"""Input pipeline: raydet's mmdet-2.x training pipeline beside an equivalent torchvision v2 one.

    .venv/bin/python benchmarks/input_pipeline.py [--images 800] [--repeats 5] [--train-iters 40]

Both sides read the same JPEGs of the built-in shapes train split and produce the same batch:
decode, keep-ratio resize into the default config's scale (mmcv's rule for the size; bilinear
without antialias on both sides, as mmcv's ``imresize`` is), horizontal flip with p=0.5,
normalize (ImageNet mean/std, RGB), pad to the config's ``Pad.size_divisor``, collate 16 images
into one padded ``[16, 3, H, W]`` tensor with per-image boxes and labels. Both take the same
batches of the same images: one epoch of raydet's training sampler (mmdet's group sampler:
shuffled, each batch of one aspect ratio group), which both DataLoaders get as their
``batch_sampler``. Both run in the
main process (no loader workers), so images/s is one core's throughput; the sides alternate,
``--repeats`` times.

Then, inside training: the default config in-process (1 x 16 images, the default's
``workers_per_gpu``) for ``--train-iters`` iterations; data_time as a share of step time, from
the run's own log.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import bench_home, scratch  # noqa: E402
from raydet.config import load_config  # noqa: E402
from raydet.data import build_dataset  # noqa: E402
from raydet.data.loader import GroupSampler, collate  # noqa: E402

CONFIG = "configs/fcos/fcos_gn_tiny_shapes.py"
BATCH = 16


def training_batches(dataset):
    """One epoch of the training loader's batches (mmdet's group sampler: shuffled, each batch
    of one aspect-ratio group), as sample keys."""
    keys = list(GroupSampler(dataset, BATCH, seed=0))
    return [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]


def raydet_side(dataset, batches):
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=0, collate_fn=collate)
    seen, start = 0, time.perf_counter()
    for batch in loader:
        seen += batch["img"].shape[0]
    return seen / (time.perf_counter() - start)


class TorchvisionSide(torch.utils.data.Dataset):
    """The same steps with ``torchvision.io.decode_jpeg`` and ``transforms.v2``."""

    def __init__(self, dataset, scale, mean, std, size_divisor):
        from torchvision.transforms import v2
        self.items = [(os.path.join(dataset.img_prefix, dataset.data_infos[i]["filename"]),
                       dataset.ann_infos[i]) for i in range(len(dataset))]
        self.long_side, self.short_side = max(scale), min(scale)
        self.size_divisor = size_divisor
        self.transform = v2.Compose([
            v2.RandomHorizontalFlip(0.5),
            v2.ToDtype(torch.float32, scale=False),
            v2.Normalize(mean, std),
        ])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        from torchvision import tv_tensors
        from torchvision.io import decode_jpeg, read_file
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F
        path, ann = self.items[index]
        img = decode_jpeg(read_file(path))
        h, w = img.shape[-2:]
        factor = min(self.long_side / max(h, w), self.short_side / min(h, w))  # mmcv's rescale_size
        size = [int(h * factor + 0.5), int(w * factor + 0.5)]
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(ann["bboxes"]), format="XYXY", canvas_size=(h, w))
        img = F.resize(tv_tensors.Image(img), size, interpolation=InterpolationMode.BILINEAR, antialias=False)
        boxes = F.resize(boxes, size)
        img, boxes = self.transform(img, boxes)
        return img, boxes, torch.from_numpy(ann["labels"])

    def collate(self, samples):
        h = max(s[0].shape[1] for s in samples)
        w = max(s[0].shape[2] for s in samples)
        d = self.size_divisor
        h, w = -(-h // d) * d, -(-w // d) * d
        batch = samples[0][0].new_zeros((len(samples), 3, h, w))
        for i, (img, _, _) in enumerate(samples):
            batch[i, :, :img.shape[1], :img.shape[2]] = img
        return batch, [s[1] for s in samples], [s[2] for s in samples]


def torchvision_side(dataset, batches):
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[[k.index for k in b] for b in batches],
                                         num_workers=0, collate_fn=dataset.collate)
    seen, start = 0, time.perf_counter()
    for img, _, _ in loader:
        seen += img.shape[0]
    return seen / (time.perf_counter() - start)


def _subset(n):
    """The first ``n`` train images of the shapes set, in a directory of their own."""
    root = bench_home(f"shapes-{n}-{BATCH}")
    return dict(root=root, num_images={"train": n, "val": BATCH})


def data_time_share(iters):
    from raydet.run import train_from_config
    subset = _subset(BATCH * iters)
    cfg = load_config(CONFIG, {"data.samples_per_gpu": BATCH, "data.train.root": subset["root"],
                               "data.train.num_images": subset["num_images"],
                               "runner.max_epochs": 1, "log_config.interval": 1,
                               "log_config.hooks": [dict(type="TextLoggerHook")],
                               "checkpoint_config.interval": 100})
    cfg.work_dir = tempfile.mkdtemp(prefix="raydet-bench-input-")
    runner = train_from_config(cfg, validate=False)
    rows = [json.loads(line) for line in open(os.path.join(cfg.work_dir, f"{runner.timestamp}.log.json"))]
    rows = [r for r in rows if r.get("mode") == "train"][5:]  # skip the loader workers' start
    share = [r["data_time"] / r["time"] for r in rows]
    return statistics.mean(share), statistics.median([r["data_time"] for r in rows]), \
        statistics.median([r["time"] for r in rows]), cfg.data.workers_per_gpu


def summary(values):
    return f"median {statistics.median(values):8.1f}  min {min(values):8.1f}  max {max(values):8.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-iters", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per side, as in one loader worker
    cfg = load_config(CONFIG)
    dataset = build_dataset(cfg.data.train, seed=0, **_subset(args.images))
    resize = next(t for t in cfg.train_pipeline if t["type"] == "Resize")
    pad = next(t for t in cfg.train_pipeline if t["type"] == "Pad")
    norm = cfg.img_norm_cfg
    tv = TorchvisionSide(dataset, resize["img_scale"], norm["mean"], norm["std"], pad["size_divisor"])
    n = len(dataset)
    batches = training_batches(dataset)
    raydet_side(dataset, batches)  # warm the page cache and imports for both sides
    torchvision_side(tv, batches)
    results = {"raydet (mmcv/cv2)": [], "torchvision v2": []}
    for _ in range(args.repeats):
        results["raydet (mmcv/cv2)"].append(raydet_side(dataset, batches))
        results["torchvision v2"].append(torchvision_side(tv, batches))
    print(f"training pipeline over one epoch ({sum(map(len, batches))} samples) of {n} shapes JPEGs, "
          f"{len(batches)} aspect-grouped batches of {BATCH}, "
          f"pad to {pad['size_divisor']}, bilinear without antialias, one core, images/s:")
    for side, values in results.items():
        print(f"  {side:18s} {summary(values)}")
    ratio = statistics.median(results["raydet (mmcv/cv2)"]) / statistics.median(results["torchvision v2"])
    print(f"  ratio raydet / torchvision (medians): {ratio:.2f}")
    if args.train_iters:
        torch.set_num_threads(os.cpu_count())
        share, data_time, step, workers = data_time_share(args.train_iters)
        print(f"inside training ({CONFIG}, in-process, 1 x {BATCH}, workers_per_gpu={workers}, "
              f"{args.train_iters} iterations): data_time median {data_time * 1000:.1f} ms, "
              f"step median {step * 1000:.0f} ms, data_time share of step time {share * 100:.1f}%")


if __name__ == "__main__":
    scratch()
    main()
