"""Bad input, as a hostile but realistic user gives it: each case is one clear error (exit code 2,
``raydet: error: ...`` naming the file, key or iteration), never a traceback, and nothing a user
already had is changed. Ray-free: the CLI runs in this process (``--launcher none``, or the Ray
launcher's checks, which run before Ray starts)."""
import glob
import hashlib
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from raydet.cli import main
from raydet.config import dump_config, load_config
import raydet  # noqa: F401  (the op table before mmdet)
from mmdet.datasets import PIPELINES as MMDET_PIPELINES
from raydet.engine.hooks import HOOKS, Hook

from .conftest import TEST_PIPELINE, TRAIN_PIPELINE, tiny_config


@HOOKS.register()
class PoisonWeightsHook(Hook):
    """Makes every weight NaN before iteration ``at`` (1-based) of the first epoch."""

    def __init__(self, at=3):
        self.at = at

    def before_train_iter(self, runner):
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                for p in runner.model.parameters():
                    p.fill_(float("nan"))


@MMDET_PIPELINES.register_module()
class FailOnImage:
    """Raises for one file name, as a decoder meeting a corrupt image mid-epoch would."""

    def __init__(self, name):
        self.name = name

    def __call__(self, results):
        if results["img_info"]["filename"] == self.name:
            from raydet.errors import DataError
            raise DataError(f"cannot decode image (corrupt or not an image): {results['img_prefix']}/{self.name}")
        return results


def _digests(root):
    return {os.path.relpath(p, root): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in glob.glob(os.path.join(str(root), "**", "*"), recursive=True) if os.path.isfile(p)}


@pytest.fixture(scope="module")
def base(shapes_root, tmp_path_factory):
    """A valid config file every case inherits from, and a checkpoint it trained (1 epoch)."""
    root = tmp_path_factory.mktemp("bad")
    path = str(root / "base.py")
    dump_config(load_config(tiny_config(shapes_root, root / "unused", runner=dict(max_epochs=1), auto_resume=None)), path)
    work = root / "trained"
    assert main(["train", path, "--launcher", "none", "--work-dir", str(work), "--no-validate"]) == 0
    return dict(config=path, ckpt=str(work / "epoch_1.pth"), root=root)


def run(capsys, *argv):
    """``raydet ARGV`` in this process: ``(exit code, stdout, stderr)``; never a traceback."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err[-3000:]
    return code, out, err


def config(base, tmp_path, text: str, name="case.py") -> str:
    """A config file: the base config, then ``text`` (python, mmdet's inheritance rules)."""
    path = tmp_path / name
    path.write_text(f"_base_ = [{base['config']!r}]\n{text}\n")
    return str(path)


def failed(result, *names):
    """The run failed with one error message that names each of ``names``."""
    code, _, err = result
    assert code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("raydet")]
    assert len(lines) == 1 and lines[0].startswith(("raydet: error:", "raydet train: error:",
                                                    "raydet test: error:")), err[-2000:]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def train(capsys, cfg, tmp_path, *extra):
    return run(capsys, "train", cfg, "--launcher", "none", "--work-dir", tmp_path / "work", "--no-validate", *extra)


# ------------------------------------------------------------------ config: names, types, ranges
CONFIG = {
    "top-level typo": ("optimzer = dict(type='SGD', lr=0.01)", ["'optimzer'", "'optimizer'"]),
    "nested typo": ("optimizer = dict(lrr=0.1)", ["'optimizer.lrr'", "'lr'"]),
    "pipeline step typo": ("data = dict(train=dict(pipeline=[dict(type='LoadImageFromFile'), "
                           "dict(type='Resise', img_scale=(128, 96))]))", ["'Resise'", "'Resize'"]),
    "pipeline argument typo": ("data = dict(train=dict(pipeline=[dict(type='LoadImageFromFile'), "
                               "dict(type='Resize', img_scal=(128, 96))]))", ["img_scal", "pipeline.1"]),
    "model key typo": ("model = dict(bbox_head=dict(num_clases=3))", ["num_clases"]),
    "unknown model type": ("model = dict(type='FCOSS')", ["'FCOSS'", "FCOS"]),
    "unknown dataset type": ("data = dict(train=dict(type='ShapesDatset'))", ["'ShapesDatset'"]),
    "unknown optimizer": ("optimizer = dict(type='AdamWW')", ["'AdamWW'", "AdamW"]),
    "unknown optimizer hook": ("optimizer_config = dict(type='MyOptimizerHook')", ["optimizer_config.type"]),
    "unknown lr policy": ("lr_config = dict(policy='stepp')", ["stepp"]),
    "GN groups not dividing channels": ("model = dict(bbox_head=dict(feat_channels=24))",
                                        ["model.bbox_head (FCOSHead)", "num_groups (32)", "(24)"]),
    "backbone GN groups": ("model = dict(backbone=dict(groups=5))", ["model.backbone (GNConvNet)", "groups=5"]),
    "lr policy missing": ("lr_config = dict(_delete_=True, step=[1])", ["lr_config.policy"]),
    "unknown runner": ("runner = dict(type='MyRunner')", ["runner.type", "MyRunner"]),
    "string lr": ("optimizer = dict(lr='0.01')", ["optimizer.lr='0.01'", "(a str)", "a number >= 0"]),
    "negative lr": ("optimizer = dict(lr=-0.1)", ["optimizer.lr=-0.1", "a number >= 0"]),
    "string batch": ("data = dict(samples_per_gpu='4')", ["data.samples_per_gpu='4'", "an int >= 1"]),
    "batch 0": ("data = dict(samples_per_gpu=0)", ["data.samples_per_gpu=0", "an int >= 1"]),
    "float batch": ("data = dict(samples_per_gpu=2.5)", ["data.samples_per_gpu=2.5"]),
    "negative loader workers": ("data = dict(workers_per_gpu=-1)", ["data.workers_per_gpu=-1", "an int >= 0"]),
    "val loader batch 0": ("data = dict(val_dataloader=dict(samples_per_gpu=0))",
                           ["data.val_dataloader.samples_per_gpu=0"]),
    "string max_epochs": ("runner = dict(max_epochs='2')", ["runner.max_epochs='2'", "an int >= 1"]),
    "max_epochs 0": ("runner = dict(max_epochs=0)", ["runner.max_epochs=0"]),
    "total_epochs disagrees": ("total_epochs = 5", ["total_epochs=5", "runner.max_epochs=1"]),
    "grad clip max_norm 0": ("optimizer_config = dict(grad_clip=dict(max_norm=0))",
                             ["optimizer_config.grad_clip.max_norm=0", "> 0"]),
    "grad clip typo": ("optimizer_config = dict(grad_clip=dict(max_nrom=10))", ["grad_clip.max_nrom"]),
    "log interval 0": ("log_config = dict(interval=0)", ["log_config.interval=0"]),
    "misspelt loss_scale": ("fp16 = dict(loss_scle=512.)", ["'fp16.loss_scle'", "'loss_scale'"]),
    "string loss_scale": ("fp16 = dict(loss_scale='big')", ["fp16.loss_scale='big'", "'dynamic'"]),
    "checkpoint interval 0": ("checkpoint_config = dict(interval=0)", ["checkpoint_config.interval=0"]),
    "eval interval 0": ("evaluation = dict(interval=0)", ["evaluation.interval=0"]),
    "bool deterministic as string": ("deterministic = 'yes'", ["deterministic='yes'", "True or False"]),
    "bad log level": ("log_level = 'LOUD'", ["log_level='LOUD'", "'INFO'"]),
    "string seed": ("seed = 'abc'", ["seed='abc'"]),
    "seed too large": ("seed = 99999999999999999999", ["seed=99999999999999999999"]),
    "no model (a shared base)": ("model = None", ["no model", "shared base"]),
    "warmup ratio 0": ("lr_config = dict(warmup_ratio=0)", ["lr_config.warmup_ratio=0"]),
    "bad workflow phase": ("workflow = [('test', 1)]", ["workflow", "test"]),
    "workflow not pairs": ("workflow = ['train']", ["workflow=['train']"]),
    "ray workers 0": ("ray = dict(num_workers=0)", ["ray.num_workers=0"]),
    "ray workers min > max": ("ray = dict(num_workers=(3, 1))", ["ray.num_workers=(3, 1)"]),
    "ray upload mode": ("ray = dict(checkpoint_upload_mode='later')", ["ray.checkpoint_upload_mode='later'"]),
    "missing custom import": ("custom_imports = dict(imports=['no_such_module_xyz'])", ["no_such_module_xyz"]),
    "unknown eval metric": ("evaluation = dict(metric='bboxx')", ["'bboxx'"]),
}


@pytest.mark.parametrize("case", list(CONFIG))
def test_config_value_is_named(case, base, tmp_path, capsys):
    text, names = CONFIG[case]
    cfg = config(base, tmp_path, text)
    failed(train(capsys, cfg, tmp_path), cfg, *names)
    assert not (tmp_path / "work").exists()  # refused before anything was made


def test_config_file_problems(base, tmp_path, capsys):
    failed(train(capsys, tmp_path / "nope.py", tmp_path), "config file not found", "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("model = dict(\n")
    failed(train(capsys, broken, tmp_path), "broken.py", "SyntaxError")
    yaml_code = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    yaml_code.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    failed(train(capsys, yaml_code, tmp_path), "evil.yaml", "safe loader")
    assert not marker.exists()
    yaml_base = tmp_path / "child.yaml"
    yaml_base.write_text(f"_base_: ['{base['config']}']\n")
    failed(train(capsys, yaml_base, tmp_path), "child.yaml", "is not YAML/JSON")


def test_eval_metric_the_model_cannot_give(base, tmp_path, capsys):
    cfg = config(base, tmp_path, "evaluation = dict(metric=['bbox', 'segm'])")
    failed(run(capsys, "train", cfg, "--launcher", "none", "--work-dir", tmp_path / "w"), "segm", "no mask head")
    cfg = config(base, tmp_path, "evaluation = dict(save_best='bbox_AP')", "best.py")
    failed(run(capsys, "train", cfg, "--launcher", "none", "--work-dir", tmp_path / "w"),
           "evaluation.save_best='bbox_AP'", "bbox_mAP")
    cfg = config(base, tmp_path, "evaluation = dict(iou_thr=0.5)", "voc_key.py")  # VOC's evaluate's argument
    failed(run(capsys, "train", cfg, "--launcher", "none", "--work-dir", tmp_path / "w"),
           "evaluation.iou_thr", "ShapesDataset.evaluate takes no 'iou_thr'")


@pytest.mark.parametrize("num_classes", [5, 2])
def test_num_classes_other_than_the_datasets(num_classes, base, tmp_path, capsys):
    cfg = config(base, tmp_path, f"model = dict(bbox_head=dict(num_classes={num_classes}))")
    failed(train(capsys, cfg, tmp_path), f"num_classes={num_classes}", "3 CLASSES")
    assert not glob.glob(str(tmp_path / "work" / "*.pth"))


# ------------------------------------------------------------------ CLI
def test_cfg_options_parse_dicts_and_refuse_a_key_without_value(base, tmp_path, capsys):
    failed(train(capsys, base["config"], tmp_path, "--cfg-options", "optimizer.lr"), "optimizer.lr", "KEY=VALUE")
    failed(train(capsys, base["config"], tmp_path, "--cfg-options", "lr_config=dict(policy='stepp', step=[1])"),
           "stepp")
    failed(train(capsys, base["config"], tmp_path, "--cfg-options", "lr_config={'policy': 'stepp'}"), "stepp")
    failed(train(capsys, base["config"], tmp_path, "--cfg-options", "lr_config=dict(policy=step"), "lr_config")
    failed(train(capsys, base["config"], tmp_path, "--cfg-options", "optimizer.lr=fast"), "optimizer.lr='fast'")


def test_cfg_options_dict_value_is_a_dict():
    import argparse

    from raydet.cli import _train_parser
    parser = argparse.ArgumentParser()
    _train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "x.py", "--cfg-options", "lr_config=dict(policy='step', step=[8, 11])",
                              "evaluation={'interval': 2, 'metric': ['bbox']}", "optimizer.lr=0.01",
                              "lr_config.step=8,11"])
    assert args.cfg_options == {"lr_config": {"policy": "step", "step": [8, 11]},
                                "evaluation": {"interval": 2, "metric": ["bbox"]}, "optimizer.lr": 0.01,
                                "lr_config.step": [8, 11]}
    with pytest.raises(SystemExit):  # literals only: a call is not evaluated
        parser.parse_args(["train", "x.py", "--cfg-options", "lr_config=dict(policy=__import__('os').getcwd())"])
    # a list of dicts, as mmcv's DictAction takes it (this recursed without end before)
    args = parser.parse_args(["train", "x.py", "--cfg-options",
                              "custom_hooks=[dict(type='ExpMomentumEMAHook', momentum=0.0002, priority=49)]"])
    assert args.cfg_options == {"custom_hooks": [dict(type="ExpMomentumEMAHook", momentum=0.0002, priority=49)]}


@pytest.mark.parametrize("workers", ["0", "3-1", "two", "-2"])
def test_bad_worker_counts_stop_before_ray_starts(workers, base, tmp_path, capsys):
    import sys
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine.txt").write_text("kept")
    code, _, err = run(capsys, "train", base["config"], "--work-dir", tmp_path / "work", "--num-workers", workers,
                       "--no-auto-resume")
    assert code == 2 and "--num-workers" in err and workers in err
    assert os.listdir(tmp_path / "work") == ["mine.txt"] and not glob.glob(str(tmp_path / "work.old-*"))
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_bucket_work_dir_needs_the_ray_launcher(base, tmp_path, capsys):
    failed(run(capsys, "train", base["config"], "--launcher", "none", "--work-dir", "s3://bucket/runs/x"),
           "s3://bucket/runs/x", "--launcher ray")


def test_work_dir_that_is_a_file_or_unwritable(base, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    failed(run(capsys, "train", base["config"], "--launcher", "none", "--work-dir", afile), str(afile), "is a file")
    assert afile.read_text() == "mine"
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    target = locked / "work" if os.geteuid() != 0 else "/sys/raydet-test-work"  # root writes anywhere else
    try:
        failed(run(capsys, "train", base["config"], "--launcher", "none", "--work-dir", target), str(target),
               "not writable")
    finally:
        os.chmod(locked, 0o755)


def test_a_temp_dir_too_long_for_loader_workers_is_named(base, tmp_path, capsys, monkeypatch):
    """Loader workers would hang on their first batch (their socket cannot bind): refused first."""
    import tempfile
    long = tmp_path / ("t" * 80)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    failed(run(capsys, "train", base["config"], "--launcher", "none", "--work-dir", tmp_path / "w",
               "--cfg-options", "data.workers_per_gpu=1"), str(long), "TMPDIR", "workers_per_gpu")


def test_unknown_subcommand_and_flag(capsys):
    assert run(capsys, "trian", "x.py")[0] == 2
    assert run(capsys, "train", "x.py", "--lanucher", "none")[0] == 2
    assert run(capsys, "test", "x.py", "y.pth", "--eval", "bboxx")[0] == 2


def test_test_problems(base, tmp_path, capsys):
    failed(run(capsys, "test", base["config"], tmp_path / "missing.pth"), "checkpoint not found", "missing.pth")
    failed(run(capsys, "test", base["config"], base["ckpt"], "--eval", "segm"), "--eval='segm'", "no mask head")
    out = tmp_path / "results.pkl"
    out.write_bytes(b"mine")
    failed(run(capsys, "test", base["config"], base["ckpt"], "--out", out), str(out), "does not overwrite")
    assert out.read_bytes() == b"mine"
    # output places are checked before the model loads (they were found only after predicting)
    failed(run(capsys, "test", base["config"], base["ckpt"], "--out", tmp_path / "no" / "r.pkl"), "does not exist")
    failed(run(capsys, "test", base["config"], base["ckpt"], "--show-dir", out), "--show-dir", "is a file")
    # a test set of other classes than the checkpoint's (an IndexError in the results' conversion)
    two = config(base, tmp_path, "data = dict(test=dict(classes=('rectangle', 'ellipse')))", name="two.py")
    failed(run(capsys, "test", two, base["ckpt"]), "num_classes=3", "2 CLASSES")


def test_plot_problems_name_the_file(base, tmp_path, capsys):
    empty = tmp_path / "empty.log.json"
    empty.write_text("")
    failed(run(capsys, "plot", empty, "--cal-train-time"), str(empty), "no training records")
    failed(run(capsys, "plot", base["ckpt"], "--out", tmp_path / "c.png"), base["ckpt"], "not a json log")


def test_infer_output_places_are_checked_before_ray(base, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    failed(run(capsys, "infer", base["config"], base["ckpt"], images, "--out", tmp_path / "no" / "p.json"),
           "does not exist")


# ------------------------------------------------------------------ data
def _coco_copy(shapes_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    return root


def _coco_config(base, tmp_path, root, split="train", test=False):
    """The base config on a COCO-format copy of the shapes data (``CocoDataset``)."""
    ds = dict(type="CocoDataset", classes=("rectangle", "ellipse", "triangle"))
    train = dict(ds, ann_file=f"{root}/annotations/instances_{split}.json", img_prefix=f"{root}/{split}",
                 pipeline=TRAIN_PIPELINE)
    val = dict(ds, ann_file=f"{root}/annotations/instances_val.json", img_prefix=f"{root}/val",
               pipeline=TEST_PIPELINE)
    text = f"data = dict(train=dict(_delete_=True, **{train!r}), val=dict(_delete_=True, **{val!r}), " \
           f"test=dict(_delete_=True, **{val!r}))"
    return config(base, tmp_path, text, "coco.py")


def _edit_json(path, edit):
    data = json.load(open(path))
    edit(data)
    json.dump(data, open(path, "w"))


def _first(data, file_name="000001.jpg"):
    return next(i for i in data["images"] if i["file_name"] == file_name)


def _ann_of(data, file_name="000001.jpg"):
    image = _first(data, file_name)
    return next(a for a in data["annotations"] if a["image_id"] == image["id"])


DATA = {
    "annotation file missing": (lambda root: os.remove(root / "annotations" / "instances_train.json"),
                                ["annotation file not found", "instances_train.json"]),
    "annotation json truncated": (lambda root: (root / "annotations" / "instances_train.json").write_text('{"images": ['),
                                  ["malformed annotation json", "instances_train.json"]),
    "annotation json not an object": (lambda root: (root / "annotations" / "instances_train.json").write_text("[]"),
                                      ["instances_train.json", "top level is not an object"]),
    "annotations list missing": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                                         lambda d: d.pop("annotations")),
                                 ["instances_train.json", "'annotations'"]),
    "image entry without width": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                                          lambda d: _first(d).pop("width")),
                                  ["instances_train.json", "has no 'width'"]),
    "non-finite box": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                               lambda d: _ann_of(d).__setitem__("bbox", [1, 2, float("nan"), 4])),
                       ["instances_train.json", "000001.jpg", "4 finite numbers"]),
    "box of 3 numbers": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                                 lambda d: _ann_of(d).__setitem__("bbox", [1, 2, 3])),
                         ["instances_train.json", "000001.jpg", "bbox [1, 2, 3]"]),
    "unknown category_id": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                                    lambda d: _ann_of(d).__setitem__("category_id", 9)),
                            ["instances_train.json", "000001.jpg", "category_id 9"]),
    "annotation of no image": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                                       lambda d: _ann_of(d).__setitem__("image_id", 10 ** 6)),
                               ["instances_train.json", "image_id 1000000"]),
    "image missing": (lambda root: os.remove(root / "train" / "000003.jpg"),
                      ["image file not found", "000003.jpg", "instances_train.json"]),
    "image of 0 bytes": (lambda root: open(root / "train" / "000003.jpg", "w").close(),
                         ["000003.jpg", "empty (0 bytes)"]),
    "image not an image": (lambda root: (root / "train" / "000003.jpg").write_text("not a jpeg"),
                           ["000003.jpg", "not a readable image"]),
    "image of another size": (lambda root: cv2.imwrite(str(root / "train" / "000003.jpg"),
                                                       np.zeros((10, 20, 3), np.uint8)),
                              ["000003.jpg", "is 20x10", "instances_train.json"]),
    "bad image in val": (lambda root: (root / "val" / "000002.jpg").write_bytes(b"\xff\xd8garbage"),
                         ["val/000002.jpg", "not a readable image"]),
    "no images": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                          lambda d: (d.__setitem__("images", []), d.__setitem__("annotations", []))),
                  ["data.train is empty", "instances_train.json", "0 images"]),
    "every image filtered": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                                     lambda d: d.__setitem__("annotations", [])),
                             ["data.train is empty", "48 images", "48 dropped as without boxes"]),
    "classes not in the categories": (lambda root: _edit_json(root / "annotations" / "instances_train.json",
                                                              lambda d: d["categories"][0].__setitem__("name", "box")),
                                      ["instances_train.json", "rectangle"]),
}


@pytest.mark.parametrize("case", list(DATA))
def test_bad_data_is_named_before_training(case, base, shapes_root, tmp_path, capsys):
    damage, names = DATA[case]
    root = _coco_copy(shapes_root, tmp_path)
    damage(root)
    cfg = _coco_config(base, tmp_path, root)
    validate = () if case == "bad image in val" else ("--no-validate",)
    failed(run(capsys, "train", cfg, "--launcher", "none", "--work-dir", tmp_path / "work", *validate), *names)
    assert not glob.glob(str(tmp_path / "work" / "*.pth"))  # nothing trained: found when the datasets were built


def test_bad_image_found_mid_epoch_names_itself(base, tmp_path, capsys):
    pipeline = [TRAIN_PIPELINE[0], dict(type="FailOnImage", name="000007.jpg"), *TRAIN_PIPELINE[1:]]
    cfg = config(base, tmp_path, f"data = dict(train=dict(pipeline={pipeline!r}))")
    failed(train(capsys, cfg, tmp_path), "000007.jpg", "cannot decode")


def test_bad_boxes_are_summarised_not_repeated(shapes_root, tmp_path):
    import warnings

    from raydet.data import CocoDataset
    from raydet.data.dataset import WARN_FIRST, DataWarning
    root = _coco_copy(shapes_root, tmp_path)
    _edit_json(root / "annotations" / "instances_train.json",
               lambda d: [a.__setitem__("bbox", [-50, -50, 10, 10]) for a in d["annotations"]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CocoDataset(str(root / "annotations" / "instances_train.json"), img_prefix=str(root / "train"),
                    test_mode=True)
    texts = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(texts) == WARN_FIRST + 1 and "more images with repaired or dropped annotations" in texts[-1]
    assert all(".jpg: annotation" in t and "zero area" in t for t in texts[:WARN_FIRST])


def test_shapes_num_images_is_part_of_the_cache_key(tmp_path, monkeypatch):
    from raydet.data import shapes
    from raydet.errors import DataError
    monkeypatch.setenv("RAYDET_DATA", str(tmp_path))
    small = shapes.ensure_shapes(num_images=dict(train=3, val=2))
    other = shapes.ensure_shapes(num_images=dict(train=4, val=2))
    assert small != other and len(os.listdir(os.path.join(other, "train"))) == 4
    with pytest.raises(DataError, match="not the one asked for"):
        shapes.generate(small, num_images=dict(train=4, val=2))  # an explicit root of other sizes
    assert shapes.generate(small) == small  # no sizes asked for: whatever the root holds
    for bad in (0, -1, "3"):
        with pytest.raises(DataError, match=r"num_images\['train'\]"):
            shapes.ensure_shapes(num_images=dict(train=bad))


# ------------------------------------------------------------------ checkpoints
def _save(path, obj):
    torch.save(obj, path)
    return str(path)


def _checkpoint_cases(base, tmp_path):
    state = torch.load(base["ckpt"], weights_only=True)
    raw = open(base["ckpt"], "rb").read()
    leftover = dict(state, extra_state={"x": 1})
    other_head = dict(state, state_dict={k: (v[:2] if "conv_cls" in k else v) for k, v in state["state_dict"].items()})
    few = dict(state, state_dict={k: v for k, v in state["state_dict"].items() if "backbone.body.stages.0" in k})
    (tmp_path / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "noise.pth").write_bytes(os.urandom(4096))
    (tmp_path / "empty.pth").write_bytes(b"")
    return {
        "missing": (tmp_path / "nothing.pth", ["checkpoint not found", "nothing.pth"]),
        "truncated": (tmp_path / "truncated.pth", ["truncated.pth", "truncated or corrupt"]),
        "random bytes": (tmp_path / "noise.pth", ["noise.pth", "truncated or corrupt"]),
        "0 bytes": (tmp_path / "empty.pth", ["empty.pth", "truncated or corrupt"]),
        "code inside": (_save(tmp_path / "code.pth", {"meta": {}, "state_dict": {}, "x": Hook()}),
                        ["code.pth", "refused for safety", "could run code"]),
        "not a dict": (_save(tmp_path / "list.pth", [1, 2]), ["list.pth", "not a dict"]),
        "leftover keys": (_save(tmp_path / "leftover.pth", leftover), ["leftover.pth", "extra_state"]),
        "another head": (_save(tmp_path / "head.pth", other_head), ["head.pth", "conv_cls", "(2,"]),
        "few keys": (_save(tmp_path / "few.pth", few), ["few.pth"]),
    }


RESUME = ["missing", "truncated", "random bytes", "0 bytes", "code inside", "not a dict", "leftover keys",
          "another head"]


@pytest.mark.parametrize("case", RESUME)
def test_resume_from_a_bad_checkpoint(case, base, tmp_path, capsys):
    path, names = _checkpoint_cases(base, tmp_path)[case]
    result = train(capsys, base["config"], tmp_path, "--resume-from", path)
    message = failed(result, *names)
    assert "weights_only=False" not in message


@pytest.mark.parametrize("case", ["missing", "truncated", "code inside", "few keys"])
def test_load_from_a_bad_checkpoint(case, base, tmp_path, capsys):
    path, names = _checkpoint_cases(base, tmp_path)[case]
    cfg = config(base, tmp_path, f"load_from = {str(path)!r}")
    message = failed(train(capsys, cfg, tmp_path), *names)
    if case == "few keys":
        assert "backbone" in message and "init_cfg" in message


def test_load_from_another_head_reinitialises_it(base, tmp_path, capsys):
    path, _ = _checkpoint_cases(base, tmp_path)["another head"]
    cfg = config(base, tmp_path, f"load_from = {str(path)!r}")
    assert train(capsys, cfg, tmp_path)[0] == 0  # the backbone loaded; a head of other classes is re-made


@pytest.mark.parametrize("case", ["another head", "few keys", "truncated"])
def test_test_with_a_checkpoint_that_does_not_fit(case, base, tmp_path, capsys):
    path, names = _checkpoint_cases(base, tmp_path)[case]
    message = failed(run(capsys, "test", base["config"], path), *names)
    assert "mAP" not in message


def test_auto_resume_skips_a_corrupt_newest_checkpoint(base, tmp_path, capsys):
    cfg = config(base, tmp_path, "runner = dict(max_epochs=2)")
    work = tmp_path / "work"
    shutil.copytree(os.path.dirname(base["ckpt"]), work)
    for name in ("epoch_1.pth",):
        assert (work / name).exists()
    (work / "epoch_2.pth").write_bytes(b"half a checkpoint")
    before = (work / "epoch_1.pth").read_bytes()
    code, out, err = run(capsys, "train", cfg, "--launcher", "none", "--work-dir", work, "--no-validate")
    assert code == 0, err[-2000:]
    assert (work / "epoch_1.pth").read_bytes() == before


# ------------------------------------------------------------------ training time
def test_non_finite_loss_names_the_iteration(base, tmp_path, capsys):
    cfg = config(base, tmp_path, "custom_hooks = [dict(type='PoisonWeightsHook', at=3)]")
    failed(train(capsys, cfg, tmp_path), "non-finite loss", "epoch 1, iter 3")


# ------------------------------------------------------------------ data safety
def test_a_failed_run_changes_nothing_in_a_used_work_dir(base, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(os.path.dirname(base["ckpt"]), work)
    (work / "notes.txt").write_text("mine")
    before = _digests(work)
    bad = config(base, tmp_path, "optimizer = dict(lr='x')")
    for argv in (["--no-auto-resume"], [], ["--resume-from", tmp_path / "nothing.pth"]):
        code, _, _ = run(capsys, "train", bad if not argv or argv[0] == "--no-auto-resume" else base["config"],
                         "--launcher", "none", "--work-dir", work, "--no-validate", *argv)
        assert code == 2
        assert _digests(work) == before and not glob.glob(str(work) + ".old-*")


def test_an_image_emptied_after_the_index_was_built_is_named_when_read(shapes_root, tmp_path):
    from raydet.data import build_dataset
    from raydet.errors import DataError
    root = _coco_copy(shapes_root, tmp_path)
    ds = build_dataset(dict(type="CocoDataset", classes=("rectangle", "ellipse", "triangle"),
                            ann_file=f"{root}/annotations/instances_train.json", img_prefix=f"{root}/train",
                            pipeline=TRAIN_PIPELINE))
    name = ds.data_infos[0]["filename"]
    (root / "train" / name).write_bytes(b"")  # emptied after the index checked it
    with pytest.raises(DataError, match=rf"cannot decode image .*{name}"):
        ds[0]


def test_a_json_config_writes_img_scale_as_a_list_and_it_still_trains(base, tmp_path, capsys):
    import json

    from raydet.config import load_config
    cfg = load_config(base["config"]).to_dict()
    for step in cfg["data"]["train"]["pipeline"]:
        if step["type"] == "Resize":
            step["img_scale"] = list(step["img_scale"])
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg, default=list))
    assert run(capsys, "train", path, "--launcher", "none", "--work-dir", tmp_path / "w", "--no-validate")[0] == 0
