"""TorchScript and ONNX export of the state detector: round trips, parity, failures recorded."""

from __future__ import annotations

import pytest
import torch

from tests.test_detection_model import one_thread  # noqa: F401  (autouse: one thread)
from visionpipe.core.runtimes import DETECTION_OUTPUTS as OUTPUT_NAMES
from visionpipe.core.runtimes import INPUT_NAME, onnx_session
from visionpipe.core.runtimes import run_onnx_detector as run_onnx
from visionpipe.core.runtimes import run_torchscript_detector as run_torchscript
from visionpipe.tasks.detection.export import (
    detection_parity,
    export_onnx,
    export_torchscript,
    try_export,
)
from visionpipe.tasks.detection.model.detector import LITE0_ARCH, build_detector


def detector(score_thresh: float) -> torch.nn.Module:
    """An untrained detector; with threshold 0 it still detects (its scores are ~uniform)."""
    torch.manual_seed(0)
    built = build_detector(
        LITE0_ARCH,
        2,
        3,
        False,
        128,
        160,
        box_score_thresh=score_thresh,
        box_detections_per_img=20,
    )
    return built.model.eval()


@pytest.fixture(scope="module")
def model():
    return detector(0.0)


def image(seed: int, height: int = 96, width: int = 128) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


def eager(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model([x[0]])[0]


def assert_same(parity: dict) -> None:
    assert parity["count_mismatches"] == 0
    assert parity["detections_compared"] == 20 * parity["images"]
    assert parity["max_box_abs_diff"] < 1e-3
    assert parity["max_score_abs_diff"] < 1e-4
    assert parity["state_agreement"] == 1.0 and parity["label_agreement"] == 1.0


def test_torchscript_round_trip_matches_pytorch(model, tmp_path):
    path = tmp_path / "model.ts"
    export_torchscript(model, image(0), path)
    module = torch.jit.load(str(path))
    xs = [image(1), image(2)]
    outputs = [run_torchscript(module, x) for x in xs]
    assert set(outputs[0]) == set(OUTPUT_NAMES)
    assert_same(detection_parity([eager(model, x) for x in xs], outputs))
    other_size = image(3, 80, 120)  # scripted, not traced: any image size runs
    assert_same(detection_parity([eager(model, other_size)], [run_torchscript(module, other_size)]))


def test_onnx_round_trip_matches_pytorch(model, tmp_path):
    import onnx

    path = tmp_path / "model.onnx"
    export_onnx(model, image(0), path, opset=17)
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    assert [i.name for i in graph.input] == [INPUT_NAME]
    session = onnx_session(path, threads=1)
    xs = [image(1), image(2)]
    outputs = [run_onnx(session, x) for x in xs]
    assert outputs[0]["states"].dtype == torch.int64
    assert_same(detection_parity([eager(model, x) for x in xs], outputs))


def test_exports_with_no_detections_give_empty_outputs(tmp_path):
    model = detector(1.0)  # no score exceeds 1
    x = image(1)
    export_torchscript(model, x, tmp_path / "model.ts")
    export_onnx(model, x, tmp_path / "model.onnx", opset=17)
    ts = run_torchscript(torch.jit.load(str(tmp_path / "model.ts")), x)
    ort = run_onnx(onnx_session(tmp_path / "model.onnx", threads=1), x)
    for out in (eager(model, x), ts, ort):
        assert out["boxes"].shape == (0, 4)
        assert {tuple(out[k].shape) for k in OUTPUT_NAMES if k != "boxes"} == {(0,)}
    parity = detection_parity([eager(model, x)], [ort])
    assert parity["count_mismatches"] == 0 and parity["state_agreement"] is None


def test_try_export_records_why_an_export_failed(model, tmp_path):
    def boom(path):
        raise RuntimeError("no exporter here\nsecond line")

    assert try_export(lambda: None) is None
    assert try_export(boom, tmp_path / "x") == "RuntimeError: no exporter here"
    path = tmp_path / "old.onnx"
    error = try_export(export_onnx, model, image(0), path, 7)  # too old for RoIAlign
    assert error is not None and error.split(":")[0].endswith("Error")
    assert not path.exists() and list(tmp_path.iterdir()) == []  # no half-written file


def dets(scores, states, boxes=None, labels=None) -> dict[str, torch.Tensor]:
    n = len(scores)
    return {
        "boxes": torch.tensor(boxes if boxes is not None else [[0.0, 0, 10, 10]] * n).view(n, 4),
        "labels": torch.tensor(labels if labels is not None else [1] * n, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "states": torch.tensor(states, dtype=torch.int64),
        "state_scores": torch.ones(n),
    }


def test_parity_compares_the_common_top_k_in_score_order():
    reference = dets([0.9, 0.5, 0.7], [0, 1, 2], [[0, 0, 10, 10], [5, 5, 9, 9], [1, 1, 4, 4]])
    # other: the same two best detections in another order, boxes off by 0.5, one state differs
    other = dets([0.7, 0.9], [1, 0], [[1, 1, 4.5, 4], [0, 0, 10, 10]])
    parity = detection_parity([reference, dets([], [])], [other, dets([], [])])
    assert parity["images"] == 2 and parity["count_mismatches"] == 1
    assert parity["detections_compared"] == 2
    assert parity["max_box_abs_diff"] == pytest.approx(0.5)
    assert parity["max_score_abs_diff"] == pytest.approx(0.0)
    assert parity["state_agreement"] == 0.5 and parity["label_agreement"] == 1.0
    first, second = parity["per_image"]
    assert (first["detections"], first["other_detections"], first["count_equal"]) == (3, 2, False)
    assert second["compared"] == 0 and second["state_agreement"] is None
    assert not any(key.startswith("_") for key in first)


def test_parity_needs_the_same_images():
    with pytest.raises(ValueError, match="1 reference images but 2"):
        detection_parity([dets([], [])], [dets([], []), dets([], [])])
