"""The model's Python-side training state in each rank's part of a checkpoint."""
from __future__ import annotations

from typing import Callable

from .base import PRIORITIES, Hook


class ModelStateHook(Hook):
    """Carries ``get()`` (a json-able dict: what the model learns while training that is neither
    a parameter nor a buffer, see :mod:`raydet.models.training_state`) in each rank's own part of
    every checkpoint, and gives each rank its own back with ``put(state)`` on resume (nothing when
    the checkpoint has none: the model keeps its initial values)."""

    priority = PRIORITIES["VERY_LOW"]

    def __init__(self, get: Callable[[], dict], put: Callable[[dict], None]):
        self._get, self._put = get, put

    def rank_state_dict(self) -> dict:
        return self._get()

    def load_rank_state_dict(self, state: dict | None) -> None:
        if state:
            self._put(state)
