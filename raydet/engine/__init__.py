"""The training engine: runner, hooks, checkpoints, precision. Plain PyTorch; imports no ray."""
from .checkpoint import find_latest_checkpoint, load_file, load_weights
from .dist import get_rank, get_world_size, is_main
from .hooks import *  # noqa: F401,F403
from .hooks import __all__ as _hooks_all
from .inference import evaluate_distributed, inference
from .optim import OPTIMIZERS, build_optimizer
from .precision import Precision
from .runner import Runner

__all__ = ["Runner", "Precision", "build_optimizer", "OPTIMIZERS", "find_latest_checkpoint", "load_file",
           "load_weights", "inference", "evaluate_distributed", "get_rank", "get_world_size",
           "is_main", *_hooks_all]
