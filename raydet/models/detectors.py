"""torchvision detectors behind mmdet 2.x's model contract.

``model(img, img_metas, return_loss=True, gt_bboxes=[...], gt_labels=[...], gt_masks=[...])``
returns a dict of scalar losses. ``model(img, img_metas, return_loss=False)`` returns, per image,
a list over classes of float32 ``[N, 5]`` arrays ``(x1, y1, x2, y2, score)`` in original image
pixels (for Mask R-CNN a tuple ``(bbox_result, segm_result)`` with ``segm_result[c]`` a list of
boolean ``HxW`` masks). raydet's pipeline owns resizing and normalisation, so the torchvision
model's ``GeneralizedRCNNTransform`` is replaced by a pass-through that only reports each image's
valid size (``img_shape``) inside the padded batch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import batched_nms

# torchvision's loss names -> mmdet's (the log keys mmdet users read)
LOSS_NAMES = {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_bbox",
              "classification": "loss_cls", "bbox_regression": "loss_bbox"}


class PassThroughTransform(nn.Module):
    """Stands in for ``GeneralizedRCNNTransform``: no resize, no normalisation.

    The wrapper sets ``image_sizes`` (the ``img_shape`` of each image) before each call."""

    def __init__(self):
        super().__init__()
        self.image_sizes: list[tuple[int, int]] = []

    def forward(self, images, targets=None):
        return ImageList(images, list(self.image_sizes)), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        return result


class Detector(nn.Module):
    """Wraps a torchvision detector. ``label_offset``: 1 where the torchvision model reserves
    class 0 for the background (R-CNN, SSD), 0 for sigmoid heads (RetinaNet, FCOS).
    ``tta_iou``/``max_per_img`` merge test-time augmentations; ``mask_thr`` binarises masks.
    ``checks_classes``: whether ``NumClassCheckHook`` compares ``num_classes`` with the dataset's."""

    checks_classes = True

    def __init__(self, detector: nn.Module, num_classes: int, label_offset: int = 1, with_mask: bool = False,
                 tta_iou: float = 0.5, max_per_img: int = 100, mask_thr: float = 0.5):
        super().__init__()
        detector.transform = PassThroughTransform()
        self.detector, self.num_classes, self.with_mask = detector, num_classes, with_mask
        self.label_offset, self.tta_iou, self.max_per_img, self.mask_thr = label_offset, tta_iou, max_per_img, mask_thr
        self.CLASSES = None

    def adapt_state_dict(self, state: dict, source: str) -> dict:
        """``state`` under this model's names: an mmdet 2.x zoo checkpoint is converted (see
        :mod:`raydet.models.weights`), a torchvision detection checkpoint gets the ``detector.``
        prefix, raydet's own is returned as is."""
        from .weights import TORCHVISION_PREFIXES, from_mmdet, is_mmdet_state
        if is_mmdet_state(state):
            return from_mmdet(self, state, source)
        if any(k.startswith(TORCHVISION_PREFIXES) for k in state) and not any(k.startswith("detector.") for k in state):
            return {f"detector.{k}": v for k, v in state.items()}
        return state

    def show_result(self, img, result, score_thr: float = 0.3, out_file: str | None = None, **kwargs):
        """mmdet's ``BaseDetector.show_result``: ``result`` drawn on ``img`` with this model's
        ``CLASSES`` (:func:`raydet.visualization.draw_det_result`, which takes ``thickness``,
        ``font_scale``, ``mask_alpha``); the drawn BGR image, also written to ``out_file``."""
        from ..visualization import draw_det_result
        names = list(getattr(self, "CLASSES", None) or [str(i) for i in range(self.num_classes)])
        return draw_det_result(img, result, names, score_thr=score_thr, out_file=out_file, **kwargs)

    def forward(self, img, img_metas, return_loss=True, **kwargs):
        if return_loss:
            return self.forward_train(img, img_metas, **kwargs)
        return self.forward_test(img, img_metas, **kwargs)

    def _run(self, img: torch.Tensor, img_metas, targets=None):
        self.detector.transform.image_sizes = [tuple(m["img_shape"][:2]) for m in img_metas]
        return self.detector(img, targets)

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_masks=None, gt_bboxes_ignore=None):
        """``img``: float ``[B, 3, H, W]``; ``gt_bboxes[i]``: ``[N_i, 4]`` pixels of the resized image;
        ``gt_labels[i]``: ``[N_i]`` in ``[0, num_classes)``; ``gt_masks[i]``: ``uint8 [N_i, H, W]``."""
        targets = []
        for i, (boxes, labels) in enumerate(zip(gt_bboxes, gt_labels)):
            t = dict(boxes=boxes.to(img.device, torch.float32), labels=labels.to(img.device) + self.label_offset)
            if self.with_mask:
                if gt_masks is None:
                    raise ValueError("Mask R-CNN needs gt_masks: add with_mask=True to LoadAnnotations "
                                     "and 'gt_masks' to Collect.keys")
                t["masks"] = gt_masks[i].to(img.device)
            targets.append(t)
        losses = self._run(img, img_metas, targets)
        # mmdet's parse_losses sums the entries whose key contains "loss"; "acc" is only logged
        return {LOSS_NAMES.get(k, k): v for k, v in losses.items()}

    @torch.no_grad()
    def forward_test(self, img, img_metas, rescale=True, **_):
        """``img`` is a batch tensor, or a list of them (one per test-time augmentation, with
        ``img_metas`` a matching list); augmentations are merged by class-wise NMS."""
        if isinstance(img, torch.Tensor):
            img, img_metas = [img], [img_metas]
        if len(img) > 1 and self.with_mask:
            raise ValueError("test-time augmentation is not supported for Mask R-CNN: "
                             "use one scale and flip=False in MultiScaleFlipAug")
        per_aug = [self._run(i, m) for i, m in zip(img, img_metas)]
        results = []
        for b in range(len(img_metas[0])):
            boxes, scores, labels, masks = [], [], [], []
            for dets, metas in zip(per_aug, img_metas):
                meta = metas[b]
                d = dets[b]
                keep = d["labels"] >= self.label_offset
                box = d["boxes"][keep].float()
                if meta.get("flip"):
                    box = _unflip(box, meta["img_shape"], meta["flip_direction"])
                if rescale:
                    box = box / box.new_tensor(np.asarray(meta["scale_factor"], np.float32))
                    h, w = meta["ori_shape"][:2]
                    box[:, 0::2] = box[:, 0::2].clamp(0, w)
                    box[:, 1::2] = box[:, 1::2].clamp(0, h)
                boxes.append(box)
                scores.append(d["scores"][keep].float())
                labels.append(d["labels"][keep] - self.label_offset)
                if self.with_mask:
                    m = d["masks"][keep].float()
                    if meta.get("flip") and meta["flip_direction"] in ("horizontal", "diagonal"):
                        m = m.flip(-1)
                    if meta.get("flip") and meta["flip_direction"] in ("vertical", "diagonal"):
                        m = m.flip(-2)
                    shape = meta["ori_shape"][:2] if rescale else meta["img_shape"][:2]
                    m = paste_masks_in_image(m, box, tuple(shape)) if len(m) else m.new_zeros((0, 1, *shape))
                    masks.append(m[:, 0] > self.mask_thr)
            box, score, label = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            if len(per_aug) > 1:
                keep = batched_nms(box, score, label, self.tta_iou)[: self.max_per_img]
                box, score, label = box[keep], score[keep], label[keep]
            dets = torch.cat([box, score[:, None]], 1).cpu().numpy().astype(np.float32)
            label_np = label.cpu().numpy()
            bbox_result = [dets[label_np == c] for c in range(self.num_classes)]
            if self.with_mask:
                mask_np = torch.cat(masks).cpu().numpy()
                segm = [list(mask_np[label_np == c]) for c in range(self.num_classes)]
                results.append((bbox_result, segm))
            else:
                results.append(bbox_result)
        return results


def _unflip(box: torch.Tensor, img_shape, direction: str) -> torch.Tensor:
    h, w = img_shape[:2]
    out = box.clone()
    if direction in ("horizontal", "diagonal"):
        out[:, 0], out[:, 2] = w - box[:, 2], w - box[:, 0]
    if direction in ("vertical", "diagonal"):
        out[:, 1], out[:, 3] = h - box[:, 3], h - box[:, 1]
    return out
