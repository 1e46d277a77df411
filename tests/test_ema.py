"""EMA of the weights (mmdet 2.x's ExpMomentumEMAHook / LinearMomentumEMAHook, mmcv's EMAHook)."""
import math

import pytest
import torch

from raydet.run import train_from_config
from raydet.engine import ChaosError, Hook, OptimizerHook, Precision, Runner, load_file
from raydet.engine.hooks import EMAHook, ExpMomentumEMAHook, LinearMomentumEMAHook


class Snapshots(Hook):
    """The weights after each optimizer step (between the optimizer, 40, and the EMA, 49)."""
    priority = 45

    def __init__(self):
        self.weights = []

    def after_train_iter(self, runner):
        self.weights.append({k: v.detach().clone() for k, v in runner.model.state_dict().items()})


def _mse(model, data, train_mode):
    loss = ((model(data["x"]) - data["y"]) ** 2).mean()
    return dict(loss=loss, log_vars=dict(loss=float(loss.detach())), num_samples=len(data["x"]))


def _run(tmp_path, ema_hook, iters=6):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 1))
    runner = Runner(model, _mse, torch.optim.SGD(model.parameters(), lr=0.1), str(tmp_path), max_epochs=1)
    runner.register_hook(OptimizerHook(Precision(None)))
    snaps = Snapshots()
    runner.register_hook(snaps)
    runner.register_hook(ema_hook)
    g = torch.Generator().manual_seed(1)
    batches = [dict(x=torch.randn(4, 4, generator=g), y=torch.randn(4, 1, generator=g)) for _ in range(iters)]
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    runner.run([batches], [("train", 1)])
    return model, ema_hook, initial, snaps.weights


def _expected(initial, weights, momenta, updated):
    ema = {k: v.clone() for k, v in initial.items() if v.dtype.is_floating_point}
    for i, w in enumerate(weights):
        if updated(i):
            for k in ema:
                ema[k] = ema[k] * (1 - momenta(i)) + w[k] * momenta(i)
    return ema


@pytest.mark.parametrize("hook,momenta,updated", [
    (ExpMomentumEMAHook(momentum=0.01, total_iter=4),
     lambda i: 0.99 * math.exp(-(1 + i) / 4) + 0.01, lambda i: True),
    (LinearMomentumEMAHook(momentum=0.5, interval=2, warm_up=3),
     lambda i: min(0.25, (1 + i) / (3 + i)), lambda i: (i + 1) % 2 == 0),
    (EMAHook(momentum=0.3, interval=2, warm_up=2),
     lambda i: min(0.09, (1 + i) / (2 + i)), lambda i: i % 2 == 0),
])
def test_the_average_follows_the_formula_and_is_the_model_after_the_epoch(tmp_path, hook, momenta, updated):
    model, hook, initial, weights = _run(tmp_path, hook)
    expected = _expected(initial, weights, momenta, updated)
    if isinstance(hook, EMAHook):  # mmcv's: parameters only
        expected = {k: v for k, v in expected.items() if "running" not in k}
    final = model.state_dict()
    for k, v in expected.items():  # the epoch ended: the model holds the averages ...
        torch.testing.assert_close(final[k], v, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(hook.ema[k], weights[-1][k])  # ... and the hook the trained weights
    assert hook.swapped and final["1.num_batches_tracked"] == 6  # integer buffers are not averaged


def test_ema_config_resumes_bitwise_mid_epoch_and_is_what_evaluation_sees(make_cfg, tmp_path):
    """mmdet's custom_hooks=[dict(type='ExpMomentumEMAHook', momentum=0.0001, priority=49)]: it acts
    before evaluation; the epoch checkpoint holds the averaged weights as its model; a kill mid-epoch
    resumes exactly (averages included)."""
    ema = dict(type="ExpMomentumEMAHook", resume_from=None, momentum=0.01, total_iter=20, priority=49)
    ckpt = dict(interval=5, by_epoch=False)
    straight = train_from_config(make_cfg(tmp_path / "straight", custom_hooks=[ema], checkpoint_config=ckpt),
                                 validate=True)
    names = [type(h).__name__ for h in straight.hooks]
    assert names.index("ExpMomentumEMAHook") < names.index("EvalHook") < names.index("CheckpointHook")
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=17, action="raise")
    with pytest.raises(ChaosError):
        train_from_config(make_cfg(tmp_path / "killed", custom_hooks=[ema, chaos], checkpoint_config=ckpt),
                          validate=True)
    resumed = train_from_config(make_cfg(tmp_path / "killed", custom_hooks=[ema, chaos], checkpoint_config=ckpt,
                                         auto_resume=True), validate=True)
    assert resumed.resumed_from.endswith("iter_15.pth")  # epoch 2, mid-epoch
    a, b = (load_file(str(w / "latest.pth")) for w in (tmp_path / "straight", tmp_path / "killed"))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    ema_a, ema_b = a["hooks"]["ExpMomentumEMAHook"], b["hooks"]["ExpMomentumEMAHook"]
    assert all(torch.equal(ema_a["ema"][k], ema_b["ema"][k]) for k in ema_a["ema"])
    # the last iteration's checkpoint comes before the epoch's end: trained weights, averages aside
    assert not ema_a["swapped"]
    hook = straight.hooks[names.index("ExpMomentumEMAHook")]
    from raydet.engine.dist import unwrap
    model = unwrap(straight.model).state_dict()  # at the end the model is the average (evaluated, returned)
    assert hook.swapped and not all(torch.equal(model[k], hook.ema[k])
                                    for k in hook.ema)
    assert all(torch.equal(model[k], ema_a["ema"][k]) for k in hook.ema)


def test_mmdets_resume_from_key_is_refused_with_the_way_to_resume(make_cfg):
    from raydet.errors import ConfigError
    with pytest.raises(ConfigError, match="top-level resume_from"):
        ExpMomentumEMAHook(resume_from="work_dirs/x/latest.pth")
