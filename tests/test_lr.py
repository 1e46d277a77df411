"""LR and momentum values at chosen iterations, against literals computed from mmcv 1.x's formulas."""
import pytest
import torch

from raydet.engine import Hook, Runner
from raydet.engine.hooks import LR_POLICIES, MOMENTUM_POLICIES, build_lr_hook


class Recorder(Hook):
    priority = 60  # after the LR (10) and momentum (30) updaters

    def __init__(self):
        self.lr, self.momentum = [], []

    def before_train_iter(self, runner):
        group = runner.optimizer.param_groups[0]
        self.lr.append(group["lr"])
        self.momentum.append(group["momentum"] if "momentum" in group else group["betas"][0])


def _run(lr_config=None, momentum_config=None, epochs=4, iters=5, optimizer="SGD", tmp_path=None):
    model = torch.nn.Linear(2, 1)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "SGD"
           else torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.95, 0.999)))

    def processor(m, data, train_mode):
        return dict(loss=torch.zeros(()), log_vars={}, num_samples=1)

    runner = Runner(model, processor, opt, str(tmp_path), epochs)
    if lr_config:
        runner.register_hook(build_lr_hook(lr_config))
    if momentum_config:
        runner.register_hook(build_lr_hook(momentum_config, MOMENTUM_POLICIES))
    rec = Recorder()
    runner.register_hook(rec)
    runner.run([[{}] * iters], [("train", 1)])
    return rec


def test_step_by_epoch_with_linear_warmup(tmp_path):
    rec = _run(dict(policy="step", step=[2, 3], warmup="linear", warmup_iters=4, warmup_ratio=0.1), tmp_path=tmp_path)
    expected = [0.01, 0.0325, 0.055, 0.0775, 0.1] + [0.1] * 5 + [0.01] * 5 + [0.001] * 5
    assert rec.lr == pytest.approx(expected, rel=1e-9)


def test_step_by_iter_int_step_and_min_lr(tmp_path):
    rec = _run(dict(policy="step", step=4, by_epoch=False, gamma=0.5, min_lr=0.02), epochs=2, tmp_path=tmp_path)
    assert rec.lr == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025, 0.025], rel=1e-9)


@pytest.mark.parametrize("warmup,at2", [("constant", 0.01), ("exp", 0.0316227766016838), ("linear", 0.055)])
def test_warmup_kinds_by_iter(tmp_path, warmup, at2):
    rec = _run(dict(policy="step", step=[100], by_epoch=False, warmup=warmup, warmup_iters=4, warmup_ratio=0.1),
               epochs=1, tmp_path=tmp_path)
    assert rec.lr[2] == pytest.approx(at2, rel=1e-9)
    assert rec.lr[4] == pytest.approx(0.1)


def test_cosine_by_iter(tmp_path):
    rec = _run(dict(policy="CosineAnnealing", by_epoch=False, min_lr=0.0), tmp_path=tmp_path)
    assert rec.lr[0] == pytest.approx(0.1)
    assert rec.lr[5] == pytest.approx(0.08535533905932738, rel=1e-9)
    assert rec.lr[10] == pytest.approx(0.05, rel=1e-9)


def test_cosine_by_epoch_min_lr_ratio(tmp_path):
    rec = _run(dict(policy="CosineAnnealing", min_lr_ratio=0.1), epochs=2, tmp_path=tmp_path)
    # epoch 1 of 2: 0.01 + 0.5 * 0.09 * (cos(pi / 2) + 1) = 0.055
    assert rec.lr == pytest.approx([0.1] * 5 + [0.055] * 5, rel=1e-9)
    with pytest.raises(ValueError, match="exactly one"):
        LR_POLICIES.get("CosineAnnealing")(min_lr=0.0, min_lr_ratio=0.1)


def test_one_cycle(tmp_path):
    rec = _run(dict(policy="OneCycle", max_lr=0.1, pct_start=0.25), tmp_path=tmp_path)  # 20 iterations
    assert rec.lr[0] == pytest.approx(0.004)
    assert rec.lr[2] == pytest.approx(0.052, rel=1e-9)
    assert rec.lr[4] == pytest.approx(0.1, rel=1e-9)
    assert rec.lr[5] == pytest.approx(0.09890738440717015, rel=1e-9)
    assert rec.lr[12] == pytest.approx(0.04477379774230999, rel=1e-9)
    assert rec.lr[19] == pytest.approx(4e-7, rel=1e-9)


def test_momentum_cosine_and_cyclic(tmp_path):
    rec = _run(momentum_config=dict(policy="CosineAnnealing", by_epoch=False, min_momentum_ratio=0.5),
               tmp_path=tmp_path)
    assert rec.momentum[0] == pytest.approx(0.9) and rec.momentum[10] == pytest.approx(0.675)
    rec = _run(momentum_config=dict(policy="cyclic"), optimizer="AdamW", tmp_path=tmp_path)  # betas[0] = 0.95
    assert rec.momentum[0] == pytest.approx(0.95)
    assert rec.momentum[2] == pytest.approx(0.9353553390593273, rel=1e-9)
    assert rec.momentum[4] == pytest.approx(0.9, rel=1e-9)
    assert rec.momentum[8] == pytest.approx(0.85, rel=1e-9)
    assert rec.momentum[14] == pytest.approx(0.9, rel=1e-9)


def test_momentum_warmup_divides(tmp_path):
    rec = _run(momentum_config=dict(policy="CosineAnnealing", by_epoch=False, min_momentum_ratio=1.0,
                                    warmup="linear", warmup_iters=4, warmup_ratio=0.5), tmp_path=tmp_path)
    # k = (1 - 2/4) * (1 - 0.5) = 0.25 -> 0.9 / 0.75
    assert rec.momentum[2] == pytest.approx(1.2, rel=1e-9)
    assert rec.momentum[4] == pytest.approx(0.9)
