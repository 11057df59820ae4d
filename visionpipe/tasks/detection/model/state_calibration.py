"""Calibrating the state head: a temperature for its softmax, fitted on the validation split.

The state probability of a detection is what predict flags and simulate counts, so it should
mean what it says. The temperature is fitted, as for a classifier, on the state logits of the
validation split's annotated boxes (the head's answer for a part whose box is known), which
keeps the fit free of the detector's box errors; visionpipe.core.calibration decides whether it
is applied. It lives in the model as a buffer (``roi_heads.state_temperature``), so the
checkpoint, TorchScript and ONNX all carry it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from visionpipe.core.batches import batches
from visionpipe.core.calibration import calibrate
from visionpipe.tasks.detection.model.dataset import DetectionSet
from visionpipe.tasks.detection.model.state_heads import StateRoIHeads, with_image


@torch.no_grad()
def box_state_logits(
    model: nn.Module, data: DetectionSet, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Untempered state logits of every annotated box of ``data`` and the boxes' states."""
    model.eval()
    heads = model.roi_heads
    logits, states = [], []
    for idx in batches(len(data), batch_size):
        images = [data.images[i].to(device).float() for i in idx]
        targets = [{k: v.to(device) for k, v in data.targets[i].items()} for i in idx]
        image_list, scaled = model.transform(images, targets)
        features = model.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = {"0": features}
        boxes = [t["boxes"] for t in scaled]
        features = with_image(features, image_list.tensors)  # a crop state head cuts from it
        logits.append(heads.box_state_logits(features, boxes, image_list.image_sizes).cpu())
        states.append(torch.cat([t["states"] for t in scaled]).cpu())
    if not logits:
        return torch.zeros((0, 0)), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(states)


def calibrate_states(
    model: nn.Module, val: DetectionSet, batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Fit the state temperature on val's boxes and set it in ``model`` when it is applied;
    the ``state_calibration`` entry of the checkpoint's metadata (empty without states)."""
    if not isinstance(model.roi_heads, StateRoIHeads):
        return {}
    model.roi_heads.state_temperature.fill_(1.0)
    logits, states = box_state_logits(model, val, batch_size, device)
    found = calibrate(logits, states, unit="boxes")
    model.roi_heads.state_temperature.fill_(found["temperature"])
    return {"state_temperature": found["temperature"], "state_calibration": found["calibration"]}
