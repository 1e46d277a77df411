"""How many of mmdetection's own configs raydet takes: the config check, and the model built.

    python benchmarks/mmdet_configs.py --configs /path/to/mmdetection/configs [--out report.json]

For every ``*.py`` outside ``_base_``: (1) ``raydet.config.load_config`` (mmcv's loader plus
raydet's checks of every section: the whole config as ``raydet train`` reads it); (2)
``raydet.models.build_detector`` on the config's model without initialising weights (nothing is
downloaded). Prints the counts and every failure with its one-line reason, grouped by reason;
``--out`` writes them as JSON. A config's ``_base_`` paths are relative to it, so point
``--configs`` at a checkout of mmdetection's ``configs/`` (any 2.x version).
"""
import argparse
import collections
import glob
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def reason(exc: Exception) -> str:
    """The failure's message without the config file's path (so that reasons group)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^\S+\.py: ", "", text)[:300]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", required=True, help="mmdetection's configs/ directory")
    parser.add_argument("--out", help="write the per-config results here as JSON")
    parser.add_argument("--limit", type=int, default=0, help="only the first N configs (a quick look)")
    args = parser.parse_args()
    import logging

    import torch
    from mmcv import Config

    import raydet  # noqa: F401  (the op table, mmdet's registries)
    from raydet.config import load_config
    from raydet.models import build_detector
    logging.getLogger("raydet").setLevel(logging.ERROR)
    logging.getLogger("mmdet").setLevel(logging.ERROR)
    torch.set_num_threads(1)

    paths = sorted(p for p in glob.glob(os.path.join(args.configs, "**", "*.py"), recursive=True)
                   if "_base_" not in p.split(os.sep))
    if args.limit:
        paths = paths[:args.limit]
    results = {}
    start = time.time()
    for i, path in enumerate(paths):
        name = os.path.relpath(path, args.configs)
        entry = dict(config=None, model=None)
        try:
            load_config(path)
            entry["config"] = "ok"
        except Exception as exc:  # every refusal is counted with its reason
            entry["config"] = reason(exc)
        try:
            cfg = Config.fromfile(path)
            if "model" not in cfg:
                raise KeyError("the config has no model (a shared base)")
            build_detector(cfg.model.to_dict(), train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"),
                           init=False)
            entry["model"] = "ok"
        except Exception as exc:
            entry["model"] = reason(exc)
        results[name] = entry
        print(f"[{i + 1}/{len(paths)}] {name}: config {entry['config'] == 'ok'}, model {entry['model'] == 'ok'}",
              flush=True)
    for key in ("config", "model"):
        report(key, {name: r[key] for name, r in results.items()})
    print(f"\n{len(results)} configs in {time.time() - start:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def report(label: str, outcomes: dict) -> None:
    """Print how many of ``outcomes`` (config -> ``'ok'`` or the reason) are ``'ok'``, then every
    other one grouped by reason, the largest group first."""
    ok = sum(v == "ok" for v in outcomes.values())
    print(f"\n{label}: {ok} of {len(outcomes)} ({100 * ok / max(len(outcomes), 1):.1f}%)")
    groups = collections.defaultdict(list)
    for name, why in outcomes.items():
        if why != "ok":
            groups[why].append(name)
    for why, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(names):4d}  {why}\n        " + ", ".join(names))


if __name__ == "__main__":
    sys.exit(main())
