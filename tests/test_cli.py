import os
import subprocess
import sys

import pytest

from raydet.config import dump_config, load_config

from .conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "raydet", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_train_in_process_then_test(shapes_root, tmp_path):
    cfg_path = str(tmp_path / "tiny.py")
    dump_config(load_config(tiny_config(shapes_root, tmp_path / "unused", runner=dict(max_epochs=1))), cfg_path)
    work = tmp_path / "work"
    out = _run("train", cfg_path, "--launcher", "none", "--work-dir", str(work), "--seed", "3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final metrics: {'bbox_mAP':" in out.stdout and (work / "latest.pth").exists()
    assert f"last checkpoint: {work / 'epoch_1.pth'}" in out.stdout and f"work_dir: {work}" in out.stdout
    # the hook-order table goes to the log file; the console gets one line naming the hooks
    assert "Hooks will be executed" not in out.stdout and "hooks: StepLrUpdaterHook, OptimizerHook" in out.stdout
    (log,) = [p for p in os.listdir(work) if p.endswith(".log")]
    assert "after_train_iter:\n(40 ) OptimizerHook" in open(work / log).read()
    assert (work / "tiny.py").exists()  # the resolved config is dumped into the work_dir
    tested = _run("test", cfg_path, str(work / "latest.pth"), "--eval", "bbox", "--eval-options", "classwise=True",
                  "--work-dir", str(tmp_path / "results"))
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "metrics: {'bbox_mAP':" in tested.stdout and "16/16" in tested.stderr  # the progress bar
    table = tested.stdout + tested.stderr  # mmdet's per-class AP table
    assert all(name in table for name in ("rectangle", "ellipse", "triangle")) and "mAP_50" in table
    import json
    (written,) = os.listdir(tmp_path / "results")
    saved = json.load(open(tmp_path / "results" / written))
    assert written.startswith("eval_") and saved["config"] == cfg_path and 0 <= saved["metric"]["bbox_mAP"] <= 1
    # arguments are checked before the model loads: here the checkpoint does not even exist
    for bad, message in ((["--out", "r.txt"], "use a .pkl"), (["--eval-options", "classwize=True"], "classwize"),
                         (["--eval", "segm"], "segm")):
        refused = _run("test", cfg_path, str(tmp_path / "missing.pth"), *bad)
        assert refused.returncode == 2 and message in refused.stderr and "missing.pth" not in refused.stderr, bad


def test_config_typo_is_one_clear_error(tmp_path):
    out = _run("train", "configs/fcos/fcos_gn_tiny_shapes.py", "--launcher", "none",
               "--cfg-options", "optimizer.lrr=0.1", "--work-dir", str(tmp_path))
    assert out.returncode == 2
    assert "raydet: error:" in out.stderr and "'optimizer.lrr' (did you mean 'lr'?)" in out.stderr
    assert "Traceback" not in out.stderr


def test_elastic_workers_and_a_bucket_work_dir_from_the_command_line(monkeypatch):
    """``--num-workers MIN-MAX`` becomes an elastic ``ScalingConfig``; ``$VARS`` in the work_dir
    are expanded where the driver runs, and a bucket work_dir becomes Ray's storage with a local
    staging directory of the same name."""
    import argparse

    from raydet.cli import _train_parser, train_overrides
    from raydet.config import load_config
    from raydet.launch.driver import build_trainer
    from raydet.run import plan_run
    monkeypatch.setenv("RAYDET_BUCKET", "my-bucket")
    parser = argparse.ArgumentParser()
    _train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "configs/fcos/fcos_gn_tiny_shapes.py", "--num-workers", "1-4",
                              "--work-dir", "s3://${RAYDET_BUCKET}/runs/fcos?region=us-east-1"])
    cfg = load_config(args.config, train_overrides(args))
    assert cfg.ray.num_workers == (1, 4) and cfg.work_dir == "s3://${RAYDET_BUCKET}/runs/fcos?region=us-east-1"
    plan = plan_run(cfg, launcher="ray")
    assert plan.storage == "s3://my-bucket/runs?region=us-east-1"
    assert plan.work_dir.endswith(os.path.join("raydet-staging", "fcos")) and os.path.isabs(plan.work_dir)
    assert build_trainer(cfg, plan).scaling_config.num_workers == (1, 4)
    assert cfg.work_dir == "s3://${RAYDET_BUCKET}/runs/fcos?region=us-east-1"  # the config is as loaded
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "x.py", "--num-workers", "two"])



def test_test_writes_coco_results_and_drawings_and_never_over_a_file(shapes_root, tmp_path, capsys):
    """mmdet's tools/test.py flags: --out x.json (COCO's results format) with --format-only, and
    --show-dir with --show-score-thr (one drawing per image, under its own name)."""
    import json

    import cv2

    from raydet.run import train_from_config
    from raydet.cli import main
    cfg_path = str(tmp_path / "tiny.py")
    cfg = load_config(tiny_config(shapes_root, tmp_path / "w", runner=dict(max_epochs=1)))
    dump_config(cfg, cfg_path)
    train_from_config(load_config(cfg_path), validate=False)
    ckpt = str(tmp_path / "w" / "latest.pth")
    out, shown = tmp_path / "res.json", tmp_path / "shown"
    assert main(["test", cfg_path, ckpt, "--out", str(out), "--format-only",
                 "--show-dir", str(shown), "--show-score-thr", "0.2"]) == 0
    dets = json.load(open(out))
    assert dets and set(dets[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {d["category_id"] for d in dets} <= {1, 2, 3} and all(len(d["bbox"]) == 4 for d in dets)
    printed = capsys.readouterr().out
    assert "metrics:" not in printed and "16 drawn predictions" in printed
    names = sorted(os.listdir(shown))
    source = cv2.imread(os.path.join(shapes_root, "val", names[0]))
    assert len(names) == 16 and cv2.imread(str(shown / names[0])).shape == source.shape
    assert main(["test", cfg_path, ckpt, "--show-dir", str(shown)]) == 2  # the drawings exist: refused
    assert "does not overwrite" in capsys.readouterr().err
    assert main(["test", cfg_path, ckpt, "--format-only"]) == 2
    assert "--out RESULTS.json" in capsys.readouterr().err


def test_every_help_line_has_text_and_the_version_is_printed(capsys):
    """``--help`` of raydet and of each command: every argument explained, examples given."""
    import argparse

    from raydet import __version__
    from raydet.cli import build_parser, main
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"train", "test", "plot", "browse", "infer", "print-config", "confusion-matrix",
                                     "analyze-results", "benchmark", "params"}
    for name, command in commands.choices.items():
        unexplained = [a.dest for a in command._actions if not (a.help or "").strip()]
        assert unexplained == [], name
        assert "examples:" in command.format_help() and command.description, name
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"raydet {__version__}"
    assert "(default: 4)" in commands.choices["infer"].format_help()  # defaults are shown
