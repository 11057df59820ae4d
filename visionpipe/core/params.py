"""Typed, validated view of params.yaml.

Every stage loads the whole file through :func:`load_params` before doing any work, so a typo
or an out-of-range value fails in under a second with one line naming the key and what is
allowed, instead of halfway through training.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visionpipe.core.errors import UserError
from visionpipe.core.thresholds import TARGETS, is_target

TORCHVISION_ARCHITECTURES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
)
LITE_ARCHITECTURES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
ARCHITECTURES = (*LITE_ARCHITECTURES, *TORCHVISION_ARCHITECTURES, "small_cnn")
TASKS = ("classification", "regression", "detection")
#: test-time augmentation: none, or the flips and quarter turns averaged (core.models.TTA_VIEWS)
TTA_MODES = ("none", "hflip", "flips", "dihedral")
DETECTION_ARCHITECTURES = ("mobilenet_v3_large_fpn", "resnet50_fpn", "efficientnet_lite0_fpn")
# augment.ops that move a detection image's boxes with its pixels, and those a detector takes
# (color_jitter changes the pixels only; the others move pixels in ways the boxes cannot follow)
BOX_MOVING_AUGMENTATIONS = ("hflip", "vflip", "rot90")
DETECTION_AUGMENTATIONS = (*BOX_MOVING_AUGMENTATIONS, "color_jitter")
OPTIMIZERS = ("adamw", "adam", "sgd")
# "auto": the task's own default (classification val_f1_macro, regression val_rmse,
# detection val_map)
MONITORS = (
    "auto",
    "val_loss",
    "val_accuracy",
    "val_f1_macro",
    "val_rmse",
    "val_mae",
    "val_r2",
    "val_map",
    "val_map_50",
    "val_state_accuracy",
)
AUGMENTATIONS = (
    "hflip",
    "vflip",
    "rot90",
    "rotate",
    "resized_crop",
    "color_jitter",
    "autoaugment",
    "trivialaugment",
    "erasing",
)
SCHEDULES = ("warmup_cosine", "plateau", "none")
AMP_DTYPES = ("fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
QUANTIZATION = ("none", "static", "dynamic")
REGRESSION_LOSSES = ("mse", "huber", "l1")
SAMPLING = ("shuffle", "balanced", "sqrt")  # classification.sampling


class ParamsError(UserError):
    """A value in params.yaml is missing, unknown, of the wrong type or out of range."""


def _choice(*allowed: str) -> dict[str, Any]:
    return {"choices": allowed}


def _range(lo: float | None = None, hi: float | None = None, *, open_: bool = False) -> dict:
    """Allowed interval; ``open_`` excludes both ends (ratios must lie strictly in (0, 1))."""
    return {"range": (lo, hi, open_)}


@dataclass(frozen=True)
class Base:
    seed: int = 42
    task: str = field(default="classification", metadata=_choice(*TASKS))


@dataclass(frozen=True)
class Embedded:
    """The embedded elpv default materialized by the `embed` stage."""

    max_per_class: int = field(default=0, metadata=_range(0))
    # detection: EL module panels composed from the real cells (written beside them)
    panels: int = field(default=200, metadata=_range(0))  # 0: as many as the cells allow
    panel_rows: int = field(default=3, metadata=_range(1))
    panel_cols: int = field(default=4, metadata=_range(1))
    cell_size: int = field(default=80, metadata=_range(16))  # pixels per cell in a panel


def _check_annotations(key: str, value: Any) -> Any:
    """One annotations file or folder, or a mapping of the splits' files (train required)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "train" in value:
        for split, name in value.items():
            if split not in ("train", "val", "test"):
                raise ParamsError(f"{key}.{split}: unknown split; use train, val and test")
            if not isinstance(name, str) or not name.strip():
                raise ParamsError(f"{key}.{split}: expected a file name, got {name!r}")
        return dict(value)
    raise ParamsError(
        f"{key}: expected a file (or folder) name, or a mapping of split to file with train "
        f"({{train: train/_annotations.coco.json, val: ...}}), got {value!r}"
    )


@dataclass(frozen=True)
class Data:
    """Images under ``path``, described by a table (CSV/Excel inside ``path``) or class folders.

    Classification reads ``label_column`` (or class folders when ``table`` is ""); regression
    reads the numeric ``target_column`` from the table, ``group_column`` to keep groups (e.g.
    one plant photographed many times) within one split, and ``metadata_columns`` for EDA.
    """

    path: str = "data/raw"
    # the folder inside path that the table's and annotation file's image paths resolve
    # against ("": path itself), e.g. "images" for a sheet or a CVAT export beside images/
    images: str = ""
    table: str = ""  # "": class folders (classification); else a .csv/.xlsx file inside path
    sheet: str = ""  # Excel sheet name ("": the first sheet)
    image_column: str = "image"
    label_column: str = "label"
    classes: list[str] = field(default_factory=list)  # []: every label found; else the only ones
    target_column: str = "target"
    group_column: str = ""
    metadata_columns: list[str] = field(default_factory=list)
    # detection: COCO JSON, simple per-image JSON, YOLO data.yaml or a VOC folder inside path;
    # or a mapping {train: ..., val: ..., test: ...} of per-split files (Roboflow's COCO export)
    annotations: str | dict = field(
        default="annotations.json", metadata={"check": _check_annotations}
    )
    state_key: str = "state"  # detection: attributes.<state_key> (CVAT export) or a top-level key
    states: list[str] = field(default_factory=lambda: ["intact", "damaged", "absent", "occluded"])
    # how the decoded-image cache knows the files are unchanged: "stat" (relative path, size,
    # modification time; reads no image) or "content" (hashes every file at every stage start)
    cache_check: str = field(default="stat", metadata=_choice("stat", "content"))


@dataclass(frozen=True)
class Split:
    train: float = field(default=0.7, metadata=_range(0.0, 1.0, open_=True))
    val: float = field(default=0.15, metadata=_range(0.0, 1.0, open_=True))
    test: float = field(default=0.15, metadata=_range(0.0, 1.0, open_=True))
    # regression without groups: stratify the random split by this many target quantile bins
    stratify_bins: int = field(default=0, metadata=_range(0))
    # images whose perceptual hashes differ in at most this many of 64 bits are duplicates
    # (-1: no search); dedupe: keep each group of duplicates in one split
    duplicate_distance: int = field(default=0, metadata=_range(-1, 16))
    dedupe: bool = False


@dataclass(frozen=True)
class Eda:
    samples: int = field(default=8, metadata=_range(1))  # per class (classification), in all
    intensity_samples: int = field(default=200, metadata=_range(1))  # per class, or in all
    target_vs: str = ""  # regression: the metadata column the target is plotted against


def _check_image_size(key: str, value: Any) -> int | str:
    """Pixels (at least 16), or ``auto``: the train images' median size within
    ``model.auto_size_range``."""
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 16:
        return value
    raise ParamsError(f"{key}: expected auto or an integer >= 16 (pixels), got {value!r}")


def _check_size_range(key: str, value: Any) -> list[int]:
    """``[smallest, largest]`` pixels ``image_size: auto`` may pick."""
    ok = isinstance(value, list) and len(value) == 2
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or not 16 <= value[0] <= value[1]:
        raise ParamsError(
            f"{key}: expected [smallest, largest] pixels, 16 <= smallest <= largest, got {value!r}"
        )
    return list(value)


@dataclass(frozen=True)
class Model:
    arch: str = field(default="efficientnet_lite0", metadata=_choice(*ARCHITECTURES))
    pretrained: bool = True
    weights: str = ""
    image_size: Any = field(default=160, metadata={"check": _check_image_size})
    auto_size_range: list[int] = field(
        default_factory=lambda: [32, 160], metadata={"check": _check_size_range}
    )
    dropout: float = field(default=0.2, metadata=_range(0.0, 1.0))
    tta: str = field(default="none", metadata=_choice(*TTA_MODES))


def _check_class_weights(key: str, value: Any) -> Any:
    """``none``, ``balanced`` or a mapping of class name to a positive weight."""
    if value in ("none", "balanced"):
        return value
    if isinstance(value, dict) and value:
        for name, weight in value.items():
            number = isinstance(weight, int | float) and not isinstance(weight, bool)
            if not number or not math.isfinite(weight) or weight <= 0:
                raise ParamsError(f"{key}.{name}: expected a positive number, got {weight!r}")
        return {str(k): float(v) for k, v in value.items()}
    raise ParamsError(
        f"{key}: expected none, balanced or a mapping of class name to weight, got {value!r}"
    )


@dataclass(frozen=True)
class Augment:
    """Random training augmentation, applied to whole batches of decoded images."""

    ops: list[str] = field(default_factory=lambda: ["hflip", "vflip", "rot90"])
    rotate_degrees: float = field(default=15.0, metadata=_range(0.0, 180.0))
    crop_min_scale: float = field(default=0.6, metadata=_range(0.05, 1.0))
    jitter: float = field(default=0.2, metadata=_range(0.0, 1.0))
    erasing_p: float = field(default=0.25, metadata=_range(0.0, 1.0))


def _check_ema_decay(key: str, value: Any) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 0.0 <= value < 1.0:
        return float(value)
    raise ParamsError(f"{key}: expected 0 (off) or a decay with 0 < x < 1, got {value!r}")


def _check_progressive_from(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and (value == 0 or value >= 16):
        return value
    raise ParamsError(f"{key}: expected 0 (off) or the first epoch's pixels (>= 16), got {value!r}")


@dataclass(frozen=True)
class Train:
    epochs: int = field(default=12, metadata=_range(1))
    batch_size: int = field(default=32, metadata=_range(1))
    lr: float = field(default=1e-3, metadata=_range(0.0, open_=True))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0))
    optimizer: str = field(default="adamw", metadata=_choice(*OPTIMIZERS))
    schedule: str = field(default="warmup_cosine", metadata=_choice(*SCHEDULES))
    warmup_epochs: float = field(default=1.0, metadata=_range(0.0))
    plateau_patience: int = field(default=2, metadata=_range(0))
    plateau_factor: float = field(default=0.3, metadata=_range(0.0, 1.0, open_=True))
    freeze_backbone_epochs: int = field(default=0, metadata=_range(0))
    trainable_layers: int = field(default=-1, metadata=_range(-1))
    early_stopping_patience: int = field(default=0, metadata=_range(0))
    monitor: str = field(default="auto", metadata=_choice(*MONITORS))
    device: str = field(default="auto", metadata=_choice(*DEVICES))
    amp: bool = True
    amp_dtype: str = field(default="fp16", metadata=_choice(*AMP_DTYPES))
    num_threads: int = field(default=0, metadata=_range(0))
    nproc: int = field(default=1, metadata=_range(1))  # >1: DDP processes under torchrun
    resume: bool = True  # continue an interrupted training from its last epoch
    # 0: off; else the decay of an exponential moving average of the weights (timm's, with
    # its warmup), which validation, the best epoch and the saved model use
    ema_decay: float = field(default=0.0, metadata={"check": _check_ema_decay})
    # 0: off; else the first epoch's pixels, rising linearly to model.image_size by the last
    progressive_from: int = field(default=0, metadata={"check": _check_progressive_from})


@dataclass(frozen=True)
class Classification:
    """How a classifier learns its classes (base.task: classification)."""

    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 1.0))
    class_weights: Any = field(default="none", metadata={"check": _check_class_weights})
    mixup_alpha: float = field(default=0.0, metadata=_range(0.0))  # 0: off
    cutmix_alpha: float = field(default=0.0, metadata=_range(0.0))  # 0: off
    # shuffle: every image once an epoch; balanced | sqrt: draws weighted by class rarity
    sampling: str = field(default="shuffle", metadata=_choice(*SAMPLING))


@dataclass(frozen=True)
class Regression:
    """How a regression model learns its target (base.task: regression)."""

    loss: str = field(default="mse", metadata=_choice(*REGRESSION_LOSSES))
    huber_delta: float = field(default=1.0, metadata=_range(0.0, open_=True))
    log1p: bool = False  # train on log(1 + target): for skewed, non-negative targets
    standardize: bool = True  # train on (target - mean) / std of the train split
    head_hidden: int = field(default=256, metadata=_range(0))  # 0: a single linear output


@dataclass(frozen=True)
class Detection:
    """Parts with boxes and a state per part (base.task: detection), from COCO annotations."""

    arch: str = field(default="mobilenet_v3_large_fpn", metadata=_choice(*DETECTION_ARCHITECTURES))
    min_size: int = field(default=240, metadata=_range(32))  # shorter image side fed to the model
    max_size: int = field(default=320, metadata=_range(32))  # longer side at most
    state_loss_weight: float = field(default=0.5, metadata=_range(0.0))
    # none | balanced: each state's cross-entropy term weighted by its rarity in the train boxes
    state_class_weights: str = field(default="none", metadata=_choice("none", "balanced"))
    # roi: the state from the box head's RoI features; crop: a state_arch classifier (ImageNet
    # weights with model.pretrained) on each box cut from the image at state_crop_size px
    state_head: str = field(default="roi", metadata=_choice("roi", "crop"))
    state_arch: str = field(default="efficientnet_lite0", metadata=_choice(*ARCHITECTURES))
    state_crop_size: int = field(default=96, metadata=_range(16))
    score_threshold: float = field(default=0.5, metadata=_range(0.0, 1.0))  # kept detections
    iou_threshold: float = field(default=0.5, metadata=_range(0.0, 1.0, open_=True))


def _check_binary_threshold(key: str, value: Any) -> float | str:
    if value == "val":
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 0.0 < value < 1.0:
        return float(value)
    raise ParamsError(f"{key}: expected val or a number between 0 and 1, got {value!r}")


@dataclass(frozen=True)
class Evaluate:
    batch_size: int = field(default=64, metadata=_range(1))
    binary_positive: list[str] = field(default_factory=list)
    # defective when the positive classes' probabilities sum to at least this; val: the
    # value that makes the validation split's binary accuracy highest
    binary_threshold: Any = field(default=0.5, metadata={"check": _check_binary_threshold})
    confident_threshold: float = field(default=0.9, metadata=_range(0.0, 1.0))
    # test images drawn with their predictions: classification the most confident mistakes,
    # regression the largest errors, detection the first ones (prediction beside ground truth)
    draw_images: int = field(default=16, metadata=_range(0))
    latency_runs: int = field(default=20, metadata=_range(1))


def _check_reduce_range(key: str, value: Any) -> str | bool:
    """``auto`` (decided by the exporting CPU, see visionpipe.core.onnx), ``true`` or ``false``."""
    if value == "auto" or isinstance(value, bool):
        return value
    raise ParamsError(f"{key}: expected auto, true or false, got {value!r}")


@dataclass(frozen=True)
class Export:
    opset: int = field(default=17, metadata=_range(7, 25))
    parity_samples: int = field(default=32, metadata=_range(1))
    parity_tolerance: float = field(default=1e-3, metadata=_range(0.0, open_=True))
    latency_batch: int = field(default=32, metadata=_range(1))
    latency_runs: int = field(default=30, metadata=_range(1))
    quantize: str = field(default="static", metadata=_choice(*QUANTIZATION))
    calibration_samples: int = field(default=64, metadata=_range(1))
    # INT8 weights (static and dynamic) in 7 bits: x86 CPUs without VNNI saturate 8-bit
    # products (auto: on such a CPU only)
    reduce_range: Any = field(default="auto", metadata={"check": _check_reduce_range})


def _check_reference_frames(key: str, value: Any) -> int:
    """0 (no drift monitor) or at least 2 images (a spread needs two)."""
    if isinstance(value, bool) or not isinstance(value, int) or value == 1 or value < 0:
        raise ParamsError(f"{key}: expected 0 (off) or an integer >= 2, got {value!r}")
    return value


def _check_threshold(key: str, value: Any) -> float | dict[str, float]:
    """A confidence in 0..1, or one target: ``{flag_share: X}`` (0 < X < 1) or
    ``{precision: P}`` (0 < P <= 1)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0.0 <= value <= 1.0 or not math.isfinite(value):
            raise ParamsError(f"{key}: {value!r} is out of range, allowed >= 0.0 and <= 1.0")
        return float(value)
    if isinstance(value, dict) and len(value) > 1 and set(value) <= set(TARGETS):
        raise ParamsError(
            f"{key}: two targets at once ({value}); `dvc exp run -S` merges a mapping into the "
            f"one params.yaml holds: use -S '~{key}' -S '+{key}={{precision: 0.9}}'"
        )
    if isinstance(value, dict) and len(value) == 1:
        ((name, target),) = value.items()
        if name not in TARGETS:
            raise ParamsError(f"{key}.{name}: unknown target; use flag_share or precision")
        number = isinstance(target, int | float) and not isinstance(target, bool)
        upper = 1.0 if name == "precision" else math.nextafter(1.0, 0.0)
        if not number or not math.isfinite(target) or not 0.0 < target <= upper:
            allowed = "0 < x < 1" if name == "flag_share" else "0 < x <= 1"
            raise ParamsError(f"{key}.{name}: expected a number with {allowed}, got {target!r}")
        return {name: float(target)}
    raise ParamsError(
        f"{key}: expected a confidence in 0..1 or one target, {{flag_share: 0.1}} (flag the "
        f"least confident 10% of validation predictions) or {{precision: 0.95}} (keep the "
        f"accepted ones at least 95% right), got {value!r}"
    )


@dataclass(frozen=True)
class Simulate:
    """The conveyor loop stage: test images as frames, one per interval."""

    interval_ms: float = field(default=100.0, metadata=_range(0.0, open_=True))
    # a confidence, or a target resolved on val by the export stage into model.json
    threshold: Any = field(default=0.55, metadata={"check": _check_threshold})
    max_frames: int = field(default=50, metadata=_range(0))
    # drift monitor: train images spread over the split as its reference (0: off), the
    # rolling window of frames, and how far the window may move before frames are flagged
    drift_reference_frames: int = field(default=100, metadata={"check": _check_reference_frames})
    drift_window: int = field(default=50, metadata=_range(2))
    drift_image_tolerance: float = field(default=1.0, metadata=_range(0.0, open_=True))
    drift_low_share_tolerance: float = field(default=0.25, metadata=_range(0.0, 1.0))


@dataclass(frozen=True)
class Suspects:
    """Likely label errors: confident learning on k-fold probabilities from frozen features."""

    enabled: bool = True
    arch: str = field(
        default="efficientnet_lite0",
        metadata=_choice(*(a for a in ARCHITECTURES if a != "small_cnn")),
    )
    weights: str = ""  # a local ImageNet state dict for arch ("": offline Lite0, else download)
    image_size: int = field(default=160, metadata=_range(32))
    folds: int = field(default=5, metadata=_range(2, 20))
    top: int = field(default=24, metadata=_range(1, 200))


@dataclass(frozen=True)
class Params:
    base: Base = field(default_factory=Base)
    embedded: Embedded = field(default_factory=Embedded)
    data: Data = field(default_factory=Data)
    split: Split = field(default_factory=Split)
    eda: Eda = field(default_factory=Eda)
    model: Model = field(default_factory=Model)
    augment: Augment = field(default_factory=Augment)
    train: Train = field(default_factory=Train)
    classification: Classification = field(default_factory=Classification)
    regression: Regression = field(default_factory=Regression)
    detection: Detection = field(default_factory=Detection)
    evaluate: Evaluate = field(default_factory=Evaluate)
    export: Export = field(default_factory=Export)
    simulate: Simulate = field(default_factory=Simulate)
    suspects: Suspects = field(default_factory=Suspects)


_ELEMENT_CHOICES = {("augment", "ops"): AUGMENTATIONS}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return f"a list of {typing.get_args(tp)[0].__name__}"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }[tp]


def _check_value(key: str, tp: Any, value: Any, meta: dict) -> Any:
    if "check" in meta:
        return meta["check"](key, value)
    if typing.get_origin(tp) is list:
        (elem,) = typing.get_args(tp)
        if not isinstance(value, list) or not all(isinstance(v, elem) for v in value):
            raise ParamsError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return list(value)
    ok = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ParamsError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ParamsError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if "range" in meta:
        lo, hi, open_ = meta["range"]
        below = lo is not None and (value <= lo if open_ else value < lo)
        above = hi is not None and (value >= hi if open_ else value > hi)
        if below or above or (isinstance(value, float) and not math.isfinite(value)):
            bounds = " and ".join(
                f"{op} {bound}"
                for op, bound in (
                    (">" if open_ else ">=", lo),
                    ("<" if open_ else "<=", hi),
                )
                if bound is not None
            )
            raise ParamsError(f"{key}: {value!r} is out of range, allowed {bounds}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ParamsError(f"{prefix or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ParamsError(f"{where}{unknown[0]}: unknown key, allowed keys: {', '.join(fields)}")
    missing = [name for name in fields if name not in raw]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ParamsError(f"{key}: missing; params.yaml is the only source of settings")
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, key)
            continue
        values[name] = _check_value(key, tp, value, fields[name].metadata)
        allowed = _ELEMENT_CHOICES.get(tuple(key.split(".")))
        for item in values[name] if allowed else ():
            if item not in allowed:
                raise ParamsError(f"{key}: {item!r} is not one of {', '.join(allowed)}")
    return cls(**values)


def _check_cross_fields(p: Params) -> None:
    total = p.split.train + p.split.val + p.split.test
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ParamsError(
            f"split: train + val + test must sum to 1, got {p.split.train} + {p.split.val}"
            f" + {p.split.test} = {total:g}"
        )
    states = p.data.states
    if len(set(states)) != len(states) or not all(s.strip() for s in states):
        raise ParamsError(
            f"data.states: expected distinct state names ([] for a plain detector), got {states!r}"
        )
    if p.base.task == "detection":
        _check_detection_training(p)
    if p.base.task == "regression" and is_target(p.simulate.threshold):
        raise ParamsError(
            "simulate.threshold: a target needs confidences, and regression predictions have "
            "none; give a number (it is unused by regression)"
        )
    if p.detection.max_size < p.detection.min_size:
        raise ParamsError(
            f"detection.max_size: {p.detection.max_size} is below detection.min_size "
            f"{p.detection.min_size}"
        )


def _check_detection_training(p: Params) -> None:
    """The shared train/augment keys a detector cannot honour stop the run instead of being
    ignored: boxes must move with the pixels, and the detector freezes by trainable_layers."""
    moving = [op for op in p.augment.ops if op not in DETECTION_AUGMENTATIONS]
    if moving:
        raise ParamsError(
            f"augment.ops: base.task detection cannot move the boxes with {moving[0]!r}; it "
            f"takes {', '.join(DETECTION_AUGMENTATIONS)}"
        )
    if p.train.freeze_backbone_epochs:
        raise ParamsError(
            "train.freeze_backbone_epochs: base.task detection freezes its backbone by "
            "train.trainable_layers only; use 0"
        )


def params_from_dict(raw: dict) -> Params:
    """Validate a parsed params mapping; raises ParamsError naming the first bad key."""
    params = _build(Params, raw or {}, "")
    _check_cross_fields(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (one line naming the key on any error)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} is not valid YAML") from exc
    return params_from_dict(raw)


def as_dict(obj: Any) -> Any:
    """Plain-dict view of a params section (for logs and saved metadata)."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, types.SimpleNamespace):
        return vars(obj)
    return obj
