"""mmdet 2.x's dataset wrappers and the list-of-ann_file form."""
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch

from raydet.data import (ClassBalancedDataset, CocoDataset, ConcatDataset, SampleKey,
                         build_dataset)
from raydet.errors import ConfigError

from .conftest import SMALL, TRAIN_PIPELINE
from .test_dataset import _gt_as_results


def _shapes(root, split="train", **kw):
    return dict(type="ShapesDataset", root=root, num_images=SMALL, split=split, pipeline=TRAIN_PIPELINE, **kw)


def test_repeat_dataset_maps_indices_and_augments_each_copy_on_its_own(shapes_root):
    plain = build_dataset(_shapes(shapes_root), seed=3)
    rep = build_dataset(dict(type="RepeatDataset", times=3, dataset=_shapes(shapes_root)), seed=3)
    n = len(plain)
    assert len(rep) == 3 * n and rep.CLASSES == plain.CLASSES
    assert np.array_equal(rep.flag, np.tile(plain.flag, 3))
    assert rep.get_cat_ids(n + 5) == plain.get_cat_ids(5)
    differ = 0
    for i in range(8):
        a, b, c = plain[SampleKey(i, 1)], rep[SampleKey(i, 1)], rep[SampleKey(n + i, 1)]
        assert a["img_metas"]["ori_filename"] == c["img_metas"]["ori_filename"]
        assert torch.equal(a["img"], b["img"])  # copy 0 is the unwrapped sample, bit for bit
        differ += a["img_metas"]["flip"] != c["img_metas"]["flip"]
    assert differ > 0  # copy 1 draws its own flips


def test_ann_file_list_and_a_list_of_configs_concatenate_and_evaluate_separately(shapes_root):
    ann = [os.path.join(shapes_root, "annotations", f"instances_{s}.json") for s in ("train", "val")]
    prefixes = [os.path.join(shapes_root, s) for s in ("train", "val")]
    cfg = dict(type="CocoDataset", ann_file=ann, img_prefix=prefixes, pipeline=TRAIN_PIPELINE)
    cat = build_dataset(cfg)
    train, val = (CocoDataset(a, TRAIN_PIPELINE, img_prefix=p) for a, p in zip(ann, prefixes))
    assert isinstance(cat, ConcatDataset) and len(cat) == len(train) + len(val) > SMALL["train"]
    assert cat[len(train) + 2]["img_metas"]["ori_filename"] == val.data_infos[2]["filename"]
    assert np.array_equal(cat.flag, np.concatenate([train.flag, val.flag]))
    metrics = cat.evaluate(_gt_as_results(train, False) + _gt_as_results(val, False), metric="bbox")
    assert metrics["0_bbox_mAP"] == pytest.approx(1.0) and metrics["1_bbox_mAP"] == pytest.approx(1.0)
    both = build_dataset([_shapes(shapes_root), _shapes(shapes_root, "val")])
    assert isinstance(both, ConcatDataset) and len(both) == len(cat)
    with pytest.raises(ConfigError, match="separate_eval=True"):
        ConcatDataset([train, val], separate_eval=False).evaluate([[]] * len(cat))
    with pytest.raises(ConfigError, match="img_prefix has 3 entries for 2 ann_file entries"):
        build_dataset(dict(cfg, img_prefix=prefixes + ["x"]))


def _coco(tmp_path, images):
    """A COCO file whose image ``i`` holds boxes of the categories ``images[i]`` (names)."""
    cats = [dict(id=1, name="a"), dict(id=2, name="b")]
    anns, ids = [], {"a": 1, "b": 2}
    for i, names in enumerate(images):
        for j, name in enumerate(names):
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=ids[name], bbox=[2 + 10 * j, 2, 8, 8],
                             area=64, iscrowd=0))
    data = dict(images=[dict(id=i + 1, file_name=f"{i}.jpg", width=40, height=30) for i in range(len(images))],
                annotations=anns, categories=cats)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    for info in data["images"]:  # the dataset checks each image's header when it is built
        cv2.imwrite(str(tmp_path / info["file_name"]), np.zeros((30, 40, 3), np.uint8))
    return CocoDataset(str(path), [], img_prefix=str(tmp_path), filter_empty_gt=False)


def test_class_balanced_repeat_factors_follow_mmdets_rule(tmp_path):
    ds = _coco(tmp_path, [["a"], ["a"], ["a", "b"], ["a"], []])
    # f(a) = 4/5, f(b) = 1/5; thr 0.3: r(a) = 1, r(b) = sqrt(0.3 / 0.2)
    balanced = ClassBalancedDataset(ds, oversample_thr=0.3)
    assert balanced.repeat_indices.tolist() == [0, 1, 2, 2, 3, 4] and len(balanced) == 6
    assert balanced.copy_of.tolist() == [0, 0, 0, 1, 0, 0]
    # thr 0.9: r(a) = sqrt(0.9 / 0.8) = 1.06 (two copies), r(b) = 2.12 (three), the empty image once
    more = ClassBalancedDataset(ds, oversample_thr=0.9)
    assert more.repeat_indices.tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4]
    assert more.copy_of.tolist() == [0, 1, 0, 1, 0, 1, 2, 0, 1, 0] and more._copies == 3
    assert balanced.get_cat_ids(3) == ds.get_cat_ids(2) == [0, 1]
    # images without boxes count as a category of their own: f = 1/5 too
    with_empty = ClassBalancedDataset(ds, oversample_thr=0.3, filter_empty_gt=False)
    assert with_empty.repeat_indices.tolist() == [0, 1, 2, 2, 3, 4, 4]
    assert np.array_equal(with_empty.flag, ds.flag[[0, 1, 2, 2, 3, 4, 4]])
    assert ClassBalancedDataset(ds, oversample_thr=0.1).repeat_indices.tolist() == [0, 1, 2, 3, 4]  # nothing rare
    with pytest.raises(ConfigError, match="oversample_thr"):
        ClassBalancedDataset(ds, oversample_thr=0)


def test_a_wrapped_training_set_trains_and_its_keys_are_checked(make_cfg, tmp_path):
    from raydet.run import train_from_config
    from raydet.config import load_config
    from .conftest import tiny_config

    base = tiny_config(os.path.dirname(make_cfg().data.train.root), tmp_path / "w")
    base["data"]["train"] = dict(type="RepeatDataset", times=2, dataset=make_cfg().data.train.to_dict())
    base["runner"] = dict(max_epochs=1)
    base["data"]["train"]["dataset"]["root"] = make_cfg().data.train.root
    runner = train_from_config(load_config(base), validate=False)
    flag = build_dataset(make_cfg().data.train).flag
    per_group = [int((flag == g).sum()) for g in np.unique(flag)]  # batches never mix aspect groups
    assert runner.iters_per_epoch == sum(math.ceil(2 * n / 4) for n in per_group) and runner.epoch == 1
    bad = dict(base, data=dict(base["data"], train=dict(base["data"]["train"], dataset=dict(
        base["data"]["train"]["dataset"], nmu_images=3))))
    with pytest.raises(ConfigError, match=r"data\.train\.dataset\.nmu_images.*num_images"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"'data\.train\.time' \(did you mean 'times'\?\)"):
        load_config(dict(base, data=dict(base["data"], train=dict(base["data"]["train"], time=2))))
    times_missing = {k: v for k, v in base["data"]["train"].items() if k != "times"}
    with pytest.raises(ConfigError, match="data.train: RepeatDataset needs 'times'"):
        load_config(dict(base, data=dict(base["data"], train=times_missing)))
