"""Every other dataset of mmdet's ``DATASETS`` (LVIS, Cityscapes, WIDER Face, DeepFashion, COCO
panoptic, ``MultiImageMixDataset``, a user's own), behind raydet's sample keys.

raydet's own COCO and VOC datasets hold their annotations in the compact, cached index; a type
they do not cover is mmdet's own class, built by mmdet's ``build_dataset`` and wrapped by
:class:`MMDetDataset`: indexing by a :class:`~raydet.data.dataset.SampleKey` runs mmdet's
``__getitem__`` with the global generators seeded from ``(seed, epoch, index, stream)``, as
raydet's datasets do, so the samples are the same whichever rank or loader process draws them,
and a resume is exact. Everything else (``CLASSES``, ``flag``, ``evaluate``, ``data_infos``) is the
mmdet dataset's own.
"""
from __future__ import annotations

from ..errors import ConfigError, DataError
from .dataset import as_key
from .pipeline import Sample, seeded


class MMDetDataset:
    """``dataset`` (an mmdet dataset) indexed by sample keys; see the module doc."""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        if name in ("dataset", "seed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        key = as_key(key)
        with seeded(self.seed, key.epoch, key.index, key.stream):
            try:
                out = self.dataset[key.index]
            except (DataError, IndexError):
                raise
            except Exception as exc:  # mmdet's loaders raise many types; name the sample once
                name = self._name(key.index)
                raise DataError(f"{type(self.dataset).__name__} sample {key.index}{name}: {type(exc).__name__}: "
                                f"{exc}") from exc
        if out is None:  # a test-mode mmdet dataset returns what its pipeline returns, None included
            raise DataError(f"{type(self.dataset).__name__}: the pipeline dropped sample {key.index}{self._name(key.index)}")
        return Sample.of(out)

    def _name(self, index: int) -> str:
        infos = getattr(self.dataset, "data_infos", None)
        try:
            return f" ({infos[index]['filename']})" if infos is not None else ""
        except (IndexError, KeyError, TypeError):
            return ""


def build_mmdet_dataset(cfg: dict, seed: int, where: str, test_mode: bool | None = None) -> MMDetDataset:
    """mmdet's ``build_dataset(cfg)`` (its wrappers and every dataset of its registry), wrapped;
    the builders' refusals become one :class:`ConfigError` naming ``where``."""
    from mmcv import ConfigDict
    from mmdet.datasets import build_dataset
    defaults = None if test_mode is None else dict(test_mode=test_mode)
    try:
        dataset = build_dataset(ConfigDict(cfg), defaults)
    except FileNotFoundError as exc:
        from ..errors import MissingFileError
        raise MissingFileError(f"{where}: {exc}", getattr(exc, "filename", "") or "") from None
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{where} ({cfg.get('type')}): {type(exc).__name__}: {exc}") from None
    return MMDetDataset(dataset, seed)
