"""Dataset scale: a COCO-train-sized annotation file, its index's build time and memory, per process and per node.

    .venv/bin/python benchmarks/dataset_scale.py [--images 118287] [--boxes 826617] [--samples 300]
                                                [--root DIR] [--no-ray]

1. Writes (once, seeded, under ``--root``, default ``$RAYDET_DATA/bench`` or ``~/.cache/raydet/bench``)
   a COCO instances json of COCO train 2017's size: 118,287 images, 826,617 boxes, each with a
   4-point polygon, 80 categories. The images need not exist: the benchmark turns off the
   build-time image header check (``check_images``), which is not what it measures.
2. In a fresh process each (an empty index cache first, ``cold``, then the cache it left,
   ``warm``): ``CocoDataset`` build time, the process's resident memory added by the build
   (RSS after - before) and its peak, the pickled size of the dataset, then a ``DataLoader`` with 2
   worker processes (fork) serving ``--samples`` samples each (``LoadAnnotations`` with masks: the
   annotations, no image decoding) and each worker's memory from ``/proc/PID/smaps_rollup``: its
   private memory (pages it copied or allocated itself) and PSS (shared pages split among sharers).
3. A node of 2 Ray workers x 2 loader processes (Ray actors, on a local Ray instance), each
   serving ``--samples`` samples per loader process: the sum of PSS over every process of the
   machine (Ray's own included), and the machine's memory in use (``MemTotal - MemAvailable``,
   which also counts object-store pages no process has mapped), after minus before the datasets
   were built: the node's annotation memory. Two sides: every worker builds its dataset itself (from the index cache), and the driver
   shares one index through Ray's object store (raydet's launcher: ``share_indexes``).

Run at an older commit it measures what that commit does (sides it lacks print ``n/a``).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.common import scratch  # noqa: E402
PIPELINE = [dict(type="LoadAnnotations", with_bbox=True, with_mask=True)]
SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 360), (500, 375), (612, 612)]


def write_annotations(path: str, images: int, boxes: int, seed: int = 0) -> None:
    """A COCO instances json of ``images`` images and ``boxes`` boxes (a 4-point polygon each)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, len(SIZES), images)
    per_image = rng.multinomial(boxes, rng.dirichlet(np.ones(images)))
    imgs, anns = [], []
    for i in range(images):
        w, h = SIZES[sizes[i]]
        imgs.append(dict(id=i + 1, file_name=f"{i + 1:012d}.jpg", width=w, height=h))
        n = int(per_image[i])
        if not n:
            continue
        bw, bh = rng.uniform(4, w / 2, n), rng.uniform(4, h / 2, n)
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        cats = rng.integers(1, 81, n)
        for k in range(n):
            x1, y1, x2, y2 = (round(float(v), 2) for v in (x[k], y[k], x[k] + bw[k], y[k] + bh[k]))
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=int(cats[k]), iscrowd=0,
                             bbox=[x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)], area=round((x2 - x1) * (y2 - y1), 2),
                             segmentation=[[x1, y1, x2, y1, x2, y2, x1, y2]]))
    cats = [dict(id=c, name=f"class_{c}", supercategory="thing") for c in range(1, 81)]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(images=imgs, annotations=anns, categories=cats), f)
    os.replace(tmp, path)


def smaps(pid: int) -> dict:
    """``{'rss', 'pss', 'private'}`` of a process in MiB (``private``: its pages nobody shares)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return dict(rss=out["Rss"], pss=out["Pss"], private=out["Private_Clean"] + out["Private_Dirty"])


def node_pss() -> float:
    """Sum of PSS (MiB) over every process of the machine that can be read."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                total += smaps(int(pid))["pss"]
            except (OSError, KeyError):
                pass
    return total


def build(ann_file: str):
    """The benchmark's dataset; the image header check off (the images do not exist)."""
    import raydet.data.dataset as dataset_module
    dataset_module.check_images = lambda *args, **kwargs: None
    return dataset_module.CocoDataset(ann_file, pipeline=PIPELINE, filter_empty_gt=False)


class Probe:
    """The dataset behind a loader: ``-1`` in the sampler makes the worker that draws it report
    its pid, ``-2`` makes it run a full garbage collection first (which visits every python
    object, as one does sooner or later in a long epoch: in a forked process that writes to every
    page that holds python objects); the samples' arrays are dropped: nothing accumulates."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i < 0:
            if i == -2:
                import gc
                gc.collect()
            return ("pid", os.getpid())
        return ("boxes", len(self.dataset[i]["gt_labels"]))


def serve(dataset, samples: int, workers: int = 2, seed: int = 0, collect: bool = False):
    """A loader of ``workers`` fork workers serving ``samples`` random samples each (then, with
    ``collect``, a full garbage collection each); returns the live iterator (keeping the workers
    alive) and the workers' pids."""
    import numpy as np
    import torch
    order = np.random.default_rng(seed).permutation(len(dataset))[:samples * workers].tolist()
    order += [-2 if collect else -1] * workers
    loader = torch.utils.data.DataLoader(Probe(dataset), batch_size=None, sampler=order, num_workers=workers,
                                         persistent_workers=True, multiprocessing_context="fork")
    it = iter(loader)
    pids = [value for what, value in it if what == "pid"]
    return it, pids


class Null:
    """No annotations: what a loader process costs without a dataset (the baseline)."""

    def __len__(self):
        return 1_000_000

    def __getitem__(self, i):
        return dict(gt_labels=())


def child_build(ann_file: str, samples: int) -> dict:
    import raydet.data.dataset  # noqa: F401  (imports are not the dataset's memory)
    import torch.utils.data  # noqa: F401
    it, pids = serve(Null(), samples, collect=True)
    baseline = [smaps(p)["private"] for p in pids]
    del it
    rss0 = smaps(os.getpid())["rss"]
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    ds = build(ann_file)
    seconds = time.perf_counter() - start
    rss1 = smaps(os.getpid())["rss"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pickled = len(pickle.dumps(ds, protocol=pickle.HIGHEST_PROTOCOL)) / 2**20
    out = dict(build_s=seconds, added_rss=rss1 - rss0, peak_added=max(0.0, peak - max(peak0, rss0)),
               pickled_mib=pickled, images=len(ds), baseline=baseline)
    for collect in (False, True):
        it, pids = serve(ds, samples, collect=collect)
        workers = [smaps(p) for p in pids]
        del it
        out["gc" if collect else "served"] = dict(private=[w["private"] for w in workers], pss=[w["pss"] for w in workers])
    return out


def used_mib() -> float:
    """The machine's memory in use (MiB): ``MemTotal - MemAvailable`` (page cache not counted;
    shared memory such as Ray's object store is)."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":")
            info[key] = int(value.split()[0]) / 1024
    return info["MemTotal"] - info["MemAvailable"]


def node(ann_file: str, samples: int, mode: str) -> dict:
    """2 Ray actors x 2 loader processes; the node's memory added by the datasets (the driver's
    build and put included, where it shares the index). ``mode``: ``own`` (each worker builds its
    dataset), ``shared`` (the driver shares one index), ``none`` (no dataset: the loader processes'
    own cost)."""
    import ray
    from raydet.launch.driver import _init_ray
    _init_ray(None, num_cpus=4)
    try:
        @ray.remote(num_cpus=1)
        class Worker:
            def __init__(self):
                import raydet.data.dataset  # noqa: F401  (imports are not the dataset's memory)
                import torch.utils.data  # noqa: F401

            def build(self, refs):  # in a list: Ray passes a top-level ObjectRef resolved, not zero-copy mapped
                if isinstance(refs[0], str):
                    self.ds = Null()
                    return "no dataset"
                if refs[0] is not None:
                    from raydet.data.index import provide
                    provide(ray.get(refs[0]))
                self.ds = build(ann_file)
                return getattr(self.ds, "index_source", "own")

            def serve(self):
                self.it, pids = serve(self.ds, samples)
                return pids

        workers = [Worker.remote() for _ in range(2)]
        ray.get([w.__ray_ready__.remote() for w in workers])
        import raydet.data.dataset  # noqa: F401
        time.sleep(2)
        pss0, used0 = node_pss(), used_mib()
        ref = "none" if mode == "none" else None
        if mode == "shared":  # what raydet's launcher does (share_indexes): the driver keeps no copy
            from raydet.data.index import collecting
            with collecting() as got:
                build(ann_file)
            ref = ray.put(got)
            del got
        sources = ray.get([w.build.remote([ref]) for w in workers])
        ray.get([w.serve.remote() for w in workers])
        time.sleep(1)
        return dict(added_pss=node_pss() - pss0, added_used=used_mib() - used0, sources=sources)
    finally:
        ray.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--boxes", type=int, default=826_617)
    ap.add_argument("--samples", type=int, default=300, help="samples each loader process serves")
    ap.add_argument("--root", default=None)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--child", choices=["build", "node-own", "node-shared", "node-none"], help=argparse.SUPPRESS)
    ap.add_argument("--ann", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = child_build(args.ann, args.samples) if args.child == "build" else \
            node(args.ann, args.samples, mode=args.child[len("node-"):])
        print(json.dumps(out))
        return
    from raydet.data.index import data_home
    root = args.root or os.path.join(data_home(), "bench")
    os.makedirs(root, exist_ok=True)
    ann = os.path.join(root, f"instances_synthetic_{args.images}_{args.boxes}.json")
    if not os.path.isfile(ann):
        start = time.perf_counter()
        write_annotations(ann, args.images, args.boxes)
        print(f"wrote {ann} in {time.perf_counter() - start:.1f} s")
    print(f"annotations: {ann}: {os.path.getsize(ann) / 2**20:.1f} MiB, {args.images} images, {args.boxes} boxes")
    cache = tempfile.mkdtemp(prefix="raydet-index-")

    def run(kind):
        env = dict(os.environ, PYTHONPATH=REPO, RAYDET_DATA=cache, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, "--ann", ann,
                               "--samples", str(args.samples)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            if kind == "node-shared" and "raydet.data.index" in proc.stderr:
                return None  # a commit without shared indexes
            raise RuntimeError(f"{kind} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    print(f"{'':28} {'build s':>8} {'+RSS MiB':>9} {'+peak MiB':>9} {'pickled MiB':>11}   "
          f"each loader process, MiB: private (PSS) after {args.samples} samples | after a full gc")
    for kind in ("cold", "warm"):
        r = run("build")
        if kind == "cold":
            print(f"(a loader process over no dataset: private {', '.join(f'{v:.1f}' for v in r['baseline'])} MiB after a full gc)")
        loaders = " | ".join(", ".join(f"{p:.1f} ({q:.1f})" for p, q in zip(r[k]["private"], r[k]["pss"]))
                             for k in ("served", "gc"))
        print(f"training process, {kind:<10} {r['build_s']:8.2f} {r['added_rss']:9.1f} {r['peak_added']:9.1f} "
              f"{r['pickled_mib']:11.1f}   {loaders}")
    if not args.no_ray:
        none, own, shared = run("node-none"), run("node-own"), run("node-shared")
        print("node, 2 Ray workers x 2 loader processes, memory added: sum of PSS / MemTotal - MemAvailable")
        print(f"  no dataset (what the loader processes cost): {none['added_pss']:.1f} / {none['added_used']:.1f} MiB")
        print(f"  each worker builds its own dataset: {own['added_pss']:.1f} / {own['added_used']:.1f} MiB "
              f"({', '.join(own['sources'])})")
        print("  the driver shares one index through the object store: "
              + ("n/a" if shared is None else f"{shared['added_pss']:.1f} / {shared['added_used']:.1f} MiB "
                                              f"({', '.join(shared['sources'])})"))


if __name__ == "__main__":
    scratch()
    main()
