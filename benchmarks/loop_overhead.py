"""Loop overhead: raydet on Ray (1 worker) beside a plain hand-written PyTorch loop.

    .venv/bin/python benchmarks/loop_overhead.py [--repeats 3] [--iters-per-epoch 40] [--epochs 2]

On a GPU machine without Ray (Faster R-CNN R50-FPN, 2 images of ~1333x800, fp16):

    python benchmarks/loop_overhead.py --sides plain,none --device cuda --fp16 --batch 2 \
        --config configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py --img-scale 1333 800

The sides train the default config's detector (torchvision FCOS on the tiny GN backbone) on the
same images in the same order (raydet's loader, same seed, batch 16, the default
``workers_per_gpu``), with AdamW and grad-norm clipping, and ``--threads`` torch compute threads
(default: the cores but one, so that Ray's daemons have a core of their own, as on any real node
where the trainer takes the GPUs and Ray's processes run on spare CPU; ``--threads 2`` on this
2-core machine is the older setting, where Ray's daemons take time from the step):

* plain: ``for data in loader: loss = sum(model(**data).values()); backward; clip; step`` —
  no hooks, no logging, no checkpoints, no Ray;
* none: raydet's own loop without Ray (``--launcher none``): the default config's hooks (LR
  schedule, optimizer step with clipping, iteration timer, text and TensorBoard logging every 50
  iterations, a checkpoint each epoch) in this process;
* raydet: the same on a local Ray instance via ``raydet.train``, 1 worker of ``--threads`` CPUs
  (Ray gives a worker as many threads as CPUs), each checkpoint also reported to Ray.

``none`` against ``plain`` is raydet's cost, ``raydet`` against ``none`` is Ray's. For the
raydet side the CPU seconds of every process Ray started are sampled from ``/proc`` twice a
second by the otherwise idle driver, and the share of a core that Ray's own processes (all but
the training worker) take while training is printed.

Images/s is measured from a time stamp written after every iteration, between the end of
iteration 5 and the last one, so process and Ray start-up are left out but every epoch end and
checkpoint in between is in. The sides alternate, each in a fresh process. Epochs here are
shorter than the default's 238 iterations, so a checkpoint weighs more than in real training.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CONFIG, images_per_s, on_shapes, read_stamps, run_json, scratch, stamp_hook, summary  # noqa: E402

SKIP = 5


def overrides(args, stamps):
    """The config changes of every side: the shapes images (any config: its train pipeline is
    kept, at ``--img-scale`` if given), batch, epochs, device, fp16, the stamp hook."""
    extra = {"device": args.device} if args.device else {}
    if args.fp16:
        extra["fp16"] = dict(loss_scale="dynamic")
    return {"seed": 0, **on_shapes(args.config, args.batch * args.iters_per_epoch, args.img_scale),
            "data.samples_per_gpu": args.batch, "runner.max_epochs": args.epochs,
            "custom_hooks": [stamp_hook(stamps)], **extra}


def _peak_memory():
    import torch
    return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None


def plain_side(args, out):
    import time

    import torch

    from raydet.apis.train import set_random_seed
    from raydet.config import load_config
    from raydet.data import build_dataset
    from raydet.data.loader import build_dataloader
    from raydet.engine.optim import build_optimizer
    from raydet.models import build_detector

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides(args, out))
    set_random_seed(cfg.seed)
    device = torch.device(args.device or "cpu")
    model = build_detector(cfg.model).train().to(device)
    dataset = build_dataset(cfg.data.train, seed=cfg.seed)
    loader = build_dataloader(dataset, args.batch, cfg.data.workers_per_gpu, seed=cfg.seed)
    optimizer = build_optimizer(model, cfg.optimizer)
    clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    scaler = torch.amp.GradScaler(device.type, enabled=args.fp16 and device.type == "cuda")
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    step = 0
    for epoch in range(cfg.runner.max_epochs):
        loader.sampler.set_epoch(epoch)
        for data in loader:
            with torch.autocast(device.type, dtype=dtype, enabled=args.fp16):
                losses = model(img=data["img"].to(device), img_metas=data["img_metas"],
                               gt_bboxes=[b.to(device) for b in data["gt_bboxes"]],
                               gt_labels=[t.to(device) for t in data["gt_labels"]])
                loss = sum(v for k, v in losses.items() if "loss" in k)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip.max_norm, clip.norm_type)
            scaler.step(optimizer)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            step += 1
            with open(out, "a") as f:
                f.write(f"0 {epoch + 1} {step} {time.time():.3f}\n")
    return dict(threads=torch.get_num_threads(), peak_mib=_peak_memory())


def _threads(work_dir):
    log = next(f for f in os.listdir(work_dir) if f.endswith(".log.json"))
    env = json.loads(open(os.path.join(work_dir, log)).readline())["env_info"]
    return int(env.split("torch threads: ")[1].split()[0])


def _descendants():
    """``{pid: (command line, CPU seconds)}`` of this process's living descendants, from /proc."""
    tick, procs = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        procs[int(pid)] = (int(stat[1]), cmd, (int(stat[11]) + int(stat[12])) / tick)
    mine, found = {os.getpid()}, True
    while found:
        new = {pid for pid, (ppid, _, _) in procs.items() if ppid in mine and pid not in mine}
        found = bool(new)
        mine |= new
    return {pid: procs[pid][1:] for pid in mine if pid in procs and pid != os.getpid()}


def _kind(cmd):
    if "RayTrainWorker" in cmd:
        return "training worker"
    if cmd.startswith("ray::"):
        return cmd.split()[0]
    words = cmd.split() or ["?"]
    return os.path.basename(next((w for w in words[1:] if w.endswith(".py")), words[0]))


def raydet_side(args, out):
    """Also samples the CPU time of Ray's processes twice a second, so that their use can be
    taken over the measured window only (from the end of iteration SKIP to the last one)."""
    import threading
    import time

    import raydet
    work_dir = tempfile.mkdtemp(prefix="bench-loop-raydet-")
    samples, done = [], threading.Event()

    def sample():
        while not done.wait(0.5):
            steps = sum(1 for _ in open(out)) if os.path.exists(out) else 0
            samples.append((time.time(), steps, _descendants()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    raydet.train(args.config, validate=False, work_dir=work_dir,
                 **{"ray.num_workers": 1, "ray.resources_per_worker": {"CPU": args.threads}},
                 **overrides(args, out))
    done.set()
    thread.join()
    last = max(n for _, n, _ in samples)
    t0, _, first = next(s for s in samples if s[1] >= SKIP)
    t1, _, end = next(s for s in samples if s[1] == last)
    cpu = {}  # CPU seconds per kind of process within the window
    for pid, (cmd, seconds) in end.items():
        if pid in first:
            cpu[_kind(cmd)] = cpu.get(_kind(cmd), 0.0) + seconds - first[pid][1]
    return dict(threads=_threads(work_dir), cpu=cpu, wall=t1 - t0)


def none_side(args, out):
    import torch

    from raydet.run import train_from_config
    from raydet.config import load_config
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, overrides(args, out))
    cfg.work_dir = tempfile.mkdtemp(prefix="bench-loop-none-")
    train_from_config(cfg, validate=False)
    return dict(threads=_threads(cfg.work_dir), peak_mib=_peak_memory())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters-per-epoch", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--img-scale", type=int, nargs=2, metavar=("W", "H"), default=None,
                        help="the train pipeline's Resize scale (e.g. 1333 800)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's)")
    parser.add_argument("--fp16", action="store_true", help="autocast (fp16 + GradScaler on CUDA, bf16 on CPU)")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch compute threads of every side (default: cores - 1)")
    parser.add_argument("--sides", default="plain,none,raydet",
                        help="comma-separated; a machine without ray runs plain,none")
    parser.add_argument("--side", choices=["plain", "none", "raydet"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(dict(plain=plain_side, none=none_side, raydet=raydet_side)[args.side](args, args.out)))
        return
    results, ray_cpu = {side: [] for side in args.sides.split(",")}, []
    passed = ["--config", args.config, "--batch", str(args.batch), "--iters-per-epoch", str(args.iters_per_epoch),
              "--epochs", str(args.epochs), "--threads", str(args.threads),
              *(["--img-scale", *map(str, args.img_scale)] if args.img_scale else []),
              *(["--device", args.device] if args.device else []), *(["--fp16"] if args.fp16 else [])]
    for _ in range(args.repeats):
        for side in results:
            out = tempfile.mktemp(prefix=f"bench-loop-{side}-", suffix=".txt")
            info = run_json([__file__, "--side", side, "--out", out, *passed])
            stamps = read_stamps(out)
            results[side].append(images_per_s(stamps, args.batch, SKIP))
            memory = f", peak GPU memory {info['peak_mib']:.0f} MiB" if info.get("peak_mib") else ""
            print(f"{side}: {results[side][-1]:.2f} images/s over iterations {SKIP + 1}-{stamps[-1][0]}, "
                  f"torch threads {info['threads']}{memory}", flush=True)
            if "cpu" in info:
                ray_cpu.append(info)
                print("  CPU seconds of Ray's processes within {:.1f} s of training: {}".format(info["wall"], ", ".join(
                    f"{k} {v:.1f}" for k, v in sorted(info["cpu"].items(), key=lambda kv: -kv[1]))), flush=True)
    print(f"\nimages/s ({args.epochs} epochs x ~{args.iters_per_epoch} iterations of {args.batch} images, "
          f"{args.threads} torch threads on {os.cpu_count()} cores):")
    for side, values in results.items():
        print(f"  {side:7s} {summary(values)}")
    plain = statistics.median(results["plain"])
    for side, label in (("raydet", "raydet on Ray"), ("none", "raydet --launcher none")):
        if side in results:
            print(f"  ratio {label} / plain (medians): {statistics.median(results[side]) / plain:.3f}  (goal >= 0.98)")
    if not ray_cpu:
        return
    daemons = [sum(v for k, v in r["cpu"].items() if k != "training worker") / r["wall"] for r in ray_cpu]
    print(f"  while training, Ray's own processes (all but the training worker) used "
          f"{statistics.median(daemons) * 100:.1f}% of one core (median of the raydet-on-Ray runs)")


if __name__ == "__main__":
    scratch()
    main()
