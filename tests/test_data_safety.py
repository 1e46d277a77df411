"""Nothing already saved is lost: raydet never deletes or overwrites a file it did not write in
this run's own work_dir (regression tests of the data-loss cases)."""
import glob
import hashlib
import os

import pytest
import torch

from raydet.run import train_from_config
from raydet.cli import main
from raydet.config import dump_config, load_config
from raydet.errors import DataError

from .conftest import SMALL, tiny_config


def _digests(root):
    return {os.path.relpath(p, root): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in glob.glob(os.path.join(root, "**", "*"), recursive=True) if os.path.isfile(p)}


def _config_file(shapes_root, tmp_path, path):
    dump_config(load_config(tiny_config(shapes_root, tmp_path / "unused", runner=dict(max_epochs=1),
                                        auto_resume=None)), str(path))
    return str(path)


def test_in_process_rerun_resumes_and_no_auto_resume_moves_the_old_run_aside(shapes_root, tmp_path, capsys):
    cfg = _config_file(shapes_root, tmp_path, tmp_path / "tiny.py")
    work = tmp_path / "work"
    assert main(["train", cfg, "--launcher", "none", "--work-dir", str(work), "--no-validate"]) == 0
    first = _digests(work)
    assert "epoch_1.pth" in first
    assert main(["train", cfg, "--launcher", "none", "--work-dir", str(work), "--no-validate"]) == 0
    out = capsys.readouterr().out
    assert "is already complete" in out and "differs" not in out
    assert _digests(work) == first  # nothing rewritten
    # the same work_dir with a changed config: said, with what differs and how to train it
    assert main(["train", cfg, "--launcher", "none", "--work-dir", str(work), "--no-validate",
                 "--cfg-options", "optimizer.lr=0.0001"]) == 0
    out = capsys.readouterr().out
    assert "differs from the one that run was trained with: optimizer.lr: 0.001 -> 0.0001" in out
    assert "--no-auto-resume" in out and _digests(work) == first
    assert main(["train", cfg, "--launcher", "none", "--work-dir", str(work), "--no-validate",
                 "--no-auto-resume"]) == 0
    (old,) = glob.glob(str(work) + ".old-*")
    assert _digests(old) == first and "epoch_1.pth" in _digests(work)  # the old run kept, a new one made


def test_a_run_resumed_from_another_runs_checkpoint_never_deletes_that_runs_best(make_cfg, tmp_path):
    best = dict(interval=1, metric="bbox", save_best="bbox_mAP", rule="greater")
    a = tmp_path / "a"
    train_from_config(make_cfg(a, runner=dict(max_epochs=1), evaluation=best), validate=True)
    state = torch.load(a / "epoch_1.pth", weights_only=True)
    (a_best,) = glob.glob(str(a / "best_*.pth"))
    assert state["meta"]["hook_msgs"]["best_ckpt"] == a_best
    state["meta"]["hook_msgs"]["best_score"] = -1.0  # so that the next evaluation is a new best
    torch.save(state, a / "epoch_1.pth")
    before = _digests(a)
    runner = train_from_config(make_cfg(tmp_path / "b", runner=dict(max_epochs=2), evaluation=best,
                                        resume_from=str(a / "epoch_1.pth")), validate=True)
    assert _digests(a) == before  # a's best checkpoint is still there, unchanged
    assert os.path.dirname(runner.meta["hook_msgs"]["best_ckpt"]) == str(tmp_path / "b")


def test_shapes_dataset_refuses_a_directory_it_did_not_make(tmp_path):
    from raydet.data import ShapesDataset
    mine = tmp_path / "my_data"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match="raydet does not delete a directory it did not create"):
        ShapesDataset("train", root=str(mine), num_images=SMALL)
    assert (mine / "notes.txt").read_text() == "precious" and os.listdir(mine) == ["notes.txt"]


def test_a_config_that_lives_in_the_work_dir_is_not_overwritten(shapes_root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cfg = _config_file(shapes_root, tmp_path, work / "tiny.py")
    with open(cfg, "a") as f:
        f.write("\n# my own notes\n")
    before = open(cfg, "rb").read()
    assert main(["train", cfg, "--launcher", "none", "--work-dir", str(work), "--no-validate"]) == 0
    assert open(cfg, "rb").read() == before
