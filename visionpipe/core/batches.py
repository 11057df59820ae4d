"""Index batches over a decoded split, and a model run over all of it in input order."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm import tqdm


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
