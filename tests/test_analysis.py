"""Training curves and iteration times from json logs (mmdet's analyze_logs.py)."""
import json
import os

import pytest

from raydet.analysis import load_json_log, plot_curves, train_time
from raydet.cli import main


def _log(path, epochs=2, per_epoch=4, loss0=2.0, maps=(0.1, 0.3)):
    """A raydet-style json log: meta line, train records every 2 iterations, a val record per epoch."""
    lines = [dict(env_info="x", seed=0, exp_name="a.py")]
    for e in range(1, epochs + 1):
        for i in range(2, per_epoch + 1, 2):
            lines.append(dict(mode="train", epoch=e, iter=i, lr=0.01, time=0.5 + 0.1 * e + (0.3 if i == 2 else 0),
                              data_time=0.01, loss=loss0 / (e * i)))
        lines.append(dict(mode="val", epoch=e, iter=per_epoch, lr=0.01, bbox_mAP=maps[e - 1], bbox_mAP_copypaste="x"))
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"mode": "tr')  # and a torn last line
    return str(path)


def test_losses_by_iteration_and_metrics_by_epoch(tmp_path):
    log = load_json_log(_log(tmp_path / "a.log.json"))
    assert log["train"]["loss"] == [(2, 1.0), (4, 0.5), (6, 0.5), (8, 0.25)]  # epoch 2 continues at 4 + i
    assert log["val"]["bbox_mAP"] == [(1, 0.1), (2, 0.3)] and "bbox_mAP_copypaste" not in log["val"]


def test_plot_has_a_line_per_key_and_run_and_writes_the_picture(tmp_path):
    a, b = _log(tmp_path / "a.log.json"), _log(tmp_path / "b.log.json", loss0=3.0, maps=(0.2, 0.4))
    fig = plot_curves([a, b], ["loss", "bbox_mAP"], out=str(tmp_path / "c.png"), legend=["run a", "run b"])
    loss_ax, map_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["run a", "run b"] and len(map_ax.lines) == 2
    assert list(map_ax.lines[1].get_ydata()) == [0.2, 0.4] and map_ax.get_xlabel() == "epoch"
    assert loss_ax.get_xlabel() == "iter" and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(KeyError, match="segm_mAP"):
        plot_curves([a], ["segm_mAP"])


def test_lr_is_plotted_by_iteration_from_the_train_records(tmp_path):
    """``lr`` is in the train and the val records: its curve is the per-iteration schedule."""
    lines = [dict(env_info="x")] + [dict(mode="train", epoch=1, iter=i, lr=0.01 * i, time=0.1, loss=1.0)
                                     for i in range(1, 5)] + [dict(mode="val", epoch=1, iter=4, lr=0.04, bbox_mAP=0.1)]
    path = tmp_path / "lr.log.json"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (ax,) = plot_curves([str(path)], ["lr"]).axes
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 4] and ax.get_xlabel() == "iter"
    assert list(ax.lines[0].get_ydata()) == pytest.approx([0.01, 0.02, 0.03, 0.04])


def test_tensorboard_has_train_and_val_tags_as_mmcv_writes_them(make_cfg, tmp_path):
    """The in-loop evaluation's metrics are ``val/...`` (mmcv's layout), the losses ``train/...``;
    COCO's -1 (no object of that size) makes no curve."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from raydet.run import train_from_config
    log = dict(interval=1, hooks=[dict(type="TextLoggerHook"), dict(type="TensorboardLoggerHook")])
    train_from_config(make_cfg(tmp_path / "w", runner=dict(max_epochs=2), log_config=log), validate=True)
    events = EventAccumulator(str(tmp_path / "w" / "tf_logs"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/loss" in tags and "learning_rate" in tags and not any(t.startswith("train/bbox") for t in tags)
    (json_log,) = [p for p in os.listdir(tmp_path / "w") if p.endswith(".log.json")]
    vals = [r for r in load_json_log(str(tmp_path / "w" / json_log))["val"]["bbox_mAP"]]
    assert [round(e.value, 4) for e in events.Scalars("val/bbox_mAP")] == [round(v, 4) for _, v in vals]
    per_epoch = max(json.loads(line).get("iter", 0) for line in open(tmp_path / "w" / json_log))
    assert [e.step for e in events.Scalars("val/bbox_mAP")] == [per_epoch, 2 * per_epoch]  # iterations done
    flat = [k for k, points in load_json_log(str(tmp_path / "w" / json_log))["val"].items()
            if all(v == -1 for _, v in points)]
    assert flat and not any(f"val/{k}" in tags for k in flat)


def test_cal_train_time_and_the_command(tmp_path, capsys):
    a = _log(tmp_path / "a.log.json")
    t = train_time(a)  # the first logged iteration of each epoch is left out
    assert t["per_epoch"] == pytest.approx({1: 0.6, 2: 0.7}) and t["slowest_epoch"] == 2
    assert train_time(a, include_outliers=True)["per_epoch"][1] == pytest.approx(0.75)
    assert main(["plot", a, "--cal-train-time"]) == 0 and "slowest epoch 2" in capsys.readouterr().out
    assert main(["plot", a, "--keys", "loss", "bbox_mAP", "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").exists()
    assert main(["plot", a, "--keys", "nope", "--out", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err
    assert "no log has the key 'nope'; the keys present: bbox_mAP, data_time, loss, lr, time" in err
    assert main(["plot", str(tmp_path / "missing.json")]) == 2


def test_a_finished_run_leaves_its_curves_and_drawn_predictions(make_cfg, tmp_path):
    from raydet.run import train_from_config
    train_from_config(make_cfg(tmp_path / "w", runner=dict(max_epochs=1)), validate=True)
    assert (tmp_path / "w" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    vis = sorted(os.listdir(tmp_path / "w" / "vis"))  # and the first val images' predictions, drawn
    assert vis == ["000000.png", "000001.png", "000002.png"]
    (log,) = [p for p in os.listdir(tmp_path / "w") if p.endswith(".log")]
    assert "inference: 16/16 (100%)" in open(tmp_path / "w" / log).read()  # the evaluation's progress


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(caplog):
    import io
    import logging

    from raydet.progress import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    bar = ProgressBar(20, stream=term)
    for _ in range(20):
        bar.update()
    assert term.getvalue().count("\r") == 20 and "] 20/20," in term.getvalue() and term.getvalue().endswith("\n")
    pipe = io.StringIO()
    bar = ProgressBar(20, stream=pipe)
    for _ in range(20):
        bar.update()
    assert [line.split(" ")[0] for line in pipe.getvalue().splitlines()] == [f"{2 * k}/20" for k in range(1, 11)]
    log = logging.getLogger("raydet.progress-test")
    with caplog.at_level(logging.INFO, logger="raydet.progress-test"):
        bar = ProgressBar(3, stream=io.StringIO(), log=log, desc="inference: ")
        for _ in range(3):
            bar.update()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "inference: 1/3 (33%)", "inference: 2/3 (66%)", "inference: 3/3 (100%)"]
    assert all(r.file_only for r in caplog.records)  # the run's log file, not the console
