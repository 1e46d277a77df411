"""Pretrained checkpoint names resolve through torch hub's cache; nothing is downloaded in tests
(RAYDET_OFFLINE=1, set by conftest)."""
import os

import pytest
import torch
import torchvision

from raydet.engine import load_weights
from raydet.errors import ConfigError
from raydet.models import build_detector
from raydet.models.weights import checkpoint_path, checkpoint_url

from .mmdet_zoo import model as zoo_model


def test_mmdet_checkpoint_names_map_to_the_urls_mmcv_used():
    assert checkpoint_url("torchvision://resnet50").endswith("/resnet50-0676ba61.pth")
    assert checkpoint_url("open-mmlab://detectron2/resnet50_caffe").endswith("/resnet50_msra-5891d200.pth")
    # mmcv's deprecated alias resolves to its new name
    assert checkpoint_url("open-mmlab://resnet50_caffe") == checkpoint_url("open-mmlab://detectron/resnet50_caffe")
    assert checkpoint_url("/some/file.pth") is None
    with pytest.raises(ConfigError, match="unknown checkpoint 'torchvision://resnet51'"):
        checkpoint_url("torchvision://resnet51")


def test_cached_checkpoint_is_used_and_a_missing_one_names_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ConfigError, match=rf"torchvision://resnet18 is not in the cache and RAYDET_OFFLINE=1: "
                                          rf"download https://\S+/resnet18-f37072fd.pth and place it at {cache}"):
        checkpoint_path("torchvision://resnet18")
    os.makedirs(cache.parent)
    torch.save(torchvision.models.resnet18().state_dict(), cache)
    assert checkpoint_path("torchvision://resnet18") == str(cache)
    with pytest.raises(ConfigError, match="checkpoint file not found: /nonexistent.pth"):
        checkpoint_path("/nonexistent.pth")


def _resnet18_retina(**backbone):
    cfg = zoo_model("RetinaNet")
    cfg["backbone"] = dict(type="ResNet", depth=18, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                           out_indices=(0, 1, 2), **backbone)
    cfg["neck"]["in_channels"] = [64, 128, 256]
    return cfg


def test_imagenet_resnet_loads_into_mmdets_backbone_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    os.makedirs(cache.parent)
    torch.manual_seed(3)
    imagenet = torchvision.models.resnet18()
    torch.save(imagenet.state_dict(), cache)
    model = build_detector(_resnet18_retina(init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet18")))
    assert torch.equal(model.backbone.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_mean, imagenet.bn1.running_mean)


def test_prefix_takes_a_backbone_out_of_a_detector_checkpoint(tmp_path):
    src = build_detector(zoo_model("FCOS"))
    path = tmp_path / "det.pth"
    torch.save({"state_dict": src.state_dict(), "meta": {}}, path)
    cfg = zoo_model("FCOS")
    cfg["backbone"]["init_cfg"] = dict(type="Pretrained", checkpoint=str(path), prefix="backbone.")
    dst = build_detector(cfg)
    assert torch.equal(dst.backbone.stages[2][0].weight, src.backbone.stages[2][0].weight)
    assert not torch.equal(dst.bbox_head.conv_reg.weight, src.bbox_head.conv_reg.weight)


def test_an_mmdet_zoo_checkpoint_loads_with_load_from(tmp_path):
    src = build_detector(zoo_model("FasterRCNN"))
    path = tmp_path / "zoo.pth"
    # an mmdet 2.x zoo file: mmdet's own names, under state_dict, with meta
    torch.save({"state_dict": src.state_dict(), "meta": {"mmdet_version": "2.28.2", "CLASSES": ("a", "b", "c")}}, path)
    dst = build_detector(zoo_model("FasterRCNN"))
    load_weights(dst, str(path), require="all")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_backbone_level_pretrained_is_honoured(tmp_path):
    path = tmp_path / "r18.pth"
    torch.manual_seed(5)
    imagenet = torchvision.models.resnet18()
    torch.save(imagenet.state_dict(), path)
    model = build_detector(_resnet18_retina(pretrained=str(path)))  # mmdet < 2.12's key
    assert torch.equal(model.backbone.layer3[0].conv1.weight, imagenet.layer3[0].conv1.weight)


def test_an_absent_pretrained_checkpoint_is_one_error_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"model\.backbone\.init_cfg\.checkpoint: torchvision://resnet18 is not in "
                                          r"the cache and RAYDET_OFFLINE=1: download \S+ and place it at "):
        build_detector(_resnet18_retina(init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet18")))
