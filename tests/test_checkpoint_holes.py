"""Checkpoint and log holes a kill can open, closed (Ray-free; the Ray side is in test_launch.py).

Each test makes the state a kill at the worst moment leaves behind, then resumes and asserts on
what was written: the checkpoint chosen, the files left, every log record exactly once.
"""
import glob
import json
import logging
import os
import shutil
import stat

import pytest
import torch

from raydet.run import train_from_config
from raydet.engine.checkpoint import (checkpoint_progress, find_latest_checkpoint, load_file, remove_orphans,
                                      save_file)
from raydet.engine import ChaosError

ITER_CKPT = dict(interval=4, by_epoch=False)


def _records(work, mode="train"):
    (path,) = glob.glob(os.path.join(work, "*.log.json"))
    return [json.loads(line) for line in open(path) if json.loads(line).get("mode") == mode]


def _text_iters(work):
    (path,) = glob.glob(os.path.join(work, "*.log"))
    import re
    return re.findall(r"Epoch \[(\d+)\]\[(\d+)/(\d+)\]", open(path).read())


def test_the_newest_checkpoint_is_chosen_by_its_meta_not_by_latest_pth(make_cfg, tmp_path, caplog):
    """A kill between writing iter_8.pth and re-linking latest.pth leaves the link at iter_4.pth:
    the resume takes iter_8.pth, the furthest by its own sampler position."""
    work = tmp_path / "w"
    train_from_config(make_cfg(work, checkpoint_config=ITER_CKPT, runner=dict(max_epochs=1)), validate=False)
    newest = max(glob.glob(str(work / "iter_*.pth")), key=lambda p: checkpoint_progress(p))
    older = sorted(glob.glob(str(work / "iter_*.pth")), key=lambda p: checkpoint_progress(p))[-2]
    os.remove(work / "latest.pth")
    os.symlink(os.path.basename(older), work / "latest.pth")  # the link one checkpoint behind
    assert find_latest_checkpoint(str(work)) == newest
    with caplog.at_level(logging.INFO, logger="raydet"):
        train_from_config(make_cfg(work, checkpoint_config=ITER_CKPT, runner=dict(max_epochs=2), auto_resume=True),
                          validate=False)
    assert f"resumed from {newest}" in caplog.text
    records = [(r["epoch"], r["iter"]) for r in _records(work)]
    assert len(records) == len(set(records))


def test_a_corrupt_newest_file_falls_back_to_the_one_before(make_cfg, tmp_path):
    work = tmp_path / "w"
    train_from_config(make_cfg(work, checkpoint_config=ITER_CKPT, runner=dict(max_epochs=1)), validate=False)
    ranked = sorted(glob.glob(str(work / "iter_*.pth")), key=lambda p: checkpoint_progress(p))
    with open(ranked[-1], "r+b") as f:
        f.truncate(os.path.getsize(ranked[-1]) // 2)
    assert find_latest_checkpoint(str(work)) == ranked[-2]
    (work / "epoch_9.pth").write_bytes(b"not a checkpoint")  # a high number alone wins nothing
    assert find_latest_checkpoint(str(work)) == ranked[-2]


def test_unfinished_writes_of_a_killed_attempt_are_removed_at_the_next_start(make_cfg, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / ".tmp-k2j3h4.pth").write_bytes(b"half a checkpoint")  # save_file's temp name
    os.symlink("iter_4.pth", work / "latest.pth.tmp-4242")  # link_latest's temp name
    (work / "notes.tmp-1.txt").write_text("the user's")  # not raydet's: kept
    (work / ".tmp-user").write_text("the user's")
    train_from_config(make_cfg(work, runner=dict(max_epochs=1)), validate=False)
    left = sorted(os.listdir(work))
    assert ".tmp-k2j3h4.pth" not in left and "latest.pth.tmp-4242" not in left
    assert "notes.tmp-1.txt" in left and ".tmp-user" in left
    assert remove_orphans(str(work)) == []


def test_save_file_syncs_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd))[1])
    save_file({"x": torch.ones(2)}, str(tmp_path / "a.pth"))
    assert synced == [False, True]  # the data, then the rename


def test_out_dir_keeps_mmcvs_layout_and_a_resume_looks_there(make_cfg, tmp_path, caplog):
    """checkpoint_config.out_dir: files under out_dir/<work_dir's name> (mmcv 1.x), no latest.pth
    with create_symlink=False; auto-resume and the "already complete" check find them."""
    work, out = tmp_path / "run", tmp_path / "elsewhere"
    ckpt = dict(interval=1, out_dir=str(out), create_symlink=False)
    runner = train_from_config(make_cfg(work, checkpoint_config=ckpt, runner=dict(max_epochs=1)), validate=False)
    assert sorted(os.listdir(out / "run")) == ["epoch_1.pth"]
    assert runner.meta["hook_msgs"]["last_ckpt"] == str(out / "run" / "epoch_1.pth")
    assert not glob.glob(str(work / "*.pth"))
    with caplog.at_level(logging.INFO, logger="raydet"):
        train_from_config(make_cfg(work, checkpoint_config=ckpt, runner=dict(max_epochs=2), auto_resume=True),
                          validate=False)
    assert f"resumed from {out / 'run' / 'epoch_1.pth'}" in caplog.text
    from raydet.run import plan_run
    assert plan_run(make_cfg(work, checkpoint_config=ckpt, runner=dict(max_epochs=2), auto_resume=True)
                    ).finished["epoch"] == 2


def test_lines_of_a_later_attempt_that_died_before_its_first_checkpoint_are_cut(make_cfg, tmp_path):
    """After the checkpoint at iteration 8, an attempt at another world size (other iterations
    per epoch) logged three iterations and died before checkpointing. Resuming from iteration 8
    drops its lines, whatever world size they were logged at."""
    work = tmp_path / "w"
    cfg = dict(checkpoint_config=ITER_CKPT, runner=dict(max_epochs=1))
    ipe = train_from_config(make_cfg(work, **cfg), validate=False).iters_per_epoch
    os.remove(work / "latest.pth")
    ranked = sorted(glob.glob(str(work / "iter_*.pth")), key=lambda p: checkpoint_progress(p))
    for path in ranked[2:]:  # keep iter_4 and iter_8: the run "ended" at iteration 8
        os.remove(path)
    done = load_file(ranked[1], mmap=True)["meta"]["iter"]
    sizes = load_file(ranked[1], mmap=True)["hooks"]["TextLoggerHook"]["sizes"]
    (text,), (js,) = glob.glob(str(work / "*.log")), glob.glob(str(work / "*.log.json"))
    for path, size in zip((text, js), sizes):
        os.truncate(path, size)  # what the log held when iteration 8's checkpoint was written ...
    with open(text, "a") as f:  # ... then iteration 8's own line, and the attempt that died
        f.write(f"x - raydet - INFO - Epoch [1][{done}/{ipe}]\tlr: 1e-3, loss: 1.0\n")
        for i in range(done + 1, done + 4):
            f.write(f"x - raydet - INFO - Epoch [1][{i}/{2 * ipe}]\tlr: 1e-3, loss: 1.0\n")
    with open(js, "a") as f:
        f.write(json.dumps(dict(mode="train", epoch=1, iter=done, loss=1.0)) + "\n")
        for i in range(done + 1, done + 4):
            f.write(json.dumps(dict(mode="train", epoch=1, iter=i, loss=1.0)) + "\n")
    train_from_config(make_cfg(work, checkpoint_config=ITER_CKPT, runner=dict(max_epochs=1), auto_resume=True),
                      validate=False)
    records = [(r["epoch"], r["iter"]) for r in _records(work)]
    assert records == [(1, i) for i in range(1, ipe + 1)]  # each iteration once, in order
    assert [int(i) for _, i, n in _text_iters(work) if int(n) != ipe] == []
    assert [int(i) for _, i, _ in _text_iters(work)] == list(range(1, ipe + 1))


def test_a_kill_between_the_epoch_checkpoint_and_its_val_record_loses_nothing(make_cfg, tmp_path):
    """A failure after epoch 1's checkpoint but before the logger wrote epoch 1's val record: the
    resume writes that record from the checkpoint, once, with the evaluated metrics."""
    work = tmp_path / "w"
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_epoch=1, action="raise", priority=60)
    with pytest.raises(ChaosError):
        train_from_config(make_cfg(work, custom_hooks=[chaos]), validate=True)
    assert _records(work, "val") == []  # the checkpoint is there, its val record is not
    evaluated = load_file(str(work / "epoch_1.pth"), mmap=True)["meta"]["hook_msgs"]["last_eval"]
    train_from_config(make_cfg(work, custom_hooks=[chaos], auto_resume=True), validate=True)
    vals = _records(work, "val")
    assert [v["epoch"] for v in vals] == [1, 2]
    assert vals[0]["bbox_mAP"] == pytest.approx(evaluated["metrics"]["bbox_mAP"])
    train = [(r["epoch"], r["iter"]) for r in _records(work)]
    assert len(train) == len(set(train)) and {e for e, _ in train} == {1, 2}
    (text,) = glob.glob(str(work / "*.log"))
    assert open(text).read().count("Epoch(val) [1]") == 1


def test_logs_a_checkpoint_carries_replace_a_lagging_copy(tmp_path):
    """A restart on another machine: the logs that came back from the bucket lag behind the
    checkpoint (their background copy was older); the checkpoint's own copy wins, a longer local
    log is kept."""
    pytest.importorskip("ray")
    from raydet.launch.worker import restore_logs_from
    ckpt_dir, work = tmp_path / "checkpoint_iter_8", tmp_path / "work"
    (ckpt_dir / "logs").mkdir(parents=True)
    work.mkdir()
    (ckpt_dir / "checkpoint.pth").write_bytes(b"")
    (ckpt_dir / "logs" / "t.log").write_text("line 1\nline 2\nline 3\n")
    (ckpt_dir / "logs" / "t.log.json").write_text("{}\n{}\n")
    (work / "t.log").write_text("line 1\n")  # lagging
    (work / "t.log.json").write_text("{}\n{}\n{}\n")  # further along: kept
    restored = restore_logs_from(str(ckpt_dir / "checkpoint.pth"), str(work))
    assert restored == [str(work / "t.log")]
    assert (work / "t.log").read_text() == "line 1\nline 2\nline 3\n"
    assert (work / "t.log.json").read_text() == "{}\n{}\n{}\n"
    shutil.rmtree(work)
    assert len(restore_logs_from(str(ckpt_dir / "checkpoint.pth"), str(work))) == 2  # a bare machine


def test_masks_cross_to_rank_0_as_rle():
    from pycocotools import mask as mask_util

    import numpy as np
    from raydet.engine.inference import encode_mask_results
    mask = np.zeros((40, 60), bool)
    mask[5:20, 10:50] = True
    bbox = [np.zeros((1, 5), np.float32), np.zeros((0, 5), np.float32)]
    encoded = encode_mask_results((bbox, [[mask], []]))
    rle = encoded[1][0][0]
    assert isinstance(rle, dict) and len(rle["counts"]) < 100
    assert (mask_util.decode(rle).astype(bool) == mask).all() and encoded[0] is bbox
    assert encode_mask_results(encoded) == encoded and encode_mask_results(bbox) is bbox
