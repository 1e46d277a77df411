"""mmcv 1.x / mmdet ``Hook`` subclasses in ``custom_hooks`` run unchanged on raydet's runner: they
see mmcv's runner attributes and are called at mmcv's stages in priority order."""
import json

import pytest
import torch

from raydet.run import train_from_config

USER_HOOK = '''
from mmcv.runner import HOOKS, Hook


@HOOKS.register_module()
class RecordingHook(Hook):
    """A user's mmcv hook: writes what mmcv's runner surface shows it."""

    def __init__(self, out):
        self.out, self.seen = out, []

    def before_run(self, runner):
        self.seen.append(dict(stage="before_run", rank=runner.rank, world_size=runner.world_size,
                              max_epochs=runner.max_epochs, work_dir=runner.work_dir, seed=runner.meta["seed"],
                              hooks=[type(h).__name__ for h in runner.hooks]))

    def after_train_iter(self, runner):
        self.seen.append(dict(stage="after_train_iter", epoch=runner.epoch, iter=runner.iter,
                              inner_iter=runner.inner_iter, mode=runner.mode, max_iters=runner.max_iters,
                              loss=float(runner.outputs["loss"]), batches=len(runner.data_loader),
                              end_of_epoch=self.end_of_epoch(runner),
                              has_lr=bool(runner.optimizer.param_groups[0]["lr"]),
                              detector=type(runner.model.module).__name__))

    def after_run(self, runner):
        import json
        with open(self.out, "w") as f:
            json.dump(self.seen, f)
'''


def test_mmcv_and_mmdet_hooks_run_with_mmcvs_runner_surface(make_cfg, tmp_path, monkeypatch):
    (tmp_path / "my_mmcv_hooks.py").write_text(USER_HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "seen.json"
    cfg = make_cfg(tmp_path / "w", custom_imports=dict(imports=["my_mmcv_hooks"]), runner=dict(max_epochs=1),
                   custom_hooks=[dict(type="RecordingHook", out=str(out), priority="VERY_LOW"),
                                 dict(type="CheckInvalidLossHook", interval=1)])  # mmdet's own
    runner = train_from_config(cfg, validate=False)
    seen = json.loads(out.read_text())
    start, iters = seen[0], seen[1:]
    assert start["rank"] == 0 and start["world_size"] == 1 and start["max_epochs"] == 1 and start["seed"] == 0
    assert start["hooks"].index("CheckInvalidLossHook") < start["hooks"].index("RecordingHook")
    assert [s["iter"] for s in iters] == list(range(len(iters))) and [s["inner_iter"] for s in iters] == \
        list(range(len(iters)))
    assert all(s["mode"] == "train" and s["max_iters"] == len(iters) and s["batches"] == len(iters) and s["has_lr"]
               for s in iters)
    assert [s["end_of_epoch"] for s in iters] == [False] * (len(iters) - 1) + [True]
    assert {s["detector"] for s in iters} == {"FCOS"}  # runner.model.module: the detector's attributes
    assert runner.epoch == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the 'cuda' defaults stay on a CUDA machine")
def test_mmdets_cuda_device_defaults_are_the_cpu_without_cuda():
    """mmdet's SyncRandomSizeHook (v2.16's YOLOX configs) and prior generators default to 'cuda'."""
    from raydet.engine.hooks import HOOKS
    hook = HOOKS.build(dict(type="SyncRandomSizeHook", ratio_range=(14, 26), img_scale=(640, 640)), "custom_hooks.0")
    assert hook.device == "cpu"
    from mmdet.core.anchor import AnchorGenerator
    anchors = AnchorGenerator(strides=[8], ratios=[1.0], scales=[4]).grid_priors([(2, 2)])
    assert anchors[0].device.type == "cpu"
