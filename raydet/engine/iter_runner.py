"""mmcv 1.x's ``IterBasedRunner``: a run of ``max_iters`` iterations over an endless data stream.

The stream is the training loader's epoch sampler run epoch after epoch (``set_epoch(e)`` at each
pass, as mmcv's ``IterLoader`` does), so the data a run sees is what the epoch runner would see,
batch for batch, and a checkpoint records the same position: (data epoch, global batches of it
trained). A resume, on the same or another number of workers, continues the same sequence of
batches (the rest of the data epoch is re-sharded over the new ranks). Checkpoints are
``iter_N.pth``.
"""
from __future__ import annotations

import time

import torch

from ..errors import DataError
from .dist import get_world_size
from .runner import Runner


class _Stream:
    """Batches of ``loader`` without end. ``train``: the sampler is set to the runner's data epoch
    and position at each pass, and the runner's epoch advances when a pass ends."""

    def __init__(self, runner: "IterBasedRunner", loader, train: bool):
        self.runner, self.loader, self.train, self.it = runner, loader, train, None

    def next(self):
        runner = self.runner
        for _ in range(2):  # a pass that ends at once is followed by a fresh one
            if self.it is None:
                sampler = getattr(self.loader, "sampler", None)
                if self.train and hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(runner.epoch, runner.start_batch)
                self.it = iter(self.loader)
            try:
                return next(self.it)
            except StopIteration:
                self.it = None
                if self.train:
                    runner._next_data_epoch()
        raise DataError(f"the {'training' if self.train else 'validation'} loader yields no batch")


class IterBasedRunner(Runner):
    """Runs ``workflow`` until ``max_iters`` training iterations are done; its entries count
    iterations: ``[('train', N), ('val', M)]`` alternates ``N`` training iterations with ``M``
    validation batches (losses without gradients, logged as one val record), as mmcv does.

    ``epoch`` is the data epoch the stream is in (mmcv's ``IterLoader.epoch``); ``iter`` counts
    training iterations; ``inner_iter`` counts within the current workflow phase. Epoch hooks are
    not called (mmcv 1.x calls only the generic ``before_epoch``/``after_epoch`` there, which
    raydet's typed hooks do not have): hooks act by iteration (``by_epoch=False``).
    """

    def __init__(self, model, batch_processor, optimizer, work_dir: str, max_iters: int, **kwargs):
        super().__init__(model, batch_processor, optimizer, work_dir, max_epochs=None, **kwargs)
        self._max_iters = int(max_iters)

    def _set_length(self) -> None:
        pass  # max_iters is given; max_epochs stays None

    def _length(self) -> str:
        return f"{self._max_iters} iterations"

    def _next_data_epoch(self) -> None:
        self._epoch += 1
        self.start_batch = 0

    def _loop(self, data_loaders: list, workflow: list[tuple[str, int]]) -> None:
        streams = [_Stream(self, loader, phase == "train") for (phase, _), loader in zip(workflow, data_loaders)]
        if not any(phase == "train" for phase, _ in workflow):
            raise ValueError("IterBasedRunner needs a 'train' phase in the workflow")
        while self._iter < self._max_iters:
            for (phase, iters), stream in zip(workflow, streams):
                if phase == "train":
                    self._train_phase(stream, iters)
                else:
                    self._val_phase(stream, iters)

    def _train_phase(self, stream: _Stream, iters: int) -> None:
        self.model.train()
        self.mode, self.data_loader = "train", stream.loader
        tick = time.perf_counter()
        for i in range(iters):
            if self._iter >= self._max_iters:
                break
            self._inner_iter = i
            self.data_batch = stream.next()
            self.call_hook("before_train_iter")
            self.run_iter(self.data_batch, train_mode=True)
            self.call_hook("after_train_iter")
            self.log_buffer.clear_output()
            self._iter += 1
            self.start_batch += get_world_size()
            tock = time.perf_counter()
            self.step_seconds = tock - tick if self.step_seconds is None else 0.8 * self.step_seconds + 0.2 * (tock - tick)
            tick = tock
        self.data_batch = None

    @torch.no_grad()
    def _val_phase(self, stream: _Stream, iters: int) -> None:
        """``iters`` validation batches, as :meth:`Runner.val` runs a whole loader."""
        self.model.train()
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.eval()
        self.mode, self.data_loader = "val", stream.loader
        self.call_hook("before_val_epoch")
        for i in range(iters):
            self._inner_iter = i
            data_batch = stream.next()
            self.call_hook("before_val_iter")
            self.run_iter(data_batch, train_mode=False)
            self.call_hook("after_val_iter")
        self.call_hook("after_val_epoch")
        self.log_buffer.clear_output()

    def _sampler_position(self, done_epochs: int) -> dict:
        # start_batch counts the global batches of the data epoch trained before this iteration
        done = self.start_batch + (get_world_size() if self._stage == "after_train_iter" else 0)
        return dict(epoch=self._epoch, start_batch=done)
