"""raydet: fault-tolerant object-detection training with mmdetection-2.x configs on Ray Train."""
from ._version import __version__  # noqa: E402,F401

import logging as _logging
import warnings as _warnings

# mmcv 1.7.2 announces mmcv 2.0 at every import; raydet pins 1.x on purpose
_warnings.filterwarnings("ignore", message="On January 1, 2023, MMCV will release v2.0.0", category=UserWarning)
# mmdet's anchor and point generators call torch.meshgrid without indexing= (its 'ij' default is theirs)
_warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release", category=UserWarning)
# mmcv imports torch.utils.cpp_extension, which warns on every CPU-only machine that it found no CUDA
_logging.getLogger("torch.utils.cpp_extension").setLevel(_logging.ERROR)

from .ops import install as _install_ops  # noqa: E402

_install_ops()  # mmcv 1.x's compiled op table, before anything imports mmcv.ops or mmdet


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
