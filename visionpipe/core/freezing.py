"""Which backbone layers are frozen at each epoch: transfer learning's two usual schedules.

``freeze_backbone_epochs`` trains only the new head for the first epochs (so its random weights
do not wreck the pretrained features), then everything allowed by ``trainable_layers``, which
keeps all but the last K backbone layers frozen for the whole run (-1: none frozen).
"""

from __future__ import annotations

from torch import nn

from visionpipe.core.models import ImageModel, backbone_layers


def frozen_layers(
    model: ImageModel, epoch: int, freeze_backbone_epochs: int, trainable_layers: int
) -> list[nn.Module]:
    """Backbone layers that do not train in ``epoch`` (0-based)."""
    layers = backbone_layers(model)
    if epoch < freeze_backbone_epochs or trainable_layers == 0:
        return layers
    if trainable_layers < 0 or trainable_layers >= len(layers):
        return []
    return layers[: len(layers) - trainable_layers]


def apply_freeze(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Stop gradients through ``frozen`` and keep their BatchNorm statistics fixed.

    Call after ``model.train()``: frozen layers are switched back to eval mode, since updating
    the running statistics of a frozen pretrained layer changes its output too.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    for layer in frozen:
        layer.eval()
        for p in layer.parameters():
            p.requires_grad_(False)
