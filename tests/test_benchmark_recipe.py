"""The accuracy benchmark's ``--recipe`` parsing: a typo is one line before any training."""

import pytest
import yaml

from benchmarks.accuracy import recipe_overrides
from tests.conftest import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_a_recipe_gives_typed_values_per_key():
    assert recipe_overrides("train.epochs=30 model.image_size=192 train.lr=0.0005", PARAMS) == [
        ("train", "epochs", 30),
        ("model", "image_size", 192),
        ("train", "lr", 0.0005),
    ]
    assert recipe_overrides("augment.ops=[hflip,vflip]", PARAMS) == [
        ("augment", "ops", ["hflip", "vflip"])
    ]
    assert recipe_overrides("", PARAMS) == []


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("trian.epochs=30", "error: --recipe: 'trian.epochs=30': params.yaml has no trian.epochs"),
        ("train.epoch=30", "error: --recipe: 'train.epoch=30': params.yaml has no train.epoch"),
        ("train.epochs", "error: --recipe: 'train.epochs' is not section.key=value"),
        ("epochs=30", "error: --recipe: 'epochs=30' is not section.key=value"),
    ],
)
def test_a_recipe_typo_is_one_line(recipe, message):
    with pytest.raises(SystemExit) as exited:
        recipe_overrides(f"train.epochs=3 {recipe}", PARAMS)
    assert exited.value.code == message
