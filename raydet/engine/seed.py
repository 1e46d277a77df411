"""Seeding a process: mmdet's ``set_random_seed``."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed ``random``, numpy, torch and every CUDA device. ``deterministic`` also sets
    ``cudnn.deterministic=True``, ``cudnn.benchmark=False`` and
    ``torch.use_deterministic_algorithms(True)``: a CPU run is then bitwise repeatable (on CUDA
    the algorithms without a deterministic kernel only warn)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
