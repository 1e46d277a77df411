"""Checkpoint files written off the training loop: the loop goes on while a slow write is in
flight, the files hold the state of their own iteration, the last one is complete when the run
returns, a kill mid-write resumes exactly from the one before, and every rank reports in step."""
import glob
import json
import os
import pickle
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

import raydet.engine.checkpoint as ckpt
from raydet.run import train_from_config
from raydet.engine import Hook, find_latest_checkpoint, load_file
from raydet.engine.checkpoint import CheckpointWriter
from raydet.errors import CheckpointError

from . import dist_workers
from .conftest import tiny_config

ITERS = dict(interval=2, by_epoch=False)
ONE_EPOCH = dict(type="EpochBasedRunner", max_epochs=1)  # 13 iterations


def _slow_writes(monkeypatch, seconds):
    save_file = ckpt.save_file

    def slow(obj, path):
        time.sleep(seconds)
        save_file(obj, path)
    monkeypatch.setattr(ckpt, "save_file", slow)


class _Watch(Hook):
    """Per iteration: whether a checkpoint write was in flight when it ended."""
    priority = 100

    def __init__(self):
        self.busy = []

    def after_train_iter(self, runner):
        self.busy.append(runner.writer.busy)


@pytest.fixture(scope="module")
def sync_run(shapes_root, tmp_path_factory):
    from raydet.config import load_config
    work = tmp_path_factory.mktemp("sync")
    cfg = tiny_config(shapes_root, work, checkpoint_config=dict(ITERS, async_save=False), runner=ONE_EPOCH)
    runner = train_from_config(load_config(cfg), validate=False)
    return work, runner


def _equal_states(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_goes_on_during_a_slow_write_and_each_file_holds_its_own_iteration(make_cfg, tmp_path,
                                                                                   monkeypatch, sync_run):
    sync_work, sync_runner = sync_run
    _slow_writes(monkeypatch, 0.5)
    watch = _Watch()
    runner = train_from_config(make_cfg(tmp_path / "async", checkpoint_config=dict(ITERS), runner=ONE_EPOCH),
                               validate=False, extra_hooks=[watch])
    assert runner.writer.background and not runner.writer.busy
    assert sum(watch.busy) >= 2  # iterations ran while a file was being written
    names = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "async" / "iter_*.pth")))
    assert names == sorted(os.path.basename(p) for p in glob.glob(str(sync_work / "iter_*.pth")))
    for name in names:  # copied at its own iteration: later steps did not leak into the file
        mine, theirs = load_file(str(tmp_path / "async" / name)), load_file(str(sync_work / name))
        assert mine["meta"]["iter"] == theirs["meta"]["iter"]
        assert _equal_states(mine["state_dict"], theirs["state_dict"])
        assert mine["optimizer"]["state"].keys() == theirs["optimizer"]["state"].keys()
        assert all(_equal_states(mine["optimizer"]["state"][k], theirs["optimizer"]["state"][k])
                   for k in mine["optimizer"]["state"])
    # the run returned with its last file complete and linked
    last = load_file(str(tmp_path / "async" / "latest.pth"))
    assert last["meta"]["iter"] == sync_runner.max_iters
    assert not glob.glob(str(tmp_path / "async" / ".tmp-*"))


def test_a_kill_during_a_background_write_resumes_exactly_from_the_checkpoint_before(make_cfg, shapes_root,
                                                                                      tmp_path, sync_run):
    sync_work, sync_runner = sync_run
    work = tmp_path / "killed"
    k = 6  # the write of iter_6.pth is in flight (slow fsync) when the next iteration kills the process
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=k + 1, action="sigkill")
    cfg = tiny_config(shapes_root, work, checkpoint_config=dict(ITERS), custom_hooks=[chaos], runner=ONE_EPOCH)
    script = (
        "import os, pickle, sys, threading, time\n"
        "fsync = os.fsync\n"
        "def slow(fd):\n"  # the writer thread's fsyncs only: its temp file exists, not yet renamed
        "    if threading.current_thread().name == 'raydet-checkpoint-writer': time.sleep(1.0)\n"
        "    fsync(fd)\n"
        "os.fsync = slow\n"
        "import torch; torch.set_num_threads(int(os.environ['RAYDET_TEST_THREADS']))\n"  # as the tests' (conftest)
        "from raydet.run import train_from_config\n"
        "from raydet.config import load_config\n"
        "train_from_config(load_config(pickle.load(open(sys.argv[1], 'rb'))), validate=False)\n")
    with open(tmp_path / "cfg.pkl", "wb") as f:
        pickle.dump(cfg, f)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cfg.pkl")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (work / f"iter_{k}.pth").exists()  # killed mid-write: no half file under its name
    assert glob.glob(str(work / ".tmp-*.pth"))  # the write's temp file
    previous = find_latest_checkpoint(str(work))
    assert os.path.basename(previous) == f"iter_{k - 2}.pth"
    runner = train_from_config(make_cfg(work, checkpoint_config=dict(ITERS), custom_hooks=[chaos], runner=ONE_EPOCH,
                                        resume_from=previous), validate=False)
    assert runner.resumed_from == previous
    assert not glob.glob(str(work / ".tmp-*"))  # the killed write's temp file is cleared
    assert _equal_states(load_file(str(work / "latest.pth"))["state_dict"],
                         load_file(str(sync_work / "latest.pth"))["state_dict"])


def test_every_rank_reports_each_complete_checkpoint_at_the_same_iteration(shapes_root, tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    cfg = tiny_config(shapes_root, tmp_path / "run", checkpoint_config=dict(ITERS), runner=ONE_EPOCH,
                      data=dict(tiny_config(shapes_root, tmp_path)["data"], samples_per_gpu=2))
    mp.spawn(dist_workers.train_reporting, args=(2, str(tmp_path / "init"), cfg, str(tmp_path), 0.6),
             nprocs=2, join=True)
    reports = [json.load(open(tmp_path / f"reports{r}.json")) for r in range(2)]
    assert reports[0] and [(r["at"], r["path"], r["iter"]) for r in reports[0]] == \
        [(r["at"], r["path"], r["iter"]) for r in reports[1]]
    assert all(r["complete"] for r in reports[0])  # each file was whole when reported
    assert [r["path"] for r in reports[0]] == [f"iter_{r['iter']}.pth" for r in reports[0]]
    assert any(r["at"] > r["iter"] for r in reports[0])  # reported after training went on
    assert reports[0][-1]["iter"] == reports[0][-1]["at"]  # the last one at the end of the run


def test_a_failed_background_write_is_raised_by_the_next_wait_naming_the_file(tmp_path, monkeypatch):
    def broken(obj, path):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ckpt, "save_file", broken)
    writer = CheckpointWriter(background=True)
    writer.begin(1)
    writer.write(writer.snapshot({"w": torch.ones(2)}), str(tmp_path / "iter_1.pth"))
    with pytest.raises(CheckpointError, match=r"writing checkpoint .*iter_1\.pth failed: OSError.*No space left"):
        writer.wait()
    writer.wait()  # raised once


def test_a_background_snapshot_shares_no_memory_with_the_live_state():
    live = {"w": torch.zeros(3), "opt": {"state": {0: {"m": torch.ones(2)}}, "lr": [0.1]}}
    writer = CheckpointWriter(background=True)
    first = writer.snapshot(live)
    copy = writer.snapshot(live)  # the next checkpoint's copy reuses the memory of the one before
    assert copy["w"].data_ptr() == first["w"].data_ptr() != live["w"].data_ptr()
    live["w"].add_(1)
    live["opt"]["state"][0]["m"].mul_(5)
    live["opt"]["lr"].append(0.2)
    assert torch.equal(copy["w"], torch.zeros(3)) and torch.equal(copy["opt"]["state"][0]["m"], torch.ones(2))
    assert copy["opt"]["lr"] == [0.1]
    in_place = CheckpointWriter(background=False).snapshot(live)  # written before training goes on
    assert in_place["w"].data_ptr() == live["w"].data_ptr()
