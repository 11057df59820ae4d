"""The one training loop of every task: optimizer, schedule, mixed precision, freezing, early
stopping, the best epoch, resuming from the last epoch's state, and DistributedDataParallel.

Plain and explicit in the manner of the torchvision references. What differs between tasks is
behind :class:`TrainHooks` (the loss of a batch, the validation metrics, which layers are
frozen), so every task stops early, picks its best epoch, resumes, logs and shards the same
way. Per-epoch metrics go to a callback (dvclive in the train stage).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from visionpipe.core import resume
from visionpipe.core.batches import batches
from visionpipe.core.distributed import Dist
from visionpipe.core.freezing import apply_freeze
from visionpipe.core.task import TaskModel

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    best_epoch: int
    best_value: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early: bool = False


def make_optimizer(
    model: torch.nn.Module, name: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD over every parameter; no weight decay on biases and norm parameters.

    Frozen parameters stay in the optimizer: they get no gradient, so it skips them until they
    are unfrozen, and one optimizer serves the whole freeze schedule.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr)


class Schedule:
    """The learning-rate schedule behind one interface: stepped per batch and per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, train: Any, steps_per_epoch: int):
        self.kind = train.schedule
        self.plateau = None
        self.per_step = None
        if self.kind == "warmup_cosine":
            total = max(train.epochs * steps_per_epoch, 1)
            warmup = min(round(train.warmup_epochs * steps_per_epoch), total - 1)

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / (warmup + 1)
                progress = (step - warmup) / max(total - warmup, 1)
                return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

            self.per_step = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        elif self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=train.plateau_factor, patience=train.plateau_patience
            )

    def step_batch(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def step_epoch(self, val_loss: float) -> None:
        if self.plateau is not None:
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        scheduler = self.per_step or self.plateau
        return scheduler.state_dict() if scheduler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scheduler = self.per_step or self.plateau
        if scheduler is not None:
            scheduler.load_state_dict(state)


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    # mixed precision on CUDA only: on this kind of CPU bf16 slowed depthwise nets down
    if dtype is not None and device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class TrainHooks(ABC):
    """What a task does inside the shared loop: the loss of a batch and the validation metrics.

    ``model`` is the network being trained; ``num_samples`` the training samples an epoch goes
    through (batches of indices into them reach :meth:`batch_loss`).
    """

    model: nn.Module
    num_samples: int
    #: DDP: let a step leave some parameters without a gradient (a detector's heads can)
    find_unused_parameters: bool = False
    #: None: an epoch goes through every sample once, shuffled; else one draw weight per
    #: sample, and an epoch draws ``num_samples`` of them with replacement in proportion
    #: (class-balanced sampling)
    sample_weights: torch.Tensor | None = None

    def frozen(self, epoch: int) -> list[nn.Module] | None:
        """The layers that do not train in ``epoch`` (0-based); None: the model's own
        ``requires_grad`` flags stand (the task froze what it wanted when it built it)."""
        return None

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        """Called as epoch ``epoch`` (0-based) starts; what it returns is logged with the
        epoch's values as ``train_<name>`` (e.g. the size a progressive schedule trains at)."""
        return {}

    @abstractmethod
    def batch_loss(
        self, model: nn.Module, idx: torch.Tensor, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The losses of the training samples ``idx`` (augmented with ``gen``) through
        ``model`` (the network, or DDP around it); ``loss`` is the one minimized, every other
        entry a component logged as ``train_<name>``."""

    @abstractmethod
    def validate(self, model: nn.Module, dist: Dist) -> dict[str, float]:
        """Validation metrics without the ``val_`` prefix, ``loss`` among them (the plateau
        schedule steps on it); the same values in every process of a distributed run."""


class TrainStep:
    """One optimization step: zero the gradients, the losses under autocast, the scaled
    backward pass and the optimizer step. Shared by the loop and the data-path benchmark, so
    the benchmark times exactly what training does."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
    ):
        self.optimizer, self.device, self.amp_dtype = optimizer, device, amp_dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def __call__(self, losses: Callable[[], dict[str, torch.Tensor]]) -> dict[str, float]:
        with autocast(self.device, self.amp_dtype):
            values = losses()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(values["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: float(v.detach()) for k, v in values.items()}


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


class WeightAverage:
    """An exponential moving average of the weights and BatchNorm statistics
    (``train.ema_decay``), through timm's ModelEmaV3 with its warmup: the decay at step t is
    ``min(ema_decay, 1 - t ** -2/3)`` (0 at the first step, which copies the weights), so the
    average follows the early, fast-changing weights closely and settles only later.
    Validation, the best epoch and the saved model use the averaged weights; the optimizer
    trains the raw ones."""

    def __init__(self, model: torch.nn.Module, decay: float):
        from timm.utils.model_ema import ModelEmaV3

        self.ema = ModelEmaV3(model, decay=decay, use_warmup=True)
        self.ema.module.requires_grad_(False)
        self.steps = 0

    @property
    def module(self) -> torch.nn.Module:
        return self.ema.module

    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        self.ema.update(model, step=self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "weights": _cpu_state(self.ema.module)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:  # a state saved without an average: start it from the weights
            return
        self.steps = state["steps"]
        self.ema.module.load_state_dict(state["weights"])


def is_better(value: float, best: float, mode: str) -> bool:
    """``value`` improves on ``best`` (any number improves on a NaN best, a NaN on nothing)."""
    if math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def save_state(
    path: str,
    key: str,
    epochs_done: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    scaler: torch.amp.GradScaler,
    result: FitResult,
    gen: torch.Generator,
    ema: WeightAverage | None = None,
) -> None:
    """The state after ``epochs_done`` epochs, for :func:`restore_state` (see core.resume)."""
    resume.save(
        path,
        key,
        {
            "epoch": epochs_done,
            "model": _cpu_state(model),
            "ema": ema.state_dict() if ema is not None else None,
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "result": dataclasses.asdict(result),
            "rng": resume.rng_states(gen),
        },
    )


def restore_state(
    saved: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    scaler: torch.amp.GradScaler,
    gen: torch.Generator,
    log_epoch: Callable[[int, dict[str, float]], None],
    ema: WeightAverage | None = None,
) -> tuple[FitResult, int]:
    """Load what :func:`save_state` wrote, replay its epochs to ``log_epoch`` (so dvclive's
    files are complete), and return the result so far and the number of epochs done."""
    model.load_state_dict(saved["model"])
    if ema is not None:
        ema.load_state_dict(saved.get("ema"))
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    scaler.load_state_dict(saved["scaler"])
    resume.set_rng_states(saved["rng"], gen)
    result = FitResult(**saved["result"])
    for epoch, metrics in enumerate(result.history):
        log_epoch(epoch, metrics)
    return result, saved["epoch"]


def _ddp(
    model: torch.nn.Module, device: torch.device, dist: Dist, find_unused: bool = False
) -> torch.nn.Module:
    """The module the training step calls: DDP around ``model`` in a distributed run.

    Rebuilt whenever the set of frozen layers changes: DDP registers its gradient hooks for the
    parameters that require a gradient when it is built.
    """
    if not dist.active:
        return model
    ids = [dist.local_rank] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=find_unused
    )


def _epoch_batches(
    n: int,
    batch_size: int,
    gen: torch.Generator,
    dist: Dist,
    weights: torch.Tensor | None = None,
) -> list:
    """Shuffled index batches (or ``n`` draws in proportion to ``weights``), the same in every
    process; batches too small to give every process at least 2 samples are left out
    (BatchNorm cannot train on one sample)."""
    if weights is None:
        order = list(batches(n, batch_size, shuffle=True, gen=gen))
    else:
        drawn = torch.multinomial(weights.double(), n, replacement=True, generator=gen)
        order = list(drawn.split(batch_size))
    return [idx for idx in order if len(idx) >= 2 * dist.world or len(order) == 1]


def fit(
    hooks: TrainHooks,
    task: TaskModel,
    params: Any,
    device: torch.device,
    gen: torch.Generator,
    log_epoch: Callable[[int, dict[str, float]], None],
    state_path: str | None = None,
    state_key: str = "",
    dist: Dist | None = None,
) -> FitResult:
    """Train up to ``params.train.epochs``; keep the weights of the best epoch by the task's
    monitor (``train.monitor``).

    Stops early after ``early_stopping_patience`` epochs without improvement (0: never) while
    epochs are left; the returned ``best_state`` is always the best epoch's, so stopping early
    restores it. The first epoch is the best so far whatever its value (a NaN included).

    With ``state_path``, the state after each epoch is saved there, and a state saved under the
    same ``state_key`` is resumed: its epochs are replayed to ``log_epoch`` and training goes on
    from the next one. ``dist``: this process's rank in a DistributedDataParallel run; each
    process trains on its share of every batch.
    """
    cfg = params.train
    dist = dist or Dist()
    model = hooks.model
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay)
    schedule = Schedule(optimizer, cfg, math.ceil(hooks.num_samples / cfg.batch_size))
    amp_dtype = AMP_DTYPES[cfg.amp_dtype] if cfg.amp and device.type == "cuda" else None
    step = TrainStep(optimizer, device, amp_dtype)
    monitor = task.monitor(params).removeprefix("val_")
    mode = task.monitor_modes[monitor]
    result = FitResult(best_epoch=-1, best_value=-math.inf if mode == "max" else math.inf)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    start = 0
    saved = resume.load(state_path, state_key) if state_path else None
    if saved is not None:
        result, start = restore_state(
            saved, model, optimizer, schedule, step.scaler, gen, log_epoch, ema
        )
        log.info("resuming after epoch %d of %d from %s", start, cfg.epochs, state_path)

    net, frozen_ids = None, None
    for epoch in range(start, cfg.epochs):
        if result.stopped_early:
            break
        frozen = hooks.frozen(epoch)
        schedule_values = hooks.begin_epoch(epoch)
        model.train()
        if frozen is not None:
            apply_freeze(model, frozen)
        ids = tuple(id(m) for m in frozen or ())
        if net is None or frozen_ids != ids:  # DDP hooks the parameters that train when built
            net, frozen_ids = _ddp(model, device, dist, hooks.find_unused_parameters), ids
        began, sums, seen = time.perf_counter(), {}, 0
        bar = tqdm(
            _epoch_batches(hooks.num_samples, cfg.batch_size, gen, dist, hooks.sample_weights),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not dist.is_main,
        )
        for idx in bar:
            mine = dist.shard(idx)
            losses = step(lambda net=net, mine=mine: hooks.batch_loss(net, mine, gen))
            schedule.step_batch()
            if ema is not None:
                ema.update(model)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value * len(mine)
            seen += len(mine)
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}")
        totals = dist.sum(*sums.values(), seen)
        seen = totals[-1]
        train_time = time.perf_counter() - began

        evaluated = ema.module if ema is not None else model  # what would be saved
        with autocast(device, amp_dtype):
            val = hooks.validate(evaluated, dist)
        metrics = {f"train_{k}": v / max(seen, 1) for k, v in zip(sums, totals, strict=False)}
        metrics.update({f"val_{k}": v for k, v in val.items()})
        metrics.update({f"train_{k}": v for k, v in schedule_values.items()})
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["frozen_layers"] = len(frozen or ())
        metrics["epoch_seconds"] = train_time
        schedule.step_epoch(val["loss"])
        result.history.append(metrics)
        log_epoch(epoch, metrics)

        value = metrics[f"val_{monitor}"]
        if result.best_epoch < 0 or is_better(value, result.best_value, mode):
            result.best_epoch, result.best_value = epoch, value
            result.best_state = copy.deepcopy(_cpu_state(evaluated))
        log.info(
            "epoch %d/%d: %s (%.1f samples/s)%s",
            epoch + 1,
            cfg.epochs,
            ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch_seconds"),
            hooks.num_samples / train_time,
            " *best*" if result.best_epoch == epoch else "",
        )
        patience = cfg.early_stopping_patience
        if patience and epoch - result.best_epoch >= patience and epoch + 1 < cfg.epochs:
            log.info(
                "early stopping: no val_%s improvement for %d epochs; restoring epoch %d",
                monitor,
                patience,
                result.best_epoch + 1,
            )
            result.stopped_early = True
        if state_path and dist.is_main:
            save_state(
                state_path,
                state_key,
                epoch + 1,
                model,
                optimizer,
                schedule,
                step.scaler,
                result,
                gen,
                ema,
            )
    if hooks.frozen(0) is not None:
        for p in model.parameters():
            p.requires_grad_(True)
    return result


def run_record(
    result: FitResult,
    monitor: str,
    params: Any,
    dist: Dist,
    device: torch.device,
    threads: int,
) -> dict[str, Any]:
    """What every task's checkpoint metadata records about the run that produced it."""
    from visionpipe.core.distributed import backend

    return {
        "best_epoch": result.best_epoch,
        "history": result.history,
        "monitor": {monitor: result.best_value},
        "stopped_early": result.stopped_early,
        "distributed": {"processes": dist.world, "backend": backend() if dist.active else None},
        "device": str(device),
        "threads": threads,
        "train_params": dataclasses.asdict(params.train),
        "augment_params": dataclasses.asdict(params.augment),
    }


def log_best(result: FitResult, params: Any, monitor: str, path: str) -> None:
    log.info(
        "best epoch %d of %d (%s=%.4f) saved to %s",
        result.best_epoch + 1,
        params.train.epochs,
        monitor,
        result.best_value,
        path,
    )
