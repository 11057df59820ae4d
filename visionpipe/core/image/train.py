"""The train stage of the tasks with one output per image: images decoded once into a uint8
tensor, augmented as whole batches, through the shared engine (visionpipe.core.engine)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from visionpipe.core import distributed, resume
from visionpipe.core.augment import augment_batch
from visionpipe.core.batches import predict
from visionpipe.core.cache import Images
from visionpipe.core.checkpoint import save_checkpoint
from visionpipe.core.distributed import Dist
from visionpipe.core.engine import FitResult, TrainHooks, fit, log_best, run_record
from visionpipe.core.freezing import frozen_layers
from visionpipe.core.image.size import image_size, progressive_size, resize_batch
from visionpipe.core.image.split_images import split_images
from visionpipe.core.image.task import BatchMixer, ImageTask
from visionpipe.core.io import write_json
from visionpipe.core.manifests import fingerprint, read_split
from visionpipe.core.models import ImageModel, build_model, count_parameters
from visionpipe.core.params import Params, as_dict
from visionpipe.core.runtime import choose_device, cpu_count, seed_everything, set_threads
from visionpipe.core.tracking import epoch_logger, headline_summary, train_live

log = logging.getLogger("visionpipe.train")


class ImageHooks(TrainHooks):
    """One output vector per image: a criterion on augmented uint8 batches, and the task's
    per-epoch metrics on the whole validation split."""

    def __init__(
        self,
        model: ImageModel,
        task: ImageTask,
        params: Any,
        criterion: nn.Module,
        train_x: Images,
        train_y: torch.Tensor,
        val_x: Images,
        val_y: torch.Tensor,
        device: torch.device,
        mixer: BatchMixer | None = None,
    ):
        self.model, self.task, self.params = model, task, params
        self.mixer = mixer
        self.criterion = criterion.to(device)
        self.train_x, self.train_y, self.val_x, self.val_y = train_x, train_y, val_x, val_y
        self.device = device
        self.num_samples = len(train_x)
        self.sample_weights = task.sample_weights(params, train_y)
        #: the decoded images' size (model.image_size); a progressive schedule trains smaller
        self.full_size = self.size = int(
            val_x[:1].shape[-1] if len(val_x) else train_x[:1].shape[-1]
        )
        model.to(device).to(memory_format=torch.channels_last)

    def begin_epoch(self, epoch: int) -> dict[str, float]:
        t = self.params.train
        self.size = progressive_size(epoch, t.epochs, t.progressive_from, self.full_size)
        return {"image_size": float(self.size)} if t.progressive_from else {}

    def frozen(self, epoch: int) -> list[nn.Module]:
        t = self.params.train
        return frozen_layers(self.model, epoch, t.freeze_backbone_epochs, t.trainable_layers)

    def batch_loss(
        self, model: nn.Module, idx: torch.Tensor, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        x = resize_batch(self.train_x[idx], self.size)
        x = augment_batch(x, self.params.augment, gen)
        y = self.train_y[idx]
        if self.mixer is not None:
            x, y = self.mixer(x, y, gen)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        return {"loss": self.criterion(model(x), y)}

    def validate(self, model: nn.Module, dist: Dist) -> dict[str, float]:
        batch = self.params.train.batch_size * 2
        rows = dist.shard(torch.arange(len(self.val_x)))
        mine = predict(model, self.val_x, batch, self.device, progress=False, rows=rows)
        outputs = dist.gather(mine, len(self.val_x))
        loss = float(self.criterion(outputs.to(self.device), self.val_y.to(self.device)).item())
        return {"loss": loss, **self.task.epoch_metrics(outputs, self.val_y)}


def state_key(params: Params, task_name: str, dataset: str, labels: list[str], code: str) -> str:
    """What a saved training state must match to be resumed: every param that shapes training
    (not ``train.resume`` itself), the split manifests' hash, the labels and the train stage's
    code (``code``: the fingerprint of its dvc.yaml code deps)."""
    train = {k: v for k, v in as_dict(params.train).items() if k != "resume"}
    own = getattr(params, task_name)  # the task's own section (classification, regression)
    model = {k: v for k, v in as_dict(params.model).items() if k != "tta"}  # not trained
    sections = [as_dict(params.base), model, as_dict(params.augment), as_dict(own)]
    return resume.fingerprint(train, sections, params.data.target_column, dataset, labels, code)


def train(task: ImageTask, params: Params, args: argparse.Namespace, code: str) -> None:
    """The train stage: fit on the train split, keep the best epoch by the monitor; resumes
    from ``args.state``, and with ``train.nproc > 1`` reruns itself under torchrun."""
    monitor = task.monitor(params)
    if distributed.relaunch_train(params.train.nproc, choose_device(params.train.device)):
        return
    dist = distributed.init()
    train_m, val_m = read_split(args.splits, "train"), read_split(args.splits, "val")
    labels = task.labels(train_m, params)
    target_meta = task.fit_targets(train_m, params)
    train_y, val_y = task.targets(train_m, labels), task.targets(val_m, labels)
    criterion = task.criterion(params, labels, train_y)
    gen = seed_everything(params.base.seed)
    # the cores are shared between the processes
    threads = set_threads(dist.threads(params.train.num_threads, cpu_count()))
    device = choose_device(params.train.device, dist.local_rank)
    m, hidden = params.model, task.head_hidden(params)
    built = build_model(m.arch, len(labels), m.pretrained, m.dropout, m.weights, hidden)
    log.info(
        "%s model %s, %d output(s) (%s), initial weights: %s",
        task.name,
        m.arch,
        len(labels),
        ", ".join(labels) if len(labels) <= 8 else f"{len(labels)} classes",
        built.weights_source,
    )

    size = image_size(m, train_m)
    if m.image_size == "auto":
        log.info(
            "model.image_size auto: %d px (the train images' median, within %s)",
            size,
            m.auto_size_range,
        )
    num_parameters = count_parameters(built.model)
    train_x = split_images(params, train_m, size, "decoding train")
    val_x = split_images(params, val_m, size, "decoding val")
    dataset = fingerprint(args.splits)
    key = state_key(params, task.name, dataset, labels, code)
    mixer = task.batch_mixer(params, labels)
    hooks = ImageHooks(
        built.model, task, params, criterion, train_x, train_y, val_x, val_y, device, mixer
    )
    with train_live(args.live, dist.is_main) as live:
        log_epoch = epoch_logger(live)  # not rank 0 (live is None): only one process writes
        state = args.state if params.train.resume else None
        result = fit(hooks, task, params, device, gen, log_epoch, state, key, dist)
        if live is None:
            distributed.finish(dist)
            return
        built.model.load_state_dict(result.best_state)
        built.model.tta = m.tta  # calibrated as evaluate, export and predict will run it
        batch = params.train.batch_size * 2
        val_outputs = predict(built.model, val_x, batch, device, progress=False)
        meta = {
            "task": task.name,
            "arch": m.arch,
            "num_outputs": len(labels),
            "labels": labels,
            "image_size": size,
            "tta": m.tta,
            "dropout": m.dropout,
            "head_hidden": hidden,
            **target_meta,
            **task.calibrate(val_outputs, val_y),
            "input": (
                "RGB float or uint8, 0..255, N x 3 x H x W (normalization is inside the model)"
            ),
            "initial_weights": built.weights_source,
            "num_parameters": num_parameters,
            "dataset_fingerprint": dataset,
            "dataset": {"train_images": len(train_m), "val_images": len(val_m)},
            **run_record(result, monitor, params, dist, device, threads),
        }
        save_checkpoint(args.model, built.model, meta)
        write_json(args.class_index, {str(i): name for i, name in enumerate(labels)})
        # last: the metrics file, written as the block ends, is the saved model's result
        headline_summary(live, result, monitor, {"image_size": size})
    distributed.finish(dist)
    log_best(result, params, monitor, args.model)


def fit_images(
    model: ImageModel,
    task: ImageTask,
    params: Any,
    criterion: nn.Module,
    train_x: Images,
    train_y: torch.Tensor,
    val_x: Images,
    val_y: torch.Tensor,
    device: torch.device,
    gen: torch.Generator,
    log_epoch: Callable[[int, dict[str, float]], None],
    state_path: str | None = None,
    state_key: str = "",
    dist: Dist | None = None,
    mixer: BatchMixer | None = None,
) -> FitResult:
    """The engine's :func:`~visionpipe.core.engine.fit` on decoded image tensors."""
    hooks = ImageHooks(
        model, task, params, criterion, train_x, train_y, val_x, val_y, device, mixer
    )
    return fit(hooks, task, params, device, gen, log_epoch, state_path, state_key, dist)
