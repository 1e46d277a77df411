import warnings

import numpy as np
import pytest
import torch

from raydet.apis import batch_processor, parse_losses, set_random_seed
from raydet.run.build import loader_settings
from raydet.config import load_config


def test_parse_losses_mixed_entries():
    losses = dict(loss_cls=torch.tensor([1.0, 3.0]), loss_bbox=[torch.tensor([2.0, 4.0]), torch.tensor(1.0)],
                  acc=torch.tensor([50.0, 70.0]))
    loss, log_vars = parse_losses(losses)
    assert float(loss) == pytest.approx(2.0 + 3.0 + 1.0)
    assert log_vars == dict(loss_cls=2.0, loss_bbox=4.0, acc=60.0, loss=6.0)
    assert all(isinstance(v, float) for v in log_vars.values())


def test_parse_losses_type_error_names_key():
    with pytest.raises(TypeError, match="loss_bad is not a tensor or list of tensors"):
        parse_losses(dict(loss_ok=torch.tensor(1.0), loss_bad=1.0))


def test_batch_processor():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, img, img_metas, return_loss=True):
            return dict(loss_a=self.w * img.mean())

    out = batch_processor(M(), dict(img=torch.ones(3, 1), img_metas=[{}, {}, {}]), train_mode=True)
    assert out["num_samples"] == 3 and out["log_vars"]["loss"] == 1.0 and out["loss"].requires_grad


def test_imgs_per_gpu_overrides_with_warning():
    cfg = load_config("configs/fcos/fcos_gn_tiny_shapes.py", {"data.imgs_per_gpu": 3})
    with pytest.warns(DeprecationWarning, match="imgs_per_gpu"):
        loader = loader_settings(cfg, torch.device("cpu"))
    assert loader["samples_per_gpu"] == 3
    cfg = load_config("configs/fcos/fcos_gn_tiny_shapes.py")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loader_settings(cfg, torch.device("cpu"))["samples_per_gpu"] == 8


def test_set_random_seed_repeats():
    set_random_seed(5)
    a = (np.random.rand(), torch.rand(2))
    set_random_seed(5)
    b = (np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and torch.equal(a[1], b[1])
