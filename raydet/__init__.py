"""raydet: fault-tolerant object-detection training with mmdetection-2.x configs on Ray Train."""
__version__ = "0.1.0"


def __getattr__(name):
    # ``raydet.train`` and ``raydet.train_detector`` are the Ray launcher's Python API; importing it lazily keeps ``import raydet``
    # (and the Ray-free core) from importing ray.
    if name == "train":
        from .launch import train
        return train
    if name == "train_detector":  # mmdet's train_detector(model, dataset, cfg), on Ray workers
        from .launch import train_detector_on_ray
        return train_detector_on_ray
    raise AttributeError(f"module 'raydet' has no attribute {name!r}")
