"""The training loop shared by all tasks: optimizer, schedule, per-epoch validation, best model.

Plain and explicit in the manner of the torchvision references. Per-epoch metrics go to dvclive;
the caller decides where the best weights are saved.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from visionpipe.data import augment_batch, batches
from visionpipe.evaluation import predict
from visionpipe.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None


def make_optimizer(model: torch.nn.Module, train: Any) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD; no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=0.9, nesterov=True)
    cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=train.lr)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    # fp16 autocast on CUDA only: on this kind of CPU bf16 slowed depthwise nets down
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def is_better(value: float, best: float, mode: str) -> bool:
    return value > best if mode == "max" else value < best


def fit(
    model: torch.nn.Module,
    task: Task,
    params: Any,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    device: torch.device,
    gen: torch.Generator,
    log_epoch: Callable[[int, dict[str, float]], None],
) -> FitResult:
    """Train for ``params.train.epochs``; keep the weights of the best epoch by the monitor."""
    cfg = params.train
    model.to(device).to(memory_format=torch.channels_last)
    criterion = task.loss(params).to(device)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.lr,
        total_steps=cfg.epochs * steps_per_epoch,
        pct_start=min(0.3, 1.0 / cfg.epochs),
        anneal_strategy="cos",
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    monitor = cfg.monitor.removeprefix("val_")
    mode = task.monitor_modes[monitor]
    result = FitResult(best_epoch=-1, best_value=-math.inf if mode == "max" else math.inf)

    for epoch in range(cfg.epochs):
        model.train()
        start, total, seen = time.perf_counter(), 0.0, 0
        bar = tqdm(
            list(batches(len(train_x), cfg.batch_size, shuffle=True, gen=gen)),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
        )
        for idx in bar:
            x = augment_batch(train_x[idx], cfg.augment, gen)
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = train_y[idx].to(device, non_blocking=True)
            with _autocast(device, use_amp):
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        train_time = time.perf_counter() - start

        with _autocast(device, use_amp):
            outputs = predict(model, val_x, cfg.batch_size * 2, device, progress=False)
        val_loss = float(criterion(outputs, val_y).item())
        metrics = {"train_loss": total / max(seen, 1), "val_loss": val_loss}
        metrics.update({f"val_{k}": v for k, v in task.epoch_metrics(outputs, val_y).items()})
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["epoch_seconds"] = train_time
        result.history.append(metrics)
        log_epoch(epoch, metrics)

        value = metrics[f"val_{monitor}"]
        if is_better(value, result.best_value, mode):
            result.best_epoch, result.best_value = epoch, value
            result.best_state = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
        log.info(
            "epoch %d/%d: %s (%.1f img/s)%s",
            epoch + 1,
            cfg.epochs,
            ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch_seconds"),
            len(train_x) / train_time,
            " *best*" if result.best_epoch == epoch else "",
        )
    return result
