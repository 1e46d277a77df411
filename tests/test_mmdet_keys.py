"""mmdet 2.x keys honoured by name: NumClassCheckHook, custom_imports, optimizer_config.type."""
import logging
import textwrap

import pytest

from raydet.run import train_from_config
from raydet.run.build import optimizer_hook_config
from raydet.config import load_config
from raydet.errors import ConfigError

from .conftest import TINY_MODEL, tiny_config, with_classes


def test_num_class_check_hook_refuses_a_model_with_other_classes(make_cfg, tmp_path):
    hook = [dict(type="NumClassCheckHook")]
    with pytest.raises(ConfigError, match=r"model.bbox_head num_classes=4 does not match the 3 CLASSES of ShapesDataset "
                                          r"\('rectangle', 'ellipse', 'triangle'\)"):
        train_from_config(make_cfg(tmp_path / "bad", model=with_classes(TINY_MODEL, 4), custom_hooks=hook),
                          validate=False)
    runner = train_from_config(make_cfg(tmp_path / "ok", runner=dict(max_epochs=1), custom_hooks=hook), validate=False)
    assert runner.epoch == 1


def test_default_runtime_has_mmdets_num_class_check():
    from benchmarks.common import CONFIG
    assert dict(type="NumClassCheckHook") in load_config(CONFIG).custom_hooks


def test_custom_imports_register_the_users_hook(shapes_root, tmp_path, monkeypatch):
    (tmp_path / "my_hooks.py").write_text(textwrap.dedent('''
        from raydet.engine.hooks import HOOKS, Hook

        @HOOKS.register()
        class CountEpochsHook(Hook):
            def __init__(self, path):
                self.path = path

            def after_train_epoch(self, runner):
                with open(self.path, "a") as f:
                    f.write(f"{runner.epoch + 1}\\n")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "epochs.txt"
    cfg = tiny_config(shapes_root, tmp_path / "w", custom_imports=dict(imports=["my_hooks"]),
                      custom_hooks=[dict(type="CountEpochsHook", path=str(out))])
    train_from_config(load_config(cfg), validate=False)
    assert out.read_text().split() == ["1", "2"]


def test_custom_imports_that_fail_name_the_module(shapes_root, tmp_path, caplog):
    cfg = tiny_config(shapes_root, tmp_path / "w", custom_imports=dict(imports=["no_such_module_xyz"]))
    with pytest.raises(ConfigError, match="custom_imports: cannot import 'no_such_module_xyz'"):
        load_config(cfg)
    cfg["custom_imports"]["allow_failed_imports"] = True
    with caplog.at_level(logging.WARNING, logger="raydet"):
        load_config(cfg)
    assert "no_such_module_xyz failed to import and is skipped" in caplog.text
    with pytest.raises(ConfigError, match="custom_imports.import"):
        load_config(dict(cfg, custom_imports={"imports": [], "import": 1}))


def test_optimizer_config_type_is_honoured_or_refused(shapes_root, tmp_path):
    base = tiny_config(shapes_root, tmp_path / "w")
    fp16_hook = load_config(dict(base, optimizer_config=dict(type="Fp16OptimizerHook", grad_clip=None)))
    opt, fp16 = optimizer_hook_config(fp16_hook)
    assert fp16 == dict(loss_scale=512.0) and opt == dict(grad_clip=None)
    both = load_config(dict(base, optimizer_config=dict(type="Fp16OptimizerHook", loss_scale=256.0),
                            fp16=dict(loss_scale="dynamic")))
    assert optimizer_hook_config(both)[1] == dict(loss_scale="dynamic")  # the fp16 section wins, as in mmdet
    dist = load_config(dict(base, optimizer_config=dict(type="DistOptimizerHook", grad_clip=dict(max_norm=35),
                                                        coalesce=True, bucket_size_mb=-1)))
    assert optimizer_hook_config(dist) == (dict(grad_clip=dict(max_norm=35)), None)
    with pytest.raises(ConfigError, match="optimizer_config.type='ApexOptimizerHook' is not supported"):
        load_config(dict(base, optimizer_config=dict(type="ApexOptimizerHook")))
    with pytest.raises(ConfigError, match="optimizer_config.loss_scale belongs to Fp16OptimizerHook"):
        optimizer_hook_config(load_config(dict(base, optimizer_config=dict(loss_scale=512.0))))


def test_classwise_logs_each_categorys_ap(shapes_root, caplog):
    from raydet.data import ShapesDataset

    from .conftest import TEST_PIPELINE
    from .test_dataset import _noisy_results
    ds = ShapesDataset("val", TEST_PIPELINE, root=shapes_root, test_mode=True)
    with caplog.at_level(logging.INFO, logger="raydet"):
        ds.evaluate(_noisy_results(ds), metric="bbox", classwise=True)
    import re
    rows = re.findall(r"\| (rectangle|ellipse|triangle) +\| (\d\.\d{3}) \|", caplog.text)
    assert [r[0] for r in rows] == ["rectangle", "ellipse", "triangle"]


def test_keys_without_effect_are_logged_once_and_process_keys_are_honoured(make_cfg, tmp_path, caplog):
    import cv2
    before = cv2.getNumThreads()
    cfg = make_cfg(tmp_path / "w", runner=dict(max_epochs=1), gpu_ids=[0], dist_params=dict(backend="nccl"),
                   opencv_num_threads=1, mp_start_method="spawn",
                   evaluation=dict(interval=1, metric="bbox", gpu_collect=True),
                   log_config=dict(interval=1, hooks=[dict(type="TextLoggerHook", reset_flag=True)]))
    cfg.data.workers_per_gpu = 1
    try:
        with caplog.at_level(logging.INFO, logger="raydet"):
            runner = train_from_config(cfg, validate=True)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
    for key in ("gpu_ids", "dist_params", "evaluation.gpu_collect", "log_config.hooks.reset_flag"):
        assert caplog.text.count(f"config key {key}: no effect") == 1, key
    loader = runner.data_loader
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    assert loader.worker_init_fn.keywords == dict(opencv_threads=1)
