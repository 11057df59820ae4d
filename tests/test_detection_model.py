"""Faster R-CNN with the state head: losses, outputs, the offline weights chain, checkpoints."""

from __future__ import annotations

import socket
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from visionpipe.core.errors import UserError
from visionpipe.tasks.detection.model import detector as detection_model
from visionpipe.tasks.detection.model import state_heads
from visionpipe.tasks.detection.model.detector import (
    DOWNLOAD_TIMEOUT_S,
    LITE0_ARCH,
    StateRoIHeads,
    build_detector,
    detector_from_checkpoint,
    uses_frozen_norm,
)

ARCHS = [LITE0_ARCH, "mobilenet_v3_large_fpn"]
LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_state"}
OUTPUTS = ("boxes", "labels", "scores", "states", "state_scores")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=gen) * 255 for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 10, 40, 50], [60, 20, 100, 70], [20, 60, 60, 90]]),
            "labels": torch.tensor([1, 2, 1]),
            "states": torch.tensor([0, 2, 1]),
        },
        {
            "boxes": torch.tensor([[5.0, 5, 50, 45], [70, 30, 120, 90]]),
            "labels": torch.tensor([2, 1]),
            "states": torch.tensor([1, 0]),
        },
    ]
    return images, targets


def tiny(arch: str = LITE0_ARCH, **kwargs):
    torch.manual_seed(0)
    return build_detector(arch, 2, 3, False, 128, 160, **kwargs)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_returns_all_losses_including_state(arch):
    built = tiny(arch)
    assert built.arch == arch and built.weights_source == "random init"
    assert isinstance(built.model.roi_heads, StateRoIHeads)
    images, targets = batch()
    targets[1] = {  # an image without boxes: only background proposals, no state targets
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros(0, dtype=torch.int64),
        "states": torch.zeros(0, dtype=torch.int64),
    }
    losses = built.model.train()(images, targets)
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert built.model.roi_heads.state_predictor[0].weight.grad.abs().sum() > 0


def test_state_loss_is_zero_without_positive_proposals():
    heads = tiny().model.roi_heads
    logits = torch.randn(4, 3, requires_grad=True)
    labels = [torch.zeros(4, dtype=torch.int64)]
    loss = state_heads.state_loss(
        logits, labels, [torch.zeros(4, dtype=torch.int64)], [{"states": torch.tensor([2])}]
    )
    assert isinstance(heads, StateRoIHeads) and loss.item() == 0.0 and loss.requires_grad


def test_state_loss_uses_the_matched_box_state():
    logits = torch.tensor([[9.0, 0, 0], [0, 0, 9.0], [0, 9.0, 0]])
    labels = [torch.tensor([1, 1, 0])]  # the third proposal is background: ignored
    matched = [torch.tensor([1, 0, 0])]
    target = [{"states": torch.tensor([2, 0])}]  # proposal 0 -> box 1 (state 0), 1 -> box 0 (2)
    right = state_heads.state_loss(logits, labels, matched, target)
    wrong = state_heads.state_loss(logits, labels, [torch.tensor([0, 1, 0])], target)
    assert right.item() < 0.01 < 5 < wrong.item()


def test_state_head_learns_a_tiny_batch():
    built = tiny()
    model = built.model.train()
    for name, parameter in model.named_parameters():  # the state head alone: fast and focused
        parameter.requires_grad_(name.startswith("roi_heads.state_predictor."))
    images, targets = batch()
    optimizer = torch.optim.AdamW(model.roi_heads.state_predictor.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        loss = model(images, targets)["loss_state"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, last = sum(history[:3]) / 3, sum(history[-5:]) / 5
    assert last < 0.5 * first, history


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_gives_a_state_per_detection(arch):
    model = tiny(arch, box_score_thresh=0.0, box_detections_per_img=20).model.eval()
    images, _ = batch()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for out in outputs:
        assert set(out) == set(OUTPUTS)
        assert len(out["boxes"]) == 20
        assert {len(out[k]) for k in OUTPUTS} == {20}
        assert out["states"].dtype == torch.int64 and int(out["states"].max()) < 3
        assert ((out["state_scores"] >= 1 / 3 - 1e-6) & (out["state_scores"] <= 1)).all()

    model.roi_heads.score_thresh = 1.0  # no score exceeds 1: no detections at all
    with torch.no_grad():
        empty = model(images)
    for out in empty:
        assert {len(out[k]) for k in OUTPUTS} == {0}
        assert out["boxes"].shape == (0, 4)


def test_training_without_states_is_refused():
    images, targets = batch()
    del targets[0]["states"]
    with pytest.raises(ValueError, match="states"):
        tiny().model.train()(images, targets)


def test_a_plain_detector_has_no_state_head_and_no_state_outputs():
    """num_states 0 (data.states: []): torchvision's own RoIHeads, three outputs, four losses;
    the monitor val_state_accuracy is refused in one line."""
    torch.manual_seed(0)
    model = build_detector(LITE0_ARCH, 2, 0, False, 128, 160, box_score_thresh=0.0).model
    assert not isinstance(model.roi_heads, StateRoIHeads)
    images, targets = batch()
    plain = [{k: v for k, v in t.items() if k != "states"} for t in targets]
    assert set(model.train()(images, plain)) == LOSSES - {"loss_state"}
    with torch.no_grad():
        outputs = model.eval()(images)
    assert all(set(out) == {"boxes", "labels", "scores"} for out in outputs)

    from types import SimpleNamespace

    from visionpipe.tasks.detection.model import DetectionTask

    params = SimpleNamespace(
        train=SimpleNamespace(monitor="val_state_accuracy"), data=SimpleNamespace(states=[])
    )
    with pytest.raises(UserError, match=r"val_state_accuracy needs states; data.states is \[\]"):
        DetectionTask().monitor(params)
    params.data.states = ["intact"]
    assert DetectionTask().monitor(params) == "val_state_accuracy"


def test_unknown_arch_and_bad_trainable_layers_are_user_errors():
    with pytest.raises(UserError, match=r"detection.arch: 'yolo'.*mobilenet_v3_large_fpn"):
        build_detector("yolo", 2, 3, False, 128, 160)
    with pytest.raises(UserError, match=r"train.trainable_layers: 7 is not -1 \(all\) or in 0..6"):
        build_detector("mobilenet_v3_large_fpn", 2, 3, False, 128, 160, trainable_layers=7)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and a network that refuses at once; records download tries
    with the socket timeout in force."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    tries: list[tuple[str, float | None]] = []

    def refuse(url, **kwargs):
        tries.append((Path(url).name, socket.getdefaulttimeout()))
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return tries


def test_offline_chain_ends_at_the_lite0_package_backbone(offline):
    from visionpipe.core.models import _lite_package_state

    built = build_detector("mobilenet_v3_large_fpn", 2, 3, True, 128, 160)
    assert [name for name, _ in offline] == [
        "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth",
        "mobilenet_v3_large-8738ca79.pth",
    ]
    assert all(timeout == DOWNLOAD_TIMEOUT_S for _, timeout in offline)
    assert socket.getdefaulttimeout() is None  # restored
    assert built.arch == LITE0_ARCH
    assert built.weights_source.startswith("ImageNet EfficientNet-Lite0 backbone")
    assert "mobilenet_v3_large_fpn weights could not be loaded" in built.weights_source
    assert "URLError" in built.weights_source
    body = built.model.backbone.body
    package = _lite_package_state(0)
    assert torch.equal(body.conv_stem.weight, package["_conv_stem.weight"])
    assert torch.equal(
        body.blocks[6][0].conv_pwl.weight, package["_blocks.15._project_conv.weight"]
    )
    assert type(body.bn1).__name__ == "FrozenBatchNormAct2d"
    assert not body.conv_stem.weight.requires_grad  # trainable_layers=3: the stem is frozen
    assert body.blocks[6][0].conv_pwl.weight.requires_grad


def test_cached_imagenet_backbone_is_used_when_coco_weights_are_missing(offline):
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(1)
    backbone = torchvision.models.mobilenet_v3_large().state_dict()
    torch.save(backbone, cache / "mobilenet_v3_large-8738ca79.pth")

    built = build_detector("mobilenet_v3_large_fpn", 2, 3, True, 128, 160, trainable_layers=2)
    assert [name for name, _ in offline] == ["fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth"]
    assert built.arch == "mobilenet_v3_large_fpn"
    assert built.weights_source.startswith("ImageNet backbone")
    body = built.model.backbone.body
    assert torch.equal(body["0"][0].weight, backbone["features.0.0.weight"])
    assert isinstance(body["0"][1], FrozenBatchNorm2d)
    assert not body["0"][0].weight.requires_grad and body["16"][0].weight.requires_grad


def test_cached_coco_detector_is_used_with_a_new_box_predictor(offline):
    torch.manual_seed(2)
    coco = build_detector("mobilenet_v3_large_fpn", 90, 3, False, 128, 160, frozen_norm=True)
    # torchvision's COCO weights: no state head, no state temperature
    state = {k: v for k, v in coco.model.state_dict().items() if ".state_" not in k}
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth")

    built = build_detector("mobilenet_v3_large_fpn", 2, 3, True, 128, 160)
    assert offline == [] and built.arch == "mobilenet_v3_large_fpn"
    assert built.weights_source.startswith("COCO mobilenet_v3_large_fpn detector")
    heads = built.model.roi_heads
    assert heads.box_predictor.cls_score.out_features == 3
    assert torch.equal(heads.box_head.fc6.weight, state["roi_heads.box_head.fc6.weight"])
    assert torch.equal(built.model.rpn.head.conv[0][0].weight, state["rpn.head.conv.0.0.weight"])


def test_a_corrupt_cached_file_falls_through(offline):
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet50-0676ba61.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(
        detection_model.WeightsUnavailable, match="resnet50-0676ba61.pth cannot be loaded"
    ):
        detection_model.torchvision_state(torchvision.models.ResNet50_Weights.IMAGENET1K_V1)


def test_checkpoint_round_trip_keeps_frozen_norm_and_outputs(offline):
    built = build_detector(LITE0_ARCH, 2, 3, True, 128, 160, box_score_thresh=0.0)
    model = built.model.eval()
    state = model.state_dict()
    assert uses_frozen_norm(state)
    meta = {"arch": built.arch, "num_parts": 2, "num_states": 3, "min_size": 128, "max_size": 160}
    rebuilt = detector_from_checkpoint(state, meta, box_score_thresh=0.0)
    images, _ = batch()
    with torch.no_grad():
        a, b = model(images[:1])[0], rebuilt(images[:1])[0]
    for key in OUTPUTS:
        assert torch.equal(a[key], b[key]), key

    assert not uses_frozen_norm(tiny().model.state_dict())
    with pytest.raises(UserError, match="meta lacks num_states"):
        detector_from_checkpoint(state, {k: v for k, v in meta.items() if k != "num_states"})


def _split_of(images, targets):
    from visionpipe.tasks.detection.model.dataset import DetectionSet

    n = len(images)
    return DetectionSet(images, targets, list(range(n)), [1.0] * n, [f"{i}.png" for i in range(n)])


def test_state_temperature_divides_the_state_logits_and_travels_in_the_checkpoint():
    from visionpipe.tasks.detection.model.state_calibration import box_state_logits

    model = tiny(box_score_thresh=0.0, box_detections_per_img=10).model.eval()
    images, targets = batch()
    logits, states = box_state_logits(model, _split_of(images, targets), 1, torch.device("cpu"))
    assert logits.shape == (5, 3) and states.tolist() == [0, 2, 1, 1, 0]
    with torch.no_grad():
        before = model(images[:1])[0]
        model.roi_heads.state_temperature.fill_(4.0)
        after = model(images[:1])[0]
    assert torch.equal(before["states"], after["states"])  # the argmax never moves
    assert (after["state_scores"] <= before["state_scores"] + 1e-6).all()  # T > 1 softens
    assert after["state_scores"].min() < before["state_scores"].min()
    meta = {"arch": LITE0_ARCH, "num_parts": 2, "num_states": 3, "min_size": 128, "max_size": 160}
    state = model.state_dict()
    assert float(detector_from_checkpoint(state, meta).roi_heads.state_temperature) == 4.0
    older = {k: v for k, v in state.items() if k != "roi_heads.state_temperature"}
    assert float(detector_from_checkpoint(older, meta).roi_heads.state_temperature) == 1.0


def test_calibrate_states_fits_on_val_boxes_and_applies_only_what_helps(monkeypatch):
    import visionpipe.core.calibration as calibration
    from visionpipe.tasks.detection.model.state_calibration import calibrate_states

    model = tiny().model.eval()
    images, targets = batch()
    val = _split_of(images, targets)
    found = calibrate_states(model, val, 2, torch.device("cpu"))
    fit = found["state_calibration"]
    assert fit["val_boxes"] == 5 and found["state_temperature"] == float(
        model.roi_heads.state_temperature
    )
    assert found["state_temperature"] == (fit["fitted_temperature"] if fit["applied"] else 1.0)
    monkeypatch.setattr(calibration, "fit_temperature", lambda *_: 20.0)  # at its bound
    again = calibrate_states(model, val, 2, torch.device("cpu"))
    assert again["state_temperature"] == 1.0 and not again["state_calibration"]["applied"]
    assert float(model.roi_heads.state_temperature) == 1.0
    plain = build_detector(LITE0_ARCH, 2, 0, False, 128, 160).model
    assert calibrate_states(plain, val, 2, torch.device("cpu")) == {}
