"""How close the pipeline's data path comes to the pure model speed (a benchmark, not a test).

Times, on the same model, images and optimizer step (visionpipe.core.engine.TrainStep):
  (a) pipeline: images decoded once into a cached uint8 tensor, batched augmentation
      (visionpipe.core.augment), channels-last: what `stages.train` does every epoch;
  (b) baseline: a DataLoader that opens each image with PIL and applies torchvision transforms
      (resize, the same flips/rotations) every epoch, as most tutorials do;
  (c) limit: the same number of steps on one batch that is already in memory.
and prints seconds per epoch and the ratios a/c and b/c.

    python -m benchmarks.data_path --arch efficientnet_lite0 --size 160
    python -m benchmarks.data_path --arch mobilenet_v3_small --size 128

Run after `dvc repro split` (it reads data/splits/train.csv and the images under data/raw).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torchvision.transforms import v2

from visionpipe.core.augment import augment_batch
from visionpipe.core.batches import batches
from visionpipe.core.cache import cached_images
from visionpipe.core.engine import TrainStep, make_optimizer
from visionpipe.core.models import build_model
from visionpipe.core.params import Augment, Train

AUGMENT = Augment(ops=["hflip", "vflip", "rot90"])


class PILDataset(torch.utils.data.Dataset):
    """The per-epoch decode baseline: PIL open + torchvision transforms for every sample."""

    def __init__(self, root: Path, paths: list[str], labels: list[int], size: int):
        self.root, self.paths, self.labels = root, paths, labels
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((size, size), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.root / self.paths[i]) as img:
            return self.transform(img.convert("RGB")), self.labels[i]


class ImageStep:
    """The engine's optimizer step (TrainStep) on one uint8 image batch, with the loss the image
    hooks compute: channels-last on the device, the criterion on the model's outputs."""

    def __init__(self, model, criterion, optimizer, device):
        self.model, self.criterion, self.device = model, criterion, device
        self.step = TrainStep(optimizer, device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        y = y.to(self.device)
        return self.step(lambda: {"loss": self.criterion(self.model(x), y)})["loss"]


def pipeline_epoch(step: ImageStep, x: torch.Tensor, y: torch.Tensor, batch: int, gen) -> None:
    for idx in batches(len(x), batch, shuffle=True, gen=gen):
        step(augment_batch(x[idx], AUGMENT, gen), y[idx])


def baseline_epoch(step: ImageStep, loader: torch.utils.data.DataLoader) -> None:
    for x, y in loader:
        step(x, y)


def limit_epoch(step: ImageStep, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        step(x, y)


def seconds(fn) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=640, help="images per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (baseline)")
    parser.add_argument("--root", default="data/raw")
    parser.add_argument("--manifest", default="data/splits/train.csv")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    frame = pd.read_csv(args.manifest, keep_default_na=False).head(args.images)
    classes = sorted(frame["label"].unique())
    paths, labels = frame["path"].tolist(), [classes.index(v) for v in frame["label"]]
    root = Path(args.root)
    device = torch.device("cpu")

    model = build_model(args.arch, len(classes), pretrained=False).model
    model.to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(model, "adamw", 1e-4, Train().weight_decay)
    step = ImageStep(model, torch.nn.CrossEntropyLoss(), optimizer, device)

    start = time.perf_counter()
    x = cached_images(root, paths, args.size, desc="decode/cache")
    cache_seconds = time.perf_counter() - start
    y = torch.tensor(labels)
    steps = len(list(batches(len(x), args.batch_size)))
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(
        PILDataset(root, paths, labels, args.size),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
    )
    one_batch = x[: args.batch_size].clone()
    one_y = y[: args.batch_size].clone()

    limit_epoch(step, one_batch, one_y, 3)  # warm-up: allocator, kernels
    results = {}
    for _ in range(args.repeats):  # interleaved, so drift in machine speed hits all three
        for name, fn in (
            ("pipeline", lambda: pipeline_epoch(step, x, y, args.batch_size, gen)),
            ("baseline", lambda: baseline_epoch(step, loader)),
            ("limit", lambda: limit_epoch(step, one_batch, one_y, steps)),
        ):
            results.setdefault(name, []).append(seconds(fn))
    a, b, c = (statistics.median(results[k]) for k in ("pipeline", "baseline", "limit"))
    print(
        f"{args.arch} {args.size}px, batch {args.batch_size}, {len(x)} images, {steps} steps, "
        f"{args.threads} threads, median of {args.repeats} epochs"
    )
    print(f"  decode into cache (first run) or cache load: {cache_seconds:.1f} s")
    print(f"  (a) pipeline epoch   {a:7.2f} s  {len(x) / a:6.1f} img/s")
    print(f"  (b) PIL DataLoader   {b:7.2f} s  {len(x) / b:6.1f} img/s")
    print(f"  (c) pure model steps {c:7.2f} s  {len(x) / c:6.1f} img/s")
    print(f"  a/c = {a / c:.3f}   b/c = {b / c:.3f}   b/a = {b / a:.3f}")


if __name__ == "__main__":
    main()
