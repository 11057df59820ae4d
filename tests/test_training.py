"""The training loop learns: a small net from scratch separates bright from dark images."""

from types import SimpleNamespace

import torch

from visionpipe.models import build_model
from visionpipe.runtime import seed_everything
from visionpipe.tasks import get_task
from visionpipe.training import fit


def synthetic(n: int, gen: torch.Generator):
    y = torch.randint(0, 2, (n,), generator=gen)
    base = torch.where(y[:, None, None, None] == 1, 170.0, 80.0)
    x = (base + 25 * torch.randn(n, 3, 32, 32, generator=gen)).clamp(0, 255).to(torch.uint8)
    return x, y


def test_fit_learns_and_keeps_best_epoch():
    gen = seed_everything(0)
    train_x, train_y = synthetic(128, gen)
    val_x, val_y = synthetic(64, gen)
    params = SimpleNamespace(
        train=SimpleNamespace(
            epochs=4,
            batch_size=32,
            lr=3e-3,
            weight_decay=0.0,
            optimizer="adamw",
            label_smoothing=0.0,
            monitor="val_accuracy",
            augment=["hflip"],
            amp=True,
        )
    )
    model = build_model("resnet18", 2, pretrained=False, dropout=0.0).model
    logged = []
    result = fit(
        model,
        get_task("classification"),
        params,
        train_x,
        train_y,
        val_x,
        val_y,
        torch.device("cpu"),
        gen,
        lambda e, m: logged.append((e, m)),
    )
    assert [e for e, _ in logged] == [0, 1, 2, 3]
    assert set(logged[0][1]) >= {"train_loss", "val_loss", "val_accuracy", "val_f1_macro", "lr"}
    best = max(m["val_accuracy"] for _, m in logged)
    assert result.best_value == best and logged[result.best_epoch][1]["val_accuracy"] == best
    assert best >= 0.9
