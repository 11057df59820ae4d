"""Device choice, seeding and thread count: the same code on a CPU laptop and a GPU box."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from visionpipe.core.errors import UserError

log = logging.getLogger(__name__)


def cpu_count() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def choose_device(requested: str = "auto", index: int = 0) -> torch.device:
    """CUDA when present (or asked for), else CPU; ``index``: the GPU of this process."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: 'cuda' requested but no CUDA device is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested, index) if requested == "cuda" else torch.device(requested)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    log.info("device: %s (%s), %d CPU threads", device, name, torch.get_num_threads())
    return device


def set_threads(num_threads: int = 0) -> int:
    """Use ``num_threads`` intra-op threads (0: all cores available to this process)."""
    n = num_threads or cpu_count()
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def global_rng_from(gen: torch.Generator) -> Iterator[None]:
    """Run code that draws from torch's global RNG (torchvision's AutoAugment, MixUp, CutMix)
    on one draw from ``gen``, so it is reproducible from the run's seed and resumes with it.

    The global CPU RNG is forked, which keeps the caller's stream (model init, dropout)
    untouched. Only the CPU generator is seeded (not ``torch.manual_seed``, which also reseeds
    CUDA generators that ``fork_rng(devices=[])`` would not restore).
    """
    seed = int(torch.randint(0, 2**62, (), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
