"""Does the default config learn? Train it in-process and print bbox mAP and minutes.

    .venv/bin/python benchmarks/train_default.py [--epochs N] [--work-dir DIR] [--cfg-options K=V ...]

The default config is 2 Ray workers x 8 images; in one process the same global batch is 16
images, so this script sets ``data.samples_per_gpu=16``. It prints the bbox mAP after each epoch
(the curve), the training minutes (iterations only) and the wall minutes (with evaluation).
"""
import argparse
import json
import os
import sys
import tempfile
import time

from mmcv import DictAction
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import scratch  # noqa: E402
from raydet.run import train_from_config  # noqa: E402
from raydet.cli import setup_console_logging  # noqa: E402
from raydet.config import load_config  # noqa: E402

CONFIG = "configs/fcos/fcos_gn_tiny_shapes.py"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="overrides of the config, as for `raydet train`")
    args = parser.parse_args()
    # log every iteration so that the training time is summed exactly from the log
    options = {"data.samples_per_gpu": 16, "log_config.interval": 1,
               "log_config.hooks": [dict(type="TextLoggerHook")]}
    if args.epochs:
        options["runner.max_epochs"] = args.epochs
    options.update(args.cfg_options)
    cfg = load_config(args.config, options)
    cfg.work_dir = args.work_dir or tempfile.mkdtemp(prefix="raydet-bench-")
    setup_console_logging()
    start = time.time()
    runner = train_from_config(cfg, validate=True)
    wall = time.time() - start
    records = [json.loads(line) for line in open(os.path.join(cfg.work_dir, f"{runner.timestamp}.log.json"))]
    train_s = sum(r["time"] * cfg.log_config.interval for r in records if r.get("mode") == "train")
    curve = [(r["epoch"], r["bbox_mAP"]) for r in records if "bbox_mAP" in r]
    print(f"\nconfig: {args.config} {args.cfg_options or ''} (in-process, 1 x 16 images), {runner.iter} iterations")
    print("bbox mAP by epoch: " + ", ".join(f"{e}: {m:.3f}" for e, m in curve))
    print(f"final bbox mAP@[.5:.95]: {curve[-1][1]:.3f}")
    print(f"training minutes (iterations only, from the log): {train_s / 60:.2f}; wall minutes: {wall / 60:.2f}")


if __name__ == "__main__":
    scratch()
    main()
