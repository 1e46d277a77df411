"""Ray Train launcher: multi-worker training, fault tolerance, driver loss, cluster entry points.

One local Ray instance serves this module; the cluster test starts its own head (temp dir, free
ports, token auth) in a subprocess and stops only that head.
"""
import collections
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

from .conftest import tiny_config

ray = pytest.importorskip("ray")
# One Ray instance at a time on this host: the modules that start Ray (this one, test_cloud,
# test_cluster) run in one pytest-xdist worker, in turn, beside the Ray-free tests. (Two groups, this
# module's instance beside the others' clusters, was slower: four Ray workers and two controllers
# on 2 cores.)
pytestmark = pytest.mark.xdist_group("ray")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEARN = dict(train=800, val=100)


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # for the local S3 server (moto) only
        os.environ.setdefault(key, "testing")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
             runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}})
    yield
    ray.shutdown()


def ray_config(shapes_root, work_dir, **overrides):
    """The tiny test config on 2 Ray workers x 4 images, iteration checkpoints every 4."""
    overrides.setdefault("checkpoint_config", dict(interval=4, by_epoch=False))
    cfg = tiny_config(shapes_root, work_dir, **overrides)
    cfg["ray"] = dict(num_workers=2, max_failures=2, num_to_keep=2)
    cfg["auto_resume"] = True
    return cfg


def learn_config(root, work_dir):
    """The default model and recipe, shortened: 2 workers x 8 images, two epochs of 800 images."""
    from raydet.config import load_config
    cfg = load_config(os.path.join(REPO, "configs/fcos/fcos_gn_tiny_shapes.py"), {
        "runner.max_epochs": 2, "data.train.root": root, "data.train.num_images": LEARN,
        "data.val.root": root, "data.val.num_images": LEARN, "log_config.interval": 10,
        "log_config.hooks": [dict(type="TextLoggerHook")], "work_dir": str(work_dir)})
    return cfg


def _records(work_dir):
    (path,) = glob.glob(os.path.join(work_dir, "*.log.json"))
    return [json.loads(line) for line in open(path)]


def _weights(path):
    from raydet.engine import load_file
    return load_file(path)["state_dict"]


@pytest.fixture(scope="module")
def baseline(ray_local, shapes_root, tmp_path_factory):
    """An uninterrupted deterministic 2-worker run of the tiny config."""
    import raydet
    work = tmp_path_factory.mktemp("base") / "run"
    result = raydet.train(ray_config(shapes_root, work))
    return work, result


def test_two_workers_complete_with_one_log_and_ray_run_dir(baseline):
    work, result = baseline
    assert result.metrics["done"] and "bbox_mAP" in result.metrics
    assert re.fullmatch(re.escape(str(work)) + r"/checkpoint_final_\d+", result.checkpoint.path)
    assert (work / "latest.pth").exists() and glob.glob(str(work / "iter_*.pth"))
    assert (work / "checkpoint_manager_snapshot.json").exists()  # the work_dir is Ray's run dir
    records = [(r["epoch"], r["iter"]) for r in _records(work) if r.get("mode") == "train"]
    assert len(records) == len(set(records)) > 0


def test_two_workers_learn_and_match_single_process_eval(ray_local, tmp_path_factory):
    """The default recipe, shortened, with each epoch's evaluation off the loop (a Ray validation
    task per epoch checkpoint, its predictions made by two sharding tasks, save_best): it learns,
    and what the tasks measured is what one process measures on the same checkpoint; the log
    holds the val records in order, once."""
    import raydet
    from raydet.data import build_dataloader, build_dataset
    from raydet.data.shapes import generate
    from raydet.engine import inference, load_weights
    from raydet.models import build_detector

    root = generate(str(tmp_path_factory.mktemp("learn") / "shapes"), 0, LEARN)
    work = tmp_path_factory.mktemp("learn_run") / "run"
    cfg = learn_config(root, work)
    cfg.evaluation.update(async_eval=True, save_best="auto")
    cfg.ray.validation_shards = 2
    result = raydet.train(cfg)
    assert result.metrics["bbox_mAP"] > 0.04  # 0.066 measured on 2026-12-02
    ds = build_dataset(cfg.data.val, test_mode=True)
    model = build_detector(cfg.model)
    load_weights(model, str(work / "latest.pth"))
    metrics = ds.evaluate(inference(model, build_dataloader(ds, 8, 0, shuffle=False)), metric="bbox")
    assert metrics["bbox_mAP"] == pytest.approx(result.metrics["bbox_mAP"], abs=1e-3)
    vals = [r for r in _records(work) if r.get("mode") == "val"]
    assert [r["epoch"] for r in vals] == [1, 2] and vals[1]["bbox_mAP"] == result.metrics["bbox_mAP"]
    assert json.load(open(work / "validation" / "checkpoint_epoch_2.json"))["shards"] == 2
    log = open(glob.glob(str(work / "*.log"))[0]).read()
    assert log.count("Epoch(val) [2]") == 1 and "to be evaluated" in log
    best = max(vals, key=lambda r: r["bbox_mAP"])
    assert result.return_value["best_checkpoint"] == str(work / f"best_bbox_mAP_epoch_{best['epoch']}.pth")
    assert [p.name for p in work.glob("best_*.pth")] == [f"best_bbox_mAP_epoch_{best['epoch']}.pth"]
    ranked = result.get_best_checkpoint("bbox_mAP", "max")  # Ray's checkpoints carry the validated metrics
    assert ranked is not None and os.path.basename(ranked.path) in (f"checkpoint_epoch_{best['epoch']}",
                                                                     os.path.basename(result.checkpoint.path))


def _chaos_run(shapes_root, tmp_path, ckpt, chaos, **overrides):
    import raydet
    work = tmp_path / "run"
    hook = dict(type="ChaosHook", marker=str(tmp_path / "marker"), count_file=str(tmp_path / "count"), **chaos)
    result = raydet.train(ray_config(shapes_root, work, checkpoint_config=ckpt, custom_hooks=[hook], **overrides))
    return work, result


def _check_recovery(work, tmp_path, baseline_work, interval):
    final, base = _weights(str(work / "latest.pth")), _weights(str(baseline_work / "latest.pth"))
    assert all(torch.equal(final[k], base[k]) for k in base)  # bitwise equal to the uninterrupted run
    log = open(glob.glob(str(work / "*.log"))[0]).read()
    resumed = [int(x) for x in re.findall(r"completed: \d+ epochs, (\d+) iterations", log)]
    assert resumed and resumed[0] > 0
    records = [(r["epoch"], r["iter"]) for r in _records(work) if r.get("mode") == "train"]
    assert len(records) == len(set(records))
    executed = [line for line in open(tmp_path / "count") if line.startswith("0 ")]
    schedule = len([1 for r in _records(baseline_work) if r.get("mode") == "train"])
    assert schedule < len(executed) <= schedule + interval


def test_worker_exception_in_an_iteration_based_run_recovers_exactly(baseline, shapes_root, tmp_path):
    """IterBasedRunner on Ray, as long as the epoch baseline and with its LR (the baseline's step at
    epoch 2 is never reached): a worker's exception in the second data epoch, a restart from the
    last iter_N.pth, and the final weights equal the epoch runner's bitwise."""
    from raydet.engine import load_file
    meta = load_file(str(baseline[0] / "latest.pth"))["meta"]
    total, per_epoch = meta["max_iters"], meta["max_iters"] // meta["max_epochs"]
    work, result = _chaos_run(shapes_root, tmp_path, dict(interval=4), dict(at_iter=per_epoch + 3, action="raise",
                                                                            rank=1),
                              runner=dict(type="IterBasedRunner", max_iters=total),
                              lr_config=dict(policy="step", step=[10 ** 6], by_epoch=False, warmup="linear",
                                             warmup_iters=3, warmup_ratio=0.1),
                              evaluation=dict(interval=per_epoch, metric="bbox"))
    assert result.metrics["done"] and result.metrics["iter"] == total
    assert (work / f"iter_{total}.pth").exists() and not glob.glob(str(work / "epoch_*.pth"))
    assert [r["iter"] for r in _records(work) if r.get("mode") == "val"] == [per_epoch, 2 * per_epoch]
    _check_recovery(work, tmp_path, baseline[0], 4)


def test_worker_sigkill_with_epoch_checkpoints_recovers_exactly(baseline, shapes_root, tmp_path):
    """Rank 0 killed early in epoch 2, while epoch 1's checkpoint is being evaluated off the loop
    (async_eval): the restart resumes exactly, and epoch 1's evaluation is neither lost nor logged
    twice; the metrics are the in-loop evaluation's of the uninterrupted run."""
    ipe = max(r["iter"] for r in _records(baseline[0]) if r.get("mode") == "train")
    work, result = _chaos_run(shapes_root, tmp_path, dict(interval=1, by_epoch=True),
                              dict(at_iter=ipe + 3, action="sigkill", rank=0),
                              evaluation=dict(interval=1, metric="bbox", save_best="auto", async_eval=True))
    assert result.metrics["done"]
    _check_recovery(work, tmp_path, baseline[0], ipe)
    vals = [r for r in _records(work) if r.get("mode") == "val"]
    expected = [r for r in _records(baseline[0]) if r.get("mode") == "val"]
    assert [(r["epoch"], r["iter"]) for r in vals] == [(r["epoch"], r["iter"]) for r in expected] == [(1, ipe), (2, ipe)]
    assert [r["bbox_mAP"] for r in vals] == pytest.approx([r["bbox_mAP"] for r in expected], abs=1e-4)
    assert [r["lr"] for r in vals] == [r["lr"] for r in expected]  # each record its own point's LR
    assert result.metrics["bbox_mAP"] == pytest.approx(expected[-1]["bbox_mAP"], abs=1e-4)
    best = json.load(open(work / "validation" / "best.json"))
    assert [p.name for p in work.glob("best_*.pth")] == [os.path.basename(best["file"])]


def test_mmdets_cascade_rcnn_killed_mid_epoch_on_two_workers_resumes_bitwise(ray_local, shapes_root, tmp_path):
    """mmdet's own Cascade R-CNN (tests/mmdet_zoo.py; its RoI samplers draw from each rank's torch
    generator) on 2 Ray workers: rank 1 SIGKILLed mid-epoch 2, the group restarts from the
    iteration checkpoint before it, and the run ends with the uninterrupted run's weights."""
    import raydet
    from .mmdet_zoo import model
    cascade = dict(model=model("CascadeRCNN"), runner=dict(type="EpochBasedRunner", max_epochs=2),
                   lr_config=dict(policy="fixed"), evaluation=dict(interval=2, metric="bbox"))
    straight = tmp_path / "straight"
    raydet.train(ray_config(shapes_root, straight, **cascade), validate=False)
    ipe = max(r["iter"] for r in _records(straight) if r.get("mode") == "train")
    hook = dict(type="ChaosHook", marker=str(tmp_path / "marker"), count_file=str(tmp_path / "count"),
                at_iter=ipe + 2, action="sigkill", rank=1)
    work = tmp_path / "run"
    result = raydet.train(ray_config(shapes_root, work, custom_hooks=[hook], **cascade), validate=False)
    assert result.metrics["done"]
    _check_recovery(work, tmp_path, straight, 4)


def test_a_resume_inside_an_accumulation_group_on_two_workers_is_bitwise_exact(ray_local, shapes_root, tmp_path):
    """GradientCumulativeOptimizerHook(cumulative_iters=4) on 2 Ray workers, 6 iterations an epoch:
    epoch_1.pth falls inside a group, where each rank holds its own partial gradient sums. Rank 1
    is killed in epoch 2, the group restarts from epoch_1.pth, and every tensor ends equal to the
    uninterrupted run's (each rank got its own sums back, not rank 0's)."""
    import raydet
    from raydet.engine import load_file
    acc = dict(optimizer_config=dict(type="GradientCumulativeOptimizerHook", cumulative_iters=4),
               checkpoint_config=dict(interval=1, by_epoch=True), evaluation=dict(interval=2, metric="bbox"))
    straight = tmp_path / "straight"
    raydet.train(ray_config(shapes_root, straight, **acc), validate=False)
    ranks = load_file(str(straight / "epoch_1.pth"))["ranks"]
    assert len(ranks) == 2 and all(r["OptimizerHook"]["grads"] for r in ranks)
    g0, g1 = (r["OptimizerHook"]["grads"] for r in ranks)
    assert not all(torch.equal(g0[k], g1[k]) for k in g0)  # each rank's own sums
    ipe = max(r["iter"] for r in _records(straight) if r.get("mode") == "train")
    hook = dict(type="ChaosHook", marker=str(tmp_path / "marker"), count_file=str(tmp_path / "count"),
                at_iter=ipe + 3, action="sigkill", rank=1)
    work = tmp_path / "run"
    assert raydet.train(ray_config(shapes_root, work, custom_hooks=[hook], **acc), validate=False).metrics["done"]
    _check_recovery(work, tmp_path, straight, ipe)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(baseline, shapes_root, tmp_path):
    """The newest checkpoint (Ray's and the work_dir's: one file, hard-linked) lost its last write
    before the worker died: the restart skips it, resumes from the one before and still ends
    bitwise equal to the uninterrupted run."""
    work, result = _chaos_run(shapes_root, tmp_path, dict(interval=4, by_epoch=False),
                              dict(at_iter=8, action="corrupt", rank=0))
    assert result.metrics["done"]
    log = open(glob.glob(str(work / "*.log"))[0]).read()
    assert re.search(r"resumed from \S+iter_4\.pth at .*\(completed: \d+ epochs, 4 iterations\)", log)
    _check_recovery(work, tmp_path, baseline[0], 8)


def test_out_dir_without_latest_link_ends_a_ray_run_cleanly(ray_local, shapes_root, tmp_path):
    """checkpoint_config.out_dir (mmcv's out_dir/<work_dir's name>) and create_symlink=False: the
    final report names the last checkpoint itself; nothing looks for latest.pth."""
    import raydet
    ckpt = dict(interval=4, by_epoch=False, out_dir=str(tmp_path / "out"), create_symlink=False)
    result = raydet.train(ray_config(shapes_root, tmp_path / "run", checkpoint_config=ckpt,
                                     runner=dict(max_epochs=1)))
    assert result.metrics["done"] and not (tmp_path / "out" / "run" / "latest.pth").exists()
    last = max(glob.glob(str(tmp_path / "out" / "run" / "iter_*.pth")), key=os.path.getmtime)
    final = os.path.join(result.checkpoint.path, "checkpoint.pth")
    assert os.path.samefile(final, last) or open(final, "rb").read() == open(last, "rb").read()
    assert result.return_value["last_checkpoint"] == last


def test_storage_path_gets_the_checkpoints_and_a_fresh_work_dir_resumes(ray_local, shapes_root, tmp_path):
    """ray.storage_path apart from the work_dir (a bucket's stand-in): every checkpoint is uploaded
    there in the background; a second run on an empty work_dir (another machine) resumes from it."""
    import raydet
    storage, first, second = tmp_path / "storage", tmp_path / "a" / "run", tmp_path / "b" / "run"
    storage.mkdir()

    def config(work, epochs):
        cfg = ray_config(shapes_root, work, runner=dict(max_epochs=epochs))
        cfg["ray"].update(storage_path=str(storage), checkpoint_upload_mode="async")
        return cfg

    result = raydet.train(config(first, 2))
    assert re.fullmatch(re.escape(str(storage / "run")) + r"/checkpoint_final_\d+", result.checkpoint.path)
    uploaded = sorted(p.name for p in (storage / "run").glob("checkpoint_*") if p.is_dir())
    assert uploaded and all((storage / "run" / n / "checkpoint.pth").exists() for n in uploaded)
    assert not list(first.glob("checkpoint_*"))  # the hard-linked upload dirs are gone locally
    log = open(glob.glob(str(first / "*.log"))[0]).read()
    assert re.search(r"checkpoint_iter_4 reported to Ray in [\d.]+ s \(upload: async\)", log)
    done = len([r for r in _records(first) if r.get("mode") == "train"])  # iterations of 2 epochs

    raydet.train(config(second, 3))  # same run name, fresh work_dir, one more epoch
    log = open(glob.glob(str(second / "*.log"))[0]).read()
    resumed = re.findall(r"resumed from (\S+) at .*\(completed: \d+ epochs, (\d+) iterations\)", log)
    assert resumed and resumed[0][0].startswith(str(storage)) and int(resumed[0][1]) == done
    trained = [(r["epoch"], r["iter"]) for r in _records(second) if r.get("mode") == "train"]
    assert len(trained) == len(set(trained)) == done * 3 // 2  # the logs came back from the storage; nothing re-run


@pytest.fixture
def s3_bucket():
    """A bucket on a local S3 server (moto) on 127.0.0.1: ``(uri_of(path), pyarrow filesystem)``."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is a test dependency")
    from pyarrow import fs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                         access_key="testing", secret_key="testing", allow_bucket_creation=True)
    s3.create_dir("raydet-test")
    query = f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    yield (lambda path: f"s3://raydet-test/{path}{query}"), s3
    server.stop()


def test_work_dir_on_a_bucket_holds_checkpoints_and_logs_and_a_new_machine_resumes(ray_local, shapes_root,
                                                                                 s3_bucket, tmp_path):
    """work_dir=s3://...: checkpoints are uploaded in the background, logs follow; a second run
    of the same work_dir whose local staging directory is gone (another machine) resumes from the
    bucket and trains only the added epoch."""
    import raydet
    from pyarrow import fs
    uri_of, s3 = s3_bucket
    name = f"run-{os.getpid()}-{time.time_ns()}"
    staging = os.path.join(tempfile.gettempdir(), "raydet-staging", name)

    def files():
        infos = s3.get_file_info(fs.FileSelector(f"raydet-test/runs/{name}", recursive=True))
        return {i.path.split(f"runs/{name}/", 1)[1] for i in infos if i.type == fs.FileType.File}

    evaluation = dict(interval=1, metric="bbox", save_best="auto")
    result = raydet.train(ray_config(shapes_root, uri_of(f"runs/{name}"), runner=dict(max_epochs=2),
                                     evaluation=evaluation))
    assert re.fullmatch(rf"raydet-test/runs/{name}/checkpoint_final_\d+", result.checkpoint.path)
    first = files()
    assert result.checkpoint.path.split(f"{name}/")[1] + "/checkpoint.pth" in first
    assert "checkpoint_manager_snapshot.json" in first
    assert any(re.fullmatch(r"checkpoint_iter_\d+/checkpoint.pth", f) for f in first)
    (log_name,) = [f for f in first if re.fullmatch(r"logs/\d+_\d+\.log", f)]
    assert f"{log_name}.json" in first
    with s3.open_input_stream(f"raydet-test/runs/{name}/{log_name}") as f:
        log = f.read().decode()
    assert "Epoch [2][" in log and re.search(r"reported to Ray in [\d.]+ s \(upload: async\)", log)
    assert not glob.glob(os.path.join(staging, "checkpoint_*"))  # uploaded, then removed locally

    (best,) = [f for f in first if re.fullmatch(r"logs/best_bbox_mAP_epoch_\d\.pth", f)]  # the best model too
    assert os.path.basename(best) == os.path.basename(result.return_value["best_checkpoint"])
    with s3.open_input_stream(f"raydet-test/runs/{name}/{log_name}.json") as f:
        records = f.read().decode().splitlines(keepends=True)
    with s3.open_output_stream(f"raydet-test/runs/{name}/{log_name}.json") as f:
        f.write("".join(records[:3]).encode())  # the background copy of the logs lagged behind

    shutil.rmtree(staging)  # another machine: nothing local
    second = raydet.train(ray_config(shapes_root, uri_of(f"runs/{name}"), runner=dict(max_epochs=3),
                                     evaluation=evaluation))
    log = open(glob.glob(os.path.join(staging, "*.log"))[0]).read()
    resumed = re.findall(r"resumed from (\S+) at .*\(completed: \d+ epochs, (\d+) iterations", log)
    per_epoch = int(re.search(r"world size 2: (\d+) iterations per epoch", log).group(1))
    assert resumed and resumed[0][0].startswith(os.path.join(staging, "downloaded"))
    assert int(resumed[0][1]) == 2 * per_epoch
    trained = [(r["epoch"], r["iter"]) for r in _records(staging) if r.get("mode") == "train"]
    assert len(trained) == len(set(trained)) == 3 * per_epoch  # the first run's records came back; none twice
    with s3.open_input_stream(f"raydet-test/runs/{name}/{log_name}") as f:
        log = f.read().decode()  # one log for the run, whichever machine trained which epoch
    assert "Epoch [2][" in log and "Epoch [3][" in log
    vals = [r["epoch"] for r in _records(staging) if r.get("mode") == "val"]
    assert vals == [1, 2, 3]
    # save_best went on from the first machine's best: one best file, here and in the bucket
    bests = [f for f in files() if f.startswith("logs/best_")]
    assert len(bests) == 1 and len(glob.glob(os.path.join(staging, "best_*.pth"))) == 1
    assert os.path.basename(second.return_value["best_checkpoint"]) == os.path.basename(bests[0])
    shutil.rmtree(staging)


def test_no_auto_resume_refuses_a_run_that_storage_already_holds(shapes_root, tmp_path):
    """Ray resumes any run its storage holds; raydet never deletes from storage, so a fresh start
    on the same name is refused before Ray starts, naming the run dir."""
    import raydet
    from raydet.errors import ConfigError
    (tmp_path / "storage" / "run").mkdir(parents=True)
    (tmp_path / "storage" / "run" / "checkpoint_manager_snapshot.json").write_text("{}")
    cfg = ray_config(shapes_root, tmp_path / "run")
    cfg["ray"]["storage_path"], cfg["auto_resume"] = str(tmp_path / "storage"), False
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "storage" / "run")) + ".*another work_dir name"):
        raydet.train(cfg)


def test_a_checkpoint_on_remote_storage_is_downloaded_once(tmp_path):
    """What a node does with a checkpoint on a bucket (here a pyarrow filesystem that is not the
    local one): download it into the work_dir, whole, and reuse that copy."""
    import pyarrow.fs
    from ray.train import Checkpoint

    from raydet.launch.worker import CKPT_FILE, _local_file
    (tmp_path / "bucket" / "checkpoint_iter_4").mkdir(parents=True)
    (tmp_path / "bucket" / "checkpoint_iter_4" / CKPT_FILE).write_bytes(b"weights" * 1000)
    remote = pyarrow.fs.SubTreeFileSystem(str(tmp_path / "bucket"), pyarrow.fs.LocalFileSystem())
    ckpt = Checkpoint(path="checkpoint_iter_4", filesystem=remote)
    path = _local_file(ckpt, str(tmp_path / "work"))
    assert path == str(tmp_path / "work" / "downloaded" / "checkpoint_iter_4" / CKPT_FILE)
    assert open(path, "rb").read() == b"weights" * 1000
    assert _local_file(ckpt, str(tmp_path / "work")) == path
    assert os.listdir(tmp_path / "work" / "downloaded") == ["checkpoint_iter_4"]  # no leftovers


def test_config_error_before_any_worker(ray_local, shapes_root, tmp_path):
    import raydet
    from raydet.errors import ConfigError
    start = time.time()
    with pytest.raises(ConfigError, match="optimzer"):
        raydet.train(dict(ray_config(shapes_root, tmp_path / "w"), optimzer=dict(type="SGD")))
    assert time.time() - start < 5 and not (tmp_path / "w").exists()


def test_missing_image_fails_fast_naming_the_file(ray_local, shapes_root, tmp_path):
    import shutil

    import raydet
    from raydet.errors import DataError
    root = tmp_path / "broken"
    shutil.copytree(shapes_root, root)
    victim = root / "train" / "000005.jpg"
    os.remove(victim)
    cfg = ray_config(str(root), tmp_path / "w", runner=dict(type="EpochBasedRunner", max_epochs=1))
    cfg["ray"]["max_failures"] = 3
    start = time.time()
    with pytest.raises(DataError, match=f"image file not found: {victim}"):
        raydet.train(cfg)
    assert time.time() - start < 60  # no retries burnt: each restart costs ~15 s


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_driver_loss_then_rerun_resumes(ray_local, shapes_root, tmp_path):
    """Kill the driver (a `raydet train` process) after its first checkpoint; re-run resumes."""
    from raydet.config import dump_config, load_config
    cfg_path = str(tmp_path / "cfg.py")
    # long enough (~90 iterations) that the killed driver's workers, which Ray stops only once it notices
    # the driver is gone (a second or two, ~20 iterations here), cannot finish the run before the rerun
    epochs = 12
    dump_config(load_config(ray_config(shapes_root, tmp_path / "run", runner=dict(max_epochs=epochs))), cfg_path)
    # without the loopback setting: the CLI's local instance must keep to 127.0.0.1 by itself
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    # the CLI's own Ray instances keep their session files here, not in the host's /tmp/ray (short:
    # Ray's socket paths end at 107 bytes)
    ray_tmp = tempfile.mkdtemp(prefix="rl-", dir="/tmp")
    env.update(PYTHONPATH=REPO, RAY_TMPDIR=ray_tmp)
    cmd = [sys.executable, "-m", "raydet", "train", cfg_path, "--work-dir", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while not (tmp_path / "run" / "iter_8.pth").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "run" / "iter_8.pth").exists()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final metrics" in out.stdout and "raydet: training finished" in out.stdout
    console = re.sub(r"\d{4}-\d\d-\d\d [\d:,]+|pid=\d+|ip=[\d.]+", "", out.stdout + out.stderr).splitlines()
    repeated = {line: n for line, n in collections.Counter(console).items() if n > 3 and line.strip()}
    assert not repeated, repeated  # a console a person can read
    assert "Hooks will be executed" not in out.stdout  # the table is in the log file
    # every Ray process that logged, the training workers included (Ray names the node's address of
    # a line from a node whose address is not the driver's), and every node Ray registered
    ips = set(re.findall(r"\bip=([0-9.]+)", out.stdout + out.stderr))
    assert ips <= {"127.0.0.1"}, ips
    nodes = [n for path in glob.glob(os.path.join(ray_tmp, "ray", "session_*", "logs", "gcs_server.out"))
             for n in re.findall(r"Registering new node\..*?node_address=([\d.]+)", open(path).read())]
    assert len(nodes) >= 2 and set(nodes) == {"127.0.0.1"}, nodes  # the killed run's instance and the rerun's
    records = [(r["epoch"], r["iter"]) for r in _records(tmp_path / "run") if r.get("mode") == "train"]
    ipe = max(i for _, i in records)
    assert len(records) == len(set(records)) == epochs * ipe  # no iteration lost or logged twice
    log = open(glob.glob(str(tmp_path / "run" / "*.log"))[0]).read()  # one: the rerun continues the run's log
    resumed = re.search(r"resumed from .* \(completed: \d+ epochs, ([1-9]\d*) iterations\)", log)
    assert resumed and int(resumed.group(1)) < epochs * ipe, log[-3000:]  # the rerun trained what was left
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=200)
    assert again.returncode == 0 and "already complete" in again.stdout
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_train_detector_distributed_ships_built_objects(ray_local, shapes_root, tmp_path):
    """mmdet's signature: the caller builds model and dataset; they travel via ray.put."""
    from raydet import train_detector
    from raydet.config import load_config
    from raydet.data import build_dataset
    from raydet.models import build_detector

    cfg = load_config(ray_config(shapes_root, tmp_path / "run", runner=dict(max_epochs=1)))
    model = build_detector(cfg.model)
    dataset = build_dataset(cfg.data.train)
    result = train_detector(model, dataset, cfg, validate=True)
    assert result.metrics["done"] and "bbox_mAP" in result.metrics
    assert (tmp_path / "run" / "latest.pth").exists()


def test_a_seedless_run_restarted_before_its_first_checkpoint_keeps_the_drivers_seed(ray_local, shapes_root,
                                                                                     tmp_path, capfd):
    """The driver draws a config's missing seed once; both worker groups use it (and the
    checkpoints carry it)."""
    import raydet
    work = tmp_path / "run"
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=2, action="raise", rank=1)
    result = raydet.train(ray_config(shapes_root, work, seed=None, custom_hooks=[chaos], runner=dict(max_epochs=1)))
    assert result.metrics["done"] and (tmp_path / "marker").exists()  # failed once, before iteration 4's checkpoint
    seeds = re.findall(r"seed (\d+) \(drawn once for this run by the launcher\)", capfd.readouterr().out)
    assert len(seeds) == 2 and len(set(seeds)) == 1, seeds  # rank 0 of each attempt
    from raydet.engine import load_file  # the checkpoints carry that seed
    assert load_file(str(work / "latest.pth"))["meta"]["seed"] == int(seeds[0])


def test_a_local_instance_is_kept_on_loopback_unless_ray_would_join_a_cluster(tmp_path):
    """The Python API (a notebook) gets the CLI's rule: importing raydet's launcher before ray
    keeps a local instance on 127.0.0.1 — except where ray.init() joins a cluster (RAY_ADDRESS,
    or one that `ray start` recorded on this node), or ray was imported first."""
    code = ("import os, sys; {pre} import raydet.launch; "
            "print(os.environ.get('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'))")
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    base.update(PYTHONPATH=REPO, RAY_TMPDIR=str(tmp_path))

    def start(pre="", tmp=tmp_path, **env):  # the four interpreters start at once: each import is seconds
        return subprocess.Popen([sys.executable, "-c", code.format(pre=pre)], env=dict(base, RAY_TMPDIR=str(tmp), **env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def setting(proc):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        return out.split()[-1]

    (tmp_path / "recorded" / "ray").mkdir(parents=True)
    # `ray start` ran on this node: it recorded the cluster's address
    (tmp_path / "recorded" / "ray" / "ray_current_cluster").write_text("10.0.0.5:6379")
    cases = [start(), start(RAY_ADDRESS="10.0.0.5:6379"), start(pre="import ray;"), start(tmp=tmp_path / "recorded")]
    assert [setting(p) for p in cases] == ["0", "None", "None", "None"]


def test_test_sharded_over_two_workers_gives_the_single_process_results(baseline, shapes_root, tmp_path, capsys,
                                                                         monkeypatch):
    """raydet test --num-workers 2: each worker predicts a contiguous half; gathered in dataset
    order, the results and the mAP are those of one process; Ray's run record, in a temporary
    directory, is removed afterwards."""
    import pickle
    import tempfile

    from raydet.cli import main
    from raydet.config import dump_config, load_config
    work, _ = baseline
    cfg_path = str(tmp_path / "cfg.py")
    dump_config(load_config(ray_config(shapes_root, work)), cfg_path)
    ckpt = str(work / "latest.pth")
    assert main(["test", cfg_path, ckpt, "--eval", "bbox", "--out", str(tmp_path / "one.pkl")]) == 0
    one = re.search(r"metrics: (\{.*\})", capsys.readouterr().out).group(1)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert main(["test", cfg_path, ckpt, "--eval", "bbox", "--num-workers", "2", "--out", str(tmp_path / "two.pkl")]) == 0
    assert os.listdir(tmp_path / "tmp") == []
    two = re.search(r"metrics: (\{.*\})", capsys.readouterr().out).group(1)
    assert one == two and "bbox_mAP" in one
    a, b = (pickle.load(open(tmp_path / n, "rb")) for n in ("one.pkl", "two.pkl"))
    assert len(a) == len(b) == 16
    for ra, rb in zip(a, b):
        assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(ra, rb))


def _by_file(records):
    found = collections.defaultdict(list)
    for r in records:
        found[r["file_name"]].append(r)
    return found


def _assert_same_detections(got, expected):
    """Per image: the same detections (class, box, score), to float tolerance (oneDNN may sum a
    batch of two in another order than one image)."""
    assert set(got) == set(expected)
    for name, want in expected.items():
        have = got[name]
        assert [r["category"] for r in have] == [r["category"] for r in want], name
        assert np.allclose([r["bbox"] for r in have], [r["bbox"] for r in want], atol=1e-3), name
        assert np.allclose([r["score"] for r in have], [r["score"] for r in want], atol=1e-5)


def test_infer_over_a_directory_and_a_bucket_prefix_writes_what_inference_detector_finds(
        baseline, shapes_root, s3_bucket, tmp_path, capsys):
    """raydet infer on Ray Data (batches of 2, actor pool) over a nested directory and over the
    same images under an S3 prefix: per image the detections of inference_detector one by one.
    The images are landscape only, so a batch pads no image beyond its own padded size."""
    import cv2

    from raydet.apis import inference_detector, init_detector
    from raydet.apis.inference import result_to_records
    from raydet.cli import main
    from raydet.config import dump_config, load_config
    from raydet.launch.infer import infer
    work, _ = baseline
    cfg = load_config(ray_config(shapes_root, work))
    ckpt = str(work / "latest.pth")
    landscape = [p for p in sorted(glob.glob(os.path.join(shapes_root, "val", "*.jpg")))
                 if cv2.imread(p).shape[:2] == (96, 128)][:5]
    assert len(landscape) == 5
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    local = [str(imgs / ("sub" if i % 2 else "") / os.path.basename(p)) for i, p in enumerate(landscape)]
    for src, dst in zip(landscape, local):
        shutil.copy(src, dst)
    (imgs / "notes.txt").write_text("not an image")

    model = init_detector(cfg, ckpt)
    expected = {p: result_to_records(inference_detector(model, p), model.CLASSES, p) for p in local}
    assert sum(map(len, expected.values())) > 0

    done = infer(cfg, ckpt, str(imgs), str(tmp_path / "preds.json"), batch_size=2, concurrency=1,
                 show_dir=str(tmp_path / "vis"))
    assert (done["images"], done["detections"]) == (5, sum(map(len, expected.values())))
    _assert_same_detections(_by_file(json.load(open(tmp_path / "preds.json"))), expected)
    drawn = sorted(os.path.relpath(p, tmp_path / "vis") for p in glob.glob(str(tmp_path / "vis" / "**" / "*.jpg"),
                                                                           recursive=True))
    assert drawn == sorted(os.path.relpath(p, imgs) for p in local)  # the input's layout

    uri_of, s3 = s3_bucket
    prefix = f"imgs-{os.getpid()}-{time.time_ns()}"
    for path in local:
        with s3.open_output_stream(f"raydet-test/{prefix}/{os.path.relpath(path, imgs)}") as f:
            f.write(open(path, "rb").read())
    cfg_path = str(tmp_path / "cfg.py")
    dump_config(cfg, cfg_path)
    out = str(tmp_path / "preds.jsonl")
    assert main(["infer", cfg_path, ckpt, uri_of(prefix), "--out", out, "--batch-size", "2"]) == 0
    assert re.search(r"\d+ detections in 5 images \([\d.]+ s(, [\d.]+ images/s once the actors were up)?\) "
                     r"written to", capsys.readouterr().out)
    got = _by_file(json.loads(line) for line in open(out))
    url = f"s3://raydet-test/{prefix}/"
    _assert_same_detections({name.replace(url, str(imgs) + "/"): v for name, v in got.items()}, expected)

    assert main(["infer", cfg_path, ckpt, uri_of(prefix), "--out", out]) == 2  # never over an existing file
    assert "exists" in capsys.readouterr().err
    assert not glob.glob(str(tmp_path / ".preds*"))  # no temporary file left behind


def test_the_drivers_annotation_index_is_mapped_zero_copy_by_each_worker(ray_local, shapes_root, tmp_path):
    from raydet.config import load_config
    from raydet.data import build_dataset
    from raydet.launch.driver import share_indexes
    cfg = load_config(ray_config(shapes_root, tmp_path / "w"))
    ref = share_indexes(cfg)  # train and val sets
    assert ref is not None and len(ray.get(ref)) == 2

    @ray.remote(num_cpus=0)
    def build_there(refs, data_cfg):  # in a list: a nested ref reaches the task unresolved, as in the launcher
        from raydet.data.index import provide
        provide(ray.get(refs[0]))
        ds = build_dataset(data_cfg)
        return (ds.index_source, [not a.flags.writeable and not a.flags.owndata for a in ds.index.arrays.values()],
                [ds.get_ann_info(i)["bboxes"].tolist() for i in range(len(ds))], ds.data_infos[3])

    here = build_dataset(cfg.data.train)
    for source, mapped, boxes, info in ray.get([build_there.remote([ref], cfg.data.train) for _ in range(2)]):
        assert source == "shared" and all(mapped)  # read-only views of the object store's memory
        assert boxes == [here.get_ann_info(i)["bboxes"].tolist() for i in range(len(here))] and info == here.data_infos[3]
    # a driver that does not see the annotation file (a notebook attached to a remote cluster)
    # leaves each worker to build its own
    assert share_indexes(load_config(dict(cfg.to_dict(), data=dict(cfg.data.to_dict(), train=dict(
        type="CocoDataset", ann_file=str(tmp_path / "missing.json"), img_prefix=str(tmp_path)))))) is None


def test_resume_from_into_a_used_work_dir_does_the_same_in_process_and_on_ray(ray_local, shapes_root, tmp_path,
                                                                               capsys):
    """The run plan's one precedence rule (raydet.run.plan): ``--resume-from X`` starts from X
    whatever the work_dir holds — here the finished run X came from, whose newest checkpoint
    auto-resume alone would take (and so train nothing) — in this process and on Ray alike; the
    retrained epochs are bitwise those of the first run (same seed, deterministic)."""
    import glob as glob_

    import raydet
    from raydet.cli import main
    from raydet.config import dump_config, load_config
    from raydet.engine import load_file
    torch.set_num_threads(1)  # as a Ray worker of one CPU: the same float sums, so bitwise comparable
    cfg = tiny_config(shapes_root, tmp_path / "unused", runner=dict(max_epochs=3), auto_resume=True)
    cfg["ray"] = dict(num_workers=1)
    path = str(tmp_path / "tiny.py")
    dump_config(load_config(cfg), path)
    first = tmp_path / "first"
    assert main(["train", path, "--launcher", "none", "--work-dir", str(first), "--no-validate"]) == 0
    finished = load_file(str(first / "epoch_3.pth"))
    runs = {}
    for how in ("none", "ray"):
        work = tmp_path / how
        shutil.copytree(first, work)
        start = str(work / "epoch_1.pth")
        if how == "none":
            assert main(["train", path, "--launcher", "none", "--work-dir", str(work), "--resume-from", start,
                         "--no-validate"]) == 0
        else:
            raydet.train(path, validate=False, work_dir=str(work), resume_from=start)
        (log,) = glob_.glob(str(work / "*.log"))
        assert f"resumed from {start} at epoch 2" in open(log).read(), how
        runs[how] = load_file(str(work / "epoch_3.pth"))
    capsys.readouterr()
    for how, state in runs.items():
        assert state["meta"]["launch"] != finished["meta"]["launch"], f"{how}: epoch 3 was not trained again"
        assert all(torch.equal(state["state_dict"][k], v) for k, v in finished["state_dict"].items()), how
    assert runs["none"]["meta"]["launch"] != runs["ray"]["meta"]["launch"]


def test_infer_on_500_images_prints_a_line_per_10_percent_and_no_ray_noise(baseline, shapes_root, tmp_path, capfd):
    """``raydet infer`` over 500 images: its progress (a line per 10%), the final count, and at
    most a few other lines — none of Ray Data's progress blocks or execution lines."""
    from raydet.cli import main
    from raydet.config import dump_config, load_config
    work, _ = baseline
    cfg_path = str(tmp_path / "cfg.py")
    dump_config(load_config(ray_config(shapes_root, work)), cfg_path)
    images = tmp_path / "imgs"
    images.mkdir()
    val = sorted(glob.glob(os.path.join(shapes_root, "val", "*.jpg")))
    for i in range(500):
        os.link(val[i % len(val)], images / f"{i:04d}.jpg")
    capfd.readouterr()
    assert main(["infer", cfg_path, str(work / "latest.pth"), str(images), "--out", str(tmp_path / "p.jsonl"),
                 "--batch-size", "16"]) == 0
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    progress = [line for line in lines if "inference: " in line and "/500 images" in line]
    assert [re.search(r"\((\d+)%\)", line)[1] for line in progress][-1] == "100" and 10 <= len(progress) <= 11
    assert re.search(r"\d+ detections in 500 images", out.strip().splitlines()[-1])
    assert not [line for line in lines if "logging_progress" in line or "Total Progress" in line
                or "into pyarrow" in line or "streaming_executor" in line]
    assert len(lines) <= 15, "\n".join(lines)
    assert sum(1 for _ in open(tmp_path / "p.jsonl")) > 0
