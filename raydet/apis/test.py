"""mmdet's ``single_gpu_test``."""
from ..engine.inference import inference


def single_gpu_test(model, data_loader, show=False, progress=True):
    """Predictions for every image of ``data_loader.dataset`` in order (mmdet's result format)."""
    if show:
        raise ValueError("show=True needs a display; raydet tests headless")
    return inference(model, data_loader, progress=progress)
