"""End to end: the tiny pipeline's data packed into tar shards (python -m visionpipe.pack) and
read from them through `dvc repro`: the same manifests, splits and report as the loose files."""

import json
import sys

import pandas as pd

from tests.e2e import copy_built, run, set_params
from tests.test_shards import sources
from visionpipe.core.manifests import SPLITS


def test_sharded_data_gives_the_same_manifests_splits_and_report(built_repo, tmp_path):
    repo = copy_built(built_repo, tmp_path / "shards")
    read = lambda s: pd.read_csv(repo / f"data/splits/{s}.csv", keep_default_na=False)  # noqa: E731
    loose = {s: read(s) for s in SPLITS}
    loose_report = json.loads((repo / "results/prepare/data_report.json").read_text())
    packed = run(
        repo,
        sys.executable,
        "-m",
        "visionpipe.pack",
        "data/raw",
        "data/shards",
        "--table",
        "elpv_cells.xlsx",
        "--label-column",
        "grade",
        "--shard-size",
        "10",
    ).stdout
    assert f"{loose_report['num_images']} images in" in packed
    set_params(repo, {"data": {"path": "data/shards", "table": ""}}, "read the shards")
    out = run(repo, "dvc", "repro", "evaluate").stdout
    assert "Running stage 'prepare'" in out and "Running stage 'evaluate'" in out
    for split in SPLITS:
        sharded = read(split)
        assert all(".tar/" in p for p in sharded["path"])
        assert sources(repo / "data/shards", sharded) == loose[split]["path"].tolist(), split
        assert sharded["label"].tolist() == loose[split]["label"].tolist()
    report = json.loads((repo / "results/prepare/data_report.json").read_text())
    assert report["layout"] == "shards" and report["num_skipped"] == 0
    for key in ("num_images", "images_per_class", "classes"):
        assert report[key] == loose_report[key], key
    metrics = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
