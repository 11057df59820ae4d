"""End to end on copies of the built tiny pipeline: Ctrl-C and kills during training, a failed
parity check, and the CLI commands beside the pipeline's tracked outputs (issue #18)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from tests.e2e import copy_built, dvc_json, env, run
from visionpipe.core import resume
from visionpipe.core.image import export as image_export
from visionpipe.core.stage import run_stage
from visionpipe.tasks import stage_function

TRAIN = [
    sys.executable,
    "-m",
    "stages.train",
    "--splits",
    "data/splits",
    "--model",
    "models/model.pt",
    "--class-index",
    "models/class_index.json",
    "--live",
    "results/train",
    "--state",
    "models/train_state.pt",
]


def as_a_foreground_job() -> None:
    """Ctrl-C at its default in the stage, as in a job a terminal runs in the foreground. A
    shell starts a background job (``make test &`` from a script) with SIGINT ignored, every
    process under it inherits that, and Python then leaves Ctrl-C ignored, as it should: the
    stage would train on through the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(repo: Path) -> subprocess.Popen:
    """The train stage's own command, started; returns once it has saved an epoch's state."""
    state = repo / "models/train_state.pt"
    before = state.stat().st_mtime_ns if state.exists() else 0
    proc = subprocess.Popen(
        TRAIN,
        cwd=repo,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_a_foreground_job,  # one signal call, no lock taken
    )
    deadline = time.monotonic() + 120
    while not (state.exists() and state.stat().st_mtime_ns != before):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if time.monotonic() > deadline:
            kill_and_fail(proc, "no epoch finished within 120 s")
        time.sleep(0.05)
    time.sleep(0.2)  # into the next epoch
    return proc


def kill_and_fail(proc: subprocess.Popen, why: str) -> NoReturn:
    """Stop a stage that overran and fail with the tail of what it printed (where it was, any
    "Exception ignored" line), rather than a bare timeout and a stage left training on."""
    proc.kill()
    err = proc.communicate()[1].replace("\r", "\n")
    raise AssertionError(f"{why}:\n{err[-4000:]}")


def wait_for_exit(proc: subprocess.Popen, timeout: float) -> str:
    """The stage's stderr once it has exited; past ``timeout`` it is killed and the test fails."""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        kill_and_fail(proc, f"the stage did not exit within {timeout} s")


def test_ctrl_c_and_kill_during_training(built_repo, tmp_path):
    repo = copy_built(built_repo, tmp_path / "repo", {"train": {"epochs": 400}})
    metrics = repo / "results/train/metrics.json"
    assert metrics.is_file()  # the built run's result

    proc = start_training(repo)
    proc.send_signal(signal.SIGINT)
    err = wait_for_exit(proc, 60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "interrupted: stage train stopped (Ctrl-C); the training state "
        "models/train_state.pt is kept, and `dvc repro` resumes from its last epoch when params "
        "and data are unchanged"
    )
    state = torch.load(repo / "models/train_state.pt", map_location="cpu", weights_only=True)
    assert state["format"] == resume.FORMAT and 1 <= state["epoch"] < 400
    assert not metrics.exists()  # no partial epoch's values stand in for a result

    proc = start_training(repo)
    proc.kill()
    wait_for_exit(proc, 60)
    assert not metrics.exists()
    shown = dvc_json(repo, "metrics", "show")[""]["data"]
    # DVC shows no train result (the file is missing), never a partial epoch's values
    assert "data" not in shown.get("results/train/metrics.json", {})
    assert "results/evaluate/metrics.json" in shown


def test_a_failed_parity_check_leaves_no_export(built_repo, tmp_path, monkeypatch, capsys):
    """The export stage, in this process on a copy of the built pipeline, with ONNX Runtime's
    outputs drifted by 0.01 (what a broken exporter or runtime would give): the stage fails
    with one line and models/export holds none of the rejected files."""
    repo = copy_built(built_repo, tmp_path / "repo")
    real = image_export.run_onnx
    monkeypatch.setattr(image_export, "run_onnx", lambda session, x: real(session, x) + 0.01)
    monkeypatch.chdir(repo)
    parser = argparse.ArgumentParser()
    for name in ("--splits", "--model", "--out", "--metrics", "--latency"):
        parser.add_argument(name)
    argv = "--splits data/splits --model models/model.pt --out models/export"
    argv += " --metrics results/export/metrics.json --latency results/export/latency.csv"
    with pytest.raises(SystemExit) as exited:
        run_stage(
            "export",
            lambda params, args: stage_function("classification", "export")(params, args),
            parser,
            argv.split(),
        )
    assert exited.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err == [
        "error: export: onnx differs from PyTorch by 0.01 (export.parity_tolerance is 0.001)"
    ]
    assert sorted(p.name for p in (repo / "models/export").iterdir()) == []


def test_the_simulate_cli_leaves_the_tracked_results_alone(built_repo, tmp_path):
    repo = copy_built(built_repo, tmp_path / "repo")
    log = repo / "results/simulate/log.csv"
    before = log.read_bytes()
    run(
        repo,
        sys.executable,
        "-m",
        "visionpipe.simulate",
        "models/export/model.onnx",
        "data/splits/test.csv",
        "--root",
        "data/raw",
        "--max-frames",
        "2",
        "--interval-ms",
        "1",
    )
    assert log.read_bytes() == before
    assert len((repo / "simulate_log.csv").read_text().splitlines()) == 3  # header + 2 frames
    assert json.loads((repo / "simulate_summary.json").read_text())["frames"] == 2
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout
    assert run(repo, "git", "status", "--porcelain").stdout == ""  # and git ignores them
