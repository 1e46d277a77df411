"""IterBasedRunner (mmcv 1.x): max_iters over an endless stream of the epoch sampler's batches,
iter_N.pth checkpoints, evaluation and logging by iteration, exact resume."""
import glob
import json
import os

import pytest
import torch

from raydet.analysis import load_json_log
from raydet.run import train_from_config
from raydet.config import load_config
from raydet.engine import ChaosError, load_file
from raydet.errors import ConfigError

from .conftest import tiny_config

ITERS = 17  # the shapes subset has 13 iterations per epoch (aspect groups): the run crosses into a second data epoch
EPOCH = 13


def _cfg(shapes_root, work, iter_based: bool, **overrides):
    cfg = tiny_config(shapes_root, work, lr_config=dict(policy="step", step=[10], by_epoch=False, warmup="linear",
                                                        warmup_iters=3, warmup_ratio=0.1), **overrides)
    if iter_based:
        cfg.update(runner=dict(type="IterBasedRunner", max_iters=ITERS), checkpoint_config=dict(interval=5),
                   evaluation=dict(interval=EPOCH, metric="bbox", save_best="auto"), log_config=dict(
                       interval=1, hooks=[dict(type="TextLoggerHook")]))
        cfg.update(overrides)
    return load_config(cfg)


def _records(work):
    (path,) = glob.glob(os.path.join(work, "*.log.json"))
    return [json.loads(line) for line in open(path)][1:]


@pytest.fixture(scope="module")
def iter_run(shapes_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("iter") / "run"
    return work, train_from_config(_cfg(shapes_root, work, True), validate=True)


def test_the_iteration_runner_trains_the_epoch_runners_batches_and_acts_by_iteration(iter_run, shapes_root, tmp_path):
    work, runner = iter_run
    assert runner.iter == ITERS and runner.epoch == 1 and runner.max_epochs is None and runner.iters_per_epoch == EPOCH
    # an epoch run of the same batches: two epochs, stopped by a failure after iteration ITERS
    epoch_work = tmp_path / "epochs"
    chaos = [dict(type="ChaosHook", marker=str(tmp_path / "m"), at_iter=ITERS)]
    with pytest.raises(ChaosError):
        train_from_config(_cfg(shapes_root, epoch_work, False, checkpoint_config=dict(interval=ITERS, by_epoch=False),
                               custom_hooks=chaos), validate=True)
    ours, theirs = (load_file(os.path.join(w, "latest.pth")) for w in (work, epoch_work))
    assert theirs["meta"]["iter"] == ours["meta"]["iter"] == ITERS
    assert all(torch.equal(ours["state_dict"][k], theirs["state_dict"][k]) for k in theirs["state_dict"])
    assert ours["meta"]["max_epochs"] is None and ours["meta"]["max_iters"] == ITERS
    assert ours["sampler"] == dict(epoch=1, start_batch=ITERS - EPOCH)
    # iter_N.pth every 5 and the last; the best by iteration; no epoch files
    names = sorted(os.path.basename(p) for p in glob.glob(str(work / "*.pth")))
    assert names == [f"best_bbox_mAP_iter_{EPOCH}.pth", "iter_10.pth", "iter_15.pth", "iter_17.pth", "iter_5.pth",
                     "latest.pth"]
    records = _records(work)
    assert [r["iter"] for r in records if r["mode"] == "train"] == list(range(1, ITERS + 1))
    (val,) = [r for r in records if r["mode"] == "val"]
    epoch_val = [r for r in _records(epoch_work) if r["mode"] == "val"][0]  # the same weights after epoch 1
    assert val["iter"] == EPOCH and val["bbox_mAP"] == epoch_val["bbox_mAP"]
    log = open(glob.glob(str(work / "*.log"))[0]).read()
    assert f"Iter [{ITERS}/{ITERS}]\t" in log and f"Iter(val) [{EPOCH}]\t" in log
    curves = load_json_log(glob.glob(str(work / "*.log.json"))[0])  # the run's curves.png: by iteration
    assert [x for x, _ in curves["train"]["loss"]] == list(range(1, ITERS + 1)) and curves["val_x"] == "iter"
    assert curves["val"]["bbox_mAP"] == [(EPOCH, val["bbox_mAP"])]


def test_a_kill_mid_data_epoch_resumes_bitwise_and_logs_each_iteration_once(iter_run, shapes_root, tmp_path):
    work0, _ = iter_run
    work = tmp_path / "run"
    chaos = [dict(type="ChaosHook", marker=str(tmp_path / "m"), at_iter=16)]
    with pytest.raises(ChaosError):
        train_from_config(_cfg(shapes_root, work, True, custom_hooks=chaos), validate=True)
    runner = train_from_config(_cfg(shapes_root, work, True, custom_hooks=chaos, auto_resume=True), validate=True)
    assert os.path.basename(runner.resumed_from) == "iter_15.pth"  # data epoch 2, 2 batches in
    a, b = (load_file(os.path.join(w, "latest.pth"))["state_dict"] for w in (work0, work))
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = _records(work)
    assert [r["iter"] for r in records if r["mode"] == "train"] == list(range(1, ITERS + 1))
    assert [r["iter"] for r in records if r["mode"] == "val"] == [EPOCH]
    # the launchers see that the run is complete (and would not train it again), by max_iters
    from raydet.engine.checkpoint import finished
    meta = load_file(os.path.join(work, "latest.pth"))["meta"]
    assert finished(meta, dict(type="IterBasedRunner", max_iters=ITERS))["iter"] == ITERS
    assert finished(meta, dict(type="IterBasedRunner", max_iters=ITERS + 1)) is None


@pytest.mark.parametrize("overrides, message", [
    (dict(runner=dict(type="IterBasedRunner", max_epochs=2)), "runner.max_epochs belongs to EpochBasedRunner"),
    (dict(runner=dict(type="IterBasedRunner")), "runner.max_iters is missing"),
    (dict(checkpoint_config=dict(interval=5, by_epoch=True)), "checkpoint_config.by_epoch=True: IterBasedRunner"),
    (dict(custom_hooks=[dict(type="ExpMomentumEMAHook")]), "custom_hooks.0: ExpMomentumEMAHook"),
    (dict(runner=dict(type="IterBasedRunner", max_iters=0)), "runner.max_iters=0"),
])
def test_iteration_runner_keys_are_checked(shapes_root, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(shapes_root, tmp_path, True, **overrides)


def test_an_iteration_run_without_an_evaluation_interval_is_refused_before_training(shapes_root, tmp_path):
    cfg = _cfg(shapes_root, tmp_path / "w", True)
    cfg.pop("evaluation")
    with pytest.raises(ConfigError, match="set evaluation=dict\\(interval=N\\)"):
        train_from_config(cfg, validate=True)
