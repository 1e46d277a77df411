"""The GPU path, checked on CPU: collectives on a group without a CPU backend (as NCCL's), one
seed per run, per-rank RNG across a resume, float16 loss scaling's skip rule, SyncBN's choice.

The multi-rank tests run real gloo groups in spawned processes (a file store, loopback sockets),
without Ray.
"""
import glob
import json
import logging
import os

import pytest
import torch
import torch.multiprocessing as mp

from raydet.run import train_from_config
from raydet.run.build import sync_batchnorm
from raydet.engine import ChaosError, Hook, OptimizerHook, Precision, Runner, load_file
from raydet.errors import ConfigError, NonFiniteLossError

from . import dist_workers
from .conftest import tiny_config, tiny_rcnn
from .mmdet_zoo import model as zoo_model


@pytest.fixture(autouse=True)
def _loopback_gloo(monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")


def _spawn(fn, world, *args):
    mp.spawn(fn, args=(world, *args), nprocs=world, join=True)


def test_every_collective_works_on_a_group_without_a_cpu_backend(tmp_path):
    """``cuda:gloo`` refuses CPU tensors as NCCL does (``No backend type associated with device
    type cpu``): raydet's host collectives must not go through it."""
    _spawn(dist_workers.collectives, 2, str(tmp_path / "init"), str(tmp_path))
    seen = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    for rank, s in enumerate(seen):
        assert s["mean"] == {"a": 0.5, "b": 1.0}
        assert s["log_vars"] == {"loss_x": 2.5, "acc": 0.5, "loss": 2.5}
        assert s["broadcast"] == {"from": 0}
        assert s["gather"] == ([0, 10] if rank == 0 else None)
        assert s["all_gather"] == [0, 10]
        assert s["eval"] == {"order": [0, 1, 2, 3], "count": 4}
        assert s["rng_restored"]
    assert seen[0]["seed"] == seen[1]["seed"]
    rngs = load_file(str(tmp_path / "rng.pth"))["rng"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])


# -------------------------------------------------------------- per-rank RNG across a resume
RCNN = tiny_rcnn()


def _rcnn_cfg(shapes_root, work, **overrides):
    # Faster R-CNN samples its RPN anchors and RoIs at random (torch.randperm) in every forward,
    # drawing a data-dependent amount from each rank's own generator
    return tiny_config(shapes_root, work, model=RCNN, runner=dict(max_epochs=1),
                       checkpoint_config=dict(interval=2, by_epoch=False), **overrides)


def test_two_ranks_killed_mid_epoch_resume_bitwise_with_each_ranks_own_rng(shapes_root, tmp_path):
    _spawn(dist_workers.train, 2, str(tmp_path / "init0"), _rcnn_cfg(shapes_root, tmp_path / "straight"))
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=3, action="raise", rank=1)
    cfg = _rcnn_cfg(shapes_root, tmp_path / "run", custom_hooks=[chaos])
    with pytest.raises(Exception):
        _spawn(dist_workers.train, 2, str(tmp_path / "init1"), cfg)
    assert open(f"{tmp_path / 'init1'}.rank1.error").read().startswith("ChaosError")  # rank 1 failed on purpose
    ckpt = load_file(str(tmp_path / "run" / "iter_2.pth"))
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    _spawn(dist_workers.train, 2, str(tmp_path / "init2"), dict(cfg, resume_from=str(tmp_path / "run" / "iter_2.pth")))
    final = load_file(str(tmp_path / "run" / "latest.pth"))["state_dict"]
    straight = load_file(str(tmp_path / "straight" / "latest.pth"))["state_dict"]
    assert load_file(str(tmp_path / "run" / "latest.pth"))["meta"]["iter"] > 3
    assert all(torch.equal(final[k], straight[k]) for k in straight)


def test_a_rank_the_checkpoint_has_no_state_for_is_seeded_from_seed_rank_iteration():
    from raydet.engine.checkpoint import derived_seed, restore_rng, rng_state
    torch.manual_seed(5)
    saved = [rng_state()]
    assert restore_rng(saved, 0, seed=7, iteration=12) == "restored"
    assert torch.equal(torch.get_rng_state(), saved[0]["torch"])
    assert restore_rng(saved, 1, seed=7, iteration=12) == "seeded"
    first = torch.rand(3)
    torch.manual_seed(derived_seed(7, 1, 12))
    assert torch.equal(torch.rand(3), first)
    assert derived_seed(7, 1, 12) != derived_seed(7, 2, 12) != derived_seed(7, 1, 13)
    assert restore_rng(saved[0], 0, 7, 12) == "restored"  # an older checkpoint: rank 0's dict alone


# -------------------------------------------------------------- one seed per run
class _RecordBatches(Hook):
    def __init__(self, path):
        self.path = path

    def before_train_iter(self, runner):
        names = [m["ori_filename"] for m in runner.data_batch["img_metas"]]
        with open(self.path, "a") as f:
            f.write(json.dumps([runner.iter + 1, names]) + "\n")


def _batches(path):
    return {i: names for i, names in (json.loads(line) for line in open(path))}


def test_a_seedless_run_keeps_its_seed_across_a_restart(make_cfg, tmp_path, caplog):
    work = tmp_path / "seedless"
    ckpt = dict(interval=4, by_epoch=False)
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=10, action="raise")
    record = tmp_path / "batches"
    with caplog.at_level(logging.INFO, logger="raydet"), pytest.raises(ChaosError):
        train_from_config(make_cfg(work, seed=None, checkpoint_config=ckpt, custom_hooks=[chaos]), validate=False,
                          extra_hooks=[_RecordBatches(record)])
    drawn = load_file(str(work / "iter_8.pth"))["meta"]["seed"]
    assert f"seed {drawn} (drawn once for this run by the launcher)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="raydet"):
        runner = train_from_config(make_cfg(work, seed=None, checkpoint_config=ckpt, custom_hooks=[chaos],
                                            auto_resume=True), validate=False, extra_hooks=[_RecordBatches(record)])
    assert f"seed {drawn} (from the checkpoint {work}/iter_8.pth)" in caplog.text
    assert runner.meta["seed"] == drawn and load_file(str(work / "latest.pth"))["meta"]["seed"] == drawn
    # the uninterrupted run with that seed, for comparison
    straight = tmp_path / "straight_batches"
    train_from_config(make_cfg(tmp_path / "same_seed", seed=drawn, checkpoint_config=ckpt), validate=False,
                      extra_hooks=[_RecordBatches(straight)])
    resumed, reference = _batches(record), _batches(straight)  # dicts: the resumed lines overwrite 9 and 10
    assert resumed == reference and min(resumed) == 1 and max(resumed) == 2 * runner.iters_per_epoch
    weights = load_file(str(work / "latest.pth"))["state_dict"]
    expected = load_file(str(tmp_path / "same_seed" / "latest.pth"))["state_dict"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_seed_from_the_config_wins_and_is_logged(make_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="raydet"):
        train_from_config(make_cfg(tmp_path / "w", seed=3, runner=dict(max_epochs=1)), validate=False)
    assert "seed 3 (from the config)" in caplog.text


# -------------------------------------------------------------- float16 loss scaling
def _fp16_runner(tmp_path, processor, patience=5):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    # dynamic scaling from 2**8: high enough to matter, low enough that this model's float16
    # gradients never overflow by themselves
    precision = Precision(dict(loss_scale=dict(init_scale=2.0 ** 8), dtype="float16",
                               max_consecutive_nonfinite=patience), "cpu")
    assert precision.scaler.is_enabled() and precision.dtype == torch.float16
    runner = Runner(model, processor, torch.optim.SGD(model.parameters(), lr=1e-3), str(tmp_path), max_epochs=1,
                    autocast=precision.autocast)
    runner.register_hook(OptimizerHook(precision))
    return runner, model, precision


def _loss(model, data, train_mode):
    loss = ((model(torch.ones(2, 4)) - 1.0) ** 2).float().mean()
    return dict(loss=loss, log_vars=dict(loss=float(loss.detach())), num_samples=2)


def test_a_step_with_an_inf_gradient_is_skipped_and_the_scale_backs_off(tmp_path):
    scales, weights = [], []

    class Watch(Hook):
        priority = 45  # after the optimizer step

        def after_train_iter(self, runner):
            scales.append(precision.scaler.get_scale())
            weights.append(model.weight.detach().clone())

    def inf_grad_at_2(m, data, train_mode):
        if data["i"] == 2:
            def once(grad):
                handle.remove()
                return grad * float("inf")
            handle = m.weight.register_hook(once)
        return _loss(m, data, train_mode)

    runner, model, precision = _fp16_runner(tmp_path, inf_grad_at_2)
    runner.register_hook(Watch())
    runner.run([[{"i": i} for i in range(4)]], [("train", 1)])
    assert scales[0] == scales[1] == 2.0 ** 8 and scales[2] == 2.0 ** 7  # backoff 0.5 on the inf step
    assert not torch.equal(weights[0], weights[1]) and torch.equal(weights[1], weights[2])  # skipped
    assert not torch.equal(weights[2], weights[3])  # the next step is applied
    assert runner.log_buffer.val_history["loss_scale"][-1] == 2.0 ** 7


def test_consecutive_non_finite_losses_under_loss_scaling_raise_naming_the_iteration(tmp_path):
    def nan_from_3(m, data, train_mode):
        out = _loss(m, data, train_mode)
        if data["i"] >= 3:
            out["loss"] = out["loss"] * float("nan")
            out["log_vars"] = dict(loss=float("nan"))
        return out

    runner, _, _ = _fp16_runner(tmp_path, nan_from_3, patience=3)
    with pytest.raises(NonFiniteLossError, match=r"iter 6: loss=nan \(3 consecutive iterations under float16"):
        runner.run([[{"i": i} for i in range(10)]], [("train", 1)])


def test_fp16_keys_are_checked():
    assert Precision(dict(dtype="bfloat16"), "cpu").scaler.is_enabled() is False
    assert Precision(dict(), "cpu").static_scale is None  # bf16 on CPU: no scaling at all
    assert Precision(dict(dtype="float16"), "cpu").static_scale == 512.0  # mmcv's default scale
    for bad, key in ((dict(dtype="float8"), "fp16.dtype"), (dict(loss_scale="auto"), "fp16.loss_scale"),
                     (dict(loss_scale=-1), "fp16.loss_scale"), (dict(max_consecutive_nonfinite=0),
                                                                "fp16.max_consecutive_nonfinite")):
        with pytest.raises(ConfigError, match=key):
            Precision(bad, "cpu")


# -------------------------------------------------------------- SyncBN
def _bn_model():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())


@pytest.mark.parametrize("device,world,synced", [("cpu", 2, False), ("cuda", 1, False), ("cuda", 2, True)])
def test_syncbn_is_converted_only_on_cuda_with_several_ranks(device, world, synced, caplog):
    cfg = dict(type="X", backbone=dict(type="ResNet", norm_cfg=dict(type="SyncBN", requires_grad=True)))
    with caplog.at_level(logging.INFO, logger="raydet"):
        model = sync_batchnorm(_bn_model(), cfg, torch.device(device), world)
    kinds = [type(m) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert kinds == [torch.nn.SyncBatchNorm if synced else torch.nn.BatchNorm2d]
    assert ("synchronised over 2 ranks" if synced else "kept as plain BatchNorm") in caplog.text


def test_plain_bn_config_is_never_converted():
    model = sync_batchnorm(_bn_model(), dict(backbone=dict(norm_cfg=dict(type="BN"))), torch.device("cuda"), 4)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


def test_syncbn_model_trains_on_cpu_as_plain_bn(make_cfg, tmp_path):
    model = zoo_model("RetinaNet-RegNet")
    model["backbone"]["norm_cfg"] = dict(type="SyncBN")
    runner = train_from_config(make_cfg(tmp_path / "w", model=model, runner=dict(max_epochs=1)), validate=False)
    assert glob.glob(str(tmp_path / "w" / "epoch_1.pth")) and runner.epoch == 1


# -------------------------------------------------------------- the launcher's GPU group
def test_gpu_workers_get_nccl_for_cuda_and_gloo_for_host_tensors(shapes_root, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from ray.train.torch.config import _is_backend_nccl

    from raydet.config import load_config
    from raydet.launch.driver import build_trainer

    from raydet.run import plan_run

    def trainer(use_gpu, seed=0):
        cfg = load_config(tiny_config(shapes_root, tmp_path / "w", seed=seed))
        cfg.ray = dict(num_workers=2, use_gpu=use_gpu)
        plan = plan_run(cfg, launcher="ray")
        return build_trainer(cfg, plan), plan

    backend = trainer(True)[0].backend_config.backend
    assert backend == "cpu:gloo,cuda:nccl" and _is_backend_nccl(backend)  # Ray still sets NCCL's env
    assert trainer(False)[0].backend_config.backend == "gloo"
    plans = [trainer(False)[1] for _ in range(3)]
    assert {(p.seed, p.seed_from) for p in plans} == {(0, "from the config")}  # the config's seed is the run's
    drawn = [trainer(False, seed=None)[0].train_loop_config["job"].plan for _ in range(2)]
    assert all(0 <= p.seed < 2 ** 31 and p.seed_from.startswith("drawn once") for p in drawn)
    assert drawn[0].seed != drawn[1].seed  # drawn once a launch, on the driver


def test_gpu_check_runs_its_logic_on_cpu(tmp_path):
    """``benchmarks/gpu_check.py --device cpu --quick``: the three parts of the GPU check, small;
    its work dirs and stamp files go to a scratch directory it removes (only the generated data,
    for the next run, stays)."""
    import shutil
    import subprocess
    import sys
    import tempfile
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # short: the data loader's fd-passing socket lives in $TMPDIR, and a socket path ends at 108 bytes
    tmp, data = tempfile.mkdtemp(prefix="gc-", dir="/tmp"), tmp_path / "data"
    try:
        proc = subprocess.run([sys.executable, os.path.join(repo, "benchmarks/gpu_check.py"), "--device", "cpu",
                               "--quick"], capture_output=True, text=True, timeout=900,
                              env=dict(os.environ, PYTHONPATH=repo, GLOO_SOCKET_IFNAME="lo", TMPDIR=tmp,
                                       RAYDET_DATA=str(data)))
        left = os.listdir(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert left == [] and "bench" in os.listdir(data) and set(os.listdir(data)) <= {"bench", "index"}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    a = info["worker_path"]
    assert a["ok"] and a["backend"] == "cpu:gloo,cuda:gloo" and a["resumed_from"] == "iter_2.pth"
    assert a["final_iter"] == a["iterations"] == a["iterations_logged"] >= 6
    assert a["max_abs_weight_diff"] == 0.0 and a["iterations_executed"] == a["iterations"] + 1  # one redone
    b = info["loop_cost"]
    assert b["plain"]["images_per_s"] > 0 and b["none"]["images_per_s"] > 0 and b["ratio"] > 0
    assert 0.0 <= info["demo"]["bbox_mAP"] <= 1.0 and info["demo"]["epochs"] == 1
    assert "(a) worker path on cpu" in proc.stdout and "(b) the default FCOS" in proc.stdout and "(c) default demo" in proc.stdout


def test_a_forked_child_dies_on_sigterm_whatever_handler_its_parent_has():
    """Ray installs a Python SIGTERM handler in its drivers and workers; a forked child (mmdet's
    eval_map pool) that inherits one can miss a pool's terminate() and hang its parent's join."""
    import multiprocessing
    import signal

    import raydet.engine.inference  # noqa: F401  (it resets SIGTERM in forked children)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a handler that does not end the process
    try:
        fork = multiprocessing.get_context("fork")
        running = fork.Event()
        child = fork.Process(target=_running_then_asleep, args=(running,))
        child.start()
        assert running.wait(20)  # past the fork: a signal during it is the parent's handler's
        child.terminate()
        child.join(20)
        assert child.exitcode == -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.is_alive():
            child.kill()


def _running_then_asleep(running):
    import time
    running.set()
    time.sleep(60)
