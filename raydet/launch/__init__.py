"""The Ray Train launcher: the only raydet package that imports ``ray``.

``train(cfg)`` builds a ``TorchTrainer`` whose run directory is the work_dir; every worker runs
:func:`raydet.launch.worker.train_loop`, the same runner loop as in-process training, and reports
each checkpoint to Ray so that a restarted worker group resumes exactly where it stopped.
"""
import os
import sys


def _keep_a_local_instance_on_loopback() -> None:
    """Make a Ray instance this process starts listen on 127.0.0.1 only (Ray otherwise binds the
    machine's interface address). Ray reads the setting once, when ``ray`` is imported, so this
    runs before raydet imports it, and only where ``ray.init()`` would start a new instance:
    not when ``ray`` is already imported (the caller's own setup stands), not with
    ``RAY_ADDRESS``, and not on a node where ``ray start`` recorded a cluster (``ray.init()``
    joins it, as this node, whose address must stay the real one)."""
    if "ray" in sys.modules or os.environ.get("RAY_ADDRESS"):
        return
    temp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    if os.path.exists(os.path.join(temp, "ray", "ray_current_cluster")):
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


_keep_a_local_instance_on_loopback()

from .driver import DeterministicFailure, build_trainer, test_on_ray, train, train_detector_on_ray  # noqa: E402

__all__ = ["train", "train_detector_on_ray", "build_trainer", "test_on_ray", "DeterministicFailure"]
