"""The saved training state: a weights-only file that never runs code from a planted pickle."""

import logging
import math
import os
import pathlib
import pickle
import random

import numpy as np
import pytest
import torch

from visionpipe.core import resume

KEY = "fingerprint-a"


class Scale:
    """A callable LR factor: LambdaLR saves its ``__dict__`` (a plain dict) in the state."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, step: int) -> float:
        return self.factor / (step + 1)


class Planted:
    """An object whose unpickling runs code: here, creating ``marker``."""

    def __init__(self, how: str, marker: pathlib.Path) -> None:
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "touch":
            return (pathlib.Path.touch, (self.marker,))
        return (os.system, (f"touch '{self.marker}'",))


def training_state(gen: torch.Generator) -> dict:
    """A state shaped like the train loop's, after one optimizer step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    lambdas = torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda step: 0.5**step])
    model(torch.randn(4, 3)).square().mean().backward()
    optimizer.step()
    lambdas.step()
    plain = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.01)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(plain, mode="min", patience=1)
    plateau.step(1.5)
    callable_lambda = torch.optim.lr_scheduler.LambdaLR(
        torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1), Scale(0.3)
    )
    return {
        "epoch": 3,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "schedule": lambdas.state_dict(),
        "plateau": plateau.state_dict(),
        "callable_schedule": callable_lambda.state_dict(),
        "scaler": {},
        "enabled_scaler": torch.amp.GradScaler("cpu").state_dict(),
        "result": {
            "best_epoch": 2,
            "best_value": -math.inf,
            "history": [{"train_loss": 0.5, "val_loss": math.inf, "lr": 0.01}],
            "best_state": {k: v.detach().clone() + 1 for k, v in model.state_dict().items()},
            "stopped_early": False,
        },
        "no_best": {"best_value": math.inf, "best_state": None, "stopped_early": True},
        "rng": resume.rng_states(gen),
    }


def assert_same(saved, loaded, where="state"):
    if isinstance(saved, torch.Tensor):
        assert isinstance(loaded, torch.Tensor), where
        assert saved.dtype == loaded.dtype and torch.equal(saved, loaded), where
    elif isinstance(saved, dict):
        assert isinstance(loaded, dict) and saved.keys() == loaded.keys(), where
        for k in saved:
            assert_same(saved[k], loaded[k], f"{where}[{k!r}]")
    elif isinstance(saved, list | tuple):
        assert type(saved) is type(loaded) and len(saved) == len(loaded), where
        for i, (a, b) in enumerate(zip(saved, loaded, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert type(saved) is type(loaded) and saved == loaded, where


def no_numpy(value) -> bool:
    if isinstance(value, np.ndarray | np.generic):
        return False
    if isinstance(value, dict):
        return all(no_numpy(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(no_numpy(v) for v in value)
    return True


def draws(gen: torch.Generator) -> dict:
    """The next numbers of every RNG the training touches (Gaussians too: their caches)."""
    return {
        "torch": torch.rand(5),
        "generator": torch.rand(5, generator=gen),
        "numpy": np.random.standard_normal(3).tolist() + np.random.randint(0, 2**31, 3).tolist(),
        "python": [random.gauss(0, 1), random.random(), random.getrandbits(64)],
    }


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_state_round_trips_weights_only_and_restores_every_rng(tmp_path, caplog):
    gen = torch.Generator().manual_seed(7)
    torch.rand(2, generator=gen)
    np.random.seed(3)
    np.random.standard_normal()  # leaves numpy's second Gaussian cached (has_gauss = 1)
    random.seed(5)
    random.gauss(0, 1)  # leaves Python's second Gaussian cached (gauss_next: a float)
    state = training_state(gen)
    assert no_numpy(state["rng"])
    assert state["rng"]["numpy"][3] == 1 and isinstance(state["rng"]["python"][2], float)
    path = tmp_path / "models" / "train_state.pt"
    resume.save(path, KEY, state)
    expected = draws(gen)

    for _ in range(3):
        draws(gen)  # the RNGs move on, as in the epochs after the save
    # the whole file loads with the allow-list torch ships, nothing added for numpy
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert_same({"format": 2, "fingerprint": KEY, **state}, raw)
    caplog.set_level(logging.INFO)
    loaded = resume.load(path, KEY)
    assert loaded is not None and not warnings_in(caplog)
    assert loaded.pop("format") == resume.FORMAT == 2 and loaded.pop("fingerprint") == KEY
    assert_same(state, loaded)
    assert loaded["result"]["best_value"] == -math.inf
    assert loaded["result"]["history"][0]["val_loss"] == math.inf
    assert loaded["plateau"]["best"] == 1.5 and loaded["plateau"]["mode_worse"] == math.inf
    assert loaded["plateau"]["mode"] == "min" and loaded["plateau"]["threshold_mode"] == "rel"
    assert loaded["callable_schedule"]["lr_lambdas"] == [{"factor": 0.3}]
    assert loaded["schedule"]["lr_lambdas"] == [None]

    resume.set_rng_states(loaded["rng"], gen)
    assert_same(expected, draws(gen), "draws")

    # the loaded optimizer and schedule states go back into fresh objects
    model = torch.nn.Linear(3, 2)
    model.load_state_dict(loaded["model"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    optimizer.load_state_dict(loaded["optimizer"])  # in the order restore_state loads them
    schedule.load_state_dict(loaded["schedule"])
    assert_same(state["optimizer"], optimizer.state_dict(), "optimizer")
    assert_same(state["schedule"], schedule.state_dict(), "schedule")


@pytest.mark.parametrize("write", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("how", ["touch", "os.system"])
def test_a_planted_payload_is_never_unpickled(tmp_path, caplog, write, how):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Planted(how, control)))  # the payload does run when unpickled
    assert control.exists()

    marker = tmp_path / "pwned"
    payload = {"format": resume.FORMAT, "fingerprint": KEY, "epoch": 1, "x": Planted(how, marker)}
    path = tmp_path / "models" / "train_state.pt"
    path.parent.mkdir()
    if write == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    caplog.set_level(logging.INFO)
    assert resume.load(path, KEY) is None
    assert not marker.exists()
    (message,) = warnings_in(caplog)
    assert str(path) in message and "not a safe training state" in message
    assert "training from the start" in message and "\n" not in message
    assert "weights_only" not in message  # not torch's advice to load it unsafely


def test_other_fingerprints_and_formats_start_afresh(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "train_state.pt"
    assert resume.load(path, KEY) is None  # no state yet: nothing to say
    state = {"epoch": 1, "model": {"w": torch.ones(2)}, "rng": resume.rng_states(torch.Generator())}
    resume.save(path, KEY, state)
    assert resume.load(path, KEY) is not None
    assert resume.load(path, "fingerprint-b") is None
    torch.save({"format": 1, "fingerprint": KEY, **state}, path)
    assert resume.load(path, KEY) is None
    torch.save({"fingerprint": KEY, **state}, path)
    assert resume.load(path, KEY) is None
    assert caplog.text.count("saved for other params or data; training from the start") == 3
    assert not warnings_in(caplog)


def test_an_old_format_pickle_is_refused_with_one_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "train_state.pt"
    old = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    torch.save({"format": 1, "fingerprint": KEY, "rng": old}, path)  # what FORMAT 1 wrote
    assert resume.load(path, KEY) is None
    (message,) = warnings_in(caplog)
    assert message.startswith(f"{path}: ") and "numpy" in message and "\n" not in message


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "a tensor"])
def test_a_damaged_file_starts_afresh_with_one_warning(tmp_path, caplog, damage):
    caplog.set_level(logging.INFO)
    path = tmp_path / "train_state.pt"
    resume.save(path, KEY, {"epoch": 1, "model": {"w": torch.arange(1000.0)}})
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        torch.save(torch.ones(3), path)
    assert resume.load(path, KEY) is None
    (message,) = warnings_in(caplog)
    assert str(path) in message and "training from the start" in message
    assert "\n" not in message


def test_a_state_that_would_not_load_is_not_written(tmp_path):
    path = tmp_path / "train_state.pt"
    resume.save(path, KEY, {"epoch": 1})
    with pytest.raises(TypeError, match="numpy"):
        resume.save(path, KEY, {"epoch": 2, "rng": np.random.get_state()})
    assert resume.load(path, KEY)["epoch"] == 1  # the previous epoch's state is kept
    assert [p.name for p in tmp_path.iterdir()] == ["train_state.pt"]
