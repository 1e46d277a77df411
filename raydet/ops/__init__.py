"""mmcv 1.x's compiled op table (``mmcv._ext``), served by torchvision and plain PyTorch.

mmcv 1.7.2 installed without its compiled ops (``MMCV_WITH_OPS=0``: the only mmcv 1.x that builds
for this torch) imports ``mmcv._ext`` at ``import mmcv.ops``, and so does every mmdet model
module. :func:`install` puts :mod:`raydet.ops.table` there. Importing :mod:`raydet` installs it;
a program that imports ``mmdet.apis`` or ``mmcv.ops`` itself must import raydet (or call
``raydet.ops.install()``) first. Served: ``docs/ops.md``; any other op raises
:class:`OpNotServedError` naming it when called (never at import).
"""
from __future__ import annotations

import sys

from .table import SERVED, OpNotServedError

EXT = "mmcv._ext"


def install() -> None:
    """Make ``import mmcv._ext`` give raydet's table (idempotent). A compiled ``mmcv._ext`` (an
    mmcv-full install) is left in place: its kernels are mmcv's own."""
    if EXT in sys.modules:
        return
    import glob
    import importlib.util
    import os
    spec = importlib.util.find_spec("mmcv")  # finds the package without importing it
    if spec is None:
        return
    for folder in spec.submodule_search_locations or []:
        if glob.glob(os.path.join(folder, "_ext.*")):
            return
    from . import table
    sys.modules[EXT] = table


__all__ = ["install", "OpNotServedError", "SERVED"]
