"""Typed hooks of the runner, in mmcv 1.x's priority order."""
from .base import HOOKS, PRIORITIES, Hook, get_priority
from .chaos import ChaosError, ChaosHook
from .checkpoint import CheckpointHook, ReportHook
from .ema import BaseEMAHook, EMAHook, ExpMomentumEMAHook, LinearMomentumEMAHook
from .evaluation import EvalHook
from .logger import LogBuffer, LoggerHook, TensorboardLoggerHook, TextLoggerHook
from .lr import (LR_POLICIES, MOMENTUM_POLICIES, CosineAnnealingLrUpdaterHook,
                 CosineAnnealingMomentumUpdaterHook, CyclicMomentumUpdaterHook, LrUpdaterHook,
                 MomentumUpdaterHook, OneCycleLrUpdaterHook, StepLrUpdaterHook, build_lr_hook)
from .num_class import NumClassCheckHook
from .optimizer import OptimizerHook
from .profiler import ProfilerHook
from .timer import DistSamplerSeedHook, IterTimerHook
from .yolox import YOLOXModeSwitchHook

__all__ = ["HOOKS", "PRIORITIES", "Hook", "get_priority", "CheckpointHook", "EvalHook", "LogBuffer",
           "LoggerHook", "TextLoggerHook", "TensorboardLoggerHook", "LR_POLICIES", "MOMENTUM_POLICIES",
           "LrUpdaterHook", "MomentumUpdaterHook", "StepLrUpdaterHook", "CosineAnnealingLrUpdaterHook",
           "OneCycleLrUpdaterHook", "CosineAnnealingMomentumUpdaterHook", "CyclicMomentumUpdaterHook",
           "build_lr_hook", "OptimizerHook", "IterTimerHook", "DistSamplerSeedHook", "ChaosHook",
           "ChaosError", "ReportHook", "NumClassCheckHook", "BaseEMAHook", "EMAHook", "ExpMomentumEMAHook",
           "LinearMomentumEMAHook", "ProfilerHook", "YOLOXModeSwitchHook"]
