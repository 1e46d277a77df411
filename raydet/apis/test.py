"""mmdet's ``single_gpu_test``, and the test set of ``raydet test`` on one rank or all."""
import torch

from ..engine.dist import gather_objects, get_rank, get_world_size
from ..engine.inference import inference
from ..errors import DataError


def single_gpu_test(model, data_loader, show=False, progress=True):
    """Predictions for every image of ``data_loader.dataset`` in order (mmdet's result format)."""
    if show:
        raise ValueError("show=True needs a display; raydet tests headless")
    return inference(model, data_loader, progress=progress)


def build_test(cfg, checkpoint: str, logger=None, dataset=None):
    """``(dataset, model)`` for ``raydet test``: ``data.test`` in test mode (``dataset``, when
    the caller built it already) and the detector with every tensor of ``checkpoint`` (strict:
    :class:`CheckpointError` otherwise), its class names from the checkpoint's meta, on this
    process's device."""
    from ..data import build_dataset
    from ..run.build import trained_detector
    dataset = build_dataset(cfg.data.test, test_mode=True) if dataset is None else dataset
    model, saved = trained_detector(cfg, checkpoint, logger)
    from ..engine.hooks.num_class import check_num_classes
    check_num_classes(model, dataset, logger)  # label i must be the dataset's class i
    if saved and tuple(saved) != tuple(dataset.CLASSES):
        raise DataError(f"{checkpoint} was trained on the classes {tuple(saved)}, the test set has "
                        f"{tuple(dataset.CLASSES)}: set data.test.classes to the checkpoint's")
    model.CLASSES = list(saved or dataset.CLASSES)
    if torch.cuda.is_available():
        model.to(torch.device("cuda", torch.cuda.current_device()))
    return dataset, model


def predict_test_set(cfg, dataset, model, progress: bool = True) -> list | None:
    """Every rank predicts its contiguous shard of ``dataset`` (one image per batch, as mmdet's
    test does); rank 0 returns all results in dataset order, the others ``None``. Every rank
    must call this (a gather); in one process it is the whole set."""
    from ..data import build_dataloader
    loader = build_dataloader(dataset, 1, cfg.data.get("workers_per_gpu", 2), num_replicas=get_world_size(),
                              rank=get_rank(), shuffle=False, persistent_workers=False)
    parts = gather_objects(inference(model, loader, progress=progress))
    return [r for part in parts for r in part] if get_rank() == 0 else None
