"""The detection training loop: Faster R-CNN losses plus the weighted state loss, per component.

Plain and explicit, like torchvision's detection reference: AdamW, ReduceLROnPlateau on the
validation loss, mixed precision on CUDA, flips that move the boxes, the best epoch by a
validation metric (COCO mAP by default), early stopping, and a state saved after every epoch so
an interrupted run resumes (visionpipe.core.resume).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from visionpipe.core.batches import batches
from visionpipe.core.distributed import Dist
from visionpipe.core.engine import TrainHooks
from visionpipe.tasks.detection.model.dataset import DetectionSet, augment, to_coco_results
from visionpipe.tasks.detection.model.metrics import evaluate_coco, match_detections, state_metrics

log = logging.getLogger(__name__)

#: the detector's own losses, logged one by one; the total adds the weighted state loss
DETECTION_LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
LOSSES = (*DETECTION_LOSSES, "loss_state")


def total_loss(losses: dict[str, torch.Tensor], state_weight: float) -> torch.Tensor:
    """Detection losses + ``state_weight`` x state cross-entropy (when there is a state head)."""
    total = sum(losses[k] for k in DETECTION_LOSSES)
    return total + state_weight * losses["loss_state"] if "loss_state" in losses else total


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """Training-mode forward (the detector only returns losses in train mode) with batch norm
    statistics frozen, no gradients and a fixed sampling seed: a validation loss that does not
    change the model and is the same for the same weights."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    model.eval()


def _to_device(target: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in target.items()}


def mean_losses(
    model: nn.Module,
    data: DetectionSet,
    batch_size: int,
    device: torch.device,
    state_weight: float,
) -> dict[str, float]:
    """Each loss component (and the total) averaged over ``data``, without training."""
    has_states = bool(data.targets) and "states" in data.targets[0]
    sums = dict.fromkeys((*(LOSSES if has_states else DETECTION_LOSSES), "loss"), 0.0)
    with loss_mode(model):
        for idx in batches(len(data), batch_size):
            images = [data.images[i].to(device).float() for i in idx]
            targets = [_to_device(data.targets[i], device) for i in idx]
            losses = model(images, targets)
            losses["loss"] = total_loss(losses, state_weight)
            for key in sums:
                sums[key] += float(losses[key]) * len(idx)
    return {k: v / max(len(data), 1) for k, v in sums.items()}


@torch.no_grad()
def predict(
    model: nn.Module, data: DetectionSet, batch_size: int, device: torch.device, desc: str = ""
) -> list[dict[str, torch.Tensor]]:
    """Detections (boxes, labels, scores, states, state_scores) per image, on the CPU."""
    model.eval()
    outputs: list[dict[str, torch.Tensor]] = []
    order = list(batches(len(data), batch_size))
    for idx in tqdm(order, desc=desc or "predicting", unit="batch", disable=not desc):
        images = [data.images[i].to(device).float() for i in idx]
        for out in model(images):
            outputs.append({k: v.detach().cpu() for k, v in out.items()})
    return outputs


def validation_metrics(
    model: nn.Module,
    data: DetectionSet,
    gt: dict,
    params: Any,
    device: torch.device,
) -> dict[str, float]:
    """COCO mAP, mAP@.5 and (with states) state accuracy at the score and IoU thresholds."""
    cfg, states_names = params.detection, list(gt["states"])
    outputs = predict(model, data, params.train.batch_size, device)
    records = to_coco_results(outputs, data.image_ids, data.scales, gt, states_names)
    coco = evaluate_coco(gt, records).metrics
    scores = {"map": coco["map"] or 0.0, "map_50": coco["map_50"] or 0.0}
    if states_names:
        matches = match_detections(gt, records, cfg.iou_threshold, cfg.score_threshold)
        states = state_metrics(matches, states_names)
        scores["state_accuracy"] = states["state_accuracy"] or 0.0
    return scores


def balanced_state_weights(targets: list[dict[str, torch.Tensor]], num_states: int) -> torch.Tensor:
    """Per state, boxes / (states x boxes of that state) over the train boxes (scikit-learn's
    "balanced"), so a rare state such as ``damaged`` counts as much as a common one; a state
    no train box has gets weight 1."""
    from sklearn.utils.class_weight import compute_class_weight

    states = torch.cat([t["states"] for t in targets if "states" in t] or [torch.zeros(0)])
    weights = torch.ones(num_states)
    present = sorted(set(states.long().tolist()))
    if present:
        found = compute_class_weight("balanced", classes=np.array(present), y=states.numpy())
        weights[present] = torch.tensor(found, dtype=torch.float32)
    return weights


class DetectionHooks(TrainHooks):
    """Faster R-CNN (with or without a state head) in the shared loop: the detector's losses in
    train mode, validation losses with frozen statistics, then COCO mAP and state accuracy."""

    #: under DDP, a batch whose images hold no box leaves the box heads without a gradient
    find_unused_parameters = True

    def __init__(
        self,
        model: nn.Module,
        params: Any,
        train: DetectionSet,
        val: DetectionSet,
        val_gt: dict,
        device: torch.device,
    ):
        self.model, self.params, self.device = model, params, device
        self.train, self.val, self.val_gt = train, val, val_gt
        self.num_samples = len(train)
        weights = getattr(model.roi_heads, "state_class_weights", None)
        if weights is not None and params.detection.state_class_weights == "balanced":
            weights.copy_(balanced_state_weights(train.targets, len(weights)))
            log.info("state loss weights (balanced on the train boxes): %s", weights.tolist())
        model.to(device)

    def batch_loss(
        self, model: nn.Module, idx: torch.Tensor, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        cfg = self.params.augment
        pairs = [augment(self.train.images[i], self.train.targets[i], cfg, gen) for i in idx]
        images = [img.to(self.device, non_blocking=True).float() for img, _ in pairs]
        targets = [_to_device(t, self.device) for _, t in pairs]
        losses = model(images, targets)
        return {**losses, "loss": total_loss(losses, self.params.detection.state_loss_weight)}

    def validate(self, model: nn.Module, dist: Dist) -> dict[str, float]:
        """Every process scores the whole validation split (the same weights, the same
        numbers), so the best epoch and early stopping agree across processes."""
        batch, weight = self.params.train.batch_size, self.params.detection.state_loss_weight
        losses = mean_losses(model, self.val, batch, self.device, weight)
        scores = validation_metrics(model, self.val, self.val_gt, self.params, self.device)
        return {**losses, **scores}
