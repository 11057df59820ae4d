"""Names of the per-epoch values in dvclive, shared by every task's training stage."""

from __future__ import annotations


def live_name(key: str) -> str:
    """dvclive name of a per-epoch value: train_loss -> train/loss, val_rmse -> val/rmse,
    val_loss_state -> val/loss_state, frozen_layers -> train/frozen_layers, lr -> lr."""
    prefix, _, rest = key.partition("_")
    if prefix in ("train", "val") and rest:
        return f"{prefix}/{rest}"
    return key if key == "lr" else f"train/{key}"
