"""Pretrained checkpoint names resolve through torch hub's cache; nothing is downloaded in tests
(RAYDET_OFFLINE=1, set by conftest)."""
import os

import pytest
import torch
import torchvision

from raydet.engine import load_weights
from raydet.errors import ConfigError
from raydet.models import build_detector
from raydet.models.weights import checkpoint_path, checkpoint_url, load_pretrained

from .test_models import MODELS


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


def test_imagenet_resnet_loads_into_the_backbone_by_name(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    os.makedirs(cache.parent)
    torch.manual_seed(3)
    imagenet = torchvision.models.resnet18()
    torch.save(imagenet.state_dict(), cache)
    cfg = dict(MODELS["RetinaNet"])
    cfg["backbone"] = dict(type="ResNet", depth=18, out_indices=(1, 2, 3),
                           init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet18"))
    with caplog.at_level("INFO", logger="raydet"):
        model = build_detector(cfg)
    body = model.detector.backbone.body
    assert torch.equal(body.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    assert torch.equal(body.bn1.running_mean, imagenet.bn1.running_mean)
    assert "unexpected keys in source state_dict: fc.weight, fc.bias" in caplog.text


def test_prefix_takes_a_backbone_out_of_a_detector_checkpoint(tmp_path):
    src = build_detector(MODELS["FCOS"])
    path = tmp_path / "det.pth"
    torch.save({"state_dict": {k.replace("detector.backbone.body.", "backbone."): v
                               for k, v in src.state_dict().items()}}, path)
    dst = build_detector(MODELS["FCOS"])
    load_pretrained(dst.detector.backbone.body, str(path), "model.backbone", prefix="backbone.")
    assert torch.equal(dst.detector.backbone.body.stages[2][0].weight, src.detector.backbone.body.stages[2][0].weight)


def test_torchvision_detection_checkpoint_loads_with_load_from(tmp_path):
    src = build_detector(MODELS["FasterRCNN"])
    path = tmp_path / "tv.pth"
    torch.save({k[len("detector."):]: v for k, v in src.state_dict().items()}, path)  # torchvision's names
    dst = build_detector(MODELS["FasterRCNN"])
    load_weights(dst, str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_backbone_level_pretrained_is_honoured(tmp_path, caplog):
    path = tmp_path / "r18.pth"
    torch.manual_seed(5)
    imagenet = torchvision.models.resnet18()
    torch.save(imagenet.state_dict(), path)
    cfg = dict(MODELS["RetinaNet"])
    cfg["backbone"] = dict(type="ResNet", depth=18, out_indices=(1, 2, 3), pretrained=str(path))  # mmdet < 2.12
    model = build_detector(cfg)
    assert torch.equal(model.detector.backbone.body.layer4[0].conv1.weight, imagenet.layer4[0].conv1.weight)
