"""End to end: base.task=detection through the real `dvc repro` on a few tiny composed panels."""

import json
import shutil
import sys

import pandas as pd
import pytest

from tests.e2e import TINY, copy_built, dvc_json, numbers, run, set_params, train_on_two_nodes
from visionpipe.core.checkpoint import read_checkpoint
from visionpipe.core.runtime import cpu_count

# one worker builds the detection repo for both tests (pytest-xdist --dist loadgroup)
pytestmark = pytest.mark.xdist_group("detection")


@pytest.fixture(scope="module")
def detection_repo(built_repo, tmp_path_factory):
    """The built pipeline with one param switched: detection on the embedded panels (8 panels
    of 2 x 2 cells at 32 px, one epoch, the same train section as classification but batches
    of 4). The default arch has no weights offline, so this also runs the fallback to the
    packaged ImageNet EfficientNet-Lite0 backbone."""
    overrides = {"base": {"task": "detection"}, "train": {**TINY["train"], "batch_size": 4}}
    path = copy_built(built_repo, tmp_path_factory.mktemp("detection") / "repo", overrides)
    out = run(path, "dvc", "repro").stdout
    assert "Running stage 'embed'" not in out
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)  # the module's repo, not kept


def test_detection_runs_through_the_same_stages(detection_repo):
    repo = detection_repo
    for out in [
        "data/raw/panels.json",
        "data/prepared/annotations.json",
        "data/splits/test.json",
        "figures/eda/part_state.png",
        "figures/eda/samples.png",
        "figures/evaluate/precision_recall.png",
        "figures/evaluate/state_confusion.png",
        "figures/evaluate/state_reliability.png",
        "results/evaluate/tables/state_reliability.csv",
        "results/evaluate/tables/detections.json",
        "results/evaluate/tables/per_part_ap.csv",
        "results/simulate/log.csv",
    ]:
        assert (repo / out).is_file(), out
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status").stdout

    files = dvc_json(repo, "metrics", "show")[""]["data"]
    assert sum(numbers(f["data"]) for f in files.values()) <= 40
    ev = files["results/evaluate/metrics.json"]["data"]
    assert 0.0 <= ev["map"] <= ev["map_50"] <= 1.0 and ev["ms_per_image"] > 0
    details = json.loads((repo / "results/evaluate/tables/details.json").read_text())
    assert set(details["per_part"]) <= {"mono", "poly"}
    test_coco = json.loads((repo / "data/splits/test.json").read_text())
    assert details["counts"]["test_images"] == len(test_coco["images"])
    assert details["counts"]["ground_truth_boxes"] == len(test_coco["annotations"])
    assert details["inference"]["latency"]["batch_1"]["median_ms"] > 0
    # the state head's temperature, fitted on val's boxes, and its ECE on test's
    calibration = details["state_calibration"]
    assert 0 <= ev["state_ece"] == calibration["ece_after"] <= 1
    assert (
        calibration["boxes"] == len(test_coco["annotations"]) and "val_boxes" in calibration["fit"]
    )
    curves = pd.read_csv(repo / "results/evaluate/curves.csv")
    assert set(curves["curve"]) == {"precision_recall", "reliability"}
    tr = files["results/train/metrics.json"]["data"]
    assert tr["epochs_run"] == 1 and "val_map" in tr["best"]  # -S train.epochs applies here too
    _, meta = read_checkpoint(repo / "models/model.pt")
    assert meta["state_temperature"] == calibration["temperature"] > 0
    assert "Lite0" in meta["initial_weights"] and meta["arch"] == "efficientnet_lite0_fpn"
    losses = {"loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    history = meta["history"][0]
    assert {f"train_{k}" for k in losses | {"loss_state"}} <= set(history)
    assert {f"val_{k}" for k in losses | {"map", "map_50", "state_accuracy"}} <= set(history)
    ex = files["results/export/metrics.json"]["data"]
    for fmt in ("torchscript", "onnx"):  # exported with parity, or the reason it could not be
        assert "error" in ex[fmt] or ex[fmt]["max_box_abs_diff"] < 1e-2, ex[fmt]

    shown = dvc_json(repo, "plots", "show")
    assert not shown.get("errors"), shown["errors"]
    (confusion,) = shown["data"]["Test predictions"]
    rows = confusion["content"]["data"]["values"]
    predictions = pd.read_csv(repo / "results/evaluate/predictions.csv", keep_default_na=False)
    assert len(rows) == len(predictions)
    assert "results/train/plots/metrics/val/loss_state.tsv" in shown["data"]

    # suspect labels: the state of every annotated box, from crops of the boxes
    sus = json.loads((repo / "results/suspects/details.json").read_text())
    boxes = sum(
        len(json.loads((repo / f"data/splits/{n}.json").read_text())["annotations"])
        for n in ("train", "val", "test")
    )
    assert sus["label"] == "state" and sus["items"] == boxes and sus["boxes_of"] == "states"
    listed = pd.read_csv(repo / "results/suspects/suspects.csv")
    assert set(listed["given"]) <= set(meta["states"]) and listed["item"].str.contains("box").all()
    # the low-confidence threshold, resolved on val's detections (right part, box and state)
    threshold = json.loads((repo / "models/export/model.json").read_text())["threshold"]
    assert threshold["target"] == "fixed" and threshold["resolved_on"]["unit"] == "detections"
    assert meta["iou_threshold"] == 0.5 and threshold["value"] == 0.55
    panel = repo / "data/raw" / test_coco["images"][0]["file_name"]
    exported = [n for n in ("model.onnx", "model.ts") if (repo / "models/export" / n).is_file()]
    assert exported  # at least one format exported (the other may record why not)
    for name in exported:  # a detector through predict too, in each format
        model = repo / "models/export" / name
        if model.is_file():
            predicted = run(repo, "python", "-m", "visionpipe.predict", str(model), str(panel))
            record = json.loads(predicted.stdout.splitlines()[-1])
            assert record["detections"] >= 0 and 0 <= record["confidence"] <= 1
            assert record["class"] == "none" or "/" in record["class"]
            assert len(record["objects"]) == record["detections"]
            width, height = test_coco["images"][0]["width"], test_coco["images"][0]["height"]
            for obj in record["objects"]:  # boxes in the panel's own pixels
                x1, y1, x2, y2 = obj["box"]
                assert 0 <= x1 < x2 <= width + 1 and 0 <= y1 < y2 <= height + 1, obj
                assert obj["part"] in {"mono", "poly"} and obj["state"] in meta["states"]
                assert obj["low_confidence"] == (obj["confidence"] < threshold["value"])
    ckpt = run(
        repo, "python", "-m", "visionpipe.predict", "models/model.pt", str(panel), check=False
    )
    assert ckpt.returncode == 2 and ckpt.stderr.strip() == (
        "error: models/model.pt: a detector checkpoint; predict and simulate run the exported "
        "detector (models/export/model.onnx or model.ts, written by the export stage)"
    )

    sim = files["results/simulate/summary.json"]["data"]
    assert sim["frames"] == min(4, len(test_coco["images"])) and sim["bad_frames"] == 0
    # one val panel: no spread to compare with, so the belt runs unwatched, and says why
    drift = json.loads((repo / "results/simulate/drift.json").read_text())
    assert len(json.loads((repo / "data/splits/val.json").read_text())["images"]) == 1
    assert not drift["enabled"] and "at least 2 readable images, found 1" in drift["reason"]
    log = pd.read_csv(repo / "results/simulate/log.csv")
    assert log["detections"].notna().all()


def test_detection_trains_in_two_ddp_processes(detection_repo, tmp_path):
    """train.nproc: 2 for detection too: each gloo process its share of every batch."""
    overrides = {"train": {**TINY["train"], "batch_size": 4, "nproc": 2}}
    repo = copy_built(detection_repo, tmp_path / "ddp", overrides)
    out = run(repo, "dvc", "repro", "train")
    assert "torch.distributed.run" in out.stdout + out.stderr
    _, meta = read_checkpoint(repo / "models/model.pt")
    assert meta["distributed"] == {"processes": 2, "backend": "gloo"}
    assert meta["history"][0]["val_map"] >= 0.0


def test_detection_trains_on_two_nodes(detection_repo, tmp_path):
    """Detection under ``torchrun --nnodes 2`` (c10d on loopback, two gloo processes per node):
    one node writes the model, which evaluates."""
    overrides = {"train": {**TINY["train"], "batch_size": 8}}
    nodes = [copy_built(detection_repo, tmp_path / f"node{i}", overrides) for i in range(2)]
    main = nodes[train_on_two_nodes(nodes)]
    _, meta = read_checkpoint(main / "models/model.pt")
    assert meta["distributed"] == {"processes": 4, "backend": "gloo"}
    assert meta["threads"] == max(1, cpu_count() // 2)  # this node's cores, over its 2 processes
    assert meta["history"][0]["val_map"] >= 0.0
    run(main, "dvc", "repro", "evaluate")
    assert "map_50" in json.loads((main / "results/evaluate/metrics.json").read_text())


def test_detection_reads_a_coco_set_packed_into_shards(detection_repo, tmp_path):
    """`python -m visionpipe.pack --annotations`: the panels in tar shards, the annotations
    rewritten beside them; the pipeline trains and evaluates from the shards with the same
    images and boxes as the loose files."""
    repo = copy_built(detection_repo, tmp_path / "shards")
    loose = json.loads((repo / "results/prepare/data_report.json").read_text())
    cmd = [sys.executable, "-m", "visionpipe.pack", "data/raw", "data/panel_shards"]
    run(repo, *cmd, "--annotations", "panels.json", "--shard-size", "3")
    overrides = {"data": {"path": "data/panel_shards", "annotations": "annotations.json"}}
    set_params(repo, overrides, "read the shards")
    out = run(repo, "dvc", "repro", "evaluate").stdout
    assert "Running stage 'train'" in out
    report = json.loads((repo / "results/prepare/data_report.json").read_text())
    assert report["images"] == loose["images"] and report["annotations"] == loose["annotations"]
    split = json.loads((repo / "data/splits/train.json").read_text())
    assert all(".tar/" in im["file_name"] for im in split["images"])
    ev = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert 0.0 <= ev["map_50"] <= 1.0


def test_a_plain_detector_without_states(detection_repo, tmp_path):
    """data.states: [] on the same panels (their state attributes unread): a detector without
    the state head, and every artifact without states, through `dvc repro` and predict."""
    repo = copy_built(detection_repo, tmp_path / "plain", {"data": {"states": []}})
    run(repo, "dvc", "repro")
    eda = repo / "figures/eda"
    assert (eda / "samples.png").is_file() and (eda / "part_frequency.png").is_file()
    assert not (eda / "state_frequency.png").exists() and not (eda / "part_state.png").exists()
    figures = repo / "figures/evaluate"
    assert (figures / "part_confusion.png").is_file()
    assert not (figures / "state_confusion.png").exists()

    summary = json.loads((repo / "results/eda/summary.json").read_text())
    assert summary["states"] == [] and "state_frequency" not in summary
    _, meta = read_checkpoint(repo / "models/model.pt")
    assert meta["states"] == [] and meta["num_states"] == 0
    assert not any("state" in key for key in meta["history"][0])
    files = dvc_json(repo, "metrics", "show")[""]["data"]
    ev = files["results/evaluate/metrics.json"]["data"]
    assert "state_accuracy" not in ev and "state_ece" not in ev and 0.0 <= ev["map_50"] <= 1.0
    details = json.loads((repo / "results/evaluate/tables/details.json").read_text())
    assert "state_confusion" not in details and "per_state_recall" not in details
    predictions = pd.read_csv(repo / "results/evaluate/predictions.csv", keep_default_na=False)
    assert not [c for c in predictions.columns if c.startswith("state")]
    assert set(predictions["true"]) <= {"mono", "poly", "background"}
    detections = json.loads((repo / "results/evaluate/tables/detections.json").read_text())
    assert all("state" not in d for d in detections)

    assert json.loads((repo / "results/suspects/details.json").read_text())["label"] == "part"
    sidecar = json.loads((repo / "models/export/model.json").read_text())
    resolved = sidecar["threshold"]["resolved_on"]
    assert resolved["unit"] == "detections" and resolved["split"] == "val"
    assert sidecar["states"] == [] and sidecar["output"]["names"] == ["boxes", "labels", "scores"]
    ex = files["results/export/metrics.json"]["data"]
    assert any("max_box_abs_diff" in ex[fmt] for fmt in ("torchscript", "onnx")), ex
    assert all("state_agreement" not in ex[fmt] for fmt in ("torchscript", "onnx"))
    test_coco = json.loads((repo / "data/splits/test.json").read_text())
    assert all(not a["attributes"] for a in test_coco["annotations"])
    panel = repo / "data/raw" / test_coco["images"][0]["file_name"]
    for name in ("model.onnx", "model.ts"):
        if (repo / "models/export" / name).is_file():
            out = run(
                repo, "python", "-m", "visionpipe.predict", f"models/export/{name}", str(panel)
            )
            record = json.loads(out.stdout.splitlines()[-1])
            assert record["class"] == "none" or "/" not in record["class"], record
    assert (repo / "results/simulate/log.csv").is_file()
    assert not dvc_json(repo, "plots", "show").get("errors")
