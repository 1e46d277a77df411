"""Input pipeline: raydet's mmdet-2.x training pipeline beside an equivalent torchvision v2 one.

    .venv/bin/python benchmarks/input_pipeline.py [--images 800] [--repeats 5] [--train-iters 40]

Both sides read the same JPEGs of the built-in shapes train split and produce the same batch:
decode, keep-ratio resize into the default config's scale, horizontal flip with p=0.5,
normalize (ImageNet mean/std, RGB), pad to a multiple of 16, collate 16 images into one padded
``[16, 3, H, W]`` tensor with per-image boxes and labels. Both run in the main process (no
loader workers), so images/s is one core's throughput; the sides alternate, ``--repeats`` times.

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

from raydet.config import load_config  # noqa: E402
from raydet.data import build_dataset  # noqa: E402
from raydet.data.loader import build_dataloader  # noqa: E402

CONFIG = "configs/fcos/fcos_gn_tiny_shapes.py"
BATCH = 16


def raydet_side(dataset, n):
    loader = build_dataloader(dataset, BATCH, 0, shuffle=False)
    seen, start = 0, time.perf_counter()
    for batch in loader:
        seen += batch["img"].shape[0]
        if seen >= n:
            break
    return seen / (time.perf_counter() - start)


class TorchvisionSide(torch.utils.data.Dataset):
    """The same steps with ``torchvision.io.decode_jpeg`` and ``transforms.v2``."""

    def __init__(self, dataset, scale, mean, std):
        from torchvision.transforms import v2
        self.items = [(os.path.join(dataset.img_prefix, dataset.data_infos[i]["filename"]),
                       dataset.ann_infos[i]) for i in range(len(dataset))]
        long_side, short_side = max(scale), min(scale)
        self.transform = v2.Compose([
            v2.Resize(short_side, max_size=long_side + 1, antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.ToDtype(torch.float32, scale=False),
            v2.Normalize(mean, std),
        ])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        from torchvision import tv_tensors
        from torchvision.io import decode_jpeg, read_file
        path, ann = self.items[index]
        img = decode_jpeg(read_file(path))
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(ann["bboxes"]), format="XYXY",
                                         canvas_size=tuple(img.shape[-2:]))
        img, boxes = self.transform(tv_tensors.Image(img), boxes)
        return img, boxes, torch.from_numpy(ann["labels"])

    @staticmethod
    def collate(samples):
        h = max(s[0].shape[1] for s in samples)
        w = max(s[0].shape[2] for s in samples)
        h, w = -(-h // 16) * 16, -(-w // 16) * 16
        batch = samples[0][0].new_zeros((len(samples), 3, h, w))
        for i, (img, _, _) in enumerate(samples):
            batch[i, :, :img.shape[1], :img.shape[2]] = img
        return batch, [s[1] for s in samples], [s[2] for s in samples]


def torchvision_side(dataset, n):
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=0,
                                         collate_fn=TorchvisionSide.collate)
    seen, start = 0, time.perf_counter()
    for img, _, _ in loader:
        seen += img.shape[0]
        if seen >= n:
            break
    return seen / (time.perf_counter() - start)


def _subset(n):
    """The first ``n`` train images of the shapes set, in a directory of their own."""
    root = os.path.join(tempfile.gettempdir(), f"raydet-bench-shapes-{n}")
    return dict(root=root, num_images={"train": n, "val": BATCH})


def data_time_share(iters):
    from raydet.apis import train_from_config
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
    norm = cfg.img_norm_cfg
    tv = TorchvisionSide(dataset, resize["img_scale"], norm["mean"], norm["std"])
    n = len(dataset)
    raydet_side(dataset, BATCH)  # warm the page cache and imports for both sides
    torchvision_side(tv, BATCH)
    results = {"raydet (mmcv/cv2)": [], "torchvision v2": []}
    for _ in range(args.repeats):
        results["raydet (mmcv/cv2)"].append(raydet_side(dataset, n))
        results["torchvision v2"].append(torchvision_side(tv, n))
    print(f"training pipeline over {n} shapes JPEGs, batches of {BATCH}, one core, images/s:")
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
    main()
