"""The Ray Train launcher: the only raydet package that imports ``ray``.

``train(cfg)`` builds a ``TorchTrainer`` whose run directory is the work_dir; every worker runs
:func:`raydet.launch.worker.train_loop`, the same runner loop as in-process training, and reports
each checkpoint to Ray so that a restarted worker group resumes exactly where it stopped.
"""
from .driver import DeterministicFailure, build_trainer, train, train_detector_on_ray

__all__ = ["train", "train_detector_on_ray", "build_trainer", "DeterministicFailure"]
