"""Stage train: fit the task's model on the train split, keep the best epoch by the monitor.

Resumes from ``--state`` after an interruption (same params and data), and with
``train.nproc > 1`` runs itself under torchrun as that many DistributedDataParallel processes.
"""

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from dvclive import Live

import visionpipe
from visionpipe import distributed, resume
from visionpipe.cache import cached_images
from visionpipe.checkpoint import save_checkpoint
from visionpipe.errors import UserError
from visionpipe.io import write_json
from visionpipe.manifests import fingerprint, read_split
from visionpipe.models import build_model, count_parameters
from visionpipe.params import Params, as_dict
from visionpipe.runtime import choose_device, cpu_count, seed_everything, set_threads
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


def state_key(params: Params, dataset: str, labels: list[str]) -> str:
    """What a saved training state must match to be resumed: every param that shapes training
    (not ``train.resume`` itself), the split manifests' hash, the labels and the code (the
    visionpipe package and this script)."""
    train = {k: v for k, v in as_dict(params.train).items() if k != "resume"}
    sections = [as_dict(s) for s in (params.base, params.model, params.augment, params.regression)]
    code = resume.code_fingerprint(Path(visionpipe.__file__).parent, Path(__file__))
    return resume.fingerprint(train, sections, params.data.target_column, dataset, labels, code)


def main(params: Params, args: argparse.Namespace) -> None:
    task = get_task(params.base.task)
    monitor = task.monitor(params)
    nproc = params.train.nproc
    if nproc > 1 and not distributed.launched():
        distributed.check_nproc(nproc, choose_device(params.train.device))
        code = distributed.relaunch(nproc, "stages.train", sys.argv[1:])
        if code:
            raise UserError(f"train: the {nproc} training processes failed (exit {code})")
        return
    dist = distributed.init()
    train_m, val_m = read_split(args.splits, "train"), read_split(args.splits, "val")
    labels = task.labels(train_m, params)
    target_meta = task.fit_targets(train_m, params)
    train_y, val_y = task.targets(train_m, labels), task.targets(val_m, labels)
    criterion = task.criterion(params, labels, train_y)
    gen = seed_everything(params.base.seed)
    # the cores are shared between the processes
    threads = set_threads(max(1, (params.train.num_threads or cpu_count()) // dist.world))
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

    summary["distributed"] = {
        "processes": dist.world,
        "backend": distributed.backend() if dist.active else None,
    }
    live_context = (
        Live(args.live, dvcyaml=False, save_dvc_exp=False, report=None)
        if dist.is_main
        else contextlib.nullcontext()
    )
    key = state_key(params, summary["dataset"]["fingerprint"], labels)
    with live_context as live:

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if live is None:  # not rank 0: only one process writes
                return
            for name, value in metrics.items():
                live.log_metric(live_name(name), value)
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
            args.state if params.train.resume else None,
            key,
            dist,
        )
        if live is None:
            distributed.finish(dist)
            return
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
    distributed.finish(dist)
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
    parser.add_argument("--state", required=True, help="last epoch's state, for resuming")
    run_stage("train", main, parser)
