"""Helpers for the end-to-end tests: a copy of this repo in a temporary git repo, real dvc CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

# params that shrink the default run to seconds: a few dozen images, 1 epoch, tiny images
TINY = {
    "embedded": {
        "max_per_class": 8,
        "panels": 8,
        "panel_rows": 2,
        "panel_cols": 2,
        "cell_size": 32,
    },
    "eda": {"samples": 2, "intensity_samples": 4},
    "model": {"image_size": 32},
    "train": {"epochs": 1, "batch_size": 16},
    "evaluate": {"batch_size": 16, "latency_runs": 3, "draw_images": 2},
    "export": {
        "parity_samples": 4,
        "latency_batch": 4,
        "latency_runs": 3,
        "calibration_samples": 8,
    },
    "simulate": {"interval_ms": 20.0, "max_frames": 4},
    "suspects": {"image_size": 32, "top": 4},
    "detection": {"min_size": 64, "max_size": 64},
}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    e["DVC_NO_ANALYTICS"] = "1"
    e.setdefault("GIT_AUTHOR_NAME", "test")
    e.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    e.setdefault("GIT_COMMITTER_NAME", "test")
    e.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    return e


def run(
    cwd: Path, *cmd: str, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc


def dvc_json(cwd: Path, *args: str):
    return json.loads(run(cwd, "dvc", *args, "--json").stdout)


def copy_repo(dest: Path, overrides: dict) -> Path:
    """Copy the files git would commit (no outputs, no lock), apply param overrides, commit."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for rel in listed:
        src = REPO / rel
        if rel == "dvc.lock" or rel.startswith(("results/", "tests/")) or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    (dest / "results").mkdir(exist_ok=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(dest, "git", "init", "-q")
    # dvc exp commits through scmrepo, which reads the repo's config, not only GIT_* variables
    run(dest, "git", "config", "user.name", "visionpipe tests")
    run(dest, "git", "config", "user.email", "tests@visionpipe.invalid")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "init")
    return dest


def set_params(repo: Path, overrides: dict, message: str = "params") -> Path:
    """Apply ``{section: {key: value}}`` to the repo's params.yaml and commit it."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "commit", "-qam", message)
    return repo


def copy_built(built: Path, dest: Path, overrides: dict | None = None) -> Path:
    """A copy of the built tiny repo (git history, DVC cache and outputs included), so a test
    that changes a param reruns only the stages it reaches instead of the whole pipeline.
    DVC's cache files are hard links to the built repo's (DVC never rewrites a cache file), so
    the many copies of a detection repo do not fill the disk."""
    cache = str(built / ".dvc" / "cache") + os.sep

    def link_cache(src: str, dst: str) -> str:
        if src.startswith(cache):
            try:
                os.link(src, dst)
                return dst
            except OSError:
                pass  # another filesystem: copy
        return shutil.copy2(src, dst)

    shutil.copytree(built, dest, symlinks=True, copy_function=link_cache)
    return set_params(dest, overrides) if overrides else dest


def build(dest: Path, overrides: dict) -> Path:
    """copy_repo, then the whole pipeline through `dvc repro`, committed."""
    copy_repo(dest, overrides)
    run(dest, "dvc", "repro")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "baseline run")
    return dest


def numbers(data) -> int:
    """The numbers in a metrics file as `dvc metrics show` flattens it."""
    if isinstance(data, dict):
        return sum(numbers(v) for v in data.values())
    return int(isinstance(data, int | float) and not isinstance(data, bool))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_on_two_nodes(nodes: list[Path], per_node: int = 2, timeout: int = 900) -> int:
    """The train stage's command on two "nodes" (two checkouts, as two machines would have)
    under ``torchrun --nnodes 2 --rdzv-backend c10d`` on loopback, ``per_node`` gloo processes
    each; returns the index of the node that got rank 0 (c10d gives ranks in arrival order),
    after checking that it alone wrote the model and the metrics."""
    stage = yaml.safe_load((nodes[0] / "dvc.yaml").read_text())["stages"]["train"]["cmd"]
    args = stage.split()[1:]  # "python -m stages.train ...": run by this interpreter
    assert args[:2] == ["-m", "stages.train"], stage
    endpoint = f"127.0.0.1:{free_port()}"
    for node in nodes:  # what the stage writes, gone, so a file seen was written by this run
        shutil.rmtree(node / "results/train", ignore_errors=True)
        (node / "models/model.pt").unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={rank}",
                f"--nproc-per-node={per_node}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}",
                "--rdzv-id=two-nodes",
                *args,
            ],
            cwd=node,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank, node in enumerate(nodes)
    ]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for node, proc, out in zip(nodes, procs, outputs, strict=True):
        assert proc.returncode == 0, f"{node} failed ({proc.returncode}):\n{out[-4000:]}"
    wrote = [(n / "models/model.pt").is_file() for n in nodes]
    metrics = [(n / "results/train/metrics.json").is_file() for n in nodes]
    assert wrote == metrics and sum(wrote) == 1, (wrote, metrics)
    return wrote.index(True)
