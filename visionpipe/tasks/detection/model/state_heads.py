"""The per-box state heads of the detector, and the Faster R-CNN that feeds one the image.

Two ways to read a part's state (``detection.state_head``):

* ``roi``: a small MLP on the box head's 1024-wide RoI features, beside the class and box
  predictors, the way torchvision's RoIHeads hang the mask branch: trained on the positive
  sampled proposals against the state of their matched ground-truth box. Cheap, but it sees the
  part only through a 7x7 pooling of features made for finding boxes.
* ``crop``: an ImageNet classifier (``detection.state_arch``) on each box cut out of the
  (resized, normalized) image at ``detection.state_crop_size`` pixels: the part at full
  resolution, through a network made for telling images apart. It trains on the ground-truth
  boxes (the final boxes it sees at inference sit on them), so its cost is one small crop per
  part, not one per sampled proposal.

Either runs at inference on the final (post-NMS) boxes, so every detection has a state.
Both are scriptable with torch.jit.script and export to ONNX.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import roi_align

#: the state head's temperature in a detector's state dict
TEMPERATURE_KEY = "roi_heads.state_temperature"
STATE_HEADS = ("roi", "crop")


class StatePredictor(nn.Sequential):
    """RoI box features -> state logits: a small MLP beside the class and box predictors."""

    def __init__(self, in_features: int, num_states: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_states),
        )


class CropStatePredictor(nn.Module):
    """Boxes cut from the normalized image batch at ``crop_size`` px -> ``classifier`` -> state
    logits. ``classifier`` takes normalized images (a timm or torchvision network)."""

    def __init__(self, classifier: nn.Module, crop_size: int):
        super().__init__()
        self.classifier = classifier
        self.crop_size = crop_size

    def forward(self, image: Tensor, boxes: list[Tensor]) -> Tensor:
        crops = roi_align(
            image, boxes, [self.crop_size, self.crop_size], 1.0, sampling_ratio=2, aligned=True
        )
        return self.classifier(crops)


def state_loss(
    state_logits: Tensor,
    labels: list[Tensor],
    matched_idxs: list[Tensor],
    targets: list[dict[str, Tensor]],
    weight: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of the positive sampled proposals against their matched box's state,
    each state's term scaled by ``weight`` (``detection.state_class_weights``)."""
    state_targets: list[Tensor] = []
    for target, matched in zip(targets, matched_idxs, strict=True):
        states = target["states"]
        # an image without boxes has only background proposals: any index will do, it is masked
        state_targets.append(torch.zeros_like(matched) if states.numel() == 0 else states[matched])
    positive = torch.where(torch.cat(labels) > 0)[0]
    if positive.numel() == 0:
        return state_logits.sum() * 0.0  # keeps the graph (and DDP) happy with no positives
    return F.cross_entropy(
        state_logits[positive], torch.cat(state_targets)[positive], weight=weight
    )


def _row_max(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Max and argmax of each row. A zero row is appended and dropped again because
    onnxruntime's ArgMax/ReduceMax return a wrong shape for a 0-row input (no detections)."""
    padded = torch.cat([probs, probs.new_zeros((1, probs.shape[1]))])
    values, indices = padded.max(dim=-1)
    return values[:-1], indices[:-1]


def _num_states(state_predictor: nn.Module) -> int:
    return [m for m in state_predictor.modules() if isinstance(m, nn.Linear)][-1].out_features


class StateRoIHeads(RoIHeads):
    """torchvision's Faster R-CNN RoIHeads plus a per-box state branch (``state_predictor``,
    on the RoI features: ``detection.state_head: roi``).

    Training adds ``loss_state`` to the losses; inference adds ``states`` (argmax) and
    ``state_scores`` (its probability, softmax(logits / ``state_temperature``): the temperature
    the train stage fits on val, 1 until then) to every image's detections. The temperature is
    a buffer, so the checkpoint and the exported files carry it. Masks and keypoints are not
    supported. Scriptable with torch.jit.script.
    """

    def __init__(self, state_predictor: nn.Module, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.state_predictor = state_predictor
        self.register_buffer("state_temperature", torch.ones(()))
        # the state loss's per-state weights (all 1: plain cross-entropy); set by training
        # from detection.state_class_weights, never saved (not part of the model's answers)
        self.register_buffer(
            "state_class_weights", torch.ones(_num_states(state_predictor)), persistent=False
        )

    def box_state_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        """State logits of given boxes (per image, in the transformed images' pixels): what
        the state head says about a part whose box is known (calibration, evaluation)."""
        return self.state_predictor(self.box_head(self.box_roi_pool(features, boxes, image_shapes)))

    def training_state_loss(
        self,
        features: dict[str, Tensor],
        box_features: Tensor,
        labels: list[Tensor],
        matched_idxs: list[Tensor],
        targets: list[dict[str, Tensor]],
    ) -> Tensor:
        """The state loss of a training batch: here on the sampled proposals' box features."""
        return state_loss(
            self.state_predictor(box_features),
            labels,
            matched_idxs,
            targets,
            self.state_class_weights,
        )

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, state_predictor: nn.Module) -> StateRoIHeads:
        """The same box branch and settings as ``heads``, with the state branch added."""
        return cls(
            state_predictor,
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
        )

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets should not be None when training")
            for t in targets:
                if "states" not in t:
                    raise ValueError("every target needs a states key")
                if t["states"].dtype != torch.int64:
                    raise TypeError(f"target states must be int64, got {t['states'].dtype}")
                if t["states"].shape[0] != t["boxes"].shape[0]:
                    raise ValueError("target states and boxes differ in length")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
            class_logits, box_regression = self.box_predictor(box_features)
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {
                "loss_classifier": loss_classifier,
                "loss_box_reg": loss_box_reg,
                "loss_state": self.training_state_loss(
                    features, box_features, labels, matched_idxs, targets
                ),
            }
            return [], losses

        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        # the state of a detection is read from its final box
        state_logits = self.box_state_logits(features, boxes, image_shapes)
        state_probs = F.softmax(state_logits / self.state_temperature, dim=-1)
        state_scores, states = _row_max(state_probs)
        counts = [b.shape[0] for b in boxes]
        result: list[dict[str, Tensor]] = []
        for i, (image_states, image_state_scores) in enumerate(
            zip(states.split(counts), state_scores.split(counts), strict=True)
        ):
            result.append(
                {
                    "boxes": boxes[i],
                    "labels": labels[i],
                    "scores": scores[i],
                    "states": image_states,
                    "state_scores": image_state_scores,
                }
            )
        return result, {}


class CropStateRoIHeads(StateRoIHeads):
    """StateRoIHeads whose state comes from each box's crop of the image
    (``detection.state_head: crop``; ``state_predictor`` a CropStatePredictor). The image
    arrives as ``features["image"]`` (ImageFedFasterRCNN puts it there)."""

    def box_state_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        return self.state_predictor(features["image"], boxes)

    def training_state_loss(
        self,
        features: dict[str, Tensor],
        box_features: Tensor,
        labels: list[Tensor],
        matched_idxs: list[Tensor],
        targets: list[dict[str, Tensor]],
    ) -> Tensor:
        """Cross-entropy of the ground-truth boxes' crops against their states."""
        image = features["image"]
        states = torch.cat([t["states"] for t in targets])
        if states.numel() == 0:
            # no boxes in the batch: the whole images, at zero weight, keep the graph (and DDP)
            # happy; such a batch is rare, so their share of the BatchNorm statistics is too
            whole = torch.tensor(
                [[0.0, 0.0, float(image.shape[-1]), float(image.shape[-2])]],
                dtype=image.dtype,
                device=image.device,
            )
            logits = self.state_predictor(image, [whole for _ in targets])
            return logits.sum() * 0.0
        logits = self.state_predictor(image, [t["boxes"] for t in targets])
        return F.cross_entropy(logits, states, weight=self.state_class_weights)


def with_image(features: dict[str, Tensor], image: Tensor) -> dict[str, Tensor]:
    """The feature maps plus the transformed image batch as ``"image"``: what the RoI heads get,
    so a crop state head can cut its crops (the RoI poolers read only their feature maps)."""
    head_features: dict[str, Tensor] = OrderedDict()
    for name, feature in features.items():
        head_features[name] = feature
    head_features["image"] = image
    return head_features


class ImageFedFasterRCNN(FasterRCNN):
    """torchvision's FasterRCNN, except that the RoI heads also get the transformed image batch
    (``features["image"]``, a literal key: TorchScript takes no global constants; the RPN
    sees only the feature maps), which a crop state head reads its crops from. The state dict
    is FasterRCNN's."""

    def forward(
        self,
        images: list[Tensor],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        original_image_sizes: list[tuple[int, int]] = []
        for img in images:
            original_image_sizes.append((img.shape[-2], img.shape[-1]))
        if self.training and targets is None:
            raise ValueError("targets should not be None when training")
        image_list, targets = self.transform(images, targets)
        if targets is not None:
            _check_boxes(targets)
        features = self.backbone(image_list.tensors)
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(
            with_image(features, image_list.tensors), proposals, image_list.image_sizes, targets
        )
        detections = self.transform.postprocess(
            detections, image_list.image_sizes, original_image_sizes
        )
        losses: dict[str, Tensor] = {}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        if torch.jit.is_scripting():
            return losses, detections
        return self.eager_outputs(losses, detections)


def _check_boxes(targets: list[dict[str, Tensor]]) -> None:
    """FasterRCNN's check, kept in the override: a box without positive width and height would
    give NaN box-regression losses several steps later instead of an error naming it."""
    for index, target in enumerate(targets):
        boxes = target["boxes"]
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if bool(degenerate.any()):
            box: list[float] = boxes[torch.where(degenerate)[0][0]].tolist()
            raise ValueError(
                f"All bounding boxes should have positive height and width. "
                f"Found invalid box {box} for target at index {index}."
            )
