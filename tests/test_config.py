import glob
import os

import pytest

from raydet.config import dump_config, load_config
from raydet.errors import ConfigError

DEFAULT = "configs/fcos/fcos_gn_tiny_shapes.py"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_typo_names_key_and_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'optimzer' \(did you mean 'optimizer'\?\)"):
        load_config(DEFAULT, {"optimzer.lr": 0.1})


def test_nested_typo_names_dotted_key(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(f"_base_ = ['{__import__('os').path.abspath(DEFAULT)}']\n"
                   "checkpoint_config = dict(intervall=2)\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    msg = str(info.value)
    assert "checkpoint_config.intervall" in msg and "did you mean 'interval'" in msg and str(bad) in msg


def test_typo_in_typed_section_and_pipeline():
    with pytest.raises(ConfigError, match=r"lr_config.pct_strat.*pct_start"):
        load_config(DEFAULT, {"lr_config.pct_strat": 0.2})
    with pytest.raises(ConfigError, match=r"data.train.pipeline.2.img_scal.*img_scale"):
        load_config(DEFAULT, {"data.train.pipeline.2.img_scal": (1, 1)})
    with pytest.raises(ConfigError, match=r"model.type='FCSO' is not in mmdet's models registry.*did you mean 'FCOS'"):
        load_config(DEFAULT, {"model.type": "FCSO"})


def test_base_and_cfg_options_merge():
    cfg = load_config(DEFAULT, {"optimizer.lr": 0.01, "lr_config.max_lr": 0.01, "data.samples_per_gpu": 4,
                                "evaluation.metric": ["bbox"]})
    # from _base_/schedules: kept; from the override: replaced
    assert cfg.optimizer.type == "AdamW" and cfg.optimizer.lr == 0.01 and cfg.optimizer.weight_decay == 0.05
    assert cfg.data.samples_per_gpu == 4 and cfg.data.workers_per_gpu == 1
    assert cfg.model.backbone.channels == (32, 64, 96, 128)
    assert cfg.data.train.pipeline[2] == dict(type="Resize", img_scale=(96, 72), keep_ratio=True)
    assert cfg.runner == dict(type="EpochBasedRunner", max_epochs=3)


def test_delete_key_replaces_base_dict(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(f"_base_ = ['{__import__('os').path.abspath(DEFAULT)}']\n"
                     "lr_config = dict(_delete_=True, policy='CosineAnnealing', min_lr_ratio=0.01)\n")
    cfg = load_config(str(child))
    assert dict(cfg.lr_config) == dict(policy="CosineAnnealing", min_lr_ratio=0.01)


def test_total_epochs_and_runner(tmp_path):
    base = load_config(DEFAULT).to_dict()
    base.pop("runner")
    assert load_config(dict(base, total_epochs=5)).runner.max_epochs == 5
    assert load_config(dict(base, total_epochs=3, runner=dict(max_epochs=3))).runner.max_epochs == 3
    with pytest.raises(ConfigError, match="disagree"):
        load_config(dict(base, total_epochs=4, runner=dict(max_epochs=3)))


@pytest.mark.parametrize("ext", [".py", ".json", ".yaml"])
def test_dump_and_reload_identical(tmp_path, ext):
    cfg = load_config(DEFAULT, {"optimizer.lr": 0.005})
    path = str(tmp_path / f"dumped{ext}")
    dump_config(cfg, path)
    again = load_config(path)
    if ext == ".py":
        assert again.to_dict() == cfg.to_dict()
    else:  # json/yaml have no tuples
        import json
        assert json.loads(json.dumps(again.to_dict())) == json.loads(json.dumps(cfg.to_dict()))


def test_missing_config_file_named():
    with pytest.raises(ConfigError, match="config file not found: nope.py"):
        load_config("nope.py")


def test_cfg_option_dict_over_none_replaces_it():
    """`--cfg-options ray.resources_per_worker="{'CPU': 2}"`: the default is None, not a dict."""
    cfg = load_config(DEFAULT, {"ray.resources_per_worker": {"CPU": 2}, "optimizer": {"lr": 0.2}})
    assert cfg.ray.resources_per_worker == {"CPU": 2}
    assert cfg.optimizer.lr == 0.2 and cfg.optimizer.type == "AdamW"  # a dict over a dict still merges


@pytest.mark.parametrize("path", sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "*", "*.py")) if "_base_" not in p))
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(os.path.join(REPO, path))  # validation translates the model on the meta device
    assert cfg.model.type in ("FasterRCNN", "MaskRCNN", "RetinaNet", "FCOS", "SingleStageDetector")


def test_yaml_config_cannot_run_code_and_inherits_only_yaml(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml \(line 1\).*safe loader"):
        load_config(str(evil))
    assert not marker.exists()
    py_base = tmp_path / "child.yaml"
    py_base.write_text(f"_base_: ['{os.path.join(REPO, DEFAULT)}']\n")
    with pytest.raises(ConfigError, match=r"_base_ .*fcos_gn_tiny_shapes\.py' is not YAML/JSON"):
        load_config(str(py_base))


def test_yaml_config_with_a_yaml_base_merges_like_python(tmp_path):
    full = load_config(DEFAULT)
    base = tmp_path / "base.json"
    import json
    base.write_text(json.dumps(full.to_dict(), default=list))
    child = tmp_path / "child.yml"
    child.write_text("_base_: base.json\noptimizer:\n  lr: 0.004\nlr_config:\n  _delete_: true\n  policy: step\n"
                     "  step: [2]\n")
    cfg = load_config(str(child))
    assert cfg.optimizer.lr == 0.004 and cfg.optimizer.type == full.optimizer.type
    assert cfg.lr_config.to_dict() == dict(policy="step", step=[2])
    assert cfg.model.bbox_head.num_classes == 3
