"""The one training engine: early stopping and the best epoch decided the same way for every
task. The real hooks of classification and detection train; only the validation metric is
scripted, so the engine's decisions are known in advance."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.test_detection_model import batch
from tests.test_detection_model import tiny as tiny_detector
from visionpipe.core.distributed import Dist
from visionpipe.core.engine import TrainHooks, fit
from visionpipe.core.image.train import ImageHooks
from visionpipe.core.models import build_model
from visionpipe.core.params import Augment, Params, Train
from visionpipe.core.runtime import seed_everything
from visionpipe.tasks import get_task
from visionpipe.tasks.detection.model.dataset import DetectionSet
from visionpipe.tasks.detection.model.hooks import DetectionHooks


class Scripted(TrainHooks):
    """A task's real hooks, with the monitored validation value read from ``script``."""

    def __init__(self, inner: TrainHooks, key: str, script: list[float]):
        self.inner, self.key, self.script = inner, key, iter(script)
        self.model, self.num_samples = inner.model, inner.num_samples
        self.states: list[dict[str, torch.Tensor]] = []

    def frozen(self, epoch):
        return self.inner.frozen(epoch)

    def batch_loss(self, model, idx, gen):
        return self.inner.batch_loss(model, idx, gen)

    def validate(self, model, dist):
        self.states.append(copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()}))
        value = next(self.script)
        return {"loss": 1.0 - value, self.key: value}


def params(epochs: int, patience: int, batch_size: int) -> Params:
    train = Train(epochs=epochs, batch_size=batch_size, early_stopping_patience=patience)
    return Params(train=train, augment=Augment(ops=["hflip"]))


def classification(p: Params) -> tuple[TrainHooks, object]:
    task = get_task("classification")
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=gen)
    y = torch.arange(12) % 3
    model = build_model("small_cnn", 3, pretrained=False).model
    criterion = torch.nn.CrossEntropyLoss()
    return ImageHooks(model, task, p, criterion, x, y, x[:6], y[:6], torch.device("cpu")), task


def detection(p: Params) -> tuple[TrainHooks, object]:
    images, targets = batch()
    data = DetectionSet(images, targets, [1, 2], [1.0, 1.0], ["a.png", "b.png"])
    model = tiny_detector().model
    return DetectionHooks(model, p, data, data, {}, torch.device("cpu")), get_task("detection")


TASKS = {"classification": (classification, "f1_macro"), "detection": (detection, "map")}


def run(task_name: str, script: list[float], epochs: int, patience: int):
    make, key = TASKS[task_name]
    torch.set_num_threads(1)
    p = params(epochs, patience, batch_size=12 if task_name == "classification" else 2)
    hooks, task = make(p)
    scripted = Scripted(hooks, key, script)
    logged = []
    result = fit(
        scripted,
        task,
        p,
        torch.device("cpu"),
        seed_everything(0),
        lambda epoch, metrics: logged.append(epoch),
        dist=Dist(),
    )
    return result, scripted, logged


@pytest.mark.parametrize("task_name", list(TASKS))
def test_early_stopping_keeps_the_best_epoch(task_name):
    result, scripted, logged = run(task_name, [0.5, 0.7, 0.6, 0.65, 0.9], epochs=5, patience=2)
    key = f"val_{TASKS[task_name][1]}"
    assert result.stopped_early and logged == [0, 1, 2, 3]  # epoch 5 never runs
    assert result.best_epoch == 1 and result.best_value == 0.7
    assert [h[key] for h in result.history] == [0.5, 0.7, 0.6, 0.65]
    for name, tensor in scripted.states[1].items():
        assert torch.equal(result.best_state[name], tensor), name
    assert {"train_loss", "val_loss", "lr", "epoch_seconds"} <= set(result.history[0])


@pytest.mark.parametrize("task_name", list(TASKS))
def test_no_early_stop_on_the_last_epoch_and_a_nan_first_epoch_is_kept(task_name):
    result, _, logged = run(task_name, [math.nan, 0.4, 0.3, 0.2], epochs=4, patience=2)
    assert logged == [0, 1, 2, 3] and not result.stopped_early  # no epoch left to skip
    assert result.best_epoch == 1 and result.best_value == 0.4
    result, _, _ = run(task_name, [math.nan], epochs=1, patience=0)
    assert result.best_epoch == 0 and result.best_state is not None
