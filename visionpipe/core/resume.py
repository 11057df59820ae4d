"""The train stage's last state, kept between runs so an interrupted training resumes.

After every epoch the loop writes the model, optimizer, schedule, gradient scaler, the epochs'
history and best weights, and every random number generator's state (atomically: a kill leaves
the previous epoch's state). A rerun continues from it only when its fingerprint (the params
that shape training, the dataset's hash and the code) is the same; otherwise it starts afresh.
The code is in it because DVC reruns the stage after a code change, and a finished state would
otherwise hand back the old model as if it were the new code's. On a CPU
the resumed run then ends with exactly the weights and metrics of an uninterrupted one.

The file holds only tensors and plain Python values (dicts, lists, tuples, strings, numbers,
None; numpy's RNG key as a tensor) and is read with ``torch.load(weights_only=True)``: the
state is a DVC output, so ``dvc push``/``dvc pull`` carry it through shared remotes, and
unpickling it freely would let anyone who can write to a remote run code on every machine that
resumes a training. A file that does not load that way (an older format, a planted payload, a
damaged file) is never unpickled: it is reported and training starts from the beginning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionpipe.core.io import atomic_path, interrupts_deferred

log = logging.getLogger(__name__)

FORMAT = 2  # 2: weights-only (no numpy arrays or other pickled objects)


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
    """Every RNG's state in types a weights-only ``torch.load`` accepts (no numpy objects)."""
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generator": gen.get_state(),
        # numpy's legacy state tuple with its MT19937 key (624 uint32) as an int64 tensor
        "numpy": (
            str(name),
            torch.from_numpy(key.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached_gaussian),
        ),
        "python": (int(version), tuple(int(v) for v in internal), gauss_next),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any], gen: torch.Generator) -> None:
    """Restore what :func:`rng_states` returned (also after a save and load)."""
    torch.set_rng_state(states["torch"])
    gen.set_state(states["generator"])
    name, key, pos, has_gauss, cached_gaussian = states["numpy"]
    key = key.numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state(
        (name, key.astype(np.uint32), int(pos), int(has_gauss), float(cached_gaussian))
    )
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: str | Path, key: str, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) under fingerprint ``key``, atomically.

    Raises TypeError (and keeps the previous file) when ``state`` holds a type that
    :func:`load` would refuse, so a state that could never be resumed is not written.
    """
    with interrupts_deferred(), atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: a full disk is OSError ENOSPC
            torch.save({"format": FORMAT, "fingerprint": key, **state}, handle)
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp)
        if unsafe:
            raise TypeError(
                f"{path}: the training state holds types a weights-only load refuses: "
                + ", ".join(sorted(unsafe))
            )


def _reason(exc: BaseException) -> str:
    """One line on why ``torch.load`` refused a file: the unpickler's own words, without the
    page of advice torch wraps them in (which suggests ``weights_only=False``)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split("\n\nCheck the documentation")[0]
    if "WeightsUnpickler error:" in text:
        text = text.rsplit("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed."):
        text = text.rsplit("\n\n", 1)[-1]
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    line = re.split(r"(?<=\.)\s", line, maxsplit=1)[0]  # its first sentence
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def load(path: str | Path, key: str) -> dict[str, Any] | None:
    """The saved state when there is one for ``key``; None (start afresh) otherwise.

    Loaded with ``weights_only=True`` only: a file that needs anything else is never
    unpickled, just reported in one warning.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol is reported below, if at all
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged state is no reason to stop training
        log.warning(
            "%s: unreadable or not a safe training state (%s); training from the start",
            path,
            _reason(exc),
        )
        return None
    if not isinstance(state, dict):
        log.warning(
            "%s: unreadable or not a safe training state (holds a %s, not a dict); "
            "training from the start",
            path,
            type(state).__name__,
        )
        return None
    if state.get("format") != FORMAT or state.get("fingerprint") != key:
        log.info("%s: saved for other params or data; training from the start", path)
        return None
    return state
