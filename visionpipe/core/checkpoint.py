"""Model checkpoints: weights plus the metadata needed to rebuild and use them.

Only tensors and plain Python values are stored, so loading works with ``weights_only=True``
(no code from the file is executed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visionpipe.core.errors import UserError, first_line
from visionpipe.core.io import atomic_file
from visionpipe.core.models import TTA_VIEWS, ImageModel, build_model


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` atomically, through a file object (see :func:`atomic_file`): torch
    writing a path itself reports a full disk as an opaque RuntimeError."""
    with atomic_file(path) as handle:
        torch.save(obj, handle)


def save_checkpoint(path: str | Path, model: ImageModel, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch(path, {"meta": meta, "state_dict": state})


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and metadata saved at ``path`` (any task), or one line saying why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model checkpoint not found (run the train stage)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        return ckpt["state_dict"], ckpt["meta"]
    except Exception as exc:  # noqa: BLE001 - anything else is not one of our checkpoints
        raise UserError(f"{path}: not a visionpipe checkpoint ({exc})") from exc


def _model_from(
    path: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]
) -> ImageModel:
    """The per-image model (classification, regression) a checkpoint read from ``path``
    describes, in eval mode; one line naming the file when it is not such a checkpoint."""
    if meta.get("task") == "detection":
        raise UserError(
            f"{path}: a detector checkpoint; predict and simulate run the exported detector "
            "(models/export/model.onnx or model.ts, written by the export stage)"
        )
    try:
        built = build_model(
            meta["arch"],
            meta["num_outputs"],
            pretrained=False,
            dropout=meta["dropout"],
            hidden=meta.get("head_hidden", 0),
        )
        built.model.load_state_dict(state_dict)
        built.model.tta = meta.get("tta", "none")  # the averaged views it was calibrated with
        if built.model.tta not in TTA_VIEWS:
            raise UserError(
                f"{path}: unknown test-time augmentation {built.model.tta!r} in its metadata "
                f"(one of {', '.join(TTA_VIEWS)})"
            )
    except KeyError as exc:
        raise UserError(f"{path}: checkpoint metadata without {exc}") from None
    except RuntimeError as exc:  # weights of another shape than the metadata's network
        raise UserError(
            f"{path}: weights do not fit the checkpoint's {meta['arch']} ({first_line(exc)})"
        ) from None
    return built.model.eval()


def load_checkpoint(path: str | Path) -> tuple[ImageModel, dict[str, Any]]:
    """Rebuild the model saved at ``path`` (in eval mode) and return it with its metadata."""
    state_dict, meta = read_checkpoint(path)
    return _model_from(path, state_dict, meta), meta
