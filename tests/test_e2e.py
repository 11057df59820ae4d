"""End to end: the real `dvc` CLI on the real pipeline, shrunk through params.yaml."""

import json
import shutil

import pandas as pd
import pytest

from tests.conftest import make_class_folders
from tests.e2e import TINY, copy_built, copy_repo, dvc_json, numbers, run, set_params
from visionpipe.core.checkpoint import read_checkpoint

CLASSES = {"0_functional", "1_possibly_defective", "2_likely_defective", "3_defective"}
#: the most numbers `dvc metrics show` may print for a run: what a person compares
HEADLINE_BUDGET = 40


@pytest.fixture
def repo(built_repo):
    return built_repo


def test_repro_builds_every_stage_and_is_then_up_to_date(repo):
    for out in [
        "data/raw/LICENSE.md",
        "data/prepared/manifest.csv",
        "data/splits/test.csv",
        "figures/eda/samples.png",
        "figures/eda/pixel_intensity.png",
        "results/eda/summary.json",
        "models/model.pt",
        "models/class_index.json",
        "results/evaluate/predictions.csv",
        "results/evaluate/curves.csv",
        "results/evaluate/tables/wrong.csv",
        "results/evaluate/tables/confident_wrong.csv",
        "results/evaluate/tables/classification_report.csv",
        "figures/evaluate/confusion_matrix.png",
        "figures/evaluate/confusion_matrix_normalized.png",
        "figures/evaluate/roc.png",
        "figures/evaluate/pr.png",
        "figures/evaluate/mistakes.png",
        "figures/evaluate/reliability.png",
        "results/evaluate/tables/reliability.csv",
        "models/export/model.ts",
        "models/export/model.onnx",
        "results/suspects/suspects.csv",
        "figures/suspects/top_suspects.png",
    ]:
        assert (repo / out).is_file(), out
    status = run(repo, "dvc", "status").stdout
    assert "Data and pipelines are up to date" in status
    again = run(repo, "dvc", "repro").stdout
    assert "Running stage" not in again


def test_metrics_show(repo):
    metrics = dvc_json(repo, "metrics", "show")
    files = metrics[""]["data"]
    assert sum(numbers(f["data"]) for f in files.values()) <= HEADLINE_BUDGET
    ev = files["results/evaluate/metrics.json"]["data"]
    assert 0 <= ev["accuracy"] <= 1 and "f1_macro" in ev and "precision_macro" in ev
    assert 0 <= ev["binary"]["accuracy"] <= 1 and "roc_auc_macro" in ev
    assert "per_class" not in ev and "inference" not in ev  # in details.json
    wrong_rows = len((repo / "results/evaluate/tables/wrong.csv").read_text().splitlines()) - 1
    assert ev["num_wrong"] == wrong_rows and ev["num_confident_wrong"] <= wrong_rows
    assert ev["ms_per_sample"] > 0

    # calibrated confidences: the temperature fitted on val, in the checkpoint and model.json
    _, meta = read_checkpoint(repo / "models/model.pt")
    temperature = meta["temperature"]
    assert temperature > 0 and meta["calibration"]["val_images"] > 0
    sidecar = json.loads((repo / "models/export/model.json").read_text())
    assert sidecar["output"]["temperature"] == temperature
    # the low-confidence threshold: params' number, with what it does on val
    threshold = sidecar["threshold"]
    assert threshold["value"] == 0.55 and threshold["target"] == "fixed"
    val_rows = len((repo / "data/splits/val.csv").read_text().splitlines()) - 1
    assert (
        threshold["resolved_on"]["count"] == val_rows and threshold["resolved_on"]["split"] == "val"
    )
    assert 0 <= ev["ece"] <= 1
    curves = pd.read_csv(repo / "results/evaluate/curves.csv")
    reliability = curves[curves["curve"] == "reliability"]
    assert set(reliability["class"]) == {"uncalibrated", "calibrated"}

    details = json.loads((repo / "results/evaluate/tables/details.json").read_text())
    assert details["calibration"]["temperature"] == temperature
    assert details["calibration"]["ece_after"] == ev["ece"]
    assert set(details["per_class"]) == CLASSES
    test_rows = len((repo / "data/splits/test.csv").read_text().splitlines()) - 1
    assert details["num_samples"] == test_rows > 0
    assert details["confident_threshold"] == 0.9
    assert set(details["roc_auc"]) == set(details["average_precision"]) == CLASSES
    inference = details["inference"]
    assert inference["device"] == "cpu" and inference["threads"] >= 1
    assert inference["ms_per_sample"] == ev["ms_per_sample"]
    for key, batch in (("batch_1", 1), ("batch_train", 16)):
        timing = inference["latency"][key]
        assert timing["batch_size"] == batch and timing["runs"] == 3
        assert 0 < timing["median_ms"] <= timing["p95_ms"]

    tr = files["results/train/metrics.json"]["data"]
    assert tr["epochs_run"] == 1 and tr["best"]["epoch"] == 1 and "val_f1_macro" in tr["best"]
    ex = files["results/export/metrics.json"]["data"]
    assert ex["onnx"]["max_abs_diff"] < 1e-3 and ex["torchscript"]["max_abs_diff"] < 1e-3
    assert ex["onnx"]["class_agreement"] == 1.0
    assert set(ex["latency_ms_batch_1"]) == {"pytorch", "torchscript", "onnx", "onnx_int8"}
    full = json.loads((repo / "results/export/details.json").read_text())
    assert full["onnx_int8"]["size_mb"] < full["onnx"]["size_mb"]
    quant = full["quantization"]
    assert quant["mode"] == "static" and quant["calibration_images"] == 8
    assert ex["int8_change"]["accuracy"] == pytest.approx(
        quant["int8"]["accuracy"] - quant["fp32"]["accuracy"]
    )
    lat = full["latency"]
    assert lat["threads"] >= 1 and lat["device"] == "cpu"
    for fmt in ("pytorch", "torchscript", "onnx", "onnx_int8"):
        for batch in (1, 4):
            timing = lat["ms_per_sample"][f"{fmt}_batch_{batch}"]
            assert 0 < timing["median_ms"] <= timing["p95_ms"]
        assert ex["latency_ms_batch_1"][fmt] == lat["ms_per_sample"][f"{fmt}_batch_1"]["median_ms"]
    sim = files["results/simulate/summary.json"]["data"]
    assert sim["frames"] == 4 and sim["bad_frames"] == 0
    assert sim["latency_ms"]["median"] > 0
    # suspect labels: every image of every split ranked, the count a headline metric
    sus = files["results/suspects/summary.json"]["data"]
    listed = pd.read_csv(repo / "results/suspects/suspects.csv")
    assert sus["label_issues"] == len(listed)
    sus_details = json.loads((repo / "results/suspects/details.json").read_text())
    all_rows = sum(
        len(pd.read_csv(repo / f"data/splits/{name}.csv")) for name in ("train", "val", "test")
    )
    assert sus_details["items"] == all_rows and sus_details["label"] == "grade"
    assert set(listed["given"]) | set(listed["suggested"]) <= CLASSES
    found = json.loads((repo / "results/split/duplicates.json").read_text())
    assert found["max_distance"] == 0 and found["images"] > 0 and not found["dedupe"]
    drift = json.loads((repo / "results/simulate/drift.json").read_text())
    val_rows = len((repo / "data/splits/val.csv").read_text().splitlines()) - 1
    assert drift["enabled"] and drift["reference"]["images"] == min(100, val_rows)
    assert sim["drift_frames"] == drift["flagged_frames"]


def test_plots_show(repo):
    shown = dvc_json(repo, "plots", "show")
    assert not shown.get("errors"), shown["errors"]  # no plot of the other task is missing
    plots = shown["data"]
    names = set(plots)
    assert "Loss" in names and "results/train/plots/metrics/val/f1_macro.tsv" in names
    assert "figures/eda/class_distribution.png" in names
    test_rows = len((repo / "data/splits/test.csv").read_text().splitlines()) - 1
    # ${base.task}_predictions / _errors: the confusion matrices for classification
    for plot_id in ("Test predictions", "Test errors"):
        (confusion,) = plots[plot_id]
        assert confusion["type"] == "vega"
        content = confusion["content"]
        rows = content["data"]["values"]
        assert len(rows) == test_rows and {"true", "predicted"} <= set(rows[0])
        assert content["spec"]["encoding"]["x"]["field"] == "predicted"
    # ROC, PR and reliability side by side, one line per class (the template colours by
    # `class`) and per calibration
    (curves,) = plots["Test curves"]
    content = curves["content"]
    titles = [panel["title"] for panel in content["hconcat"]]
    assert titles == [
        "ROC, one vs rest",
        "Precision-recall",
        "Reliability (test): accuracy per confidence bin",
    ]
    rows = content["data"]["values"]
    assert {r["curve"] for r in rows} == {"roc", "pr", "reliability"}
    lines = {r["class"] for r in rows if r["curve"] != "reliability"}
    assert len(lines) >= 2 and lines <= CLASSES  # a class without test positives: no line
    calibrations = {r["class"] for r in rows if r["curve"] == "reliability"}
    assert calibrations == {"uncalibrated", "calibrated"}
    pngs = ("confusion_matrix", "confusion_matrix_normalized", "roc", "pr", "mistakes")
    for png in (*pngs, "reliability"):
        assert plots[f"figures/evaluate/{png}.png"][0]["type"] == "image", png
    latency = plots["results/export/latency.csv"][0]["content"]["data"]["values"]
    assert {r["runtime"] for r in latency} >= {"onnx (batch 1)", "onnx_int8 (batch 4)"}
    assert "results/simulate/log.csv" in names


def test_user_folder_presplit_with_broken_files(tmp_path):
    repo = copy_repo(tmp_path / "repo", {**TINY, "data": {"path": "mydata", "table": ""}})
    data = repo / "mydata"
    for split, n in (("train", 8), ("val", 3)):
        make_class_folders(data, {"ripe": n, "rotten": n}, prefix=split)
    (data / "train" / "ripe" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n trunc")
    (data / "val" / "rotten" / "readme.txt").write_text("not an image")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "my data")
    run(repo, "dvc", "repro", "split")
    assert not (repo / "data" / "raw").exists()  # the embedded default is not upstream
    report = __import__("json").loads((repo / "results/prepare/data_report.json").read_text())
    assert report["layout"] == "presplit" and report["num_images"] == 22
    assert {s["path"] for s in report["skipped"]} == {
        "train/ripe/broken.png",
        "val/rotten/readme.txt",
    }
    sizes = {
        s: len((repo / f"data/splits/{s}.csv").read_text().splitlines()) - 1
        for s in ("train", "val", "test")
    }
    assert sizes["val"] == 6 and sizes["train"] + sizes["test"] == 16 and sizes["test"] > 0


def test_bad_params_and_missing_path_fail_before_work(tmp_path):
    repo = copy_repo(
        tmp_path / "repo", {**TINY, "split": {"train": 0.8, "val": 0.15, "test": 0.15}}
    )
    proc = run(repo, "dvc", "repro", "embed", check=False)
    assert proc.returncode != 0
    assert "error: split: train + val + test must sum to 1" in proc.stderr + proc.stdout
    repo2 = copy_repo(tmp_path / "repo2", {**TINY, "data": {"path": "does/not/exist"}})
    proc = run(repo2, "dvc", "repro", "prepare", check=False)
    assert proc.returncode != 0
    assert "does/not/exist" in proc.stderr + proc.stdout


def test_labels_sheet_and_training_recipe_through_dvc(tmp_path):
    """A user's Excel sheet of labels and the recipe knobs, through `dvc repro train`."""
    import pandas as pd

    overrides = {
        **TINY,
        "data": {
            "path": "mydata",
            "table": "labels.xlsx",
            "sheet": "grades",
            "image_column": "file",
            "label_column": "grade",
        },
        "model": {"arch": "efficientnet_lite0", "image_size": 32},
        "augment": {"ops": ["hflip", "rotate", "resized_crop", "color_jitter", "erasing"]},
        "classification": {"class_weights": "balanced"},
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "schedule": "plateau",
            "freeze_backbone_epochs": 1,
            "early_stopping_patience": 1,
            "monitor": "val_loss",
        },
    }
    repo = copy_repo(tmp_path / "repo", overrides)
    make_class_folders(repo / "mydata", {"ripe": 9, "rotten": 6})
    rows = [
        {"file": p.relative_to(repo / "mydata").as_posix(), "grade": p.parent.name}
        for p in sorted((repo / "mydata").rglob("*.png"))
    ]
    rows.append({"file": "ripe/ripe_000.png", "grade": None})  # no label: dropped, counted
    rows[0]["grade"] = None
    rows.append({"file": "ripe/missing.png", "grade": "ripe"})  # no file: dropped, listed
    with pd.ExcelWriter(repo / "mydata/labels.xlsx") as writer:
        pd.DataFrame({"x": [1]}).to_excel(writer, sheet_name="notes", index=False)
        pd.DataFrame(rows).to_excel(writer, sheet_name="grades", index=False)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "my sheet")
    run(repo, "dvc", "repro", "train")

    report = __import__("json").loads((repo / "results/prepare/data_report.json").read_text())
    assert report["layout"] == "table" and report["num_images"] == 14
    assert report["num_missing_label"] == 2 and report["num_missing_file"] == 1
    train = dvc_json(repo, "metrics", "show")[""]["data"]["results/train/metrics.json"]["data"]
    assert 1 <= train["epochs_run"] <= 3
    _, meta = read_checkpoint(repo / "models/model.pt")
    assert meta["arch"] == "efficientnet_lite0" and meta["image_size"] == 32
    assert meta["num_parameters"] > 1_000_000 and len(meta["dataset_fingerprint"]) == 16
    assert meta["stopped_early"] == (train["epochs_run"] < 3)
    frozen = (repo / "results/train/plots/metrics/train/frozen_layers.tsv").read_text()
    assert frozen.splitlines()[1].split("\t")[1] == "9"  # epoch 0: the whole backbone frozen
    assert run(repo, "dvc", "status", "train").stdout.strip().endswith("up to date.")


@pytest.fixture(scope="module")
def regression_repo(built_repo, tmp_path_factory):
    """The same pipeline with one param switched: regression on the embedded elpv sheet."""
    path = copy_built(built_repo, tmp_path_factory.mktemp("regression") / "repo")
    set_params(path, {"base": {"task": "regression"}})
    out = run(path, "dvc", "repro").stdout
    assert "Running stage 'embed'" not in out  # the same embedded data
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)  # the module's repo, not kept


def test_regression_task_runs_through_the_same_stages(regression_repo):
    repo = regression_repo
    for out in [
        "data/raw/elpv_cells.xlsx",
        "figures/eda/target_histogram.png",
        "figures/eda/correlation.png",
        "figures/eda/target_vs_metadata.png",
        "results/evaluate/tables/worst.csv",
        "results/evaluate/tables/by_target_bin.csv",
        "figures/evaluate/predicted_vs_actual.png",
        "figures/evaluate/residuals.png",
        "figures/evaluate/worst_predictions.png",
        "models/export/model.onnx",
    ]:
        assert (repo / out).is_file(), out
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout
    files = dvc_json(repo, "metrics", "show")[""]["data"]
    assert sum(numbers(f["data"]) for f in files.values()) <= HEADLINE_BUDGET
    ev = files["results/evaluate/metrics.json"]["data"]
    details = json.loads((repo / "results/evaluate/tables/details.json").read_text())
    test_rows = len((repo / "data/splits/test.csv").read_text().splitlines()) - 1
    assert details["target"] == "defect_probability" and details["num_samples"] == test_rows > 0
    assert ev["rmse"] == pytest.approx(details["mse"] ** 0.5) and 0 <= ev["mae"] <= ev["rmse"]
    assert ev["r2"] is not None and details["transform"]["log1p"] is False
    tr = files["results/train/metrics.json"]["data"]
    assert "val_rmse" in tr["best"]
    assert (repo / "results/train/plots/metrics/val/mae.tsv").is_file()
    ex = files["results/export/metrics.json"]["data"]
    assert ex["onnx"]["max_abs_diff_target_units"] < 1e-3
    assert set(ex["int8_change"]) >= {"rmse", "mae"}
    eda = json.loads((repo / "results/eda/summary.json").read_text())
    assert eda["task"] == "regression" and eda["missing"]["num_missing_target"] == 0

    shown = dvc_json(repo, "plots", "show")
    assert not shown.get("errors"), shown["errors"]
    (scatter,) = shown["data"]["Test predictions"]
    rows = scatter["content"]["data"]["values"]
    assert len(rows) == test_rows
    first = pd.read_csv(repo / "results/evaluate/predictions.csv").iloc[0]
    assert float(rows[0]["true"]) == first["true"]
    assert float(rows[0]["predicted"]) == first["predicted"]
    titles = {layer["encoding"]["x"]["title"] for layer in scatter["content"]["layer"]}
    assert titles == {"actual"}
    (rec,) = shown["data"]["Test curves"]
    assert {r["curve"] for r in rec["content"]["data"]["values"]} == {"rec"}
    assert "results/train/plots/metrics/val/rmse.tsv" in shown["data"]

    sim = files["results/simulate/summary.json"]["data"]
    assert sim["frames"] == 4 and sim["bad_frames"] == 0
    log = pd.read_csv(repo / "results/simulate/log.csv")
    assert log["value"].notna().all() and log["class"].isna().all()
