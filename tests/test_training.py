"""The training loop: it learns, and its schedule, freezing and early stopping do what they say."""

import dataclasses

import pytest
import torch

from visionpipe.core.engine import Schedule, make_optimizer
from visionpipe.core.errors import UserError
from visionpipe.core.freezing import frozen_layers
from visionpipe.core.image.train import fit_images as fit
from visionpipe.core.models import backbone_layers, build_model, head
from visionpipe.core.params import Augment, Params, Train
from visionpipe.core.runtime import seed_everything
from visionpipe.tasks import get_task
from visionpipe.tasks.classification.model.class_weights import class_weights


def synthetic(n: int, gen: torch.Generator, size: int = 32):
    y = torch.randint(0, 2, (n,), generator=gen)
    base = torch.where(y[:, None, None, None] == 1, 170.0, 80.0)
    x = (base + 25 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 255)
    return x.to(torch.uint8), y


def params(**train) -> Params:
    defaults = {"epochs": 4, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.0}
    return Params(
        augment=Augment(ops=["hflip"]),
        train=Train(**{**defaults, "monitor": "val_accuracy", **train}),
    )


def run_fit(model, p: Params, seed: int = 0, n: int = 128, criterion=None, mixer=None):
    gen = seed_everything(seed)
    train_x, train_y = synthetic(n, gen)
    val_x, val_y = synthetic(64, gen)
    logged = []
    criterion = criterion or torch.nn.CrossEntropyLoss()
    result = fit(
        model,
        get_task("classification"),
        p,
        criterion,
        train_x,
        train_y,
        val_x,
        val_y,
        torch.device("cpu"),
        gen,
        lambda e, m: logged.append((e, m)),
        mixer=mixer,
    )
    return result, logged


def test_fit_learns_and_keeps_best_epoch():
    model = build_model("resnet18", 2, pretrained=False, dropout=0.0).model
    result, logged = run_fit(model, params())
    assert [e for e, _ in logged] == [0, 1, 2, 3]
    assert set(logged[0][1]) >= {"train_loss", "val_loss", "val_accuracy", "val_f1_macro", "lr"}
    best = max(m["val_accuracy"] for _, m in logged)
    assert result.best_value == best and logged[result.best_epoch][1]["val_accuracy"] == best
    assert best >= 0.9 and not result.stopped_early


def test_small_cnn_from_scratch_learns():
    # seeded init, warmup and cosine at 3e-3: a flat 1e-2 failed for 3 inits in 30
    seed_everything(0)
    model = build_model("small_cnn", 2, pretrained=False, dropout=0.1).model
    result, _ = run_fit(model, params(epochs=5), n=256)
    assert result.best_value >= 0.9


def test_early_stopping_restores_the_best_epoch():
    # lr 0 never improves after epoch 0, so patience 2 stops after epoch 2
    model = build_model("small_cnn", 2, pretrained=False).model
    p = params(epochs=10, schedule="none", early_stopping_patience=2)
    p = dataclasses.replace(p, train=dataclasses.replace(p.train, lr=1e-12))
    result, logged = run_fit(model, p)
    assert result.stopped_early and len(logged) == 3 and result.best_epoch == 0
    assert result.best_value == logged[0][1]["val_accuracy"]


def test_freeze_backbone_epochs_then_unfreeze():
    model = build_model("small_cnn", 2, pretrained=False).model
    layers = backbone_layers(model)
    before = [p.detach().clone() for layer in layers for p in layer.parameters()]
    head_before = [p.detach().clone() for p in head(model).parameters()]
    _, logged = run_fit(model, params(epochs=1, freeze_backbone_epochs=1))
    after = [p for layer in layers for p in layer.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(head_before, head(model).parameters(), strict=True)
    )
    # BatchNorm statistics of frozen layers are not updated either
    bn = next(m for m in layers[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert logged[0][1]["frozen_layers"] == len(layers)
    assert frozen_layers(model, 1, 1, -1) == []  # epoch 1: everything trains


def test_trainable_layers_keeps_the_first_layers_frozen():
    model = build_model("small_cnn", 2, pretrained=False).model
    layers = backbone_layers(model)
    first = [p.detach().clone() for p in layers[0].parameters()]
    last = [p.detach().clone() for p in layers[-1].parameters()]
    run_fit(model, params(epochs=1, trainable_layers=1))
    assert all(torch.equal(a, b) for a, b in zip(first, layers[0].parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(last, layers[-1].parameters(), strict=True))
    assert frozen_layers(model, 0, 0, 0) == layers  # 0: head only
    assert frozen_layers(model, 0, 0, 99) == []


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "resnet18", "mobilenet_v3_small"])
def test_backbone_layers_and_head_cover_every_parameter(arch):
    model = build_model(arch, 3, pretrained=False).model
    layers = backbone_layers(model)
    ids = [id(p) for layer in layers for p in layer.parameters()]
    ids += [id(p) for p in head(model).parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert len(layers) >= 5


def test_warmup_cosine_and_plateau_schedules():
    net = torch.nn.Linear(2, 2)
    p = params(epochs=4, lr=1.0, warmup_epochs=1.0).train
    opt = make_optimizer(net, p.optimizer, p.lr, p.weight_decay)
    schedule = Schedule(opt, p, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step_batch()
    assert lrs[0] < 0.2 and lrs[:10] == sorted(lrs[:10])  # linear warmup
    assert max(lrs) == pytest.approx(1.0) and lrs[10:] == sorted(lrs[10:], reverse=True)
    assert lrs[-1] < 0.01  # cosine decays to ~0

    p = params(schedule="plateau", lr=1.0, plateau_patience=1, plateau_factor=0.5).train
    opt = make_optimizer(net, p.optimizer, p.lr, p.weight_decay)
    schedule = Schedule(opt, p, steps_per_epoch=10)
    for loss in (1.0, 0.9, 0.9, 0.9):
        schedule.step_batch()  # no per-step change
        schedule.step_epoch(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_class_weights_balanced_explicit_and_errors():
    labels = ["a", "b", "c"]
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    assert class_weights("none", labels, y) is None
    w = class_weights("balanced", labels, y)
    assert torch.allclose(w, torch.tensor([10 / 18, 10 / 9, 10 / 3]))
    assert class_weights({"c": 4.0}, labels, y).tolist() == [1.0, 1.0, 4.0]
    with pytest.raises(
        UserError, match=r"classification.class_weights: 'd', 'z' not a class; classes: a"
    ):
        class_weights({"d": 2.0, "z": 1.0}, labels, y)
    with pytest.raises(UserError, match="'c' has no training images"):
        class_weights("balanced", labels, torch.tensor([0, 1, 1]))
