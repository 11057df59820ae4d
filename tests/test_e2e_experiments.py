"""End to end: sharing through a DVC remote and sweeping through the experiment queue, with the
real `dvc` CLI on the tiny pipeline (tests/e2e.py)."""

import csv
import io
import json
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml

from tests.e2e import TINY, copy_built, dvc_json, env, run, train_on_two_nodes
from visionpipe.core.checkpoint import read_checkpoint
from visionpipe.core.runtime import cpu_count


@pytest.fixture
def repo(built_repo, tmp_path):
    return copy_built(built_repo, tmp_path / "shared")


def test_push_clone_pull_is_up_to_date_and_artifacts_get(repo, tmp_path):
    """A teammate clones the repo, pulls from the remote and has nothing to rebuild."""
    remote = tmp_path / "remote"
    run(repo, "dvc", "remote", "add", "-d", "storage", str(remote))
    run(repo, "git", "commit", "-qam", "a DVC remote")
    pushed = run(repo, "dvc", "push").stdout
    assert "pushed" in pushed and remote.is_dir()

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models/model.pt").exists()
    run(clone, "dvc", "pull")
    for out in ("data/raw/elpv_cells.xlsx", "models/model.pt", "models/export/model.onnx"):
        assert (clone / out).is_file(), out
    assert "Data and pipelines are up to date" in run(clone, "dvc", "status").stdout
    assert "Running stage" not in run(clone, "dvc", "repro").stdout

    # the exported model as a named artifact, straight from the repo and its remote: a version
    # is an annotated git tag in GTO's format (what `gto register model` writes)
    run(repo, "git", "tag", "-a", "model@v0.1.0", "-m", "the first model")
    got = tmp_path / "got"
    run(tmp_path, "dvc", "artifacts", "get", str(repo), "model", "-o", str(got))
    assert {p.name for p in got.iterdir()} >= {"model.onnx", "model.json", "model.ts"}
    assert (got / "model.onnx").read_bytes() == (repo / "models/export/model.onnx").read_bytes()


def exp_table(repo, *args) -> list[dict]:
    text = run(repo, "dvc", "exp", "show", "--csv", "--no-pager", *args).stdout
    return list(csv.DictReader(io.StringIO(text)))


def test_queued_sweep_runs_alone_per_experiment_and_applies_the_best(repo):
    # two points: the committed lr (every stage cached) and a new one (train onwards rerun)
    run(repo, "dvc", "exp", "run", "--queue", "-S", "train.lr=0.001,0.003")
    run(repo, "dvc", "exp", "run", "--queue", "-n", "bad-lr", "-S", "train.lr=-1")
    proc = run(repo, "dvc", "exp", "run", "--run-all", "-j", "2", check=False)

    # the invalid run failed alone, with the validation message; the two others completed
    status = run(repo, "dvc", "queue", "status").stdout
    assert "bad-lr" in status and "Failed" in status, status
    assert status.count("Success") == 2, (status, proc.stdout[-2000:], proc.stderr[-2000:])
    logs = run(repo, "dvc", "queue", "logs", "bad-lr", check=False)
    assert "error: train.lr: -1.0 is out of range, allowed > 0.0" in logs.stdout

    metric = "results/evaluate/metrics.json:accuracy"
    rows = [r for r in exp_table(repo, "--sort-by", metric, "--sort-order", "desc") if r["rev"]]
    failed = [r for r in rows if r["Experiment"] == "bad-lr"]
    assert len(failed) == 1 and failed[0]["State"] == "Failed"
    runs = [r for r in rows if r["Experiment"] not in ("", "bad-lr")]
    assert len(runs) == 2, rows
    assert {r["train.lr"] for r in runs} == {"0.001", "0.003"}
    assert all(r["epochs_run"] == "1" and r["step"] == "1" for r in runs)
    accuracies = [float(r["accuracy"]) for r in runs]
    assert accuracies == sorted(accuracies, reverse=True)

    exps = dvc_json(repo, "exp", "show")
    shown = [e for row in exps for e in (row.get("experiments") or [])]
    data = next(
        e["revs"][0]["data"] for e in shown if e["revs"][0].get("name") == runs[0]["Experiment"]
    )
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == float(runs[0]["train.lr"])

    best, other = runs[0]["Experiment"], runs[-1]["Experiment"]
    diff = dvc_json(repo, "plots", "diff", best, other)
    assert not diff.get("errors"), diff["errors"]
    (loss,) = diff["data"]["Loss"]
    assert set(loss["revisions"]) == {best, other}

    run(repo, "dvc", "exp", "apply", best)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert str(params["train"]["lr"]) == runs[0]["train.lr"]
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout
    # the new lr's run, applied to the workspace, against the committed run
    new = next(r["Experiment"] for r in runs if r["train.lr"] == "0.003")
    run(repo, "dvc", "exp", "apply", new)
    loss = dvc_json(repo, "plots", "diff", "HEAD")["data"]["Loss"][0]
    assert set(loss["revisions"]) == {"HEAD", "workspace"}
    values = {}
    for v in loss["content"]["data"]["values"]:
        values.setdefault(v["rev"], []).append(v["loss"])
    assert sorted(values) == ["HEAD", "workspace"] and values["HEAD"] != values["workspace"]


def test_two_process_ddp_training_through_dvc(built_repo, tmp_path):
    """train.nproc: 2 runs the train stage as 2 gloo processes under torchrun."""
    overrides = {"train": {**TINY["train"], "epochs": 2, "nproc": 2}}
    repo = copy_built(built_repo, tmp_path / "ddp", overrides)
    out = run(repo, "dvc", "repro", "evaluate")
    assert "torch.distributed.run" in out.stdout + out.stderr
    assert "Running stage 'prepare'" not in out.stdout  # only what the params reach
    _, meta = read_checkpoint(repo / "models/model.pt")
    assert meta["distributed"] == {"processes": 2, "backend": "gloo"}
    train = json.loads((repo / "results/train/metrics.json").read_text())
    assert train["step"] == 2 and train["epochs_run"] == 2
    f1 = (repo / "results/train/plots/metrics/val/f1_macro.tsv").read_text().splitlines()
    assert len(f1) == 3  # a header and one row per epoch, written by rank 0 only
    ev = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert 0 <= ev["accuracy"] <= 1  # the model loads and predicts

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["nproc"] = 4096
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = run(repo, "dvc", "repro", "train", check=False)
    assert failed.returncode != 0
    errors = [ln for ln in failed.stderr.splitlines() if ln.startswith("error: train.nproc")]
    assert len(errors) == 1 and "4096 processes but this machine has" in errors[0]


def test_two_nodes_of_two_processes_through_torchrun(built_repo, tmp_path):
    """``torchrun --nnodes 2 --rdzv-backend c10d`` on loopback: two checkouts as two machines,
    two gloo processes each; one node writes a valid model and the metrics, once."""
    overrides = {"train": {**TINY["train"], "epochs": 2, "batch_size": 8}}
    nodes = [copy_built(built_repo, tmp_path / f"node{i}", overrides) for i in range(2)]
    main = nodes[train_on_two_nodes(nodes)]
    _, meta = read_checkpoint(main / "models/model.pt")
    assert meta["distributed"] == {"processes": 4, "backend": "gloo"}
    assert meta["threads"] == max(1, cpu_count() // 2)  # this node's cores, over its 2 processes
    assert len(meta["history"]) == 2
    f1 = (main / "results/train/plots/metrics/val/f1_macro.tsv").read_text().splitlines()
    assert len(f1) == 3  # a header and one row per epoch: rank 0 alone logs
    ev = run(main, "dvc", "repro", "evaluate").stdout  # the model loads and predicts
    assert "Running stage 'evaluate'" in ev
    assert 0 <= json.loads((main / "results/evaluate/metrics.json").read_text())["accuracy"] <= 1


def test_a_killed_train_stage_resumes_to_the_uninterrupted_result(built_repo, tmp_path):
    overrides = {"train": {**TINY["train"], "epochs": 6}}
    whole = copy_built(built_repo, tmp_path / "whole", overrides)
    run(whole, "dvc", "repro", "train")
    cut = copy_built(built_repo, tmp_path / "cut", overrides)
    state = cut / "models/train_state.pt"
    state.unlink()  # the built one-epoch run's state: wait for this run's first epoch
    proc = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=cut,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs, mid-training
    proc.wait()

    again = run(cut, "dvc", "repro", "train")
    assert "resuming after epoch" in again.stdout + again.stderr
    a, b = (json.loads((r / "results/train/metrics.json").read_text()) for r in (whole, cut))
    assert a == b and a["epochs_run"] == 6
    plots = "results/train/plots/metrics"
    for name in ("train/loss.tsv", "val/loss.tsv", "val/accuracy.tsv", "val/f1_macro.tsv"):
        assert (whole / plots / name).read_text() == (cut / plots / name).read_text(), name
    saved = [torch.load(r / "models/model.pt", weights_only=True) for r in (whole, cut)]
    for name, tensor in saved[0]["state_dict"].items():
        assert torch.equal(tensor, saved[1]["state_dict"][name]), name
    assert "Data and pipelines are up to date" in run(cut, "dvc", "status", "train").stdout
