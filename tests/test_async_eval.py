"""Evaluation off the training loop (``evaluation.async_eval=True``), without a Ray cluster: the
config's checks, the validation task itself (the in-loop metrics, the result file, save_best) and
its refusal outside the Ray launcher. Its run on Ray is in test_launch.py."""
import json
import os

import pytest

pytest.importorskip("ray")
from pyarrow import fs  # noqa: E402
from ray.train import Checkpoint  # noqa: E402

from raydet.run import train_from_config  # noqa: E402
from raydet.cli import main  # noqa: E402
from raydet.config import dump_config, load_config  # noqa: E402
from raydet.errors import ConfigError  # noqa: E402
from raydet.launch import validation  # noqa: E402

from .conftest import tiny_config  # noqa: E402


def _async(**overrides):
    return dict(dict(interval=1, metric="bbox", save_best="auto", async_eval=True), **overrides)


def test_the_plan_needs_every_evaluation_point_to_be_a_checkpoint(make_cfg):
    plan = validation.plan(make_cfg(evaluation=_async(interval=2), checkpoint_config=dict(interval=1)))
    assert plan["best"] == dict(key="bbox_mAP", rule="greater")  # 'auto': the val set's first metric
    assert (plan["interval"], plan["by_epoch"], plan["remote"]) == (2, True, {"num_cpus": 0})
    gpu = validation.plan(make_cfg(evaluation=_async(), ray=dict(validation_resources=dict(num_gpus=1, eval_node=1))))
    assert gpu["remote"] == dict(num_gpus=1, num_cpus=0, resources=dict(eval_node=1))
    assert validation.plan(make_cfg(evaluation=dict(interval=1, metric="bbox"))) is None  # in the loop
    with pytest.raises(ConfigError, match=r"evaluation.interval=1 epochs\) must be a checkpoint point "
                                          r"\(checkpoint_config.interval=2\)"):
        validation.plan(make_cfg(evaluation=_async(), checkpoint_config=dict(interval=2)))
    with pytest.raises(ConfigError, match="evaluation.by_epoch .* checkpoint_config.by_epoch .* must agree"):
        validation.plan(make_cfg(evaluation=_async(), checkpoint_config=dict(interval=4, by_epoch=False)))
    with pytest.raises(ConfigError, match="start=1"):
        validation.plan(make_cfg(evaluation=_async(interval=2, start=1), checkpoint_config=dict(interval=2)))


def test_outside_the_ray_launcher_async_eval_is_refused_by_name(shapes_root, tmp_path, capsys):
    path = str(tmp_path / "cfg.py")
    dump_config(load_config(tiny_config(shapes_root, tmp_path / "w", evaluation=_async())), path)
    assert main(["train", path, "--launcher", "none", "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "evaluation.async_eval=True" in err and "Ray launcher" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory):
    """One epoch in this process with the in-loop evaluation: its checkpoint and its metrics."""
    from raydet.config import load_config
    from raydet.engine import EvalHook
    work = tmp_path_factory.mktemp("async") / "work"
    cfg = load_config(tiny_config(shapes_root, work, runner=dict(max_epochs=1)))
    runner = train_from_config(cfg, validate=True)
    (hook,) = [h for h in runner.hooks if isinstance(h, EvalHook)]
    return cfg, str(work / "epoch_1.pth"), dict(hook.last_metrics)


def _ray_checkpoint(run_dir, name, source):
    """What Ray hands the task: a checkpoint directory of the run dir holding the file."""
    os.makedirs(run_dir / name)
    os.link(source, run_dir / name / "checkpoint.pth")
    return Checkpoint.from_directory(str(run_dir / name))


def test_the_task_gives_the_in_loop_metrics_and_keeps_the_best(trained, tmp_path, monkeypatch, capsys):
    cfg, ckpt, in_loop = trained
    run = tmp_path / "run"
    spec = dict(cfg=cfg.to_dict(), run_dir=str(run), best=dict(key="bbox_mAP", rule="greater"))
    metrics = validation.validate_checkpoint(_ray_checkpoint(run, "checkpoint_epoch_1", ckpt), name="checkpoint_epoch_1",
                                             at="epoch_1", spec=spec)
    assert metrics["bbox_mAP"] == pytest.approx(in_loop["bbox_mAP"], abs=1e-9)
    assert set(metrics) == {k for k, v in in_loop.items() if isinstance(v, float)}  # numbers only, for Ray
    result = json.load(open(run / "validation" / "checkpoint_epoch_1.json"))
    assert result["metrics"]["bbox_mAP_copypaste"] == in_loop["bbox_mAP_copypaste"]
    assert any("Average Precision" in line for line in result["log"])  # COCO's table, for the log file
    assert os.path.samefile(run / "best_bbox_mAP_epoch_1.pth", ckpt)  # a hard link, no copy
    assert result["best"]["file"] == str(run / "best_bbox_mAP_epoch_1.pth")
    assert "validation of checkpoint_epoch_1: {'bbox_mAP':" in capsys.readouterr().out

    # later evaluations: a worse one keeps the best, a better one replaces it (and only this run's file goes)
    (run / "best_bbox_mAP_epoch_9.pth").write_bytes(b"a user's file")
    scores = iter([in_loop["bbox_mAP"] - 0.5, 0.99])  # worse than the first, then better
    monkeypatch.setattr(validation, "_evaluate", lambda cfg, path, parts=None: (dict(bbox_mAP=next(scores)), []))
    for epoch in (2, 3):
        name = f"checkpoint_epoch_{epoch}"
        validation.validate_checkpoint(_ray_checkpoint(run, name, ckpt), name=name, at=f"epoch_{epoch}", spec=spec)
    best = json.load(open(run / "validation" / "best.json"))
    assert (best["score"], best["checkpoint"], best["at"]) == (0.99, "checkpoint_epoch_3", "epoch_3")
    assert sorted(p.name for p in run.glob("best_*.pth")) == ["best_bbox_mAP_epoch_3.pth", "best_bbox_mAP_epoch_9.pth"]
    assert json.load(open(run / "validation" / "checkpoint_epoch_2.json"))["best"]["at"] == "epoch_1"


def test_a_failed_evaluation_is_written_for_the_workers_then_raised(trained, tmp_path, monkeypatch):
    cfg, ckpt, _ = trained
    run = tmp_path / "run"

    def broken(cfg, path, parts=None):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(validation, "_evaluate", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        validation.validate_checkpoint(_ray_checkpoint(run, "checkpoint_epoch_1", ckpt), name="checkpoint_epoch_1",
                                       at="epoch_1", spec=dict(cfg=cfg.to_dict(), run_dir=str(run), best=None))
    assert json.load(open(run / "validation" / "checkpoint_epoch_1.json"))["error"] == "RuntimeError: CUDA out of memory"


def test_on_a_bucket_the_best_goes_to_its_logs(trained, tmp_path):
    """A run dir that is not a local directory (here a filesystem rooted elsewhere, as a bucket
    is): the best checkpoint is uploaded to ``logs/``, where the run's log upload keeps the rest."""
    _, ckpt, _ = trained
    (tmp_path / "bucket").mkdir()
    bucket = fs.SubTreeFileSystem(str(tmp_path / "bucket"), fs.LocalFileSystem())
    spec = dict(run_dir="s3://b/runs/r?endpoint_override=x", best=dict(key="bbox_mAP", rule="greater"))
    best = validation._keep_best(bucket, "runs/r", spec, "checkpoint_epoch_1", "epoch_1", dict(bbox_mAP=0.5), ckpt)
    assert best["uri"] == "s3://b/runs/r/logs/best_bbox_mAP_epoch_1.pth"
    assert open(tmp_path / "bucket/runs/r/logs/best_bbox_mAP_epoch_1.pth", "rb").read() == open(ckpt, "rb").read()
    assert json.load(open(tmp_path / "bucket/runs/r/validation/best.json"))["score"] == 0.5
