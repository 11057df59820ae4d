"""Running a model over a decoded split, and the figures shared by the tasks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from visionpipe.data import batches  # noqa: E402
from visionpipe.io import save_figure  # noqa: E402


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    desc: str = "predicting",
    progress: bool = True,
) -> torch.Tensor:
    """Raw model outputs for a uint8 image tensor, on the CPU, in input order."""
    model.eval()
    outs = []
    for idx in tqdm(
        list(batches(len(images), batch_size)),
        desc=desc,
        unit="batch",
        disable=not progress,
    ):
        x = images[idx].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        outs.append(model(x).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def plot_confusion(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: Path,
    title: str = "Confusion matrix",
) -> None:
    """Counts with the row-normalized share in each cell (rows: true, columns: predicted)."""
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = 1.2 + 0.9 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color=color,
                fontsize=8,
            )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    save_figure(path, fig)
