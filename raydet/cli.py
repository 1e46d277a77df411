"""``raydet`` / ``python -m raydet``: ``train``, ``test``, ``infer``, ``plot`` and ``browse`` with mmdet's
flags, and mmdet's analysis tools (:mod:`raydet.cli_tools`).

Library code raises named exceptions; only this module turns them into messages and exit codes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .cli_args import (CfgOptions, HelpFormatter, _seed, add_cfg_options, check_output_places, command_parser,
                       setup_console_logging, usable_cores)
from .cli_tools import add_tool_parsers
from .errors import RaydetError


#: each command's one-line help, its description and its examples (``raydet COMMAND --help``)
COMMANDS = {
    "train": ("train a detector from a config",
              "Train a detector from an mmdetection 2.x config, on Ray Train workers (default) or in this "
              "process. The same command again resumes the run (see the README's 'Where a run starts').",
              ["raydet train configs/fcos/fcos_gn_tiny_shapes.py",
               "raydet train CONFIG --num-workers 4 --use-gpu --address ray://head:10001",
               "raydet train CONFIG --work-dir s3://$RAYDET_BUCKET/runs/fcos --num-workers 2-8",
               "raydet train CONFIG --launcher none --cfg-options optimizer.lr=0.01 runner.max_epochs=6"]),
    "test": ("evaluate a checkpoint", "Evaluate a checkpoint on the config's data.test (mmdet's tools/test.py).",
             ["raydet test configs/fcos/fcos_gn_tiny_shapes.py work_dirs/fcos_gn_tiny_shapes/latest.pth --eval bbox",
              "raydet test CONFIG CKPT --out results.json --format-only",
              "raydet test CONFIG CKPT --eval bbox --eval-options classwise=True --work-dir results/",
              "raydet test CONFIG CKPT --show-dir shown/ --show-score-thr 0.5 --show-scale 3 --num-workers 2"]),
    "plot": ("training curves or iteration times from .log.json files",
             "Training curves from json logs (mmdet's analyze_logs.py): train values (loss, lr) by iteration, val "
             "metrics by epoch; or seconds per iteration by epoch.",
             ["raydet plot work_dirs/fcos_gn_tiny_shapes/*.log.json --keys loss lr bbox_mAP --out curves.png",
              "raydet plot run_a.log.json run_b.log.json --keys bbox_mAP --legend a b --out compare.png",
              "raydet plot work_dirs/fcos_gn_tiny_shapes/*.log.json --cal-train-time"]),
    "browse": ("draw training samples after the train pipeline, with their ground truth",
               "Draw training samples as the model sees them: after the train pipeline (augmentations "
               "included), with their ground truth (mmdet's browse_dataset).",
               ["raydet browse configs/fcos/fcos_gn_tiny_shapes.py --out-dir browse/ --num 8",
                "raydet browse CONFIG --out-dir browse/ --num 8 --shuffle --seed 3 --scale 3"]),
    "infer": ("detect objects in the images of a directory, glob, list file or bucket prefix (Ray Data)",
              "Detect objects in many images with a pool of model actors on Ray Data; COCO-style records out.",
              ["raydet infer CONFIG CKPT images/ --out detections.jsonl --score-thr 0.3",
               "raydet infer CONFIG CKPT 's3://bucket/images/**/*.jpg' --out dets.json --concurrency 2,8 --use-gpu"]),
}


def _command(sub, name: str) -> argparse.ArgumentParser:
    """The sub-parser of command ``name``, with its help, description and examples."""
    return command_parser(sub, name, *COMMANDS[name])


def _train_parser(sub):
    p = _command(sub, "train")
    p.add_argument("config", help="config file (.py/.yaml/.json)")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default ./work_dirs/<config name>)")
    p.add_argument("--resume-from", metavar="CKPT", help="checkpoint to resume from exactly, whatever the work_dir "
                   "holds (see the README's 'Where a run starts')")
    p.add_argument("--auto-resume", dest="auto_resume", action="store_true", default=None,
                   help="resume from the run's newest checkpoint (the default, unless the config sets auto_resume=False)")
    p.add_argument("--no-auto-resume", dest="auto_resume", action="store_false",
                   help="start afresh: an earlier run's checkpoints in the work_dir are moved aside with it")
    p.add_argument("--no-validate", action="store_true", help="skip evaluation during training")
    p.add_argument("--seed", type=_seed, default=None, help="the run's seed, 0 <= SEED < 2**32 (default: the "
                   "config's, else the checkpoint's, else drawn once)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bitwise repeatable on CPU)")
    p.add_argument("--cfg-options", nargs="+", action=CfgOptions, default={},
                   help="override config keys, e.g. optimizer.lr=0.01 lr_config.step=[8,11]")
    p.add_argument("--launcher", choices=["ray", "none"], default="ray",
                   help="ray: Ray Train workers; none: this process")
    p.add_argument("--num-workers", type=_workers, metavar="N|MIN-MAX",
                   help="Ray workers; MIN-MAX for an elastic group (default: the config's ray.num_workers, else 2)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per Ray worker (default: the config's ray.use_gpu)")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    return p


def _test_parser(sub):
    p = _command(sub, "test")
    p.add_argument("config", help="the config the checkpoint was trained with (.py/.yaml/.json)")
    p.add_argument("checkpoint", help="a checkpoint file (.pth) of that config")
    p.add_argument("--eval", nargs="+", default=None, choices=["bbox", "segm", "mAP"],
                   help="metrics (default: the config's evaluation.metric)")
    p.add_argument("--out", help="write the results: .pkl (mmdet's raw results) or .json (COCO's results format)")
    p.add_argument("--format-only", action="store_true",
                   help="only write the results (--out x.json, e.g. for a test server); no evaluation")
    p.add_argument("--show-dir", help="draw each image's predictions into this directory (same file names)")
    p.add_argument("--show-score-thr", type=float, default=0.3,
                   help="draw only detections scoring at least this (--show-dir)")
    p.add_argument("--show-scale", type=float, default=1.0,
                   help="enlarge each drawing this many times (--show-dir; small images)")
    p.add_argument("--eval-options", nargs="+", action=CfgOptions, default={}, metavar="KEY=VALUE",
                   help="arguments of the dataset's evaluate, over the config's evaluation keys, e.g. "
                        "classwise=True (a per-class AP table) iou_thrs=[0.5]")
    p.add_argument("--work-dir", help="write the metrics to WORK_DIR/eval_<time>.json (mmdet's layout)")
    p.add_argument("--num-workers", type=int, help="shard the test set over N Ray workers (same results; default: this process, no Ray)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Ray worker")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    add_cfg_options(p)
    return p


def _browse_parser(sub):
    p = _command(sub, "browse")
    p.add_argument("config", help="config file (.py/.yaml/.json) whose data.train is drawn")
    p.add_argument("--out-dir", required=True, help="where the drawings go (one per sample)")
    p.add_argument("--num", type=int, default=20, help="how many samples")
    p.add_argument("--shuffle", action="store_true", help="draw samples at random (with --seed), not the first ones")
    p.add_argument("--seed", type=_seed, default=None,
                   help="seed of the draw and of the augmentations (default: the config's seed, else 0)")
    p.add_argument("--scale", type=float, default=1.0, help="enlarge each picture this many times (small images)")
    add_cfg_options(p)
    return p


def cmd_browse(args) -> int:
    from .config import load_config
    from .visualization import browse_dataset
    cfg = load_config(args.config, args.cfg_options)
    if args.num < 1:
        raise RaydetError(f"--num must be >= 1, got {args.num}")
    if not 0 < args.scale <= 16:
        raise RaydetError(f"--scale must be in (0, 16], got {args.scale}")
    seed = args.seed if args.seed is not None else cfg.get("seed") or 0
    try:
        written = [path for path, _ in browse_dataset(cfg.data.train, args.out_dir, args.num, seed,
                                                      shuffle=args.shuffle, scale=args.scale)]
    except FileExistsError as exc:
        raise RaydetError(str(exc)) from None
    print(f"{len(written)} training samples drawn in {args.out_dir}")
    return 0


def _plot_parser(sub):
    p = _command(sub, "plot")
    p.add_argument("logs", nargs="+", help="json logs (several runs: overlaid)")
    p.add_argument("--keys", nargs="+", default=["loss"], help="values to plot, e.g. loss bbox_mAP lr")
    p.add_argument("--out", help="the picture (.png/.jpg/.pdf); default: show it")
    p.add_argument("--legend", nargs="+", help="a name per log (default: the file names)")
    p.add_argument("--title", help="the picture's title")
    p.add_argument("--cal-train-time", action="store_true", help="print seconds per iteration by epoch instead")
    p.add_argument("--include-outliers", action="store_true",
                   help="with --cal-train-time: keep each epoch's first logged iteration")
    return p


def cmd_plot(args) -> int:
    from . import analysis
    for path in args.logs:
        if not os.path.isfile(path):
            raise RaydetError(f"log not found: {path}")
    if args.cal_train_time:
        for path in args.logs:
            try:
                t = analysis.train_time(path, args.include_outliers)
            except ValueError as exc:
                raise RaydetError(str(exc)) from None
            print(f"{path}\n  slowest epoch {t['slowest_epoch']}, average time {t['per_epoch'][t['slowest_epoch']]:.4f} "
                  f"s/iter\n  fastest epoch {t['fastest_epoch']}, average time {t['per_epoch'][t['fastest_epoch']]:.4f} "
                  f"s/iter\n  time std over epochs is {t['std_over_epochs']:.4f}\n  average iter time: "
                  f"{t['mean_iter_time']:.4f} s/iter")
        return 0
    try:
        fig = analysis.plot_curves(args.logs, args.keys, out=args.out, legend=args.legend, title=args.title)
    except (KeyError, ValueError) as exc:
        raise RaydetError(str(exc.args[0])) from None
    if args.out:
        print(f"curves written to {args.out}")
    else:
        import matplotlib.pyplot as plt
        plt.show()
    del fig
    return 0


def _workers(text: str):
    """``--num-workers``: ``N`` or ``MIN-MAX``."""
    low, sep, high = text.partition("-")
    try:
        value = (int(low), int(high)) if sep else int(low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None
    if min(value if sep else (value,)) < 1 or (sep and value[0] > value[1]):
        raise argparse.ArgumentTypeError(f"{text!r}: expected N >= 1 or MIN-MAX with 1 <= MIN <= MAX")
    return value


def train_overrides(args) -> dict:
    """``raydet train``'s flags as config overrides, applied when the config is loaded (after
    ``--cfg-options``: a flag wins)."""
    flags = {"work_dir": args.work_dir, "resume_from": args.resume_from, "auto_resume": args.auto_resume,
             "seed": args.seed, "deterministic": True if args.deterministic else None,
             "ray.num_workers": args.num_workers, "ray.use_gpu": args.use_gpu, "ray.address": args.address}
    return dict(args.cfg_options, **{k: v for k, v in flags.items() if v is not None})


def cmd_train(args) -> int:
    from .config import load_config
    from .config.frozen import freeze
    setup_console_logging()
    cfg = freeze(load_config(args.config, train_overrides(args)))
    start = time.time()
    if args.launcher == "ray":
        from .launch import train as ray_train  # a local instance it starts stays on loopback
        from .run.plan import locate
        result = ray_train(cfg, validate=not args.no_validate)
        ret = getattr(result, "return_value", None) or {}
        print(summary(result.metrics or {}, locate(cfg)[0], time.time() - start, best=ret.get("best_checkpoint"),
                      best_score=ret.get("best_score"), last=ret.get("last_checkpoint"),
                      ray_checkpoint=result.checkpoint.path if result.checkpoint is not None else None))
        return 0
    from .run import build_from_config, plan_run, train
    from .run.plan import finished_notice
    plan = plan_run(cfg, validate=not args.no_validate, auto_resume=True, source=args.config)
    if plan.finished is not None:
        print(finished_notice(plan, cfg))
        print(f"checkpoint: {os.path.join(plan.work_dir, 'latest.pth')}")
        return 0
    runner = train(build_from_config(cfg, plan), plan)
    evals = [h for h in runner.hooks if hasattr(h, "last_metrics") and h.last_metrics]
    msgs = runner.meta.get("hook_msgs") or {}
    print(summary(evals[0].last_metrics if evals else {}, plan.work_dir, time.time() - start,
                  best=msgs.get("best_ckpt"), best_score=msgs.get("best_score"),
                  last=msgs.get("last_ckpt") or runner.resumed_from))
    return 0


def summary(metrics: dict, work_dir: str, seconds: float, best=None, best_score=None, last=None,
            ray_checkpoint=None) -> str:
    """The block that ends ``raydet train``: final metrics (the mAPs), the best and the last
    checkpoint, the work_dir and the time taken."""
    maps = {k: round(v, 4) for k, v in metrics.items() if "mAP" in k and isinstance(v, float)}
    lines = ["=" * 30 + " raydet: training finished " + "=" * 30, f"final metrics: {maps}"]
    if best:
        lines.append(f"best checkpoint: {best}" + (f" (score {best_score:.4f})" if best_score is not None else ""))
    if last:
        lines.append(f"last checkpoint: {last}")
    if ray_checkpoint:
        lines.append(f"Ray's checkpoint: {ray_checkpoint}")
    lines += [f"work_dir: {work_dir}", f"time: {seconds / 60:.2f} min", "=" * 87]
    return "\n".join(lines)


def _test_outputs(args, dataset) -> list[str]:
    """The files ``raydet test`` will write, checked before any prediction: never over an
    existing file (raydet does not overwrite what it did not write)."""
    if args.format_only and not (args.out and args.out.endswith(".json")):
        raise RaydetError("--format-only writes COCO-format results: give --out RESULTS.json")
    if args.out and not args.out.endswith((".pkl", ".pickle", ".json")):
        raise RaydetError(f"--out {args.out}: use a .pkl (raw results) or .json (COCO format) file name")
    if args.out and args.out.endswith(".json") and not hasattr(dataset, "results_to_json"):
        raise RaydetError(f"--out {args.out}: COCO-format results need a COCO-style dataset, not "
                          f"{type(dataset).__name__}; use a .pkl file")
    targets = [args.out] if args.out else []
    check_output_places(args.out, args.show_dir)
    if args.show_dir and not hasattr(dataset, "data_infos"):
        raise RaydetError(f"--show-dir needs a plain test dataset, not the wrapper {type(dataset).__name__}")
    if args.show_dir:
        targets += [os.path.join(args.show_dir, info["filename"]) for info in dataset.data_infos]
    taken = [t for t in targets if os.path.exists(t)]
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise RaydetError(f"{taken[0]}{more} exists; raydet does not overwrite a file it did not write: "
                          "give another --out/--show-dir")
    return targets


def _infer_parser(sub):
    p = _command(sub, "infer")
    p.add_argument("config", help="the config the checkpoint was trained with (.py/.yaml/.json)")
    p.add_argument("checkpoint", help="a checkpoint file (.pth) of that config")
    p.add_argument("input", help="a directory, a glob ('imgs/**/*.jpg'), a text file of image paths, one image, "
                                 "or a bucket URI (s3://bucket/prefix)")
    p.add_argument("--out", required=True, help="the detections: .json (one list) or .jsonl (a record per line)")
    p.add_argument("--batch-size", type=int, default=4, help="images per model call")
    p.add_argument("--concurrency", type=_concurrency, default=(1, 1),
                   help="model actors: N, or MIN,MAX to let Ray Data scale the pool (default 1)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per model actor")
    p.add_argument("--cpus-per-actor", type=float, default=1, help="CPUs per model actor")
    p.add_argument("--score-thr", type=float, default=0.0, help="keep detections scoring at least this")
    p.add_argument("--show-dir", help="draw each image's detections into this directory (paths relative to "
                                      "the input)")
    p.add_argument("--show-score-thr", type=float, default=0.3, help="score threshold of the drawings")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local instance)")
    add_cfg_options(p)
    return p


def _concurrency(text: str) -> tuple[int, int]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX, got {text!r}") from None
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX, got {text!r}")
    return (sizes[0], sizes[-1])


def cmd_infer(args) -> int:
    from .launch.infer import infer
    setup_console_logging()
    done = infer(args.config, args.checkpoint, args.input, args.out, batch_size=args.batch_size,
                 concurrency=args.concurrency, use_gpu=args.use_gpu, cpus_per_actor=args.cpus_per_actor,
                 score_thr=args.score_thr, show_dir=args.show_dir, show_score_thr=args.show_score_thr,
                 address=args.address, cfg_options=args.cfg_options)
    rate = f", {done['images_per_s']:.1f} images/s once the actors were up" if done["images_per_s"] else ""
    print(f"{done['detections']} detections in {done['images']} images ({done['seconds']:.1f} s{rate}) written to "
          f"{done['out']}" + (f"; drawn in {args.show_dir}" if args.show_dir else ""))
    return 0


def _test_inputs(args, cfg):
    """``(dataset, metric, evaluate's keyword arguments)`` of ``raydet test``, with every argument
    checked before the model loads: the output files (see :func:`_test_outputs`), the metrics
    the dataset computes and the arguments its ``evaluate`` takes (the config's ``evaluation``
    keys, then ``--eval-options``, as mmdet's tools/test.py merges them)."""
    from .config.schema import EVALUATE_KEYS
    from .data import build_dataset
    from .engine.hooks.evaluation import check_metrics
    if args.num_workers is not None and args.num_workers < 1:
        raise RaydetError(f"--num-workers must be >= 1, got {args.num_workers}")
    dataset = build_dataset(cfg.data.test, test_mode=True)
    _test_outputs(args, dataset)
    metric = args.eval or (cfg.get("evaluation") or {}).get("metric", "bbox")
    eval_kwargs = {k: v for k, v in (cfg.get("evaluation") or {}).items() if k in EVALUATE_KEYS}
    if args.eval_options:
        check_metrics(dataset, metric, eval_kwargs=args.eval_options, kwargs_key="--eval-options ")
    eval_kwargs.update(args.eval_options or {})
    if not args.format_only:
        key = "--eval" if args.eval else "evaluation.metric"
        check_metrics(dataset, metric, key=key, eval_kwargs=eval_kwargs)
        if "segm" in ([metric] if isinstance(metric, str) else metric) and not _has(cfg.model, "mask_head"):
            raise RaydetError(f"{key}='segm': the model predicts no masks (it has no mask head); use 'bbox'")
    return dataset, metric, eval_kwargs


def _has(node, key: str) -> bool:
    """Whether a config section sets ``key`` (not to None) at any depth."""
    if isinstance(node, dict):
        return node.get(key) is not None or any(_has(v, key) for v in node.values())
    return isinstance(node, (list, tuple)) and any(_has(v, key) for v in node)


def _write_test_outputs(args, dataset, model, results) -> None:
    import json
    import pickle
    if args.out:
        if args.out.endswith(".json"):
            with open(args.out, "w") as f:
                json.dump(dataset.results_to_json(results), f)
        else:
            with open(args.out, "wb") as f:
                pickle.dump(results, f)
        print(f"results written to {args.out}")
    if args.show_dir:
        from .visualization import draw_det_result
        for info, result in zip(dataset.data_infos, results):
            source = os.path.join(dataset.img_prefix, info["filename"]) if dataset.img_prefix else info["filename"]
            draw_det_result(source, result, model.CLASSES, score_thr=args.show_score_thr, scale=args.show_scale,
                            out_file=os.path.join(args.show_dir, info["filename"]))
        print(f"{len(results)} drawn predictions in {args.show_dir}")


def _write_metrics(args, metrics: dict) -> str:
    """mmdet tools/test.py's ``<work_dir>/eval_<time>.json``: ``{config, metric}`` (never over a file)."""
    import json
    os.makedirs(args.work_dir, exist_ok=True)
    path, n = os.path.join(args.work_dir, f"eval_{time.strftime('%Y%m%d_%H%M%S')}.json"), 1
    while os.path.exists(path):
        path, n = os.path.join(args.work_dir, f"eval_{time.strftime('%Y%m%d_%H%M%S')}-{n}.json"), n + 1
    with open(path, "w") as f:
        json.dump(dict(config=args.config, metric={k: v for k, v in metrics.items() if not k.endswith("copypaste")}),
                  f, indent=1)
    return path


def cmd_test(args) -> int:
    import torch

    from .apis.test import build_test, predict_test_set
    from .config import load_config
    from .engine.hooks.evaluation import check_metrics
    log = setup_console_logging()
    torch.set_num_threads(usable_cores())  # torch's default counts the machine's cores, not this process's
    check_output_places(args.out, args.show_dir)
    if not 0 < args.show_scale <= 16:
        raise RaydetError(f"--show-scale must be in (0, 16], got {args.show_scale}")
    if args.work_dir and os.path.exists(args.work_dir) and not os.path.isdir(args.work_dir):
        raise RaydetError(f"--work-dir {args.work_dir} is a file, not a folder")
    cfg = load_config(args.config, args.cfg_options)
    dataset, metric, eval_kwargs = _test_inputs(args, cfg)  # before the model loads
    dataset, model = build_test(cfg, args.checkpoint, log, dataset)  # a checkpoint that does not fit fails here
    if not args.format_only and "segm" in ([metric] if isinstance(metric, str) else metric):
        check_metrics(dataset, metric, model, key="--eval" if args.eval else "evaluation.metric")  # masks?
    if args.num_workers:
        from .launch import test_on_ray
        results = test_on_ray(cfg, args.checkpoint, args.num_workers, use_gpu=args.use_gpu, address=args.address)
    else:
        results = predict_test_set(cfg, dataset, model)
    _write_test_outputs(args, dataset, model, results)
    if args.format_only:
        return 0
    metrics = dataset.evaluate(results, metric=metric, logger=log, **eval_kwargs)
    print(f"metrics: {metrics}")
    if args.work_dir:
        print(f"metrics written to {_write_metrics(args, metrics)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="raydet", formatter_class=HelpFormatter,
        description="Fault-tolerant training of mmdetection 2.x detectors on Ray Train, with mmdet's flags.",
        epilog="examples:\n  raydet train configs/fcos/fcos_gn_tiny_shapes.py\n"
               "  raydet test configs/fcos/fcos_gn_tiny_shapes.py work_dirs/fcos_gn_tiny_shapes/latest.pth\n"
               "  raydet plot work_dirs/fcos_gn_tiny_shapes/*.log.json --keys loss bbox_mAP --out curves.png\n"
               "  raydet confusion-matrix configs/fcos/fcos_gn_tiny_shapes.py results.pkl shown/\n"
               "  raydet COMMAND --help    (each command's arguments and examples)")
    parser.add_argument("--version", action="version", version=f"raydet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, run in ((_train_parser, cmd_train), (_test_parser, cmd_test), (_plot_parser, cmd_plot),
                     (_browse_parser, cmd_browse), (_infer_parser, cmd_infer)):
        add(sub).set_defaults(run=run)
    add_tool_parsers(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except RaydetError as exc:
        print(f"raydet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
