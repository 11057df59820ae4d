import subprocess
import sys
from copy import deepcopy

import pytest
import yaml

from tests.conftest import REPO
from visionpipe.core.params import ParamsError, load_params, params_from_dict

DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def with_change(path: str, value):
    raw = deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


def test_repo_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.model.arch == "efficientnet_lite1"
    assert params.split.train + params.split.val + params.split.test == pytest.approx(1)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("train.lrr", 0.1, "train.lrr: unknown key, allowed keys: epochs"),
        ("train.lr", "fast", "train.lr: expected a number, got 'fast'"),
        ("train.lr", 0, "train.lr: 0.0 is out of range, allowed > 0.0"),
        ("train.epochs", 2.5, "train.epochs: expected an integer, got 2.5"),
        ("train.epochs", True, "train.epochs: expected an integer, got True"),
        ("model.pretrained", "yes", "model.pretrained: expected true or false, got 'yes'"),
        (
            "model.arch",
            "vgg99",
            "model.arch: 'vgg99' is not one of efficientnet_lite0, efficientnet_lite1",
        ),
        ("split.train", 1.2, "split.train: 1.2 is out of range, allowed > 0.0 and < 1.0"),
        ("split.val", 0, "split.val: 0.0 is out of range"),
        ("split.test", 0.3, "split: train + val + test must sum to 1, got 0.7 + 0.15 + 0.3"),
        ("augment.ops", ["hflip", "mosaic"], "augment.ops: 'mosaic' is not one of hflip"),
        ("augment.ops", "hflip", "augment.ops: expected a list of str, got 'hflip'"),
        ("augment.crop_min_scale", 0.0, "augment.crop_min_scale: 0.0 is out of range"),
        ("train.schedule", "step", "train.schedule: 'step' is not one of warmup_cosine, plateau"),
        ("train.amp_dtype", "fp8", "train.amp_dtype: 'fp8' is not one of fp16, bf16"),
        ("train.trainable_layers", -2, "train.trainable_layers: -2 is out of range, allowed >= -1"),
        (
            "classification.class_weights",
            "auto",
            "classification.class_weights: expected none, balanced or a mapping",
        ),
        (
            "classification.class_weights",
            {"a": 0},
            "classification.class_weights.a: expected a positive number",
        ),
        (
            "classification.class_weights",
            {"a": True},
            "classification.class_weights.a: expected a positive number",
        ),
        ("data.classes", "a,b", "data.classes: expected a list of str, got 'a,b'"),
        ("train.monitor", "val_auc", "train.monitor: 'val_auc' is not one of auto, val_loss"),
        ("train.lr", KeyError, "train.lr: missing"),
        ("bogus", {}, "bogus: unknown key"),
        ("evaluate", [1], "evaluate: expected a mapping"),
        ("data.annotations", {"val": "v.json"}, "data.annotations: expected a file (or folder)"),
        ("data.annotations", 3, "data.annotations: expected a file (or folder) name"),
        ("data.annotations", {"train": "t.json", "dev": "d.json"}, "data.annotations.dev: unknown"),
        ("data.annotations", {"train": ""}, "data.annotations.train: expected a file name"),
        ("data.states", ["a", "a"], "data.states: expected distinct state names ([] for a plain"),
        ("simulate.drift_reference_frames", 1, "simulate.drift_reference_frames: expected 0"),
        ("split.duplicate_distance", 17, "split.duplicate_distance: 17 is out of range"),
        ("export.reduce_range", "yes", "export.reduce_range: expected auto, true or false"),
    ],
)
def test_bad_values_name_the_key(path, value, message):
    with pytest.raises(ParamsError) as err:
        params_from_dict(with_change(path, value))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_class_weights_forms():
    assert params_from_dict(
        with_change("classification.class_weights", "balanced")
    ).classification.class_weights == ("balanced")
    mapping = params_from_dict(with_change("classification.class_weights", {"a": 2, "b": 0.5}))
    assert mapping.classification.class_weights == {"a": 2.0, "b": 0.5}


def test_states_off_and_split_files_are_valid():
    plain = params_from_dict(with_change("data.states", []))
    assert plain.data.states == []
    files = {"train": "train/_annotations.coco.json", "val": "valid/_annotations.coco.json"}
    assert params_from_dict(with_change("data.annotations", files)).data.annotations == files


def test_int_accepted_for_float():
    params = params_from_dict(with_change("train.lr", 1))
    assert params.train.lr == 1.0 and isinstance(params.train.lr, float)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="is not valid YAML"):
        load_params(bad)


def test_stage_exits_with_one_line_before_work(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(with_change("model.arch", "vgg99")))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.train",
            "--splits",
            "x",
            "--model",
            "m.pt",
            "--class-index",
            "c.json",
            "--live",
            str(tmp_path / "live"),
            "--state",
            str(tmp_path / "state.pt"),
            "--params",
            str(bad),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert err_lines == [
        "error: model.arch: 'vgg99' is not one of efficientnet_lite0, efficientnet_lite1, "
        "efficientnet_lite2, resnet18, resnet34, resnet50, mobilenet_v3_small, "
        "mobilenet_v3_large, efficientnet_b0, small_cnn"
    ]
    assert not (tmp_path / "live").exists()
