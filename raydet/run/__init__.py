"""A run: its plan (where it lives, where it starts), its built parts, and ``train(parts, plan)``.

Data flows config -> :func:`plan_run` -> :func:`build_parts` -> :func:`train`; the launchers
(``raydet.cli``'s in-process one, ``raydet.launch``'s Ray workers, mmdet's ``train_detector``)
only decide where that happens.
"""
from .build import Parts, build_parts
from .plan import RunPlan, choose_start, plan_run
from .train import build_from_config, make_runner, train, train_from_config

__all__ = ["RunPlan", "plan_run", "choose_start", "Parts", "build_parts", "build_from_config", "make_runner", "train",
           "train_from_config"]
