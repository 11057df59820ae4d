"""The detection training loop: Faster R-CNN losses plus the weighted state loss, per component.

Plain and explicit, like torchvision's detection reference: AdamW, ReduceLROnPlateau on the
validation loss, mixed precision on CUDA, flips that move the boxes, the best epoch by a
validation metric (COCO mAP by default), early stopping, and a state saved after every epoch so
an interrupted run resumes (visionpipe.resume).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from visionpipe import resume
from visionpipe.data import batches
from visionpipe.detection.data import DetectionSet, augment, to_coco_results
from visionpipe.detection.metrics import evaluate_coco, match_detections, state_metrics
from visionpipe.training import (
    AMP_DTYPES,
    FitResult,
    autocast,
    is_better,
    make_optimizer,
    restore_state,
    save_state,
)

log = logging.getLogger(__name__)

#: the detector's own losses, logged one by one; the total adds the weighted state loss
DETECTION_LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
LOSSES = (*DETECTION_LOSSES, "loss_state")


def total_loss(losses: dict[str, torch.Tensor], state_weight: float) -> torch.Tensor:
    """Detection losses + ``state_weight`` x state cross-entropy."""
    return sum(losses[k] for k in DETECTION_LOSSES) + state_weight * losses["loss_state"]


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """Training-mode forward (the detector only returns losses in train mode) with batch norm
    statistics frozen, no gradients and a fixed sampling seed: a validation loss that does not
    change the model and is the same for the same weights."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
    model.eval()


def _to_device(target: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in target.items()}


def mean_losses(
    model: nn.Module,
    data: DetectionSet,
    batch_size: int,
    device: torch.device,
    state_weight: float,
) -> dict[str, float]:
    """Each loss component (and the total) averaged over ``data``, without training."""
    sums = dict.fromkeys((*LOSSES, "loss"), 0.0)
    with loss_mode(model):
        for idx in batches(len(data), batch_size):
            images = [data.images[i].to(device).float() for i in idx]
            targets = [_to_device(data.targets[i], device) for i in idx]
            losses = model(images, targets)
            losses["loss"] = total_loss(losses, state_weight)
            for key in sums:
                sums[key] += float(losses[key]) * len(idx)
    return {k: v / max(len(data), 1) for k, v in sums.items()}


@torch.no_grad()
def predict(
    model: nn.Module, data: DetectionSet, batch_size: int, device: torch.device, desc: str = ""
) -> list[dict[str, torch.Tensor]]:
    """Detections (boxes, labels, scores, states, state_scores) per image, on the CPU."""
    model.eval()
    outputs: list[dict[str, torch.Tensor]] = []
    order = list(batches(len(data), batch_size))
    for idx in tqdm(order, desc=desc or "predicting", unit="batch", disable=not desc):
        images = [data.images[i].to(device).float() for i in idx]
        for out in model(images):
            outputs.append({k: v.detach().cpu() for k, v in out.items()})
    return outputs


def validation_metrics(
    model: nn.Module,
    data: DetectionSet,
    gt: dict,
    params: Any,
    device: torch.device,
) -> dict[str, float]:
    """COCO mAP, mAP@.5 and state accuracy (at the score and IoU thresholds) on ``data``."""
    cfg = params.detection
    outputs = predict(model, data, cfg.batch_size, device)
    records = to_coco_results(outputs, data.image_ids, data.scales, gt, cfg.states)
    coco = evaluate_coco(gt, records).metrics
    matches = match_detections(gt, records, cfg.iou_threshold, cfg.score_threshold)
    states = state_metrics(matches, list(cfg.states))
    return {
        "map": coco["map"] or 0.0,
        "map_50": coco["map_50"] or 0.0,
        "state_accuracy": states["state_accuracy"] or 0.0,
    }


def fit_detector(
    model: nn.Module,
    train: DetectionSet,
    val: DetectionSet,
    val_gt: dict,
    params: Any,
    monitor: tuple[str, str],
    device: torch.device,
    gen: torch.Generator,
    log_epoch: Callable[[int, dict[str, float]], None],
    state_path: str | None = None,
    state_key: str = "",
) -> FitResult:
    """Train ``model`` on ``train``; keep the weights of the best epoch by ``monitor`` (name
    without ``val_``, and ``max`` or ``min``) on ``val``."""
    cfg, tcfg = params.detection, params.train
    name, mode = monitor
    model.to(device)
    optimizer = make_optimizer(model, "adamw", cfg.lr, cfg.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    amp = AMP_DTYPES[tcfg.amp_dtype] if tcfg.amp and device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    result = FitResult(best_epoch=-1, best_value=float("-inf" if mode == "max" else "inf"))
    start = 0
    saved = resume.load(state_path, state_key) if state_path else None
    if saved is not None:
        result, start = restore_state(saved, model, optimizer, plateau, scaler, gen, log_epoch)
        log.info("resuming after epoch %d of %d", start, cfg.epochs)

    for epoch in range(start, cfg.epochs):
        if result.stopped_early:
            break
        started = time.perf_counter()
        model.train()
        sums = dict.fromkeys((*LOSSES, "loss"), 0.0)
        order = list(batches(len(train), cfg.batch_size, shuffle=True, gen=gen))
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        for idx in bar:
            pairs = [augment(train.images[i], train.targets[i], cfg.flips, gen) for i in idx]
            images = [img.to(device, non_blocking=True).float() for img, _ in pairs]
            targets = [_to_device(t, device) for _, t in pairs]
            with autocast(device, amp):
                losses = model(images, targets)
                loss = total_loss(losses, cfg.state_loss_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses["loss"] = loss
            for key in sums:
                sums[key] += float(losses[key]) * len(idx)
            bar.set_postfix(loss=f"{float(loss):.3f}")
        metrics = {f"train_{k}": v / len(train) for k, v in sums.items()}
        val_losses = mean_losses(model, val, cfg.batch_size, device, cfg.state_loss_weight)
        metrics.update({f"val_{k}": v for k, v in val_losses.items()})
        scores = validation_metrics(model, val, val_gt, params, device)
        metrics.update({f"val_{k}": v for k, v in scores.items()})
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["epoch_seconds"] = time.perf_counter() - started
        plateau.step(val_losses["loss"])
        result.history.append(metrics)
        value = metrics[f"val_{name}"]
        if result.best_epoch < 0 or is_better(value, result.best_value, mode):
            result.best_epoch, result.best_value = epoch, value
            result.best_state = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, val mAP %.4f, mAP@.5 %.4f, state acc %.4f",
            epoch + 1,
            metrics["train_loss"],
            metrics["val_loss"],
            metrics["val_map"],
            metrics["val_map_50"],
            metrics["val_state_accuracy"],
        )
        log_epoch(epoch, metrics)
        patience = tcfg.early_stopping_patience
        result.stopped_early = bool(patience and epoch - result.best_epoch >= patience)
        if state_path:
            save_state(
                state_path, state_key, epoch + 1, model, optimizer, plateau, scaler, result, gen
            )
        if result.stopped_early:
            log.info("early stop: no %s improvement for %d epochs", name, patience)
    return result
