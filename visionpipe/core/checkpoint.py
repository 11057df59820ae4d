"""Model checkpoints: weights plus the metadata needed to rebuild and use them.

Only tensors and plain Python values are stored, so loading works with ``weights_only=True``
(no code from the file is executed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from visionpipe.core.errors import UserError
from visionpipe.core.io import atomic_path
from visionpipe.core.models import ImageModel, build_model


def save_checkpoint(path: str | Path, model: ImageModel, meta: dict[str, Any]) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"meta": meta, "state_dict": state}, tmp)


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


def load_checkpoint(path: str | Path) -> tuple[ImageModel, dict[str, Any]]:
    """Rebuild the model saved at ``path`` (in eval mode) and return it with its metadata."""
    state_dict, meta = read_checkpoint(path)
    built = build_model(
        meta["arch"],
        meta["num_outputs"],
        pretrained=False,
        dropout=meta["dropout"],
        hidden=meta.get("head_hidden", 0),
    )
    built.model.load_state_dict(state_dict)
    return built.model.eval(), meta
