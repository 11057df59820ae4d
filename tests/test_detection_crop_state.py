"""The crop state head (detection.state_head: crop): a classifier on each box's crop of the
image, trained on the annotated boxes; its losses, outputs, checkpoint and both exports."""

from __future__ import annotations

import pytest
import torch

from tests.test_detection_model import (
    LOSSES,
    OUTPUTS,
    _split_of,
    batch,
    one_thread,  # noqa: F401  (autouse: one thread)
)
from tests.test_params import with_change
from visionpipe.core.errors import UserError
from visionpipe.core.params import ParamsError, params_from_dict
from visionpipe.core.runtimes import onnx_session
from visionpipe.core.runtimes import run_onnx_detector as run_onnx
from visionpipe.core.runtimes import run_torchscript_detector as run_torchscript
from visionpipe.tasks.detection.export import detection_parity, export_onnx, export_torchscript
from visionpipe.tasks.detection.model.detector import (
    LITE0_ARCH,
    build_detector,
    detector_from_checkpoint,
)
from visionpipe.tasks.detection.model.state_calibration import box_state_logits
from visionpipe.tasks.detection.model.state_heads import (
    CropStatePredictor,
    CropStateRoIHeads,
    ImageFedFasterRCNN,
    StateRoIHeads,
)

CROP = {"state_head": "crop", "state_arch": "mobilenet_v3_small", "state_crop_size": 32}
META = {"arch": LITE0_ARCH, "num_parts": 2, "num_states": 3, "min_size": 128, "max_size": 160}


def crop_detector(**kwargs):
    torch.manual_seed(0)
    return build_detector(LITE0_ARCH, 2, 3, False, 128, 160, **{**CROP, **kwargs})


@pytest.fixture(scope="module")
def model():
    return crop_detector(box_score_thresh=0.0, box_detections_per_img=20).model.eval()


def test_the_crop_head_is_built_where_asked_and_only_with_states():
    model = crop_detector().model
    assert isinstance(model, ImageFedFasterRCNN)
    assert isinstance(model.roi_heads, CropStateRoIHeads)
    assert isinstance(model.roi_heads.state_predictor, CropStatePredictor)
    assert model.roi_heads.state_class_weights.shape == (3,)
    roi = build_detector(LITE0_ARCH, 2, 3, False, 128, 160).model
    assert type(roi.roi_heads) is StateRoIHeads and not isinstance(roi, ImageFedFasterRCNN)
    plain = build_detector(LITE0_ARCH, 2, 0, False, 128, 160, **CROP).model
    assert not isinstance(plain.roi_heads, StateRoIHeads)  # no states: no state head at all


def test_training_reads_the_state_from_the_annotated_boxes_crops():
    model = crop_detector().model.train()
    images, targets = batch()
    seen = []
    classifier = model.roi_heads.state_predictor.classifier
    handle = classifier.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    losses = model(images, targets)
    handle.remove()
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert seen == [(5, 3, 32, 32)]  # the 3 + 2 annotated boxes, not the sampled proposals
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in classifier.parameters())


def test_a_batch_without_boxes_gives_a_zero_state_loss_that_keeps_the_graph():
    model = crop_detector().model.train()
    images, _ = batch()
    empty = {
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros(0, dtype=torch.int64),
        "states": torch.zeros(0, dtype=torch.int64),
    }
    losses = model(images, [empty, empty])
    assert losses["loss_state"].item() == 0.0 and losses["loss_state"].requires_grad


def test_a_box_without_width_is_refused_as_fasterrcnn_refuses_it():
    model = crop_detector().model.train()
    images, targets = batch()
    bad = {**targets[1], "boxes": targets[1]["boxes"].clone()}
    bad["boxes"][1, 2] = bad["boxes"][1, 0]  # x2 == x1
    with pytest.raises(ValueError, match="positive height and width.*target at index 1"):
        model(images, [targets[0], bad])
    assert set(model(images, targets)) == LOSSES  # the valid batch still trains


def test_the_state_loss_weights_count_in_the_crop_loss():
    model = crop_detector().model.train()
    images, targets = batch()
    torch.manual_seed(1)
    plain = model(images, targets)["loss_state"].item()
    model.roi_heads.state_class_weights.copy_(torch.tensor([1.0, 1.0, 50.0]))
    torch.manual_seed(1)
    assert model(images, targets)["loss_state"].item() != pytest.approx(plain)


def test_eval_gives_a_state_per_detection_and_the_known_boxes_their_logits(model):
    images, targets = batch()
    with torch.no_grad():
        outputs = model(images)
    for out in outputs:
        assert set(out) == set(OUTPUTS) and {len(out[k]) for k in OUTPUTS} == {20}
        assert int(out["states"].max()) < 3
    logits, states = box_state_logits(model, _split_of(images, targets), 1, torch.device("cpu"))
    assert logits.shape == (5, 3) and states.tolist() == [0, 2, 1, 1, 0]


def test_a_crop_checkpoint_rebuilds_from_its_meta_and_an_old_one_reads_the_roi_features(model):
    meta = {**META, **CROP}
    rebuilt = detector_from_checkpoint(
        model.state_dict(), meta, box_score_thresh=0.0, box_detections_per_img=20
    )
    images, _ = batch()
    with torch.no_grad():
        a, b = model(images[:1])[0], rebuilt(images[:1])[0]
    for key in OUTPUTS:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(RuntimeError, match="state_predictor"):  # its meta says roi: not this one
        detector_from_checkpoint(model.state_dict(), META)
    roi = build_detector(LITE0_ARCH, 2, 3, False, 128, 160).model
    assert type(detector_from_checkpoint(roi.state_dict(), META).roi_heads) is StateRoIHeads


def test_torchscript_and_onnx_exports_match_pytorch(model, tmp_path):
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3)) * 255
    with torch.no_grad():
        eager = model([x[0]])[0]
    export_torchscript(model, x, tmp_path / "model.ts")
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    export_onnx(model, x, tmp_path / "model.onnx", 17)
    session = onnx_session(tmp_path / "model.onnx", 1)
    for found in (run_torchscript(scripted, x), run_onnx(session, x)):
        parity = detection_parity([eager], [found])
        assert parity["count_mismatches"] == 0 and parity["state_agreement"] == 1.0
        assert parity["max_box_abs_diff"] < 1e-3 and parity["max_score_abs_diff"] < 1e-4


def test_a_bad_state_head_is_one_line():
    with pytest.raises(UserError, match="detection.state_head: 'pixels' is not one of roi, crop"):
        build_detector(LITE0_ARCH, 2, 3, False, 128, 160, state_head="pixels")
    with pytest.raises(ParamsError, match="detection.state_head"):
        params_from_dict(with_change("detection.state_head", "pixels"))
    with pytest.raises(ParamsError, match="detection.state_crop_size"):
        params_from_dict(with_change("detection.state_crop_size", 8))
