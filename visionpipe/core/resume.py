"""The train stage's last state, kept between runs so an interrupted training resumes.

After every epoch the loop writes the model, optimizer, schedule, gradient scaler, the epochs'
history and best weights, and every random number generator's state (atomically: a kill leaves
the previous epoch's state). A rerun continues from it only when its fingerprint (the params
that shape training, the dataset's hash and the code) is the same; otherwise it starts afresh.
The code is in it because DVC reruns the stage after a code change, and a finished state would
otherwise hand back the old model as if it were the new code's. On a CPU
the resumed run then ends with exactly the weights and metrics of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionpipe.core.io import atomic_path

log = logging.getLogger(__name__)

FORMAT = 1


def fingerprint(*parts: Any) -> str:
    """A hash of JSON-able values (params sections, dataset hash, labels)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_fingerprint(*roots: Path) -> str:
    """A hash of every Python file under ``roots`` (paths and contents, in sorted order)."""
    digest = hashlib.sha256()
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for file in files:  # named relative to the root: the same code in any clone
            name = file.relative_to(root.parent).as_posix()
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def rng_states(gen: torch.Generator) -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generator": gen.get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    gen.set_state(states["generator"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: str | Path, key: str, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) under fingerprint ``key``, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "fingerprint": key, **state}, tmp)


def load(path: str | Path, key: str) -> dict[str, Any] | None:
    """The saved state when there is one for ``key``; None (start afresh) otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        # numpy's and Python's RNG states are plain tuples and arrays, but not on the
        # weights_only allow-list; this file is the stage's own output, never a download
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged state is no reason to stop training
        log.warning("%s: unreadable (%s); training from the start", path, exc)
        return None
    if state.get("format") != FORMAT or state.get("fingerprint") != key:
        log.info("%s: saved for other params or data; training from the start", path)
        return None
    return state
