"""Stage train: fit the task's model on the train split, keep the best epoch by the monitor."""

import argparse
import logging
from pathlib import Path

from dvclive import Live

from visionpipe.cache import cached_images
from visionpipe.checkpoint import save_checkpoint
from visionpipe.class_weights import class_weights
from visionpipe.io import write_json
from visionpipe.manifests import fingerprint, read_split
from visionpipe.models import build_model, count_parameters
from visionpipe.params import Params, as_dict
from visionpipe.runtime import choose_device, seed_everything, set_threads
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task
from visionpipe.training import fit

log = logging.getLogger("visionpipe.train")

# dvclive metric names of the per-epoch values returned by training.fit
LIVE_NAMES = {
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "val_f1_macro": "val/f1_macro",
    "lr": "lr",
    "frozen_layers": "train/frozen_layers",
    "epoch_seconds": "train/epoch_seconds",
}


def main(params: Params, args: argparse.Namespace) -> None:
    task = get_task(params.base.task)
    train_m, val_m = read_split(args.splits, "train"), read_split(args.splits, "val")
    labels = task.labels(train_m)
    train_y, val_y = task.targets(train_m, labels), task.targets(val_m, labels)
    weights = class_weights(params.train.class_weights, labels, train_y)
    if weights is not None:
        log.info("class weights: %s", dict(zip(labels, weights.tolist(), strict=True)))
    criterion = task.loss(params, weights)
    gen = seed_everything(params.base.seed)
    threads = set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
    m = params.model
    built = build_model(m.arch, len(labels), m.pretrained, m.dropout, m.weights)
    log.info("model %s, %d classes, initial weights: %s", m.arch, len(labels), built.weights_source)

    root, size = Path(params.data.path), m.image_size
    train_x = cached_images(root, train_m["path"].tolist(), size, desc="decoding train")
    val_x = cached_images(root, val_m["path"].tolist(), size, desc="decoding val")
    summary = {
        "dataset": {
            "fingerprint": fingerprint(args.splits),
            "train_images": len(train_m),
            "val_images": len(val_m),
        },
        "model": {
            "arch": m.arch,
            "parameters": count_parameters(built.model),
            "input_size": size,
            "initial_weights": built.weights_source,
        },
    }

    with Live(args.live, dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            for key, value in metrics.items():
                live.log_metric(LIVE_NAMES.get(key, key), value)
            live.next_step()

        result = fit(
            built.model,
            task,
            params,
            criterion,
            train_x,
            train_y,
            val_x,
            val_y,
            device,
            gen,
            log_epoch,
        )
        live.summary["best"] = {
            "step": result.best_epoch,
            params.train.monitor: result.best_value,
        }
        live.summary.update(summary)
        live.summary["epochs_run"] = len(result.history)
        live.summary["stopped_early"] = result.stopped_early

    built.model.load_state_dict(result.best_state)
    meta = {
        "task": task.name,
        "arch": m.arch,
        "num_outputs": len(labels),
        "labels": labels,
        "image_size": size,
        "dropout": m.dropout,
        "input": "RGB float or uint8, 0..255, N x 3 x H x W (normalization is inside the model)",
        "initial_weights": built.weights_source,
        "num_parameters": count_parameters(built.model),
        "dataset_fingerprint": summary["dataset"]["fingerprint"],
        "best_epoch": result.best_epoch,
        "history": result.history,
        "monitor": {params.train.monitor: result.best_value},
        "device": str(device),
        "threads": threads,
        "train_params": as_dict(params.train),
        "augment_params": as_dict(params.augment),
    }
    save_checkpoint(args.model, built.model, meta)
    write_json(args.class_index, {str(i): name for i, name in enumerate(labels)})
    log.info(
        "best epoch %d of %d (%s=%.4f) saved to %s",
        result.best_epoch + 1,
        params.train.epochs,
        params.train.monitor,
        result.best_value,
        args.model,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--class-index", required=True, help="class index JSON to write")
    parser.add_argument("--live", required=True, help="dvclive directory")
    run_stage("train", main, parser)
