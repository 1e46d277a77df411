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


# ---- the policies mmdet recipes use beyond step/cosine (issue #16); 4 epochs x 5 iterations, lr 0.1


def test_poly_by_epoch_with_linear_warmup(tmp_path):
    rec = _run(dict(policy="poly", power=2.0, min_lr=0.01, warmup="linear", warmup_iters=4, warmup_ratio=0.1),
               tmp_path=tmp_path)
    # (0.1 - 0.01) * (1 - e / 4) ** 2 + 0.01; the first 4 iterations warm up to 0.1
    assert rec.lr == pytest.approx([0.01, 0.0325, 0.055, 0.0775, 0.1] + [0.060625] * 5 + [0.0325] * 5
                                   + [0.015625] * 5, rel=1e-9)


def test_exp_by_iter_and_inv_by_epoch(tmp_path):
    rec = _run(dict(policy="exp", gamma=0.9, by_epoch=False), tmp_path=tmp_path)
    assert rec.lr[3] == pytest.approx(0.0729, rel=1e-9) and rec.lr[10] == pytest.approx(0.03486784401, rel=1e-9)
    rec = _run(dict(policy="inv", gamma=0.5, power=2.0), tmp_path=tmp_path)  # 0.1 * (1 + 0.5 e) ** -2
    assert rec.lr[::5] == pytest.approx([0.1, 0.044444444444444446, 0.025, 0.016], rel=1e-9)


def test_linear_annealing_and_flat_cosine_with_exp_warmup(tmp_path):
    rec = _run(dict(policy="LinearAnnealing", by_epoch=False, min_lr_ratio=0.5), tmp_path=tmp_path)
    assert rec.lr[10] == pytest.approx(0.075, rel=1e-9) and rec.lr[19] == pytest.approx(0.0525, rel=1e-9)
    rec = _run(dict(policy="FlatCosineAnnealing", by_epoch=False, start_percent=0.5, min_lr=0.0,
                    warmup="exp", warmup_iters=4, warmup_ratio=0.1), tmp_path=tmp_path)
    assert rec.lr[2] == pytest.approx(0.0316227766016838, rel=1e-9)  # 0.1 * 0.1 ** (1 - 2 / 4)
    assert rec.lr[4:11] == pytest.approx([0.1] * 7)  # flat until iteration round(20 * 0.5)
    assert rec.lr[15] == pytest.approx(0.05, rel=1e-9) and rec.lr[19] == pytest.approx(0.0024471741852423235,
                                                                                      rel=1e-9)


def test_cosine_restart_by_epoch_and_periods_that_miss_the_end(tmp_path):
    rec = _run(dict(policy="CosineRestart", periods=[2, 2], restart_weights=[1, 0.5], min_lr=0.0), tmp_path=tmp_path)
    assert rec.lr[::5] == pytest.approx([0.1, 0.05, 0.05, 0.025], rel=1e-9)
    with pytest.raises(ValueError, match=r"periods \[2\] cover 2 epochs, the run has 4"):
        _run(dict(policy="CosineRestart", periods=[2], restart_weights=[1], min_lr=0.0), tmp_path=tmp_path)


def test_cyclic_lr_with_its_momentum_partner_and_decaying_cycles(tmp_path):
    rec = _run(dict(policy="cyclic", target_ratio=(10, 1e-4)), momentum_config=dict(policy="cyclic"),
               tmp_path=tmp_path)  # up for 8 iterations to 1.0, down for 12 to 1e-5
    assert rec.lr[0] == pytest.approx(0.1) and rec.lr[4] == pytest.approx(0.55, rel=1e-9)
    assert rec.lr[8] == pytest.approx(1.0) and rec.lr[14] == pytest.approx(0.500005, rel=1e-9)
    assert rec.momentum[4] == pytest.approx(0.8526315789473684, rel=1e-9)  # 0.9 half-way to 0.9 * 0.85 / 0.95
    rec = _run(dict(policy="Cyclic", cyclic_times=2, gamma=0.5), tmp_path=tmp_path)
    assert rec.lr[12] == pytest.approx(0.325, rel=1e-9)  # the second cycle swings half as far: peak 0.55
    with pytest.raises(ValueError, match="by_epoch"):
        _run(dict(policy="cyclic", by_epoch=True), tmp_path=tmp_path)


def test_momentum_step_linear_and_mmcvs_warmup_ratio(tmp_path):
    rec = _run(momentum_config=dict(policy="step", step=[2]), tmp_path=tmp_path)  # gamma 0.5
    assert rec.momentum[::5] == pytest.approx([0.9, 0.9, 0.45, 0.45], rel=1e-9)
    rec = _run(momentum_config=dict(policy="step", step=[2], min_momentum=0.5), tmp_path=tmp_path)
    assert rec.momentum[-1] == pytest.approx(0.5)
    rec = _run(momentum_config=dict(policy="LinearAnnealing", min_momentum=0.5), tmp_path=tmp_path)
    assert rec.momentum[10] == pytest.approx(0.7, rel=1e-9)
    rec = _run(momentum_config=dict(policy="step", step=[100], by_epoch=False, warmup="linear", warmup_iters=4),
               tmp_path=tmp_path)
    assert rec.momentum[2] == pytest.approx(0.9473684210526316, rel=1e-9)  # warmup_ratio 0.9, mmcv's default


def test_one_cycle_momentum_beside_one_cycle_lr(tmp_path):
    rec = _run(dict(policy="OneCycle", max_lr=0.1, pct_start=0.25),
               momentum_config=dict(policy="OneCycle", pct_start=0.25), tmp_path=tmp_path)
    assert rec.momentum[0] == pytest.approx(0.95) and rec.momentum[2] == pytest.approx(0.9, rel=1e-9)
    assert rec.momentum[4] == pytest.approx(0.85) and rec.momentum[19] == pytest.approx(0.95)
    assert rec.momentum[5] == pytest.approx(0.8510926199633096, rel=1e-9)
    assert rec.lr[4] == pytest.approx(0.1, rel=1e-9)  # the LR peaks where momentum bottoms out


def test_yolox_policy_is_mmdets_schedule():
    """mmdet's lr_config=dict(policy='YOLOX', warmup='exp', warmup_ratio=1, warmup_iters=2,
    num_last_epochs=1, min_lr_ratio=0.05, by_epoch=False): the squared warm-up, the cosine, the
    held end, as mmdet's YOLOXLrUpdaterHook computes them (values from its formulas)."""
    import math

    from raydet.engine.hooks.lr import YOLOXLrUpdaterHook

    class Runner:
        epoch, max_epochs, iters_per_epoch, max_iters, iter = 0, 4, 5, 20, 0
    hook = YOLOXLrUpdaterHook(num_last_epochs=1, min_lr_ratio=0.05, by_epoch=False, warmup="exp", warmup_ratio=1,
                              warmup_iters=2)
    r = Runner()
    assert hook._warmup(0, [0.01]) == [0.01 * (1 / 2) ** 2]
    lrs = []
    for r.iter in range(20):
        lrs.append(hook.get_value(r, 0.01))
    target = 0.01 * 0.05
    expected = [target + 0.5 * (0.01 - target) * (1 + math.cos(math.pi * (i + 1 - 2) / (20 - 2 - 5)))
                if i + 1 < 15 else target for i in range(20)]
    assert lrs == pytest.approx(expected)
