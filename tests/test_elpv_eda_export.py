import torch

from tests.conftest import make_class_folders
from visionpipe.core import onnx as export
from visionpipe.core import runtimes
from visionpipe.core.models import build_model
from visionpipe.core.sources.folder import scan_folder
from visionpipe.core.sources.table import read_table, scan_regression_table, scan_table
from visionpipe.embedded import elpv
from visionpipe.tasks import get_task
from visionpipe.tasks.classification.data import eda


def test_elpv_materializes_class_folders_with_licence(tmp_path):
    labels = elpv.read_labels()
    assert len(labels) == 2624
    assert set(labels["label"]) == set(elpv.GRADES.values())
    out = tmp_path / "raw"
    table = elpv.materialize(out, max_per_class=3)
    assert list(table.columns) == ["image", "grade", "defect_probability", "cell_type"]
    assert len(table) == 12
    assert "Attribution-NonCommercial-ShareAlike" in (out / "LICENSE.md").read_text()
    assert not (out / "elpv_labels.csv").exists()
    sheet = read_table(out / elpv.TABLE, elpv.SHEET)
    assert elpv.TABLE == "elpv_cells.xlsx" and elpv.SHEET == "cells"
    assert list(sheet.columns) == ["image", "grade", "defect_probability", "cell_type"]
    assert len(sheet) == 12 and sheet["image"].is_unique
    assert all((out / image).is_file() for image in sheet["image"])
    assert (sheet["image"].str.split("/").str[0] == sheet["grade"]).all()
    assert sheet.sort_values(["grade", "image"]).index.tolist() == list(range(12))
    assert set(sheet["defect_probability"]) == {0.0, 1 / 3, 2 / 3, 1.0}  # floats exact
    assert set(sheet["cell_type"]) <= {"mono", "poly"}
    assert sheet.astype(object).equals(table.astype(object))
    scan = scan_folder(out)  # the same code path a user's folder takes
    assert scan.classes == sorted(elpv.GRADES.values()) and len(scan.samples) == 12
    assert set(scan.samples["mode"]) == {"L"} and set(scan.samples["width"]) == {300}
    first = (out / elpv.TABLE).read_bytes()
    again = elpv.materialize(out, max_per_class=3)  # rerun replaces, never mixes
    assert again.equals(table) and len(list(out.rglob("*.png"))) == 12
    assert (out / elpv.TABLE).read_bytes() == first  # DVC sees the same output


def test_elpv_sheet_reads_through_the_table_sources(tmp_path):
    out = tmp_path / "raw"
    elpv.materialize(out, max_per_class=3)
    classes = scan_table(out, elpv.TABLE, elpv.SHEET, "image", "grade", [])
    assert classes.classes == sorted(elpv.GRADES.values()) and len(classes.samples) == 12
    assert not classes.skipped
    regression = scan_regression_table(
        out, elpv.TABLE, elpv.SHEET, "image", "defect_probability", "", ["cell_type"]
    )
    assert len(regression.samples) == 12 and not regression.skipped
    assert set(regression.samples["target"]) == {0.0, 1 / 3, 2 / 3, 1.0}
    assert set(regression.samples["cell_type"]) <= {"mono", "poly"}


def test_eda_figures_and_stats(tmp_path):
    root = make_class_folders(tmp_path / "ds", {"a": 4, "b": 3})
    scan = scan_folder(root)
    frame = scan.samples.assign(split=["train", "train", "val", "test"] * 1 + ["train"] * 3)
    counts = eda.class_distribution(frame, ["a", "b"], tmp_path / "f" / "dist.png")
    assert counts.loc["a"].sum() == 4 and list(counts.columns) == ["train", "val", "test"]
    eda.sample_grid(root, frame, ["a", "b"], 2, 0, tmp_path / "f" / "grid.png")
    sizes = eda.image_sizes(frame, tmp_path / "f" / "sizes.png")
    assert sizes["most_common_size"] == [24, 20] and sizes["modes"] == {"L": 7}
    stats = eda.pixel_intensity(root, frame, ["a", "b"], 10, 0, tmp_path / "f" / "px.png")
    assert stats["a"]["images"] == 4 and stats["b"]["mean"] > stats["a"]["mean"]
    assert all(
        (tmp_path / "f" / n).stat().st_size > 1000
        for n in ("dist.png", "grid.png", "sizes.png", "px.png")
    )


def test_export_parity_on_a_tiny_model(tmp_path):
    model = build_model("mobilenet_v3_small", 3, pretrained=False).model.eval()
    x = torch.rand(5, 3, 48, 48) * 255
    with torch.no_grad():
        ref = model(x)
    export.export_torchscript(model, x[:1], tmp_path / "m.ts")
    export.export_onnx(model, x[:1], tmp_path / "m.onnx", opset=17)
    task = get_task("classification")
    ts = task.parity(ref, runtimes.run_torchscript(runtimes.load_torchscript(tmp_path / "m.ts"), x))
    session = runtimes.onnx_session(tmp_path / "m.onnx", threads=1)
    ox = task.parity(ref, runtimes.run_onnx(session, x))  # batch 5 through a dynamic batch axis
    assert ts["max_abs_diff"] < 1e-4 and ts["class_agreement"] == 1.0
    assert ox["max_abs_diff"] < 1e-3 and ox["class_agreement"] == 1.0
