import glob
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from raydet.run import train_from_config
from raydet.engine import ChaosError, OptimizerHook, Precision, Runner, find_latest_checkpoint, load_file
from raydet.errors import CheckpointError, NonFiniteLossError


def _weights(work_dir):
    return load_file(os.path.join(work_dir, "latest.pth"))["state_dict"]


def _train_records(work_dir):
    (path,) = glob.glob(os.path.join(work_dir, "*.log.json"))
    lines = [json.loads(line) for line in open(path)]
    return [(r["epoch"], r["iter"]) for r in lines if r.get("mode") == "train"]


def test_hook_order_is_mmcv_priority_order_and_logged(make_cfg, caplog):
    from raydet.run import build_parts, make_runner, plan_run
    cfg = make_cfg(custom_hooks=[dict(type="ChaosHook", marker="/nonexistent/never", at_iter=10 ** 6)])
    runner = make_runner(build_parts(cfg, seed=0, validate=True), plan_run(cfg))
    names = [(type(h).__name__, h.priority) for h in runner.hooks]
    assert names == [("StepLrUpdaterHook", 10), ("OptimizerHook", 40), ("EvalHook", 49), ("CheckpointHook", 50),
                     ("DistSamplerSeedHook", 50), ("IterTimerHook", 70), ("TextLoggerHook", 90), ("ChaosHook", 100)]
    with caplog.at_level(logging.INFO, logger="raydet"):
        runner.logger.info(runner.hook_order())
    assert "after_train_iter:\n(40 ) OptimizerHook\n(49 ) EvalHook\n(50 ) CheckpointHook\n(70 ) IterTimerHook" in caplog.text


def _linear_runner(tmp_path, processor, grad_clip=None, precision=None, lr=1.0):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    runner = Runner(model, processor, opt, str(tmp_path), max_epochs=1)
    runner.register_hook(OptimizerHook(precision or Precision(None), grad_clip=grad_clip))
    return runner, model


def _quadratic(model, data, train_mode):
    loss = ((model(torch.full((2, 4), 3.0)) - 100.0) ** 2).mean()
    return dict(loss=loss, log_vars=dict(loss=float(loss)), num_samples=2)


def test_grad_clip_applied_and_grad_norm_logged(tmp_path):
    runner, model = _linear_runner(tmp_path, _quadratic, grad_clip=dict(max_norm=0.5, norm_type=2))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    runner.run([[{}]], [("train", 1)])
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.5, rel=1e-4)  # lr 1 x clipped norm
    (grad_norm,) = runner.log_buffer.val_history["grad_norm"]
    assert grad_norm > 100  # the unclipped norm is what gets logged


def test_non_finite_loss_raises_with_epoch_and_iter(tmp_path):
    def nan_at_2(model, data, train_mode):
        out = _quadratic(model, data, train_mode)
        if data["i"] == 2:
            out["loss"] = out["loss"] * float("nan")
            out["log_vars"] = dict(loss_x=float("nan"), loss=float("nan"))
        return out
    runner, _ = _linear_runner(tmp_path, nan_at_2, lr=1e-4)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, iter 3: loss_x=nan, loss=nan") as info:
        runner.run([[{"i": i} for i in range(4)]], [("train", 1)])
    assert info.value.iter == 2 and info.value.epoch == 0


def test_grad_scaler_state_survives_checkpoint(tmp_path):
    precision = Precision(dict(loss_scale="dynamic"), "cpu")
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    runner, _ = _linear_runner(tmp_path, _quadratic, precision=precision, lr=1e-5)
    runner.run([[{}] * 5], [("train", 1)])
    saved = precision.scaler.state_dict()
    assert saved["scale"] != 2.0 ** 10 or saved["_growth_tracker"] != 0
    runner.save_checkpoint(str(tmp_path / "c.pth"))
    fresh = Precision(dict(loss_scale="dynamic"), "cpu")
    fresh.scaler = torch.amp.GradScaler("cpu")
    runner2, _ = _linear_runner(tmp_path, _quadratic, precision=fresh)
    runner2.resume(str(tmp_path / "c.pth"))
    assert fresh.scaler.state_dict() == saved


def _crash_then_resume(make_cfg, tmp_path, name, ckpt_cfg, chaos, resume_file):
    work = tmp_path / name
    chaos_hook = dict(type="ChaosHook", marker=str(tmp_path / f"{name}.marker"), **chaos)
    with pytest.raises(ChaosError):
        train_from_config(make_cfg(work, checkpoint_config=ckpt_cfg, custom_hooks=[chaos_hook]), validate=False)
    runner = train_from_config(make_cfg(work, checkpoint_config=ckpt_cfg, custom_hooks=[chaos_hook],
                                        resume_from=str(work / resume_file)), validate=False)
    return work, runner


@pytest.fixture(scope="module")
def straight(shapes_root, tmp_path_factory):
    from raydet.config import load_config

    from .conftest import tiny_config
    work = tmp_path_factory.mktemp("straight")
    runner = train_from_config(load_config(tiny_config(shapes_root, work, checkpoint_config=dict(interval=1))),
                               validate=False)
    return work, runner


def test_resume_at_epoch_boundary_is_bitwise_exact(make_cfg, tmp_path, straight):
    work0, runner0 = straight
    work, runner = _crash_then_resume(make_cfg, tmp_path, "epoch", dict(interval=1), dict(at_epoch=1), "epoch_1.pth")
    weights0, weights = _weights(work0), _weights(work)
    assert weights0.keys() == weights.keys()
    assert all(torch.equal(weights0[k], weights[k]) for k in weights0)
    ipe = runner.iters_per_epoch
    records = _train_records(work)
    assert len(records) == len(set(records)) == 2 * ipe  # each iteration logged exactly once
    log = open(glob.glob(str(work / "*.log"))[0]).read()
    assert f"at epoch 2, iter {ipe + 1} (completed: 1 epochs, {ipe} iterations)" in log


def test_resume_mid_epoch_is_bitwise_exact(make_cfg, tmp_path, straight):
    work0, runner0 = straight
    ckpt = dict(interval=4, by_epoch=False)
    k = 8
    assert 0 < k % runner0.iters_per_epoch  # really mid-epoch
    work, runner = _crash_then_resume(make_cfg, tmp_path, "mid", ckpt,
                                      dict(at_iter=k + 2, count_file=str(tmp_path / "count")), f"iter_{k}.pth")
    weights0, weights = _weights(work0), _weights(work)
    assert all(torch.equal(weights0[key], weights[key]) for key in weights0)
    records = _train_records(work)
    assert len(records) == len(set(records)) == 2 * runner.iters_per_epoch
    log = open(glob.glob(str(work / "*.log"))[0]).read()
    assert f"iter {k + 1} (completed: 0 epochs, {k} iterations)" in log
    executed = [int(line.split()[2]) for line in open(tmp_path / "count")]
    assert executed[:k + 2] == list(range(1, k + 3))  # the crashed attempt
    assert executed[k + 2:] == list(range(k + 1, 2 * runner.iters_per_epoch + 1))  # resumed after k


def test_other_seed_gives_other_weights(make_cfg, tmp_path, straight):
    work0, _ = straight
    train_from_config(make_cfg(tmp_path / "seed1", seed=1), validate=False)
    weights0, weights1 = _weights(work0), _weights(tmp_path / "seed1")
    assert not all(torch.equal(weights0[k], weights1[k]) for k in weights0)


def test_truncated_latest_is_detected_and_auto_resume_falls_back(make_cfg, tmp_path, caplog):
    work = tmp_path / "trunc"
    ckpt = dict(interval=4, by_epoch=False)
    runner = train_from_config(make_cfg(work, checkpoint_config=ckpt, runner=dict(max_epochs=1)), validate=False)
    last = os.path.realpath(work / "latest.pth")
    size = os.path.getsize(last)
    with open(last, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointError, match=f"checkpoint {work}/latest.pth is truncated or corrupt"):
        runner.resume(str(work / "latest.pth"))
    previous = find_latest_checkpoint(str(work))
    numbers = sorted(int(os.path.basename(p)[5:-4]) for p in glob.glob(str(work / "iter_*.pth")))
    assert previous == str(work / f"iter_{numbers[-2]}.pth")
    with caplog.at_level(logging.INFO, logger="raydet"):
        train_from_config(make_cfg(work, checkpoint_config=ckpt, runner=dict(max_epochs=2), auto_resume=True),
                          validate=False)
    assert f"resumed from {previous}" in caplog.text


def test_resume_is_strict(make_cfg, tmp_path, straight):
    work0, _ = straight
    state = load_file(str(work0 / "latest.pth"))
    state["leftover"] = 1
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"leftover keys \['leftover'\]"):
        train_from_config(make_cfg(tmp_path / "w", resume_from=str(tmp_path / "extra.pth")), validate=False)
    state.pop("leftover")
    state["state_dict"]["bogus"] = torch.zeros(1)
    torch.save(state, tmp_path / "bogus.pth")
    with pytest.raises(CheckpointError, match="bogus"):
        train_from_config(make_cfg(tmp_path / "w2", resume_from=str(tmp_path / "bogus.pth")), validate=False)


def test_checkpoint_layout_loads_weights_only(straight):
    work0, runner0 = straight
    ckpt = torch.load(work0 / "epoch_2.pth", weights_only=True)
    assert {"meta", "state_dict", "optimizer"} <= set(ckpt)
    meta = ckpt["meta"]
    assert meta["epoch"] == 2 and meta["iter"] == 2 * runner0.iters_per_epoch
    assert list(meta["CLASSES"]) == ["rectangle", "ellipse", "triangle"] and "model = dict(" in meta["config"]
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert os.path.islink(work0 / "latest.pth") and os.readlink(work0 / "latest.pth") == "epoch_2.pth"


def test_eval_and_save_best_survive_in_meta(make_cfg, tmp_path):
    work = tmp_path / "ev"
    runner = train_from_config(make_cfg(work, evaluation=dict(interval=1, metric="bbox", save_best="auto")),
                               validate=True)
    msgs = runner.meta["hook_msgs"]
    assert os.path.basename(msgs["best_ckpt"]).startswith("best_bbox_mAP_epoch_")
    assert len(glob.glob(str(work / "best_bbox_mAP_epoch_*.pth"))) == 1
    assert load_file(str(work / "epoch_2.pth"))["meta"]["hook_msgs"]["best_score"] == msgs["best_score"]
    assert runner.model.training
    vals = [json.loads(line) for line in open(glob.glob(str(work / "*.log.json"))[0]) if '"val"' in line]
    assert len(vals) == 2 and "bbox_mAP" in vals[0]


def test_core_imports_no_ray():
    code = ("import sys; import raydet, raydet.config, raydet.data, raydet.models, raydet.engine, raydet.apis; "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_does_not_import_the_launcher():
    """No import circle: the core (config, data, models, engine, apis) never reaches up into
    raydet.launch, not even lazily inside a function."""
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1] / "raydet"
    offenders = []
    for package in ("config", "data", "models", "engine", "apis"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(root)}: {n}" for n in names if "launch" in n.split(".")]
    assert not offenders, offenders


def test_train_detector_distributed_needs_a_process_group(make_cfg):
    from raydet.apis import train_detector
    from raydet.errors import ConfigError
    with pytest.raises(ConfigError, match=r"raydet.train_detector\(model, dataset, cfg\)"):
        train_detector(torch.nn.Linear(1, 1), [], make_cfg(), distributed=True)
