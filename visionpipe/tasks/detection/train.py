"""Detection's train stage: Faster R-CNN with a state head (none without states) on the train
split, through the shared engine, the best epoch by the monitor on val (COCO mAP by default)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from visionpipe.core import distributed, resume
from visionpipe.core.checkpoint import save_checkpoint
from visionpipe.core.coco import part_names, read_split_coco
from visionpipe.core.engine import fit, log_best, run_record
from visionpipe.core.io import write_json
from visionpipe.core.manifests import fingerprint
from visionpipe.core.models import count_parameters
from visionpipe.core.params import Params, as_dict
from visionpipe.core.runtime import choose_device, cpu_count, seed_everything, set_threads
from visionpipe.core.tracking import epoch_logger, headline_summary, train_live
from visionpipe.tasks import code_fingerprint
from visionpipe.tasks.detection.model import DetectionTask
from visionpipe.tasks.detection.model.dataset import load_split
from visionpipe.tasks.detection.model.detector import build_detector
from visionpipe.tasks.detection.model.hooks import DetectionHooks
from visionpipe.tasks.detection.model.state_calibration import calibrate_states

log = logging.getLogger("visionpipe.train")


def state_key(params: Params, dataset: str, parts: list[str], states: list[str]) -> str:
    """What a saved training state must match to be resumed (see visionpipe.core.resume): the
    params the train stage declares, the dataset's hash, the parts and states, and its code."""
    sections = {
        "base": as_dict(params.base),
        "augment": as_dict(params.augment),
        "detection": as_dict(params.detection),
        "pretrained": params.model.pretrained,
    }
    train = {k: v for k, v in as_dict(params.train).items() if k != "resume"}
    code = code_fingerprint("detection", "train")
    return resume.fingerprint(train, sections, dataset, parts, states, code)


def train(params: Params, args: argparse.Namespace) -> None:
    """Fit the detector on the train split; keep the best epoch by the monitor on val. With
    ``train.nproc > 1``, that many DDP processes each train on their share of every batch."""
    task = DetectionTask()
    cfg, t = params.detection, params.train
    monitor = task.monitor(params)
    if distributed.relaunch_train(t.nproc, choose_device(t.device)):
        return
    dist = distributed.init()
    train_gt, val_gt = read_split_coco(args.splits, "train"), read_split_coco(args.splits, "val")
    parts, states = part_names(train_gt), list(train_gt["states"])
    gen = seed_everything(params.base.seed)
    threads = set_threads(dist.threads(t.num_threads, cpu_count()))
    device = choose_device(t.device, dist.local_rank)
    built = build_detector(
        cfg.arch,
        len(parts),
        len(states),
        params.model.pretrained,
        cfg.min_size,
        cfg.max_size,
        t.trainable_layers,
        state_head=cfg.state_head,
        state_arch=cfg.state_arch,
        state_crop_size=cfg.state_crop_size,
    )
    log.info(
        "detector %s, parts %s, states %s, initial weights: %s",
        built.arch,
        ", ".join(parts),
        ", ".join(states) or "none (a plain detector: data.states is [])",
        built.weights_source,
    )
    root = Path(params.data.path)
    sizes, check = (cfg.min_size, cfg.max_size), params.data.cache_check
    train_set = load_split(root, train_gt, states, *sizes, "decoding train", check)
    val_set = load_split(root, val_gt, states, *sizes, "decoding val", check)
    dataset = fingerprint(args.splits)
    hooks = DetectionHooks(built.model, params, train_set, val_set, val_gt, device)
    with train_live(args.live, dist.is_main) as live:
        state = args.state if t.resume else None
        key = state_key(params, dataset, parts, states)
        result = fit(hooks, task, params, device, gen, epoch_logger(live), state, key, dist)
        if live is None:
            distributed.finish(dist)
            return
        built.model.load_state_dict(result.best_state)
        # the state head's temperature, fitted on val's boxes (a buffer: saved with the weights)
        calibration = calibrate_states(built.model, val_set, t.batch_size, device)
        meta = {
            "task": task.name,
            "arch": built.arch,
            "labels": parts,
            "num_parts": len(parts),
            "states": states,
            "num_states": len(states),
            "min_size": cfg.min_size,
            "max_size": cfg.max_size,
            "state_head": cfg.state_head,
            "state_arch": cfg.state_arch,
            "state_crop_size": cfg.state_crop_size,
            "trainable_layers": t.trainable_layers,
            "score_threshold": cfg.score_threshold,
            # what a detection must overlap to count as right (export resolves thresholds by it)
            "iou_threshold": cfg.iou_threshold,
            "input": (
                "list of RGB float images 3 x H x W, 0..255 (normalization is inside the model)"
            ),
            "initial_weights": built.weights_source,
            "num_parameters": count_parameters(built.model),
            "dataset_fingerprint": dataset,
            "dataset": {
                "train_images": len(train_set),
                "val_images": len(val_set),
                "train_boxes": len(train_gt["annotations"]),
                "val_boxes": len(val_gt["annotations"]),
            },
            **run_record(result, monitor, params, dist, device, threads),
            "detection_params": as_dict(cfg),
            **calibration,
        }
        save_checkpoint(args.model, built.model, meta)
        write_json(args.class_index, {str(i + 1): part for i, part in enumerate(parts)})
        # last: the metrics file, written as the block ends, is the saved model's result
        headline_summary(live, result, monitor)
    distributed.finish(dist)
    log_best(result, params, monitor, args.model)
