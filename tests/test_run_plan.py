"""The run plan (raydet.run.plan): a read-only config, and one rule for where a run starts."""
import copy
import os
import pickle

import pytest
import torch

from raydet.config.frozen import freeze
from raydet.errors import ConfigError
from raydet.run import plan_run, train_from_config
from raydet.run.plan import choose_start


def test_a_frozen_config_refuses_every_write_and_its_copies_are_writable(make_cfg):
    cfg = freeze(make_cfg())
    writes = [lambda: setattr(cfg, "seed", 1), lambda: cfg.__setitem__("seed", 1),
              lambda: cfg.optimizer.update(lr=1.0), lambda: cfg.data.train.pop("pipeline"),
              lambda: cfg.data.train.pipeline[0].update(type="X"), lambda: cfg.merge_from_dict({"seed": 1}),
              lambda: cfg.setdefault("new_key", 1), lambda: delattr(cfg.optimizer, "lr")]
    for write in writes:
        with pytest.raises(ConfigError, match="read-only after loading"):
            write()
    assert cfg.seed == 0 and cfg.optimizer.lr == 1e-3
    for writable in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        writable.optimizer.lr = 0.5
        assert writable.optimizer.lr == 0.5 and cfg.optimizer.lr == 1e-3
    section = cfg.data.train.copy()  # mmcv's builders pop from their copies
    section.pop("pipeline")
    assert "pipeline" in cfg.data.train and freeze(cfg) is cfg


def test_training_leaves_the_callers_config_as_it_was(make_cfg, tmp_path):
    cfg = make_cfg(tmp_path / "w", runner=dict(max_epochs=1), seed=None)
    before = copy.deepcopy(cfg.to_dict())
    runner = train_from_config(cfg, validate=True)
    assert cfg.to_dict() == before  # no seed, resume_from or work_dir written into it
    assert runner.meta["seed"] is not None and cfg.get("seed") is None


def _run(make_cfg, work, epochs, **overrides):
    return train_from_config(make_cfg(work, runner=dict(max_epochs=epochs), **overrides), validate=False)


def test_where_a_run_starts(make_cfg, tmp_path, caplog):
    """Explicit resume_from first (whatever the work_dir holds), else the newest checkpoint with
    auto_resume, else a fresh start that moves only a work_dir holding an earlier run aside."""
    work = tmp_path / "w"
    _run(make_cfg, work, 2)
    newest, older = str(work / "epoch_2.pth"), str(work / "epoch_1.pth")
    auto = plan_run(make_cfg(work, runner=dict(max_epochs=3), auto_resume=True))
    assert auto.start == newest and auto.finished is None and auto.seed_from == "from the config"
    assert plan_run(make_cfg(work, runner=dict(max_epochs=2), auto_resume=True)).finished["epoch"] == 2
    explicit = plan_run(make_cfg(work, runner=dict(max_epochs=3), auto_resume=True, resume_from=older))
    assert explicit.start == older and explicit.finished is None
    # a restarted worker group of that launch continues from its own checkpoints, not the earlier run's
    assert choose_start(explicit, [None]) == older
    runner = _run(make_cfg, work, 3, resume_from=older)
    assert runner.resumed_from == older
    mine = torch.load(work / "epoch_3.pth", weights_only=True)["meta"]["launch"]
    from raydet.engine.checkpoint import find_latest_checkpoint
    assert find_latest_checkpoint(str(work), launch=mine) == str(work / "epoch_3.pth")
    assert find_latest_checkpoint(str(work), launch="another launch") is None
    # a fresh start: the earlier run is kept aside, a work_dir without checkpoints stays where it is
    fresh = plan_run(make_cfg(work, runner=dict(max_epochs=3), auto_resume=False))
    assert fresh.start is None and not os.path.exists(newest)
    (kept,) = [p for p in os.listdir(tmp_path) if p.startswith("w.old-")]
    assert os.path.exists(tmp_path / kept / "epoch_3.pth")
    notes = tmp_path / "n"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    plan_run(make_cfg(notes, auto_resume=False))
    assert (notes / "notes.txt").read_text() == "mine"


def test_a_seedless_plan_takes_the_seed_of_the_checkpoint_it_starts_from(make_cfg, tmp_path):
    work = tmp_path / "w"
    first = _run(make_cfg, work, 1, seed=None)
    plan = plan_run(make_cfg(work, runner=dict(max_epochs=2), seed=None, auto_resume=True))
    assert plan.seed == first.meta["seed"] and plan.seed_from == f"from the checkpoint {work / 'epoch_1.pth'}"
    drawn = plan_run(make_cfg(tmp_path / "other", seed=None))
    assert drawn.seed_from == "drawn once for this run by the launcher"
    moved = drawn.starting_from(str(work / "epoch_1.pth"))
    assert moved.seed == first.meta["seed"] and moved.start == str(work / "epoch_1.pth")
    assert drawn.starting_from(None).seed == drawn.seed
