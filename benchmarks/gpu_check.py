"""GPU check: raydet's worker code path on one device, its loop against a plain one, the demo's mAP.

    python benchmarks/gpu_check.py                           # a GPU machine: CUDA, fp16 (about 5 min)
    python benchmarks/gpu_check.py --device cpu --quick      # the same logic on CPU, small (CI)

Runs without Ray (a GPU machine may lack its wheel): what it runs is exactly what each Ray worker
runs once its process group is up.

(a) **worker path**: a one-process group initialised as Ray's ``TorchConfig(backend="nccl")``
    does (``init_process_group("nccl", init_method="env://")``; on CPU ``"cpu:gloo,cuda:gloo"``,
    the layout of raydet's GPU workers: mmdet's own collectives (its loss parsing) use the
    model's device tensors, which are CPU tensors here; raydet's host collectives on a group that
    refuses CPU tensors are tested apart, in ``tests/test_gpu_path.py``), then ``train_from_config`` on the default config with fp16
    (dynamic loss scale on CUDA; bf16 autocast on CPU): 20 iterations, a checkpoint every 5, a
    failure injected after iteration 13, an auto-resumed second attempt to the end, and an
    uninterrupted run to compare its final weights with. Proves collectives, AMP and
    checkpoint/resume on the device.
(b) **loop cost**: Faster R-CNN R50-FPN (``configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py``),
    2 images of 1333x800 per step, AMP (fp32 on CPU): raydet's loop (``--launcher none``) against a plain
    hand-written loop on the same device and data (``loop_overhead.py``'s two sides, each in a
    fresh process): images/s, the ratio, peak ``torch.cuda.max_memory_allocated``.
(c) **the demo**: the default config trained to its bbox mAP on the device, with the time.

Prints each figure as it comes and, last, one JSON line with all of them.
"""
import argparse
import glob
import json
import os
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import CONFIG, REPO, images_per_s, read_stamps, run_json, scratch, shapes_subset  # noqa: E402

RCNN = os.path.join(REPO, "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_path(args, root: str) -> dict:
    import torch
    import torch.distributed as dist

    from raydet.run import train_from_config
    from raydet.config import load_config
    from raydet.engine import ChaosError, load_file

    cuda = args.device == "cuda"
    iters, every, kill = (6, 2, 3) if args.quick else (20, 5, 13)
    batch = 8 if args.quick else 16
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1", GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    backend = "nccl" if cuda else "cpu:gloo,cuda:gloo"
    dist.init_process_group(backend, init_method="env://")
    if cuda:
        torch.cuda.set_device(0)
    subset = shapes_subset(batch * iters)

    def cfg(work, **extra):
        c = load_config(CONFIG, {**subset, "work_dir": work, "device": args.device, "runner.max_epochs": 1,
                                 "data.samples_per_gpu": batch, "fp16": dict(loss_scale="dynamic"),
                                 "checkpoint_config": dict(interval=every, by_epoch=False),
                                 "log_config.interval": 1, "log_config.hooks": [dict(type="TextLoggerHook")],
                                 "deterministic": not cuda,
                                 **({"data.workers_per_gpu": 0} if args.quick else {}), **extra})
        return c

    base = tempfile.mkdtemp(prefix="gpu-check-a-")
    start = time.time()
    straight = train_from_config(cfg(os.path.join(base, "straight")), validate=False)
    one_run_s = time.time() - start
    work = os.path.join(base, "run")
    chaos = [dict(type="ChaosHook", marker=os.path.join(base, "marker"), at_iter=kill, action="raise",
                  count_file=os.path.join(base, "count"))]
    try:
        train_from_config(cfg(work, custom_hooks=chaos), validate=False)
        raise RuntimeError("the injected failure did not happen")
    except ChaosError:
        pass
    resumed = train_from_config(cfg(work, custom_hooks=chaos, auto_resume=True), validate=False)
    dist.destroy_process_group()
    final, expected = (load_file(os.path.join(w, "latest.pth"))["state_dict"] for w in (work, straight.work_dir))
    diff = max(float((final[k].float() - expected[k].float()).abs().max()) for k in expected)
    (log,) = glob.glob(os.path.join(work, "*.log.json"))
    records = [json.loads(line) for line in open(log)][1:]
    train = [r for r in records if r.get("mode") == "train"]
    executed = [int(line.split()[2]) for line in open(os.path.join(base, "count"))]
    iters = straight.iter  # the epoch's steps (aspect groups may add one)
    result = dict(backend=backend, iterations=iters, resumed_from=os.path.basename(resumed.resumed_from or ""),
                  final_iter=resumed.iter, iterations_executed=len(executed),
                  iterations_logged=len(train), max_abs_weight_diff=diff,
                  loss_scale=[r["loss_scale"] for r in train if "loss_scale" in r][-3:],
                  last_loss=train[-1]["loss"], one_run_s=round(one_run_s, 2))
    ok = (result["resumed_from"] == f"iter_{kill - kill % every}.pth" and resumed.iter == iters
          and sorted({r["iter"] for r in train}) == list(range(1, iters + 1)))
    result["ok"] = bool(ok)
    print(f"(a) worker path on {args.device} ({backend} group, fp16): {iters} iterations, failure after {kill}, "
          f"resumed from {result['resumed_from']}, ended at iteration {resumed.iter}; "
          f"{len(executed)} iterations executed for {iters}; max |final weight - uninterrupted| = {diff:.3g}; "
          f"loss scale {result['loss_scale'] or 'off (bf16)'}; {'OK' if ok else 'FAILED'}", flush=True)
    return result


def loop_cost(args) -> dict:
    scale = ["128", "64"] if args.quick else ["1333", "800"]
    iters = 2 if args.quick else 40  # quick: one timed step after the first
    skip = 1 if args.quick else 10
    # quick (CI): the logic of both sides on the default's small model; R50's build is most of the time
    config, name = (CONFIG, "the default FCOS") if args.quick else (RCNN, "Faster R-CNN R50-FPN")
    passed = ["--config", config, "--batch", "2", "--iters-per-epoch", str(iters), "--epochs", "1",
              "--img-scale", *scale, "--device", args.device]
    # AMP on the GPU; on a CPU without bf16 matrix units bf16 autocast makes an R50 step ~30x slower
    passed += ["--fp16"] if args.device == "cuda" else []
    out = {}
    for side in ("plain", "none"):
        stamps_file = tempfile.mktemp(prefix=f"gpu-check-b-{side}-", suffix=".txt")
        info = run_json([os.path.join(HERE, "loop_overhead.py"), "--side", side, "--out", stamps_file, *passed])
        out[side] = dict(images_per_s=images_per_s(read_stamps(stamps_file), 2, skip), peak_mib=info.get("peak_mib"))
    out["ratio"] = out["none"]["images_per_s"] / out["plain"]["images_per_s"]
    memory = "".join(f", {s} peak {out[s]['peak_mib']:.0f} MiB" for s in ("plain", "none") if out[s]["peak_mib"])
    print(f"(b) {name}, 2 x {scale[0]}x{scale[1]} per step, {'AMP' if args.device == 'cuda' else 'fp32'}, "
          f"on {args.device}: plain "
          f"{out['plain']['images_per_s']:.2f} images/s, raydet {out['none']['images_per_s']:.2f} images/s, "
          f"ratio {out['ratio']:.3f}{memory}", flush=True)
    return out


def demo(args) -> dict:
    from raydet.run import train_from_config
    from raydet.config import load_config

    extra = {}
    if args.quick:
        extra = {**shapes_subset(64, 16), "runner.max_epochs": 1, "data.samples_per_gpu": 16}
    cfg = load_config(CONFIG, {"work_dir": tempfile.mkdtemp(prefix="gpu-check-c-"), "device": args.device,
                               "log_config.hooks": [dict(type="TextLoggerHook")], **extra})
    start = time.time()
    runner = train_from_config(cfg, validate=True)
    minutes = (time.time() - start) / 60
    metrics = next(h.last_metrics for h in runner.hooks if getattr(h, "last_metrics", None))
    print(f"(c) default demo on {args.device}: bbox mAP {metrics['bbox_mAP']:.3f} after "
          f"{runner.epoch} epochs, {minutes:.2f} minutes", flush=True)
    return dict(bbox_mAP=metrics["bbox_mAP"], minutes=round(minutes, 2), epochs=runner.epoch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="a few iterations of each part (CI)")
    parser.add_argument("--parts", default="a,b,c", help="comma-separated subset of a,b,c")
    args = parser.parse_args()
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; use --device cpu --quick to check the logic")
    info = dict(device=torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                torch=torch.__version__, quick=args.quick)
    print(f"gpu_check on {info['device']}, torch {info['torch']}", flush=True)
    parts = args.parts.split(",")
    if "a" in parts:
        info["worker_path"] = worker_path(args, REPO)
    if "b" in parts:
        info["loop_cost"] = loop_cost(args)
    if "c" in parts:
        info["demo"] = demo(args)
    print(json.dumps(info))


if __name__ == "__main__":
    scratch()
    main()
