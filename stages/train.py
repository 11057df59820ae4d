"""Stage train: fit the task's model on the train split, keep the best epoch by the monitor."""

import argparse
import logging
from pathlib import Path

from dvclive import Live

from visionpipe.cache import cached_images
from visionpipe.checkpoint import save_checkpoint
from visionpipe.io import write_json
from visionpipe.manifests import fingerprint, read_split
from visionpipe.models import build_model, count_parameters
from visionpipe.params import Params, as_dict
from visionpipe.runtime import choose_device, seed_everything, set_threads
from visionpipe.stage import run_stage
from visionpipe.tasks import get_task
from visionpipe.training import fit

log = logging.getLogger("visionpipe.train")


def live_name(key: str) -> str:
    """dvclive name of a per-epoch value from training.fit: train_loss -> train/loss,
    val_rmse -> val/rmse, frozen_layers -> train/frozen_layers, lr -> lr."""
    prefix, _, rest = key.partition("_")
    if prefix in ("train", "val") and rest:
        return f"{prefix}/{rest}"
    return key if key == "lr" else f"train/{key}"


def main(params: Params, args: argparse.Namespace) -> None:
    task = get_task(params.base.task)
    monitor = task.monitor(params)
    train_m, val_m = read_split(args.splits, "train"), read_split(args.splits, "val")
    labels = task.labels(train_m, params)
    target_meta = task.fit_targets(train_m, params)
    train_y, val_y = task.targets(train_m, labels), task.targets(val_m, labels)
    criterion = task.criterion(params, labels, train_y)
    gen = seed_everything(params.base.seed)
    threads = set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
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

    root, size = Path(params.data.path), m.image_size
    num_parameters = count_parameters(built.model)
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
            "parameters": num_parameters,
            "input_size": size,
            "initial_weights": built.weights_source,
        },
    }

    with Live(args.live, dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            for key, value in metrics.items():
                live.log_metric(live_name(key), value)
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
            monitor: result.best_value,
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
        "head_hidden": hidden,
        **target_meta,
        "input": "RGB float or uint8, 0..255, N x 3 x H x W (normalization is inside the model)",
        "initial_weights": built.weights_source,
        "num_parameters": num_parameters,
        "dataset_fingerprint": summary["dataset"]["fingerprint"],
        "best_epoch": result.best_epoch,
        "history": result.history,
        "monitor": {monitor: result.best_value},
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
        monitor,
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
