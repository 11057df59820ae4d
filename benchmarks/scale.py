"""Whether the data path holds at 100k images: peak memory and speed of one training epoch, and
`dvc status` on loose files against tar shards (a benchmark, not a test).

For each N in --sizes, on synthetic images (48 x 48 RGB PNG noise tinted by class, 4 class
folders, a fixed seed; made once for the largest N, a smaller N being the first N of them):
  (a) disk path: one epoch of the training engine (visionpipe.core.engine.fit with
      visionpipe.core.image.train.ImageHooks) on images that cached_images decoded into the
      on-disk cache beforehand (DiskImages: each batch read from the .npy file), as the train
      stage runs; its peak RSS and images per second;
  (b) in-memory path: the same epoch on the uint8 tensor visionpipe.core.images.load_images
      returns (the old path, whose memory grows with N);
  (c) `dvc status` (median of 3 runs after a warm-up) in a fresh git + DVC repo that tracks the
      N loose files, and in another that tracks them packed by `python -m
      visionpipe.onboard.pack` into shards of 1000; with the `dvc add` and packing times.
Every measurement runs in a process of its own (the script calling itself with --child), so
each peak RSS is that of one epoch alone; a first child only decodes into the cache, so the
disk-path child finds it there. The validation split is a fixed 256 images whatever N is, and
the epoch's time is the engine's `epoch_seconds` (training only, validation left out), after
one untimed forward and backward pass on a copy of the model (kernel set-up).

Prints the CPU, a markdown table (one row per N) and the checks of the issue: disk-path peak RSS
at the largest N at most 1.2x that at 10k (or the next smaller N when 10k is not among the
sizes), disk-path img/s at the largest N at least 90% of that at the smallest, and `dvc status`
on shards at least 20x faster than on loose files at the largest N.

    python -m benchmarks.scale                              # 1k, 10k, 100k: about 2.5 GB of disk
    python -m benchmarks.scale --sizes 200,400 --skip-dvc   # a quick look
    python -m benchmarks.scale --workdir /data/scale --keep # keeps the images for the next run

Everything is written under --workdir (default: a new temporary folder), the decoded-image
cache included (VISIONPIPE_CACHE points there), and removed at the end unless --keep. The DVC
repos use `cache.type hardlink`, so the images are not copied into each repo's cache.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = 4
PIXELS = 48  # the generated images' side
TINTS = ((64, 0, 0), (0, 64, 0), (0, 0, 64), (48, 48, 0))  # added to the noise, per class
MTIME_NS = 1_700_000_000 * 10**9  # a fixed past time: the cache trusts the files by stat
VAL_IMAGES = 256
SHARD_SIZE = 1000
AUGMENT_OPS = ["hflip", "vflip", "rot90"]
STATUS_RUNS = 3
CHUNK = 1000  # images per generation task
# the subfolders of the work folder this script writes (and removes, without --keep)
OURS = ("pool", "cache", "logs", "repos")


# ---------------------------------------------------------------- synthetic images


def class_name(i: int) -> str:
    """Image ``i``'s class: the classes taken in turn."""
    return f"class_{i % CLASSES}"


def rel_path(i: int) -> str:
    """Image ``i``'s path inside its root: ``class_<k>/<i>.png``."""
    return f"{class_name(i)}/{i:07d}.png"


def image_pixels(seed: int, i: int) -> np.ndarray:
    """Image ``i``: uniform noise plus its class's tint, the same for the same seed."""
    rng = np.random.default_rng((seed, i))
    noise = rng.integers(0, 192, (PIXELS, PIXELS, 3), dtype=np.uint8)
    return noise + np.array(TINTS[i % CLASSES], dtype=np.uint8)


def write_images(root: str, seed: int, start: int, stop: int) -> None:
    """Write images ``start`` .. ``stop - 1`` under ``root`` (one generation task)."""
    for i in range(start, stop):
        path = Path(root) / rel_path(i)
        Image.fromarray(image_pixels(seed, i)).save(path, format="PNG", compress_level=1)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))


def ensure_images(root: Path, seed: int, count: int) -> int:
    """At least ``count`` images under ``root`` (those a kept work folder already has are
    reused); returns how many were written now."""
    marker = root.with_suffix(".json")
    have = 0
    if marker.is_file():
        made = json.loads(marker.read_text())
        if made.get("seed") == seed and made.get("pixels") == PIXELS:
            have = made["count"]
    if have >= count:
        return 0
    for k in range(CLASSES):
        (root / class_name(k)).mkdir(parents=True, exist_ok=True)
    chunks = [(i, min(i + CHUNK, count)) for i in range(have, count, CHUNK)]
    with ProcessPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(write_images, str(root), seed, a, b) for a, b in chunks]
        for future in futures:
            future.result()
    marker.write_text(json.dumps({"seed": seed, "pixels": PIXELS, "count": count}))
    return count - have


def link_tree(src: Path, count: int, dest: Path) -> None:
    """The first ``count`` images of ``src`` as hard links under ``dest`` (no bytes copied)."""
    for k in range(CLASSES):
        (dest / class_name(k)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.link(src / rel_path(i), dest / rel_path(i))


def folder_megabytes(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


# ---------------------------------------------------------------- children: one epoch each


def bench_params(opts: argparse.Namespace) -> Any:
    """Params at their defaults (the dataclasses', not this repo's params.yaml) but for the
    benchmark's model, batch size, epochs, threads, device and augmentation."""
    from visionpipe.core.params import Params, as_dict, params_from_dict

    raw = as_dict(Params())
    raw["model"].update(arch=opts.arch, pretrained=False, image_size=opts.image_size)
    raw["train"].update(
        epochs=1,
        batch_size=opts.batch_size,
        num_threads=opts.threads,
        device=opts.device,
        resume=False,
    )
    raw["augment"]["ops"] = list(AUGMENT_OPS)
    return params_from_dict(raw)  # validated as params.yaml is


def split_listing(opts: argparse.Namespace, n: int) -> dict[str, tuple[Path, list[str], list]]:
    """The train split (the first ``n`` images) and the fixed validation split: root, relative
    paths and class names."""
    pool = Path(opts.workdir) / "pool"
    train, val = range(n), range(VAL_IMAGES)
    return {
        "train": (pool / "train", [rel_path(i) for i in train], [class_name(i) for i in train]),
        "val": (pool / "val", [rel_path(i) for i in val], [class_name(i) for i in val]),
    }


def warm_up(hooks: Any, params: Any) -> None:
    """One forward and backward pass of a batch's shape through a throwaway copy of the model,
    so that the timed epoch's first batches do not pay for the kernels' one-time setup (which
    would make a small N look slower than it is)."""
    import copy

    import torch

    spare = copy.deepcopy(hooks.model).train()
    size, batch = params.model.image_size, params.train.batch_size
    x = torch.zeros((batch, 3, size, size), dtype=torch.uint8, device=hooks.device)
    y = torch.zeros(batch, dtype=torch.long, device=hooks.device)
    hooks.criterion(spare(x.contiguous(memory_format=torch.channels_last)), y).backward()


def one_epoch(params: Any, train_x: Any, train_labels: list, val_x: Any, val_labels: list) -> dict:
    """One epoch of the engine, set up as visionpipe.core.image.train.train does; its metrics."""
    import pandas as pd

    from visionpipe.core.engine import fit
    from visionpipe.core.image.train import ImageHooks
    from visionpipe.core.models import build_model
    from visionpipe.core.runtime import choose_device, seed_everything, set_threads
    from visionpipe.tasks import get_task

    task = get_task("classification")
    train_m, val_m = pd.DataFrame({"label": train_labels}), pd.DataFrame({"label": val_labels})
    labels = task.labels(train_m, params)
    train_y, val_y = task.targets(train_m, labels), task.targets(val_m, labels)
    criterion = task.criterion(params, labels, train_y)
    gen = seed_everything(params.base.seed)
    set_threads(params.train.num_threads)
    device = choose_device(params.train.device)
    m = params.model
    hidden = task.head_hidden(params)
    built = build_model(m.arch, len(labels), m.pretrained, m.dropout, m.weights, hidden)
    mixer = task.batch_mixer(params, labels)
    hooks = ImageHooks(
        built.model, task, params, criterion, train_x, train_y, val_x, val_y, device, mixer
    )
    warm_up(hooks, params)
    result = fit(hooks, task, params, device, gen, lambda epoch, metrics: None)
    return result.history[0]


def child_decode(opts: argparse.Namespace, n: int) -> dict[str, Any]:
    """Decode both splits into the cache (nothing else), so the disk-path child hits it."""
    from visionpipe.core.cache import DiskImages, cached_images

    began = time.perf_counter()
    written = []
    for name, (root, paths, _) in split_listing(opts, n).items():
        directory = cache_of(opts)
        images = cached_images(root, paths, opts.image_size, name, directory, check="stat")
        written.append(isinstance(images, DiskImages))
    return {"seconds": time.perf_counter() - began, "on_disk": all(written)}


def cache_of(opts: argparse.Namespace) -> Path:
    return Path(opts.workdir) / "cache"


def child_train(opts: argparse.Namespace, n: int, kind: str) -> dict[str, Any]:
    """One epoch on the disk path (``disk``) or the in-memory tensor (``memory``); the process's
    peak RSS at its end."""
    import resource

    import torch

    from visionpipe.core.cache import cached_images
    from visionpipe.core.images import load_images

    split = split_listing(opts, n)
    entries = set(cache_of(opts).glob("*.npy"))
    began = time.perf_counter()
    loaded = {}
    for name, (root, paths, _) in split.items():
        if kind == "disk":
            loaded[name] = cached_images(
                root, paths, opts.image_size, name, directory=cache_of(opts), check="stat"
            )
        else:
            loaded[name] = load_images(root, paths, opts.image_size, desc=name)
    load_seconds = time.perf_counter() - began
    params = bench_params(opts)
    metrics = one_epoch(params, loaded["train"], split["train"][2], loaded["val"], split["val"][2])
    return {
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "epoch_seconds": metrics["epoch_seconds"],
        "images_per_second": n / metrics["epoch_seconds"],
        "load_seconds": load_seconds,
        "images": type(loaded["train"]).__name__,
        "decoded_now": set(cache_of(opts).glob("*.npy")) != entries,  # the cache was missed
        "val_accuracy": metrics["val_accuracy"],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def run_child(opts: argparse.Namespace, kind: str, n: int) -> dict[str, Any]:
    """Run ``--child kind`` for ``n`` images in a fresh process; the JSON it prints last. Its
    stderr (progress bars, logs) goes to logs/<kind>-<n>.log."""
    cmd = [sys.executable, "-m", "benchmarks.scale", "--child", kind, "--n", str(n)]
    cmd += ["--workdir", str(opts.workdir), "--image-size", str(opts.image_size)]
    cmd += ["--batch-size", str(opts.batch_size), "--threads", str(opts.threads)]
    cmd += ["--arch", opts.arch, "--device", opts.device]
    env = {**os.environ, "VISIONPIPE_CACHE": str(cache_of(opts))}
    log_path = Path(opts.workdir) / "logs" / f"{kind}-{n}.log"
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    if done.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"--child {kind} --n {n} failed ({done.returncode}):\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- dvc status


def dvc_command() -> str:
    """The dvc beside this interpreter (the project's virtual environment), else on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def dvc_env() -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}


def sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=dvc_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout}{done.stderr}")
    return done


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of one command (process start included, as a user waits for it)."""
    began = time.perf_counter()
    done = sh(cmd, cwd)
    return time.perf_counter() - began, done.stdout


def init_repo(repo: Path) -> None:
    """A fresh git + DVC repository with one commit."""
    repo.mkdir(parents=True)
    dvc = dvc_command()
    sh(["git", "init", "-q"], repo)
    for key, value in (
        ("user.name", "benchmark"),
        ("user.email", "benchmark@example.com"),
        ("commit.gpgsign", "false"),
    ):
        sh(["git", "config", key, value], repo)
    sh([dvc, "init", "-q"], repo)
    sh([dvc, "config", "core.analytics", "false"], repo)
    sh([dvc, "config", "cache.type", "hardlink"], repo)  # no copy of the images in the cache
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)


def track(repo: Path, target: str) -> dict[str, Any]:
    """`dvc add` the folder ``target``, commit, then time `dvc status` (median of
    STATUS_RUNS runs after a warm-up)."""
    dvc = dvc_command()
    add_seconds, _ = timed([dvc, "add", target], repo)
    sh(["git", "add", f"{target}.dvc", ".gitignore"], repo)
    sh(["git", "commit", "-qm", f"track {target}"], repo)
    _, out = timed([dvc, "status"], repo)  # warm-up
    runs = [timed([dvc, "status"], repo)[0] for _ in range(STATUS_RUNS)]
    return {
        "add_seconds": add_seconds,
        "status_seconds": statistics.median(runs),
        "status_runs": runs,
        "up_to_date": "up to date" in out,
        "files": sum(1 for p in (repo / target).rglob("*") if p.is_file()),
    }


def dvc_compare(opts: argparse.Namespace, n: int) -> dict[str, Any]:
    """`dvc add` and `dvc status` of the ``n`` loose images, then of the same images packed
    into shards, each in a repository of its own."""
    repos = Path(opts.workdir) / "repos"
    loose, packed = repos / f"loose-{n}", repos / f"shards-{n}"
    for repo in (loose, packed):
        shutil.rmtree(repo, ignore_errors=True)
    init_repo(loose)
    link_tree(Path(opts.workdir) / "pool" / "train", n, loose / "images")
    loose_result = track(loose, "images")
    init_repo(packed)
    pack = [sys.executable, "-m", "visionpipe.onboard.pack", str(loose / "images")]
    pack += [str(packed / "shards"), "--shard-size", str(SHARD_SIZE)]
    pack_seconds, _ = timed(pack, REPO)
    shards_result = track(packed, "shards")
    if not opts.keep:
        for repo in (loose, packed):
            shutil.rmtree(repo)
    return {"loose": loose_result, "shards": shards_result, "pack_seconds": pack_seconds}


# ---------------------------------------------------------------- the report


@dataclass
class Row:
    n: int
    decode: dict[str, Any]
    disk: dict[str, Any]
    memory: dict[str, Any]
    dvc: dict[str, Any] | None


def mb(child: dict[str, Any]) -> float:
    return child["peak_rss_kb"] / 1024  # ru_maxrss is in KB on Linux


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def status_ratio(row: Row) -> float | None:
    if row.dvc is None:
        return None
    return row.dvc["loose"]["status_seconds"] / row.dvc["shards"]["status_seconds"]


def main_table(rows: list[Row]) -> list[str]:
    lines = [
        "| images | disk RSS MB | in-memory RSS MB | disk img/s | in-memory img/s "
        "| dvc status loose s | dvc status shards s | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        loose = r.dvc["loose"]["status_seconds"] if r.dvc else None
        shards = r.dvc["shards"]["status_seconds"] if r.dvc else None
        cells = [
            f"{r.n:,}",
            f"{mb(r.disk):.0f}",
            f"{mb(r.memory):.0f}",
            f"{r.disk['images_per_second']:.0f}",
            f"{r.memory['images_per_second']:.0f}",
            fmt(loose, ".2f"),
            fmt(shards, ".2f"),
            fmt(status_ratio(r), ".1f") + ("x" if r.dvc else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def context_table(rows: list[Row]) -> list[str]:
    lines = [
        "| images | decode into cache s | load_images s | dvc add loose s | pack s "
        "| dvc add shards s | shard files |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        d = r.dvc
        cells = [
            f"{r.n:,}",
            f"{r.decode['seconds']:.1f}",
            f"{r.memory['load_seconds']:.1f}",
            fmt(d and d["loose"]["add_seconds"], ".2f"),
            fmt(d and d["pack_seconds"], ".2f"),
            fmt(d and d["shards"]["add_seconds"], ".2f"),
            str(d["shards"]["files"]) if d else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def dvc_table(extra: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """The --dvc-sizes rows: dvc add and status, loose against shards."""
    lines = [
        "| images | dvc add loose s | dvc add shards s | dvc status loose s "
        "| dvc status shards s | ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n, result in extra:
        loose, shards = result["loose"], result["shards"]
        ratio = loose["status_seconds"] / shards["status_seconds"]
        lines.append(
            f"| {n:,} | {loose['add_seconds']:.2f} | {shards['add_seconds']:.2f} "
            f"| {loose['status_seconds']:.2f} | {shards['status_seconds']:.2f} | {ratio:.1f}x |"
        )
    return lines


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def checks(rows: list[Row]) -> list[str]:
    """The issue's three checks on the largest N."""
    first, last = rows[0], rows[-1]
    lines = []
    earlier = [r for r in rows if r.n == 10_000 and r is not last] or rows[-2:-1]
    if earlier:
        ref = earlier[0]
        ratio = mb(last.disk) / mb(ref.disk)
        lines.append(
            f"{verdict(ratio <= 1.2)}  disk-path peak RSS at {last.n:,}: {mb(last.disk):.0f} MB, "
            f"{ratio:.2f}x that at {ref.n:,} ({mb(ref.disk):.0f} MB); at most 1.2x"
        )
    else:
        lines.append("n/a   disk-path peak RSS: needs two sizes")
    speed = last.disk["images_per_second"] / first.disk["images_per_second"]
    lines.append(
        f"{verdict(speed >= 0.9)}  disk-path img/s at {last.n:,}: "
        f"{last.disk['images_per_second']:.0f}, {speed:.2f}x that at {first.n:,} "
        f"({first.disk['images_per_second']:.0f}); at least 0.90x"
    )
    ratio = status_ratio(last)
    if ratio is None:
        lines.append("n/a   dvc status shards vs loose: --skip-dvc")
    else:
        lines.append(
            f"{verdict(ratio >= 20)}  dvc status at {last.n:,}: shards {ratio:.1f}x faster than "
            f"loose files ({last.dvc['shards']['status_seconds']:.2f} s against "
            f"{last.dvc['loose']['status_seconds']:.2f} s); at least 20x"
        )
    return lines


def report(opts: argparse.Namespace, rows: list[Row]) -> None:
    torch_version, threads = rows[0].disk["torch"], rows[0].disk["threads"]
    now = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    print()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {now}")
    print(
        f"{opts.arch} (pretrained=False) at {opts.image_size}px on {PIXELS}px PNGs, batch "
        f"{opts.batch_size}, {threads} torch threads, device {opts.device}, torch "
        f"{torch_version}; augment {'/'.join(AUGMENT_OPS)}; {VAL_IMAGES} validation images; "
        f"one epoch per process; dvc status: median of {STATUS_RUNS} after a warm-up"
    )
    print()
    print("\n".join(main_table(rows)))
    print()
    print("\n".join(context_table(rows)))
    print()
    print("\n".join(checks(rows)))
    for r in rows:
        if r.disk["decoded_now"]:
            print(f"warning: the disk-path child at {r.n:,} decoded again (missed the cache)")
        for name, result in (r.dvc or {}).items():
            if isinstance(result, dict) and not result["up_to_date"]:
                print(f"warning: dvc status at {r.n:,} ({name}) did not say up to date")


# ---------------------------------------------------------------- main


def measure(opts: argparse.Namespace, n: int) -> Row:
    """Every measurement at ``n`` images, each in its own process."""
    print(f"{n:,} images: decoding into the cache ...", flush=True)
    decode = run_child(opts, "decode", n)
    print(f"{n:,} images: disk-path epoch ...", flush=True)
    disk = run_child(opts, "disk", n)
    print(f"{n:,} images: in-memory epoch ...", flush=True)
    memory = run_child(opts, "memory", n)
    dvc = None
    if not opts.skip_dvc:
        print(f"{n:,} images: dvc add / status, loose and packed ...", flush=True)
        dvc = dvc_compare(opts, n)
    return Row(n, decode, disk, memory, dvc)


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < CLASSES:  # every class in the train split
        raise argparse.ArgumentTypeError(f"{text}: image counts of at least {CLASSES}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from visionpipe.core.params import ARCHITECTURES, DEVICES

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1000,10000,100000"))
    parser.add_argument("--image-size", type=int, default=32, help="model.image_size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="train.num_threads")
    parser.add_argument("--arch", default="mobilenet_v3_small", choices=ARCHITECTURES)
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="train.device")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic images")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--skip-dvc", action="store_true", help="no dvc add / status")
    parser.add_argument(
        "--dvc-sizes",
        type=parse_sizes,
        default=[],
        help="more sizes for the dvc add / status comparison alone (no training)",
    )
    parser.add_argument("--workdir", help="where to write everything (default: a temporary one)")
    parser.add_argument("--child", choices=("decode", "disk", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child_main(opts: argparse.Namespace) -> None:
    if opts.child == "decode":
        result = child_decode(opts, opts.n)
    else:
        result = child_train(opts, opts.n, opts.child)
    print(json.dumps(result), flush=True)


def prepare(opts: argparse.Namespace) -> None:
    """The work folder and the images (the largest N, and the validation split)."""
    work = Path(opts.workdir)
    for name in ("cache", "logs", "repos"):
        (work / name).mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    made = ensure_images(work / "pool" / "train", opts.seed, max(opts.sizes + opts.dvc_sizes))
    made += ensure_images(work / "pool" / "val", opts.seed + 1, VAL_IMAGES)
    size = folder_megabytes(work / "pool")
    seconds = time.perf_counter() - began
    print(f"{work}: {made:,} images generated in {seconds:.1f} s ({size:.0f} MB in all)")


def clean(opts: argparse.Namespace, temporary: bool) -> None:
    work = Path(opts.workdir)
    if opts.keep:
        print(f"kept {work}")
    elif temporary:
        shutil.rmtree(work, ignore_errors=True)
    else:
        for name in OURS:
            shutil.rmtree(work / name, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    if opts.child:
        child_main(opts)
        return
    temporary = opts.workdir is None
    opts.workdir = str(Path(opts.workdir or tempfile.mkdtemp(prefix="visionpipe-scale-")).resolve())
    try:
        prepare(opts)
        rows = [measure(opts, n) for n in opts.sizes]
        extra = []
        for n in opts.dvc_sizes:
            print(f"{n:,} images: dvc add / status alone, loose and packed ...", flush=True)
            extra.append((n, dvc_compare(opts, n)))
        report(opts, rows)
        if extra:
            print()
            print("\n".join(dvc_table(extra)))
    finally:
        clean(opts, temporary)


if __name__ == "__main__":
    main()
