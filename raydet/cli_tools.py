"""mmdetection 2.x's analysis tools as ``raydet`` commands, on mmdet's formats (a config, a
checkpoint, the ``.pkl`` results of ``raydet test --out``): ``print-config``
(tools/misc/print_config.py), ``confusion-matrix`` and ``analyze-results``
(tools/analysis_tools/), ``benchmark`` (benchmark.py on CPU or GPU) and ``params`` (get_flops.py)."""
from __future__ import annotations

import os

from .cli_args import add_cfg_options, check_output_places, command_parser, setup_console_logging, usable_cores
from .errors import DataError, RaydetError

#: each tool's one-line help, its description and its examples
TOOLS = {
    "print-config": (
        "print a config as raydet runs it", "Print a config with its _base_ files merged and --cfg-options applied, "
        "checked as training checks it (mmdet's tools/misc/print_config.py).",
        ["raydet print-config configs/fcos/fcos_gn_tiny_shapes.py",
         "raydet print-config CONFIG --cfg-options optimizer.lr=0.01 --out resolved.py"]),
    "confusion-matrix": (
        "confusion matrix of test results (mmdet's confusion_matrix.py)",
        "Count which class each object of the test set was detected as (the last row and column: background, "
        "i.e. missed objects and false detections) from `raydet test --out RESULTS.pkl`; print the counts and draw "
        "mmdet's normalised matrix into SAVE_DIR/confusion_matrix.png.",
        ["raydet test CONFIG CKPT --out results.pkl && raydet confusion-matrix CONFIG results.pkl shown/",
         "raydet confusion-matrix CONFIG results.pkl shown/ --score-thr 0.5 --tp-iou-thr 0.6"]),
    "analyze-results": (
        "the test images the model does best and worst on (mmdet's analyze_results.py)",
        "Score each test image by its own AP (mean over IoU 0.50:0.95, mmdet's eval_map) from `raydet test --out "
        "RESULTS.pkl` (an image without objects has no AP: not ranked); list the TOPK best and worst and draw them, ground truth above predictions, into "
        "SHOW_DIR/good and SHOW_DIR/bad as <name>_<AP>.<ext>.",
        ["raydet analyze-results CONFIG results.pkl analysis/ --topk 5",
         "raydet analyze-results CONFIG results.pkl analysis/ --show-score-thr 0.3 --scale 3 --overlay-gt-pred"]),
    "benchmark": (
        "inference speed in images/s (mmdet's benchmark.py, CPU or GPU)",
        "Time the model on the test set's images (the model only, not loading; 5 untimed batches first), on the "
        "GPU when there is one, else on this process's CPU cores; the test set is cycled to MAX_ITER batches.",
        ["raydet benchmark configs/fcos/fcos_gn_tiny_shapes.py work_dirs/fcos_gn_tiny_shapes/latest.pth",
         "raydet benchmark CONFIG CKPT --max-iter 200 --log-interval 50 --fuse-conv-bn --repeat-num 3"]),
    "params": (
        "parameters and FLOPs of a config's model (mmdet's get_flops.py)",
        "Count the model's parameters and its FLOPs on one image through forward_dummy (backbone, neck, heads; "
        "no post-processing), per top-level module. FLOPs are torch's count: convolutions and matrix products, a "
        "multiply-add being 2 FLOPs (mmdet's get_flops prints multiply-adds: about half).",
        ["raydet params configs/fcos/fcos_gn_tiny_shapes.py",
         "raydet params configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py --shape 800 1333"]),
}


def _arg(*flags, **options) -> tuple:
    return flags, options


_RESULTS = [_arg("config", help="the config the results were predicted with (.py/.yaml/.json)"),
            _arg("results", help="mmdet's raw test results: `raydet test CONFIG CKPT --out RESULTS.pkl`")]

#: each tool's arguments (``--cfg-options`` besides)
ARGUMENTS = {
    "print-config": [
        _arg("config", help="config file (.py/.yaml/.json)"),
        _arg("--out", help="also write the resolved config to this new file (.py/.yaml/.json), loadable as a config")],
    "confusion-matrix": _RESULTS + [
        _arg("save_dir", help="where confusion_matrix.png goes"),
        _arg("--score-thr", type=float, default=0.3, help="count detections scoring at least this"),
        _arg("--tp-iou-thr", type=float, default=0.5, help="IoU at which a detection matches an object"),
        _arg("--nms-iou-thr", type=float, help="re-run NMS at this IoU first (default: the results as they are)"),
        _arg("--color-theme", default="plasma", help="matplotlib colour map of the picture")],
    "analyze-results": _RESULTS + [
        _arg("show_dir", help="where the good/ and bad/ drawings go"),
        _arg("--topk", type=int, default=20, help="how many best and worst images (at most half the test set)"),
        _arg("--show-score-thr", type=float, default=0.0, help="draw only predictions scoring at least this"),
        _arg("--overlay-gt-pred", action="store_true", help="ground truth and predictions on one picture"),
        _arg("--scale", type=float, default=1.0, help="enlarge each drawing this many times (small images)")],
    "benchmark": [
        _arg("config", help="the config the checkpoint was trained with (.py/.yaml/.json)"),
        _arg("checkpoint", help="a checkpoint file (.pth) of that config"),
        _arg("--max-iter", type=int, default=2000, help="timed batches"),
        _arg("--log-interval", type=int, default=50, help="print the running speed every this many batches"),
        _arg("--batch-size", type=int, default=1, help="images per model call"),
        _arg("--repeat-num", type=int, default=1, help="measure this many times; print each and the mean"),
        _arg("--fuse-conv-bn", action="store_true", help="fold BatchNorm into the convolutions first (mmcv)")],
    "params": [
        _arg("config", help="config file (.py/.yaml/.json)"),
        _arg("--shape", type=int, nargs="+", metavar="N",
             help="the image: H W, or N for N x N (default: the test pipeline's img_scale, landscape)")],
}


def add_tool_parsers(sub) -> None:
    """The tools' sub-parsers, each with its command function (``cmd_<name>``) as ``args.run``."""
    for name, (short, description, examples) in TOOLS.items():
        p = command_parser(sub, name, short, description, examples)
        for flags, options in ARGUMENTS[name]:
            p.add_argument(*flags, **options)
        add_cfg_options(p)
        p.set_defaults(run=globals()["cmd_" + name.replace("-", "_")])


def cmd_print_config(args) -> int:
    from .config import dump_config, load_config
    cfg = load_config(args.config, args.cfg_options)
    if args.out and os.path.exists(args.out):
        raise RaydetError(f"--out {args.out} exists; raydet does not overwrite a file it did not write")
    check_output_places(args.out, None)
    print(f"Config:\n{cfg.pretty_text}")
    if args.out:
        dump_config(cfg, args.out)
        print(f"written to {args.out}")
    return 0


def _test_set_and_results(args):
    """``(dataset, results)``: the config's ``data.test`` (test mode, as ``raydet
    test`` predicted it) and the results file, checked against each other."""
    import pickle

    from .config import load_config
    from .data import build_dataset
    from .diagnose import check_results
    cfg = load_config(args.config, args.cfg_options)
    if not os.path.isfile(args.results):
        raise RaydetError(f"results file not found: {args.results}")
    try:
        with open(args.results, "rb") as f:
            results = pickle.load(f)
    except Exception as exc:  # a truncated or foreign file: many types
        raise DataError(f"{args.results} is not mmdet's results .pkl ({type(exc).__name__}: {exc}); write one with "
                        "`raydet test CONFIG CKPT --out RESULTS.pkl`") from None
    dataset = build_dataset(cfg.data.test, test_mode=True)
    check_results(results, dataset, args.results)
    return dataset, results


def cmd_confusion_matrix(args) -> int:
    from .diagnose import confusion_matrix, matrix_table, plot_confusion_matrix
    from .visualization import claim_outputs
    for name in ("score_thr", "tp_iou_thr"):
        if not 0 <= getattr(args, name) <= 1:
            raise RaydetError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    import matplotlib
    if args.color_theme not in matplotlib.colormaps:
        raise RaydetError(f"--color-theme {args.color_theme!r} is not a matplotlib colour map, e.g. plasma, viridis, "
                          "Blues")
    dataset, results = _test_set_and_results(args)
    try:
        (picture,) = claim_outputs(args.save_dir, ["confusion_matrix.png"], ".raydet-confusion-matrix.json")
    except FileExistsError as exc:
        raise RaydetError(str(exc)) from None
    matrix = confusion_matrix(dataset, results, args.score_thr, args.tp_iou_thr, args.nms_iou_thr)
    print(f"\nconfusion matrix of {len(results)} images (score >= {args.score_thr}, IoU >= {args.tp_iou_thr}):")
    print(matrix_table(matrix, dataset.CLASSES))
    plot_confusion_matrix(matrix, list(dataset.CLASSES) + ["background"], picture, args.color_theme)
    print(f"drawn in {picture}")
    return 0


def cmd_analyze_results(args) -> int:
    from .diagnose import best_and_worst
    from .visualization import claim_outputs, draw_truth_and_result
    if not 0 < args.scale <= 16:
        raise RaydetError(f"--scale must be in (0, 16], got {args.scale}")
    dataset, results = _test_set_and_results(args)
    best, worst, unranked = best_and_worst(dataset, results, args.topk)
    picked = [("good", i, ap) for i, ap in best] + [("bad", i, ap) for i, ap in worst]
    names = []
    for folder, i, ap in picked:
        stem, ext = os.path.splitext(os.path.basename(dataset.data_infos[i]["filename"]))
        names.append(os.path.join(folder, f"{stem}_{round(ap, 3)}{ext}"))  # mmdet's names
    try:
        targets = claim_outputs(args.show_dir, names, ".raydet-analyze-results.json")
    except FileExistsError as exc:
        raise RaydetError(str(exc)) from None
    for (folder, i, ap), target in zip(picked, targets):
        info = dataset.data_infos[i]
        image = os.path.join(dataset.img_prefix, info["filename"]) if dataset.img_prefix else info["filename"]
        draw_truth_and_result(image, dataset.get_ann_info(i), results[i], dataset.CLASSES, args.show_score_thr,
                              args.scale, args.overlay_gt_pred, out_file=target)
    ranked = len(results) - len(unranked)
    if unranked:
        print(f"{len(unranked)} of {len(results)} images have no object, hence no AP: not ranked")
    for title, rows in (("best", best), ("worst", worst)):
        print(f"{title} {len(rows)} of {ranked} images by AP (IoU 0.50:0.95):")
        print("\n".join(f"  {ap:.3f}  {dataset.data_infos[i]['filename']}" for i, ap in rows))
    print(f"drawn in {os.path.join(args.show_dir, 'good')} and {os.path.join(args.show_dir, 'bad')}")
    return 0


def cmd_benchmark(args) -> int:
    import torch

    from .apis.test import build_test
    from .config import load_config
    from .data import build_dataloader, build_dataset
    from .diagnose import measure_speed
    for name in ("max_iter", "log_interval", "batch_size", "repeat_num"):
        if getattr(args, name) < 1:
            raise RaydetError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    log = setup_console_logging()
    torch.set_num_threads(usable_cores())  # torch's default counts the machine's cores, not this process's
    cfg = load_config(args.config, args.cfg_options)
    dataset, model = build_test(cfg, args.checkpoint, log, build_dataset(cfg.data.test, test_mode=True))
    if args.fuse_conv_bn:
        from mmcv.cnn import fuse_conv_bn
        model = fuse_conv_bn(model)
    loader = build_dataloader(dataset, args.batch_size, cfg.data.get("workers_per_gpu", 2), shuffle=False,
                              persistent_workers=False)
    device = next(model.parameters()).device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"timing {args.max_iter} batches of {args.batch_size} on {where} ({len(dataset)} test images, cycled)")
    speeds = []
    for run in range(args.repeat_num):
        speed = measure_speed(model, loader, args.max_iter, log_interval=args.log_interval)
        speeds.append(speed["images_per_s"])
        print(f"Overall fps: {speed['images_per_s']:.1f} img / s, times per image: {speed['ms_per_image']:.1f} ms / img")
    if args.repeat_num > 1:
        print(f"Overall fps of {args.repeat_num} runs: {[round(s, 1) for s in speeds]}\n"
              f"Mean Overall fps: {sum(speeds) / len(speeds):.1f} img / s")
    return 0


def test_scale(cfg) -> tuple[int, int]:
    """``(H, W)`` of a landscape image at the test pipeline's first ``img_scale`` (mmcv's
    ``(long, short)`` edges), else mmdet get_flops.py's default ``(1280, 800)``."""
    def find(node):
        if isinstance(node, dict):
            if node.get("img_scale") is not None:
                return node["img_scale"]
            node = list(node.values())
        if isinstance(node, (list, tuple)):
            for value in node:
                if isinstance(value, (dict, list, tuple)) and (found := find(value)) is not None:
                    return found
        return None
    scale = find((cfg.get("data") or {}).get("test", {}).get("pipeline", []))
    if isinstance(scale, list):
        scale = scale[0]
    return (min(scale), max(scale)) if isinstance(scale, tuple) and len(scale) == 2 else (1280, 800)


def cmd_params(args) -> int:
    from .config import load_config
    from .diagnose import complexity
    from .run.build import trained_detector
    cfg = load_config(args.config, args.cfg_options)
    if args.shape is not None and (len(args.shape) not in (1, 2) or min(args.shape) < 1):
        raise RaydetError(f"--shape takes H W or N (>= 1), got {' '.join(map(str, args.shape))}")
    shape = test_scale(cfg) if args.shape is None else (args.shape[0], args.shape[-1])
    model, _ = trained_detector(cfg)  # nothing initialised or downloaded: the counts need no weights
    try:
        counts = complexity(model, shape)
    except RuntimeError as exc:
        raise RaydetError(f"forward_dummy on a 3 x {shape[0]} x {shape[1]} image failed: {exc}") from None
    print(f"{type(model).__name__} on one 3 x {shape[0]} x {shape[1]} image (forward_dummy):")
    print(f"{'module':<16}{'class':<20}{'params':>12}{'GFLOPs':>12}")
    for name, params, flops in counts["parts"]:
        cls = type(getattr(model, name)).__name__
        print(f"{name:<16}{cls:<20}{_count(params):>12}{flops / 1e9:>12.3f}")
    print(f"{'total':<36}{_count(counts['params']):>12}{counts['flops'] / 1e9:>12.3f}")
    print(f"Flops: {counts['flops'] / 1e9:.3f} GFLOPs (torch's count; {counts['flops'] / 2e9:.3f} G multiply-adds, "
          f"what mmdet's get_flops prints)\nParams: {_count(counts['params'])} "
          f"({_count(counts['trainable'])} trainable)")
    return 0


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.2f} k" if n >= 1e3 else str(n)
