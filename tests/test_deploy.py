"""predict, simulate and the exported-model loading they share."""

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.conftest import LABELS, REPO, SIZE, make_class_folders
from visionpipe.core import onnx as export
from visionpipe.core.checkpoint import save_checkpoint
from visionpipe.core.errors import UserError
from visionpipe.core.image.export import sidecar
from visionpipe.core.models import build_model
from visionpipe.core.params import Params
from visionpipe.core.runtimes import onnx_session, run_onnx
from visionpipe.deploy.predict import main as predict_main
from visionpipe.deploy.predictor import image_frames, list_images, load_predictor, open_frames
from visionpipe.deploy.simulate import simulate
from visionpipe.tasks import get_task


@pytest.fixture
def images(tmp_path):
    root = make_class_folders(tmp_path / "imgs", {"x": 3})
    (root / "x" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "x" / "notes.txt").write_text("ignored: not an image extension")
    return root


@pytest.mark.parametrize("name", ["model.onnx", "model.ts", "model.pt"])
def test_predict_one_image_each_format(exported, images, name, capsys):
    assert predict_main([str(exported / name), str(images / "x" / "x_000.png")]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["class"] in LABELS and 0 < record["confidence"] <= 1
    assert record["low_confidence"] == (record["confidence"] < 0.5)
    assert record["latency_ms"] > 0


def test_predict_folder_with_broken_file(exported, images, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    rc = predict_main(
        [str(exported / "model.onnx"), str(images), "--threshold", "1.0", "--out", str(out)]
    )
    assert rc == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4  # three images and the broken one; notes.txt is not an image
    broken = [r for r in lines if "error" in r]
    assert len(broken) == 1 and "broken.png: cannot decode image" in broken[0]["error"]
    assert all(r["low_confidence"] for r in lines if "error" not in r)  # threshold 1.0


def test_predict_errors_are_one_line(exported, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict_main([str(exported / "model.onnx"), str(empty)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {empty}: no images (.bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)"
    )
    assert predict_main([str(tmp_path / "nope.onnx"), str(empty)]) == 2
    assert "nope.onnx: model file not found" in capsys.readouterr().err


def test_load_predictor_rejects_bad_models(exported, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(exported, other)
    with pytest.raises(UserError, match="unknown model format '.pkl'"):
        (other / "model.pkl").write_bytes(b"x")
        load_predictor(other / "model.pkl", 1)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "task": "segmentation"}))
    with pytest.raises(UserError, match="a 'segmentation' model; this version handles classif"):
        load_predictor(other / "model.onnx", 1)
    (other / "model.json").write_text(json.dumps({**meta, "image_size": 64}))
    with pytest.raises(UserError, match="takes 32x32 images but model.json says 64"):
        load_predictor(other / "model.onnx", 1)
    with pytest.raises(UserError, match="a classification model, but base.task is regression"):
        load_predictor(exported / "model.pt", 1, expect_task="regression")
    (other / "model.json").unlink()
    with pytest.raises(UserError, match="model.json: missing"):
        load_predictor(other / "model.ts", 1)


def test_list_images_from_a_manifest(tmp_path, images):
    manifest = tmp_path / "test.csv"
    pd.DataFrame({"path": ["x/x_001.png", "x/x_000.png"]}).to_csv(manifest, index=False)
    assert list_images(manifest, root=images) == [images / "x/x_001.png", images / "x/x_000.png"]
    pd.DataFrame({"file": ["a"]}).to_csv(manifest, index=False)
    with pytest.raises(UserError, match="needs a non-empty 'path' column"):
        list_images(manifest)


def test_simulate_schedules_frames_and_counts(exported, images, tmp_path):
    predictor = load_predictor(exported / "model.onnx", 1)
    frames = list(open_frames(images, predictor))
    now = [100.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(round(seconds, 6))
        now[0] += seconds

    log = tmp_path / "log.csv"
    summary = simulate(predictor, frames, 250, 0.5, log, clock=lambda: now[0], sleep=sleep)
    # the fake clock only moves when the loop sleeps: frames 1..3 each wait a full interval,
    # then the loop waits for a fifth frame that does not come, which the duration ignores
    assert sleeps == [0.25, 0.25, 0.25, 0.25]
    assert summary["duration_s"] == 0.75
    assert summary["frames"] == 4 and summary["predicted"] == 3 and summary["bad_frames"] == 1
    assert summary["missed_interval"] == 0
    rows = pd.read_csv(log)
    assert list(rows["frame"]) == [0, 1, 2, 3] and rows["error"].notna().sum() == 1
    assert list(rows["time_s"]) == [0.0, 0.25, 0.5, 0.75]
    simulate(predictor, frames[:1], 250, 0.5, log, clock=lambda: now[0], sleep=sleep)
    assert len(pd.read_csv(log)) == 5  # appended, one header


def test_simulate_real_clock_counts_missed_intervals(exported, images, tmp_path):
    predictor = load_predictor(exported / "model.ts", 1)
    paths = [p for p in list_images(images) if "broken" not in p.name]
    frames = image_frames(paths, predictor)
    summary = simulate(predictor, frames, 0.001, 0.5, tmp_path / "log.csv")
    assert summary["missed_interval"] == 3  # nothing classifies an image in a microsecond
    assert summary["latency_ms"]["median"] > 0 and summary["throughput_fps"] > 0


def test_simulate_reads_a_video(exported, tmp_path, capsys):
    import cv2
    import numpy as np

    from visionpipe.deploy.simulate import main as simulate_main

    video = tmp_path / "belt.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 40))
    for value in range(0, 250, 50):  # five frames
        writer.write(np.full((40, 48, 3), value, dtype=np.uint8))
    writer.release()
    frames = list(open_frames(video, load_predictor(exported / "model.onnx", 1)))
    assert len(frames) == 5 and frames[0].name == f"{video}#0"
    assert frames[0].image.shape == (1, 3, SIZE, SIZE) and frames[4].image.mean() > 150
    assert frames[0].image.dtype == "float32"
    out = tmp_path / "sim"
    rc = simulate_main(
        [
            str(exported / "model.ts"),
            str(video),
            "--interval-ms",
            "1",
            "--max-frames",
            "3",
            "--csv",
            str(out / "log.csv"),
            "--summary",
            str(out / "summary.json"),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["predicted"] == 3
    assert len(pd.read_csv(out / "log.csv")) == 3
    assert capsys.readouterr().out.count("frame ") == 3


def test_video_errors(exported, tmp_path, monkeypatch):
    import sys

    predictor = load_predictor(exported / "model.onnx", 1)
    with pytest.raises(UserError, match="missing.mp4: no such video file"):
        open_frames(tmp_path / "missing.mp4", predictor)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(UserError, match="bad.mp4: cannot open the video"):
        list(open_frames(bad, predictor))
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(UserError, match="reading video needs OpenCV"):
        list(open_frames(bad, predictor))


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_quantized_onnx_runs_and_stays_close(exported, tmp_path, mode):
    calib = torch.randint(0, 256, (8, 3, SIZE, SIZE), dtype=torch.uint8)
    dst = tmp_path / f"model.{mode}.onnx"
    export.quantize_onnx(exported / "model.onnx", dst, mode, calib)
    assert dst.stat().st_size < (exported / "model.onnx").stat().st_size
    x = calib.float()
    ref = run_onnx(onnx_session(exported / "model.onnx", 1), x)
    q = run_onnx(onnx_session(dst, 1), x)
    assert q.shape == ref.shape and torch.isfinite(q).all()
    assert [p.name for p in tmp_path.iterdir()] == [dst.name]  # no temporary files left


@pytest.mark.parametrize("reduce_range, bound", [(True, 64), (False, 128)])
def test_reduce_range_keeps_static_weights_in_7_bits(exported, tmp_path, reduce_range, bound):
    import onnx
    from onnx import numpy_helper

    calib = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8)
    dst = tmp_path / "model.int8.onnx"
    export.quantize_onnx(exported / "model.onnx", dst, "static", calib, reduce_range)
    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load(str(dst)).graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    widest = max(int(abs(w.astype(int)).max()) for w in weights)
    assert weights and widest <= bound and (reduce_range or widest > 64)


@pytest.mark.parametrize(
    "machine, flags, expected",
    [
        ("x86_64", "fpu sse2 avx2 fma", True),  # Zen 2/3: AVX2 without VNNI
        ("x86_64", "avx2 avx512f avx512_vnni", False),  # Zen 4, Ice Lake and later
        ("x86_64", "avx2 avx_vnni", False),  # Alder Lake: VNNI without AVX-512
        ("aarch64", "fp asimd", False),
    ],
)
def test_reduce_range_auto_follows_the_cpu(tmp_path, monkeypatch, machine, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(export.platform, "machine", lambda: machine)
    assert export.resolve_reduce_range("auto", cpuinfo) is expected
    assert export.resolve_reduce_range(not expected, cpuinfo) is (not expected)


def test_reduce_range_auto_without_cpuinfo_reduces_on_x86(tmp_path, monkeypatch):
    monkeypatch.setattr(export.platform, "machine", lambda: "AMD64")  # Windows: no /proc
    assert export.resolve_reduce_range("auto", tmp_path / "absent") is True


def test_parity_tolerance_fails_the_export():
    export.check_parity("onnx", {"max_abs_diff": 1e-6}, 1e-4)
    with pytest.raises(UserError, match="export: onnx differs from PyTorch by 0.01 "):
        export.check_parity("onnx", {"max_abs_diff": 0.01}, 1e-4)


def test_a_regression_model_predicts_values_in_target_units(tmp_path, images, capsys):
    """The transform travels in the checkpoint and in model.json: .pt and .onnx agree."""
    task = get_task("regression")
    meta_targets = task.fit_targets(pd.DataFrame({"target": [10.0, 30.0, 50.0]}), Params())
    model = build_model("mobilenet_v3_small", 1, pretrained=False, hidden=8).model.eval()
    meta = {
        "task": "regression",
        "arch": "mobilenet_v3_small",
        "num_outputs": 1,
        "labels": ["fresh_weight"],
        "image_size": SIZE,
        "dropout": 0.2,
        "head_hidden": 8,
        **meta_targets,
    }
    save_checkpoint(tmp_path / "model.pt", model, meta)
    x = torch.rand(1, 3, SIZE, SIZE) * 255
    files = {"onnx": tmp_path / "model.onnx"}
    export.export_onnx(model, x, files["onnx"], opset=17)
    (tmp_path / "model.json").write_text(
        json.dumps(sidecar(meta, files, task.output_description()))
    )
    values = []
    for name in ("model.pt", "model.onnx"):
        assert predict_main([str(tmp_path / name), str(images)]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        lines = [r for r in lines if "error" not in r]  # the broken file
        assert len(lines) == 3
        assert all(r["target"] == "fresh_weight" and "low_confidence" not in r for r in lines)
        values.append([r["value"] for r in lines])
    with torch.no_grad():
        predictor = load_predictor(tmp_path / "model.onnx", 1)
        found = image_frames(list_images(images), predictor)
        frames = [torch.from_numpy(f.image[0]) for f in found if f.error is None]
        raw = model(torch.stack(frames))
    assert values[0] == pytest.approx(task.values(raw).tolist(), abs=1e-4)
    assert values[1] == pytest.approx(values[0], abs=1e-3)


def test_predict_loads_no_training_evaluation_or_task_code(exported, images):
    """The deploy path stays light: an exported model needs none of the pipeline's heavy code."""
    code = (
        "import json, sys\n"
        "from visionpipe.deploy.predict import main\n"
        "assert main(sys.argv[1:]) == 0\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    image = images / "x" / "x_000.png"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(exported / "model.onnx"), str(image)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    banned = ("torch", "dvclive", "matplotlib", "pycocotools", "sklearn", "pandas", "timm", "dvc")
    heavy = sorted(m for m in loaded if m.split(".")[0] in banned)
    assert not heavy, heavy[:10]
    ours = sorted(m for m in loaded if m.startswith("visionpipe."))
    assert not [m for m in ours if m.startswith(("visionpipe.tasks", "visionpipe.core.engine"))]
    assert "visionpipe.core.image" not in loaded and "visionpipe.core.plots" not in loaded
