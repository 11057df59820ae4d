"""Index batches over a decoded split, and a model run over all of it in input order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

if TYPE_CHECKING:
    from visionpipe.core.cache import Images


def batches(
    n: int, batch_size: int, shuffle: bool = False, gen: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples (a permutation from ``gen`` when shuffling)."""
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: Images,
    batch_size: int,
    device: torch.device,
    desc: str = "predicting",
    progress: bool = True,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw model outputs for uint8 images (a tensor or a split read from the decoded cache), on
    the CPU, in input order; only ``rows`` of them when given (a process's share)."""
    model.eval()
    outs = []
    rows = torch.arange(len(images)) if rows is None else rows
    for idx in tqdm(
        [rows[i] for i in batches(len(rows), batch_size)],
        desc=desc,
        unit="batch",
        disable=not progress,
    ):
        x = images[idx].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        outs.append(model(x).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)
