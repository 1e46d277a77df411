"""Gradient accumulation (mmcv 1.x's GradientCumulativeOptimizerHook): the step equals one over
the larger batch, and a resume inside a group is exact."""
import glob

import pytest
import torch

from raydet.run import train_from_config
from raydet.engine import ChaosError, OptimizerHook, Precision, Runner, load_file


def _mse(model, data, train_mode):
    loss = ((model(data["x"]) - data["y"]) ** 2).mean()
    return dict(loss=loss, log_vars=dict(loss=float(loss.detach())), num_samples=len(data["x"]))


def _batches(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [dict(x=torch.randn(size, 4, generator=g), y=torch.randn(size, 1, generator=g)) for _ in range(n)]


def _train(tmp_path, batches, cumulative_iters=1):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    runner = Runner(model, _mse, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), str(tmp_path),
                    max_epochs=1)
    runner.register_hook(OptimizerHook(Precision(None), grad_clip=dict(max_norm=100.0),
                                       cumulative_iters=cumulative_iters))
    runner.run([batches], [("train", 1)])
    return model


@pytest.mark.parametrize("groups", [[4, 4], [4, 4, 2]])
def test_accumulated_steps_equal_steps_over_the_larger_batch(tmp_path, groups):
    """10 batches of 2 with cumulative_iters=4 step as 3 batches of 8, 8 and 4 (mmcv divides the
    run's last, incomplete group by its own length)."""
    small = _batches(sum(groups), 2)
    big, start = [], 0
    for n in groups:
        big.append({k: torch.cat([b[k] for b in small[start:start + n]]) for k in ("x", "y")})
        start += n
    accumulated = _train(tmp_path / "a", small, cumulative_iters=4)
    plain = _train(tmp_path / "b", big)
    for p, q in zip(accumulated.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert all(p.grad is None for p in accumulated.parameters())  # zeroed after the last step


def test_config_names_and_a_resume_inside_a_group_is_bitwise_exact(make_cfg, tmp_path):
    """mmdet's optimizer_config=dict(type='GradientCumulativeOptimizerHook', cumulative_iters=3),
    killed after iteration 6 and resumed from iteration 4's checkpoint (one iteration into a
    group): the final weights equal the uninterrupted run's bitwise; without the group's partial
    sums in the checkpoint they would not."""
    opt = dict(type="GradientCumulativeOptimizerHook", cumulative_iters=3, grad_clip=dict(max_norm=10, norm_type=2))
    ckpt = dict(interval=4, by_epoch=False)
    base = dict(optimizer_config=opt, checkpoint_config=ckpt, runner=dict(max_epochs=1))
    straight = train_from_config(make_cfg(tmp_path / "straight", **base), validate=False)
    assert straight.hooks[1].cumulative_iters == 3
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=6, action="raise")
    with pytest.raises(ChaosError):
        train_from_config(make_cfg(tmp_path / "killed", custom_hooks=[chaos], **base), validate=False)
    state = load_file(str(tmp_path / "killed" / "iter_4.pth"))
    assert state["ranks"][0]["OptimizerHook"]["grads"]  # iteration 4 is inside the group 4-6
    resumed = train_from_config(make_cfg(tmp_path / "killed", custom_hooks=[chaos], auto_resume=True, **base),
                                validate=False)
    assert resumed.resumed_from.endswith("iter_4.pth")
    final = lambda work: load_file(glob.glob(str(work / "latest.pth"))[0])["state_dict"]  # noqa: E731
    a, b = final(tmp_path / "straight"), final(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a)

    state["ranks"][0]["OptimizerHook"].pop("grads")  # a checkpoint that lost the partial sums ...
    torch.save(state, tmp_path / "nograds.pth")
    lossy = train_from_config(make_cfg(tmp_path / "lossy", resume_from=str(tmp_path / "nograds.pth"), **base),
                              validate=False)
    c = final(tmp_path / "lossy")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # ... ends elsewhere: the test can tell
    assert lossy.iter == straight.iter


def test_cumulative_iters_is_checked_and_belongs_to_its_hook(make_cfg):
    from raydet.config.schema import check_values
    from raydet.run.build import optimizer_hook_config
    from raydet.errors import ConfigError
    with pytest.raises(ConfigError, match=r"optimizer_config.cumulative_iters=0"):
        check_values(make_cfg(optimizer_config=dict(type="GradientCumulativeOptimizerHook", cumulative_iters=0)))
    with pytest.raises(ConfigError, match="belongs to GradientCumulativeOptimizerHook"):
        optimizer_hook_config(make_cfg(optimizer_config=dict(cumulative_iters=2)))
    opt, fp16 = optimizer_hook_config(make_cfg(optimizer_config=dict(
        type="GradientCumulativeFp16OptimizerHook", cumulative_iters=2, loss_scale=256.0)))
    assert opt["cumulative_iters"] == 2 and fp16 == {"loss_scale": 256.0}
