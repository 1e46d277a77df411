"""mmdet's analysis tools as raydet commands, on a tiny trained model and its test results."""
import os
import pickle
import re

import cv2
import numpy as np
import pytest

from raydet.cli import main
from raydet.config import dump_config, load_config

from .conftest import tiny_config


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory):
    """``(config path, checkpoint, results .pkl)`` of a 2-epoch tiny FCOS and its test results."""
    from raydet.run import train_from_config
    root = tmp_path_factory.mktemp("tools")
    cfg_path = str(root / "tiny.py")
    dump_config(load_config(tiny_config(shapes_root, root / "w", runner=dict(max_epochs=2))), cfg_path)
    train_from_config(load_config(cfg_path), validate=False)
    ckpt, results = str(root / "w" / "latest.pth"), str(root / "results.pkl")
    assert main(["test", cfg_path, ckpt, "--out", results]) == 0
    return cfg_path, ckpt, results


def _truth_as_results(cfg_path, shift=0, empty=()):
    """Each test image's ground truth as detections (score 1), class ``c`` reported as ``c + shift``;
    the images in ``empty`` with no detection."""
    from raydet.data import build_dataset
    dataset = build_dataset(load_config(cfg_path).data.test, test_mode=True)
    classes = len(dataset.CLASSES)
    results = []
    for i in range(len(dataset)):
        ann = dataset.get_ann_info(i)
        per_class = [np.zeros((0, 5), np.float32) for _ in range(classes)]
        if i not in empty:
            for box, label in zip(ann["bboxes"], ann["labels"]):
                c = (int(label) + shift) % classes
                per_class[c] = np.vstack([per_class[c], np.append(box, 1.0)[None].astype(np.float32)])
        results.append(per_class)
    return dataset, results


def test_print_config_prints_and_writes_the_config_raydet_runs(trained, tmp_path, capsys):
    cfg_path, _, _ = trained
    out = str(tmp_path / "resolved.py")
    assert main(["print-config", cfg_path, "--cfg-options", "optimizer.lr=0.5", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Config:\n") and "lr=0.5" in printed and f"written to {out}" in printed
    assert load_config(out).to_dict() == load_config(cfg_path, {"optimizer.lr": 0.5}).to_dict()
    assert main(["print-config", cfg_path, "--out", out]) == 2  # never over a file
    assert "does not overwrite" in capsys.readouterr().err
    assert main(["print-config", cfg_path, "--cfg-options", "optimizer.lrr=0.5"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_confusion_matrix_counts_each_object_where_it_was_detected(trained, tmp_path, capsys):
    from raydet.diagnose import confusion_matrix
    cfg_path, _, model_results = trained
    dataset, perfect = _truth_as_results(cfg_path)
    objects = np.bincount(np.concatenate([dataset.get_ann_info(i)["labels"] for i in range(len(dataset))]),
                          minlength=3)
    assert np.array_equal(confusion_matrix(dataset, perfect), np.diag(np.append(objects, 0)))
    _, shifted = _truth_as_results(cfg_path, shift=1)  # every rectangle called an ellipse, ...
    swapped = confusion_matrix(dataset, shifted)
    assert [swapped[c, (c + 1) % 3] for c in range(3)] == list(objects)
    assert np.array_equal(swapped[:3, 3], objects) and swapped.trace() == 0  # none found as itself
    pkl = tmp_path / "shifted.pkl"
    pkl.write_bytes(pickle.dumps(shifted))
    assert main(["confusion-matrix", cfg_path, str(pkl), str(tmp_path / "cm")]) == 0
    printed = capsys.readouterr().out
    row = re.search(r"^rectangle +(\d+) +(\d+) +(\d+) +(\d+)$", printed, re.M)
    assert row and [int(v) for v in row.groups()] == [0, objects[0], 0, objects[0]]
    picture = cv2.imread(str(tmp_path / "cm" / "confusion_matrix.png"))
    assert picture is not None and min(picture.shape[:2]) > 300
    # the trained model's own results; the command may write over its own picture
    assert main(["confusion-matrix", cfg_path, model_results, str(tmp_path / "cm"), "--score-thr", "0.05"]) == 0
    assert "background" in capsys.readouterr().out


def test_confusion_matrix_refuses_results_of_another_test_set_and_files_it_did_not_write(trained, tmp_path, capsys):
    cfg_path, _, results = trained
    short = tmp_path / "short.pkl"
    short.write_bytes(pickle.dumps(pickle.load(open(results, "rb"))[:5]))
    assert main(["confusion-matrix", cfg_path, str(short), str(tmp_path / "a")]) == 2
    assert f"{short}: 5 results for the 16 images" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(open(results, "rb").read()[:100])
    assert main(["confusion-matrix", cfg_path, str(corrupt), str(tmp_path / "a")]) == 2
    assert f"{corrupt} is not mmdet's results .pkl" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "confusion_matrix.png").write_bytes(b"a user's picture")
    assert main(["confusion-matrix", cfg_path, results, str(tmp_path / "b")]) == 2
    assert "does not overwrite" in capsys.readouterr().err
    assert (tmp_path / "b" / "confusion_matrix.png").read_bytes() == b"a user's picture"


def test_analyze_results_draws_the_best_and_worst_images_by_ap(trained, tmp_path, capsys):
    cfg_path, _, model_results = trained
    dataset, results = _truth_as_results(cfg_path, empty=(3, 7))  # two images without a detection
    pkl = tmp_path / "r.pkl"
    pkl.write_bytes(pickle.dumps(results))
    show = tmp_path / "shown"
    assert main(["analyze-results", cfg_path, str(pkl), str(show), "--topk", "2", "--scale", "2"]) == 0
    printed = capsys.readouterr().out
    stems = [os.path.splitext(dataset.data_infos[i]["filename"])[0] for i in (3, 7)]
    assert sorted(os.listdir(show / "bad")) == [f"{s}_0.0.jpg" for s in stems]
    good = sorted(os.listdir(show / "good"))
    assert len(good) == 2 and all(name.endswith("_1.0.jpg") for name in good)
    empty = [i for i in range(len(dataset)) if len(dataset.get_ann_info(i)["labels"]) == 0]
    assert len(empty) == 1 and empty[0] not in (3, 7)  # the built-in val split's image without objects
    assert "1 of 16 images have no object, hence no AP: not ranked" in printed  # not scored 0, as mmdet does
    assert "worst 2 of 15 images by AP" in printed and "  0.000  " in printed and "  1.000  " in printed
    h, w = cv2.imread(os.path.join(dataset.img_prefix, dataset.data_infos[3]["filename"])).shape[:2]
    drawn = cv2.imread(str(show / "bad" / f"{stems[0]}_0.0.jpg"))
    assert drawn.shape[:2] == (2 * 2 * h + 8, 2 * w)  # ground truth above predictions, both enlarged
    assert main(["analyze-results", cfg_path, model_results, str(tmp_path / "model"), "--topk", "3",
                 "--overlay-gt-pred", "--show-score-thr", "0.2"]) == 0
    assert sum(len(files) for _, _, files in os.walk(tmp_path / "model")) == 6 + 1  # and the command's record


def test_benchmark_times_the_model_over_the_cycled_test_set(trained, capsys):
    cfg_path, ckpt, _ = trained
    assert main(["benchmark", cfg_path, ckpt, "--max-iter", "20", "--log-interval", "10"]) == 0
    printed = capsys.readouterr().out
    assert "timing 20 batches of 1 on cpu" in printed and "(16 test images, cycled)" in printed
    assert re.findall(r"Done batch \[(\d+) */ 20\] \((\d+) images\)", printed) == [("10", "10"), ("20", "20")]
    fps = float(re.search(r"Overall fps: ([\d.]+) img / s", printed).group(1))
    assert fps > 0
    assert main(["benchmark", cfg_path, ckpt, "--max-iter", "0"]) == 2
    assert "--max-iter must be >= 1" in capsys.readouterr().err


def test_params_counts_parameters_and_flops_that_grow_with_the_image(trained, capsys):
    from raydet.diagnose import complexity
    from raydet.run.build import trained_detector
    cfg_path, _, _ = trained
    model, _ = trained_detector(load_config(cfg_path))
    small, large = complexity(model, (96, 128)), complexity(model, (192, 256))
    assert small["params"] == sum(p.numel() for p in model.parameters()) == large["params"]
    assert sum(part[1] for part in small["parts"]) == small["params"]
    assert large["flops"] == 4 * small["flops"] > 0  # convolutions: linear in the pixels
    assert sum(part[2] for part in small["parts"]) == small["flops"]
    # FCOS's FLOPs are its convolutions': 2 x output elements x (input channels / groups) x kernel area
    import torch
    convs = []
    hooks = [m.register_forward_hook(lambda m, i, o: convs.append(
        2 * o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]))
        for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.forward_dummy(torch.zeros(1, 3, 96, 128))
    for hook in hooks:
        hook.remove()
    assert sum(convs) == small["flops"]
    assert main(["params", cfg_path]) == 0  # the test pipeline's img_scale (128, 96): 96 x 128, landscape
    printed = capsys.readouterr().out
    assert "FCOS on one 3 x 96 x 128 image" in printed and f"{small['flops'] / 1e9:.3f} GFLOPs" in printed
    assert re.search(r"^backbone +GNConvNet +[\d.]+ k", printed, re.M) and f"Params: {small['params'] / 1e3:.2f} k" in printed
    assert main(["params", cfg_path, "--shape", "1", "2", "3"]) == 2
