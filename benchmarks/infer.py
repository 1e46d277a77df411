"""Batch inference: ``raydet infer`` on Ray Data beside a plain loop of ``inference_detector``.

    .venv/bin/python benchmarks/infer.py [--images 400] [--batch-size 4] [--actors 2] [--repeats 2]
                                         [--config CONFIG] [--checkpoint CKPT]

The same ``--images`` images (the shapes val set, generated once), the same weights (``--checkpoint``,
else the config's model at its initial weights, saved once: both sides run the same model, so
the ratio holds whatever the weights) and the same batch size. Sides, alternating, each in a
fresh process, ``--repeats`` times:

* ``loop``: ``init_detector`` then ``inference_detector`` over batches of paths, torch's default
  threads (one per core), results kept as COCO-style records in memory;
* ``raydet infer``: ``--concurrency ACTORS`` actors of 1 CPU each, a local Ray instance started
  by the command, results streamed to a .jsonl file.

Prints, per side, images/s over the whole command (process start to exit: Python, torch, Ray and
the actors' start-up included, as a user waits for it) and once running (after the first batch
came back: ``loop`` times the rest of its batches, ``raydet infer`` reports its own), and the
ratios raydet/loop of each.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import CONFIG, RAY_ENV, REPO, bench_home, run_json, scratch  # noqa: E402


def loop_side(config: str, checkpoint: str, images: list[str], batch_size: int) -> dict:
    from raydet.apis import inference_detector, init_detector
    from raydet.apis.inference import result_to_records
    model = init_detector(config, checkpoint)
    records = []
    for i in range(0, len(images), batch_size):
        if i == batch_size:  # like raydet infer's figure: from the first batch's return
            start = time.perf_counter()
        chunk = images[i:i + batch_size]
        for path, result in zip(chunk, inference_detector(model, chunk)):
            records += result_to_records(result, model.CLASSES, path)
    return dict(per_s=(len(images) - batch_size) / (time.perf_counter() - start), detections=len(records))


def prepare(args) -> tuple[str, str, list[str]]:
    """``(config, checkpoint, image paths)``, generated once under ``bench_home()``."""
    import torch

    from raydet.apis import init_detector
    from raydet.data.shapes import generate
    base = bench_home(f"infer-{args.images}")
    root = generate(os.path.join(base, "shapes"), seed=0, num_images=dict(train=1, val=args.images))
    images = sorted(os.path.join(root, "val", n) for n in os.listdir(os.path.join(root, "val")))
    checkpoint = args.checkpoint
    if not checkpoint:
        checkpoint = os.path.join(base, "initial.pth")
        if not os.path.exists(checkpoint):
            model = init_detector(args.config)
            torch.save(dict(state_dict=model.state_dict(), meta=dict(CLASSES=model.CLASSES)), checkpoint)
    return args.config, checkpoint, images


def raydet_side(config: str, checkpoint: str, source: str, batch_size: int, actors: int) -> dict:
    out = os.path.join(tempfile.mkdtemp(prefix="raydet-bench-infer-"), "preds.jsonl")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "raydet", "infer", config, checkpoint, source, "--out", out,
                           "--batch-size", str(batch_size), "--concurrency", str(actors)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO, **RAY_ENV))
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"raydet infer failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    # "N detections in M images (S s, X images/s once the actors were up) written to ..."
    words = proc.stdout.strip().splitlines()[-1].split()
    return dict(wall=wall, images=int(words[3]), per_s=float(words[7]), detections=int(words[0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--checkpoint")
    parser.add_argument("--side", choices=["loop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "loop":
        config, checkpoint, images = prepare(args)
        print(json.dumps(loop_side(config, checkpoint, images, args.batch_size)))
        return
    config, checkpoint, images = prepare(args)
    source = os.path.dirname(images[0])
    print(f"{len(images)} images of the shapes val set, batch {args.batch_size}, config {os.path.relpath(config, REPO)}, "
          f"{os.cpu_count()} cores")
    loop, ray_side = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        got = run_json([os.path.abspath(__file__), "--side", "loop", "--images", str(args.images), "--batch-size",
                        str(args.batch_size), "--config", config, "--checkpoint", checkpoint])
        loop.append(dict(wall=time.perf_counter() - start, **got))
        ray_side.append(raydet_side(config, checkpoint, source, args.batch_size, args.actors))
        assert ray_side[-1]["images"] == len(images), ray_side[-1]
    med = {name: (statistics.median(len(images) / r["wall"] for r in runs),
                  statistics.median(r["per_s"] for r in runs)) for name, runs in (("loop", loop), ("raydet", ray_side))}
    print(f"{'side':<32}{'whole command':>16}{'once running':>16}   (images/s, median of {args.repeats})")
    print(f"{'inference_detector loop':<32}{med['loop'][0]:>16.1f}{med['loop'][1]:>16.1f}")
    print(f"{f'raydet infer, {args.actors} actors':<32}{med['raydet'][0]:>16.1f}{med['raydet'][1]:>16.1f}")
    whole, running = (med["raydet"][i] / med["loop"][i] for i in (0, 1))
    print(f"{'ratio raydet / loop':<32}{whole:>16.3f}{running:>16.3f}")
    # batches of other images pad differently, so a trained model's counts may differ by a few
    print(f"detections: loop {loop[0]['detections']}, raydet infer {ray_side[0]['detections']}")


if __name__ == "__main__":
    scratch()
    main()
