"""What a run cannot do as asked is refused before it trains: an evaluation that never falls in
the run, accumulation over more iterations than it has, classes that differ between splits; and
mmdet's helper variables at top level are accepted as mmdet accepts them."""
import argparse

import pytest

from raydet.run import train_from_config
from raydet.config import load_config
from raydet.errors import ConfigError, DataError

from .conftest import tiny_config


def test_an_evaluation_that_never_happens_is_refused(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"evaluation.interval=10 never falls within the run's 2 epochs"):
        train_from_config(make_cfg(evaluation=dict(interval=10, metric="bbox")), validate=True)
    with pytest.raises(ConfigError, match=r"evaluation.interval=1, start=5 never falls within the run's 2 epochs"):
        train_from_config(make_cfg(evaluation=dict(interval=1, start=5, metric="bbox")), validate=True)
    assert not (tmp_path / "work" / "epoch_1.pth").exists()


def test_accumulation_longer_than_the_run_is_refused(make_cfg):
    opt = dict(type="GradientCumulativeOptimizerHook", cumulative_iters=100)
    with pytest.raises(ConfigError, match=r"cumulative_iters=100 is more than the run's \d+ iterations"):
        train_from_config(make_cfg(optimizer_config=opt), validate=False)


def test_classes_that_differ_between_train_and_val_are_refused(shapes_root, tmp_path):
    cfg = tiny_config(shapes_root, tmp_path / "w")
    cfg["data"]["val"]["classes"] = ("ellipse", "rectangle", "triangle")
    with pytest.raises(DataError, match=r"classes of data.val .* \('ellipse', 'rectangle', 'triangle'\), those of "
                                        r"data.train .* \('rectangle', 'ellipse', 'triangle'\)"):
        train_from_config(load_config(cfg), validate=True)


def test_mmdets_top_level_helper_variables_are_accepted_but_near_misses_are_typos(shapes_root, tmp_path):
    cfg = tiny_config(shapes_root, tmp_path / "w")
    cfg.update(input_size=(64, 64), conv_cfg=None, train_dataset=dict(type="MultiImageMixDataset"), max_epochs=3)
    load_config(cfg)
    with pytest.raises(ConfigError, match=r"unknown config key 'evaluaton' \(did you mean 'evaluation'\?\)"):
        load_config(dict(tiny_config(shapes_root, tmp_path / "w"), evaluaton=dict(interval=1)))


def test_a_seed_outside_numpys_range_is_a_usage_error():
    from raydet.cli import _seed
    assert _seed("4294967295") == 2 ** 32 - 1
    for bad in ("99999999999999999999", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _seed(bad)


def test_an_unreachable_ray_address_fails_fast_naming_it(monkeypatch):
    pytest.importorskip("ray")
    import socket

    from raydet.errors import RaydetError
    from raydet.launch import driver
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(driver, "REACH_TIMEOUT_S", 1.0)
    with pytest.raises(RaydetError, match=rf"no Ray cluster answers at 127.0.0.1:{port} \(.*\bfor 1 s\)"):
        driver.check_reachable(f"127.0.0.1:{port}")
    driver.check_reachable("auto")  # left to Ray


def test_files_the_run_did_not_write_are_kept(make_cfg, tmp_path):
    """A user's curves.png and vis/ picture in the work_dir, and an earlier attempt's best
    checkpoint of the same name, are moved aside (with their bytes), not written over."""
    work = tmp_path / "work"
    (work / "vis").mkdir(parents=True)
    mine = {work / "curves.png": b"my plot", work / "vis" / "000000.png": b"my picture",
            work / "best_bbox_mAP_epoch_1.pth": b"an earlier attempt's best"}
    for path, data in mine.items():
        path.write_bytes(data)
    train_from_config(make_cfg(work, runner=dict(max_epochs=1), evaluation=dict(interval=1, metric="bbox",
                                                                                 save_best="auto")), validate=True)
    for path, data in mine.items():
        kept = [p for p in path.parent.glob(f"{path.stem}.old-*{path.suffix}")]
        assert len(kept) == 1 and kept[0].read_bytes() == data, path
        assert path.exists() and path.read_bytes() != data  # this run's own file took the name


def test_a_resumed_run_writes_over_its_own_earlier_pictures(make_cfg, tmp_path):
    """The same run resumed (here after its end) owns what it wrote before: no copies are kept."""
    work = tmp_path / "work"
    ev = dict(interval=1, metric="bbox", save_best="auto")
    train_from_config(make_cfg(work, runner=dict(max_epochs=1), evaluation=ev), validate=True)
    train_from_config(make_cfg(work, runner=dict(max_epochs=2), evaluation=ev, auto_resume=True), validate=True)
    assert not list(work.rglob("*.old-*"))
