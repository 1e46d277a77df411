import json
import os
import shutil

import numpy as np
import pytest

from raydet.data import (CocoDataset, DataWarning, GroupSampler, SampleKey, ShapesDataset, build_dataloader,
                         collate)
from raydet.errors import DataError

from .conftest import TEST_PIPELINE, TRAIN_PIPELINE


def _gt_as_results(ds, with_masks):
    results = []
    for info in ds.data_infos:
        anns = ds.coco.imgToAnns.get(info["id"], [])
        boxes = [[] for _ in ds.CLASSES]
        masks = [[] for _ in ds.CLASSES]
        for ann in anns:
            x, y, w, h = ann["bbox"]
            label = ds.cat2label[ann["category_id"]]
            boxes[label].append([x, y, x + w, y + h, 1.0])
            masks[label].append(ds.coco.annToRLE(ann))
        bbox = [np.array(b, np.float32).reshape(-1, 5) for b in boxes]
        results.append((bbox, masks) if with_masks else bbox)
    return results


def test_ground_truth_scores_map_one(shapes_root):
    ds = ShapesDataset("val", TEST_PIPELINE, root=shapes_root, test_mode=True)
    metrics = ds.evaluate(_gt_as_results(ds, True), metric=["bbox", "segm"])
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and metrics["segm_mAP"] == pytest.approx(1.0)
    assert metrics["bbox_mAP_50"] == pytest.approx(1.0)
    assert ds.evaluate(_gt_as_results(ds, False), metric="bbox")["bbox_mAP"] == pytest.approx(1.0)


def _noisy_results(ds, seed=0):
    """Ground truth jittered, sometimes mislabelled or missed, plus false positives; masks too."""
    from pycocotools import mask as mask_util
    rng = np.random.default_rng(seed)
    results = []
    for info, (bbox, masks) in zip(ds.data_infos, _gt_as_results(ds, True)):
        boxes, segms = [[] for _ in ds.CLASSES], [[] for _ in ds.CLASSES]
        for label, (b, m) in enumerate(zip(bbox, masks)):
            for box, rle in zip(b, m):
                if rng.random() < 0.15:
                    continue
                w, h = box[2] - box[0], box[3] - box[1]
                box = box[:4] + rng.normal(0, 0.1, 4) * [w, h, w, h]
                to = label if rng.random() < 0.8 else int(rng.integers(len(ds.CLASSES)))
                boxes[to].append([*box, rng.uniform(0.2, 1.0)])
                segms[to].append(rle)
        for _ in range(3):
            x, y = rng.uniform(0, info["width"] - 20), rng.uniform(0, info["height"] - 20)
            to = int(rng.integers(len(ds.CLASSES)))
            boxes[to].append([x, y, x + 20, y + 20, rng.uniform(0.0, 0.5)])
            mask = np.zeros((info["height"], info["width"]), np.uint8)
            mask[int(y):int(y) + 20, int(x):int(x) + 20] = 1
            segms[to].append(mask_util.encode(np.asfortranarray(mask)))
        results.append(([np.array(b, np.float32).reshape(-1, 5) for b in boxes], segms))
    return results


@pytest.mark.parametrize("metric", ["bbox", "segm"])
def test_faster_coco_eval_equals_pycocotools(shapes_root, metric):
    """The evaluator raydet uses (faster-coco-eval) gives pycocotools' 12 stats exactly."""
    import contextlib
    import io

    from faster_coco_eval import COCOeval_faster
    from pycocotools.cocoeval import COCOeval
    ds = ShapesDataset("val", TEST_PIPELINE, root=shapes_root, test_mode=True)
    results = _noisy_results(ds)
    dets = ds._to_coco_json(results, metric)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = COCOeval(ds.coco, ds.coco.loadRes([dict(d) for d in dets]), metric)
        ref.params.catIds, ref.params.imgIds = ds.cat_ids, ds.img_ids
        ref.evaluate(), ref.accumulate(), ref.summarize()
    gt = ds._fast_gt()
    fast = COCOeval_faster(gt, gt.loadRes([dict(d) for d in dets]), metric)
    fast.params.catIds, fast.params.imgIds = ds.cat_ids, ds.img_ids
    fast.evaluate(), fast.accumulate(), fast.summarize()
    assert 0.2 < ref.stats[0] < 0.95  # a result set that is neither empty nor perfect
    assert np.array_equal(np.asarray(fast.stats[:12]), np.asarray(ref.stats[:12]))
    out = ds.evaluate(results, metric=metric)
    assert [out[f"{metric}_{k}"] for k in ("mAP", "mAP_50", "mAP_75")] == [float(f"{v:.4f}") for v in ref.stats[:3]]
    # and the numbers of mmdet's own CocoDataset.evaluate (raydet's dataset is one of mmdet's)
    from mmdet.datasets import CocoDataset as MMDetCoco
    assert isinstance(ds, MMDetCoco)
    theirs = ds.mmdet_evaluate(results, metric=metric)
    assert {k: v for k, v in out.items() if k.startswith(metric)} == {k: v for k, v in theirs.items()}


def test_flag_and_classes(shapes_root):
    ds = ShapesDataset("train", TRAIN_PIPELINE, root=shapes_root)
    assert ds.CLASSES == ("rectangle", "ellipse", "triangle")
    assert set(ds.flag.tolist()) == {0, 1}
    assert all((i["width"] > i["height"]) == bool(f) for i, f in zip(ds.data_infos, ds.flag))
    assert all(len(a["labels"]) > 0 for a in ds.ann_infos)  # filter_empty_gt


def _copy_dataset(shapes_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(shapes_root, root)
    return str(root)


def test_corrupt_jpeg_names_file(shapes_root, tmp_path):
    root = _copy_dataset(shapes_root, tmp_path)
    ds = CocoDataset(os.path.join(root, "annotations/instances_train.json"), TRAIN_PIPELINE,
                     img_prefix=os.path.join(root, "train"))
    path = os.path.join(root, "train", ds.data_infos[0]["filename"])
    with open(path, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match=f"cannot decode image.*{path}"):
        ds[0]


def test_missing_image_names_file(shapes_root, tmp_path):
    root = _copy_dataset(shapes_root, tmp_path)
    ds = CocoDataset(os.path.join(root, "annotations/instances_train.json"), TRAIN_PIPELINE,
                     img_prefix=os.path.join(root, "train"))
    path = os.path.join(root, "train", ds.data_infos[1]["filename"])
    os.remove(path)
    with pytest.raises(DataError, match=f"image file not found: {path}"):
        ds[1]


def test_malformed_json_names_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match=f"malformed annotation json {bad}"):
        CocoDataset(str(bad))
    bad.write_text('{"images": [], "categories": []}')
    with pytest.raises(DataError, match=f"{bad}.*'annotations' list is missing"):
        CocoDataset(str(bad))
    with pytest.raises(DataError, match="annotation file not found"):
        CocoDataset(str(tmp_path / "nope.json"))


def test_negative_and_out_of_image_boxes_warn_with_file(shapes_root, tmp_path):
    root = _copy_dataset(shapes_root, tmp_path)
    ann_file = os.path.join(root, "annotations/instances_train.json")
    coco = json.load(open(ann_file))
    first = coco["images"][0]
    anns = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    anns[0]["bbox"] = [10, 10, -5, 8]
    coco["annotations"].append(dict(id=99999, image_id=first["id"], category_id=1, iscrowd=0, area=10,
                                    bbox=[first["width"] - 5, 5, 20, 10], segmentation=[[0, 0, 1, 0, 1, 1]]))
    json.dump(coco, open(ann_file, "w"))
    with pytest.warns(DataWarning) as record:
        ds = CocoDataset(ann_file, TRAIN_PIPELINE, img_prefix=os.path.join(root, "train"))
    msg = " ".join(str(w.message) for w in record)
    assert first["file_name"] in msg and "negative size" in msg and "clipped" in msg
    i = ds.img_ids.index(first["id"])
    boxes = ds.ann_infos[i]["bboxes"]
    assert len(boxes) == len(anns) and boxes[:, 2].max() <= first["width"]


def test_collate_pads_to_batch_max():
    import torch
    batch = collate([dict(img=torch.ones(3, 4, 6), img_metas={"a": 1}), dict(img=torch.ones(3, 8, 2), img_metas={"a": 2})])
    assert batch["img"].shape == (2, 3, 8, 6)
    assert batch["img"][0, :, 4:].abs().sum() == 0 and batch["img"][1, :, :, 2:].abs().sum() == 0
    assert batch["img_metas"] == [{"a": 1}, {"a": 2}]


class _Flags:
    def __init__(self, flags):
        self.flag = np.array(flags, np.uint8)

    def __len__(self):
        return len(self.flag)


def test_group_sampler_groups_shards_and_resumes():
    ds = _Flags([0] * 13 + [1] * 7)
    full = GroupSampler(ds, samples_per_gpu=2, num_replicas=1, seed=3)
    full.set_epoch(2)
    order = [k.index for k in full]
    batches = [order[i:i + 2] for i in range(0, len(order), 2)]
    assert all(len({ds.flag[i] for i in b}) == 1 for b in batches)  # one aspect group per batch
    assert set(order) == set(range(20))
    # two replicas: disjoint interleaving of the same global batch order
    shards = []
    for rank in range(2):
        s = GroupSampler(ds, samples_per_gpu=2, num_replicas=2, rank=rank, seed=3)
        s.set_epoch(2)
        shards.append([k.index for k in s])
        assert all(isinstance(k, SampleKey) and k.epoch == 2 for k in s)
    assert len(shards[0]) == len(shards[1]) == 6 * 2
    glob = full.global_batches()
    assert shards[0][:2] == glob[0] and shards[1][:2] == glob[1] and shards[0][2:4] == glob[2]
    # resume after 3 steps of 2 replicas = 6 global batches
    s = GroupSampler(ds, samples_per_gpu=2, num_replicas=2, rank=1, seed=3)
    s.set_epoch(2, start_batch=6)
    assert [k.index for k in s] == shards[1][6:]
    assert len(s) == len(shards[1]) - 6
    other = GroupSampler(ds, samples_per_gpu=2, seed=3)
    other.set_epoch(3)
    assert [k.index for k in other] != order


@pytest.mark.parametrize("before,after,steps", [(2, 1, 3), (1, 2, 5), (1, 3, 4), (3, 2, 1)])
def test_group_sampler_reshards_the_rest_of_an_epoch_on_another_world_size(before, after, steps):
    """An elastic restart: ``steps`` steps on ``before`` ranks, the rest of the epoch on ``after``
    ranks. Every rank takes the same number of steps and every batch of the epoch is used exactly
    once, apart from the epoch's first batches repeated to pad the rest to a multiple of ``after``."""
    ds = _Flags([0] * 13 + [1] * 8)
    glob = GroupSampler(ds, samples_per_gpu=2, seed=5)
    glob.set_epoch(1)
    global_batches = glob.global_batches()  # 11 batches
    start = steps * before
    seen = [b for b in global_batches[:start]]
    shards = []
    for rank in range(after):
        s = GroupSampler(ds, samples_per_gpu=2, num_replicas=after, rank=rank, seed=5)
        s.set_epoch(1, start_batch=start)
        keys = [k.index for k in s]
        assert len(keys) == len(s) == s.remaining_steps() * 2
        shards.append([keys[i:i + 2] for i in range(0, len(keys), 2)])
    assert len({len(sh) for sh in shards}) == 1  # equal steps: DDP never waits for a missing rank
    for step in zip(*shards):
        seen += list(step)
    rest = len(global_batches) - start
    assert len(seen) == len(global_batches) + (-rest) % after
    assert sorted(map(tuple, seen[:len(global_batches)])) == sorted(map(tuple, global_batches))
    assert seen[len(global_batches):] == global_batches[:(-rest) % after]  # as an uninterrupted run pads


def test_eval_loader_shards_are_disjoint_and_cover(shapes_root):
    ds = ShapesDataset("val", TEST_PIPELINE, root=shapes_root, test_mode=True)
    seen = []
    for rank in range(3):
        loader = build_dataloader(ds, 2, 0, num_replicas=3, rank=rank, shuffle=False)
        batches = list(loader.batch_sampler)
        assert all(len({ds.flag[i] for i in b}) == 1 and len(b) <= 2 for b in batches)
        seen += [i for b in batches for i in b]
    assert seen == list(range(len(ds)))


def test_batch_crosses_processes_packed_and_unchanged():
    """A collated batch pickles (as DataLoader workers send it) with its per-image tensor lists
    packed into one tensor each, and arrives equal, empty boxes included."""
    import pickle

    import torch
    samples = [dict(img=torch.rand(3, 8, 8), gt_bboxes=torch.rand(n, 4), gt_labels=torch.arange(n),
                    img_metas=dict(filename=f"{n}.jpg")) for n in (2, 0, 3)]
    batch = collate(samples)
    back = pickle.loads(pickle.dumps(batch))
    assert set(back) == set(batch) and torch.equal(back["img"], batch["img"])
    for key in ("gt_bboxes", "gt_labels"):
        assert [t.shape for t in back[key]] == [t.shape for t in batch[key]]
        assert all(torch.equal(a, b) for a, b in zip(back[key], batch[key]))
    assert back["img_metas"] == batch["img_metas"]


def test_collate_stacks_what_mmdets_formatting_marks_stacked_and_a_sample_travels_with_the_marks():
    import pickle

    import torch
    from mmcv.parallel import DataContainer as DC

    from raydet.data.pipeline import Sample

    def sample(w):  # what mmdet's DefaultFormatBundle + Collect give
        return Sample.of({"img": DC(torch.ones(3, 4, w), stack=True),
                          "gt_semantic_seg": DC(torch.ones(1, 4, w, dtype=torch.long), stack=True, padding_value=255),
                          "gt_bboxes": DC(torch.zeros(w, 4)), "img_metas": DC({"w": w}, cpu_only=True)})
    a, b = sample(6), pickle.loads(pickle.dumps(sample(8)))  # as a loader process sends it
    assert a.stacked == b.stacked == {"img": (0, 2), "gt_semantic_seg": (255, 2)}
    batch = collate([a, b])
    assert batch["img"].shape == (2, 3, 4, 8) and batch["img"][0, :, :, 6:].eq(0).all()
    seg = batch["gt_semantic_seg"]
    assert seg.shape == (2, 1, 4, 8) and seg[0, :, :, 6:].eq(255).all() and seg[0, :, :, :6].eq(1).all()
    assert [t.shape[0] for t in batch["gt_bboxes"]] == [6, 8] and batch["img_metas"] == [{"w": 6}, {"w": 8}]
