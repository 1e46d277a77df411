"""mmcv 1.x's ProfilerHook: Chrome traces of the profiled iterations, in the work_dir."""
import glob
import json
import logging
import re

import pytest

from raydet.run import train_from_config


def _steps(path):
    events = json.load(open(path))["traceEvents"]
    return sorted({int(m[1]) for e in events for m in [re.fullmatch(r"ProfilerStep#(\d+)", e.get("name", ""))] if m})


def test_the_first_iterations_are_profiled_into_a_chrome_trace(make_cfg, tmp_path, caplog):
    hook = dict(type="ProfilerHook", by_epoch=False, profile_iters=3, activities=["cpu", "cuda"], record_shapes=True)
    with caplog.at_level(logging.INFO, logger="raydet"):
        train_from_config(make_cfg(tmp_path / "w", custom_hooks=[hook], runner=dict(max_epochs=1)), validate=False)
    assert _steps(tmp_path / "w" / "profiler" / "trace.json") == [0, 1, 2]  # the 3 iterations, no more
    assert "profiler: profiling iterations 1-3 on rank 0" in caplog.text


def test_tb_trace_with_a_schedule_and_a_table_in_the_log(make_cfg, tmp_path):
    tb = dict(type="ProfilerHook", by_epoch=False, profile_iters=4, activities=["cpu"],
              schedule=dict(wait=1, warmup=1, active=2), on_trace_ready=dict(type="tb_trace"))
    train_from_config(make_cfg(tmp_path / "tb", custom_hooks=[tb], runner=dict(max_epochs=1)), validate=False)
    (trace,) = glob.glob(str(tmp_path / "tb" / "profiler" / "*.pt.trace.json"))
    assert _steps(trace) == [2, 3]  # wait 1, warm up 1, record 2
    table = dict(type="ProfilerHook", by_epoch=True, profile_iters=1, activities=["cpu"],
                 on_trace_ready=dict(type="log_trace", sort_by="cpu_time_total", row_limit=5))
    train_from_config(make_cfg(tmp_path / "log", custom_hooks=[table], runner=dict(max_epochs=1)), validate=False)
    log = open(glob.glob(str(tmp_path / "log" / "*.log"))[0]).read()
    assert "profiler:\n" in log and "Self CPU" in log


def test_profiler_keys_are_checked(make_cfg, tmp_path):
    from raydet.errors import ConfigError
    with pytest.raises(ConfigError, match="activities"):
        train_from_config(make_cfg(tmp_path / "a", custom_hooks=[dict(type="ProfilerHook", activities=["gpu"])]))
    with pytest.raises(ConfigError, match="profile_iters=99 exceeds the run's 2 epochs"):
        train_from_config(make_cfg(tmp_path / "b", custom_hooks=[dict(type="ProfilerHook", profile_iters=99)]),
                          validate=False)
