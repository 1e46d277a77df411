"""raydet: fault-tolerant object-detection training with mmdetection-2.x configs on Ray Train."""
__version__ = "0.1.0"


def __getattr__(name):
    # ``raydet.train`` is the Ray launcher's Python API; importing it lazily keeps ``import raydet``
    # (and the Ray-free core) from importing ray.
    if name == "train":
        from .launch import train
        return train
    raise AttributeError(f"module 'raydet' has no attribute {name!r}")
