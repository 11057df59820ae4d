import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visionpipe.core.errors import DataError
from visionpipe.tasks.regression.data.split import split_regression


def table(sizes: list[int], seed: int = 0, group: bool = True) -> pd.DataFrame:
    """One row per image: ``sizes[g]`` images of plant ``g`` with a random biomass target."""
    rows = [(f"p{g:03d}/{i:02d}.png", f"p{g:03d}") for g, n in enumerate(sizes) for i in range(n)]
    frame = pd.DataFrame(rows, columns=["path", "group"])
    frame["target"] = np.random.default_rng(seed).gamma(2.0, 10.0, len(frame)).round(3)
    frame["split"] = ""
    if not group:
        frame["group"] = ""
    return frame


def assert_grouped_partition(samples: pd.DataFrame, out: pd.DataFrame) -> None:
    assert sorted(out["path"]) == sorted(samples["path"])  # every row exactly once
    assert set(out["split"]) == {"train", "val", "test"}  # no split left empty
    assert (out.groupby("group")["split"].nunique() == 1).all()  # no group in two splits


@st.composite
def grouped_tables(draw):
    sizes = draw(st.lists(st.integers(1, 10), min_size=3, max_size=30))
    val = draw(st.integers(10, 80))
    test = draw(st.integers(10, 90 - val))
    ratios = ((100 - val - test) / 100, val / 100, test / 100)
    return table(sizes), ratios, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(grouped_tables())
def test_groups_never_cross_splits_and_no_split_is_silently_empty(case):
    samples, ratios, seed = case
    try:
        out = split_regression(samples, *ratios, seed=seed)
    except DataError as exc:
        assert "a split would be empty" in str(exc)
        return
    assert_grouped_partition(samples, out)


def test_same_table_shuffled_same_assignment(tmp_path):
    samples = table([3, 1, 7, 2, 5, 4, 6, 2, 8, 1, 3, 3])
    one = split_regression(samples, 0.6, 0.2, 0.2, seed=11)
    two = split_regression(samples.sample(frac=1, random_state=5), 0.6, 0.2, 0.2, seed=11)
    one.to_csv(tmp_path / "1.csv", index=False)
    two.to_csv(tmp_path / "2.csv", index=False)
    assert (tmp_path / "1.csv").read_bytes() == (tmp_path / "2.csv").read_bytes()
    other = split_regression(samples, 0.6, 0.2, 0.2, seed=12)
    assert not one.set_index("path")["split"].equals(other.set_index("path")["split"])


def test_ratios_apply_to_groups():
    sizes = list(np.random.default_rng(1).integers(1, 11, 200))
    samples = table(sizes)
    out = split_regression(samples, 0.7, 0.1, 0.2, seed=3)
    assert_grouped_partition(samples, out)
    groups = out.groupby("split")["group"].nunique()
    for name, share in {"train": 0.7, "val": 0.1, "test": 0.2}.items():
        assert abs(groups[name] - share * 200) <= 2  # sklearn rounds held-out counts up


def test_random_split_without_groups():
    samples = table([1] * 100, group=False)
    out = split_regression(samples, 0.7, 0.15, 0.15, seed=0)
    assert sorted(out["path"]) == sorted(samples["path"])
    assert out.groupby("split").size().to_dict() == {"train": 70, "val": 15, "test": 15}
    no_column = split_regression(samples.drop(columns="group"), 0.7, 0.15, 0.15, seed=0)
    assert no_column["split"].tolist() == out["split"].tolist()


def test_stratified_bins_keep_the_target_distribution():
    samples = table([1] * 200, group=False)
    out = split_regression(samples, 0.7, 0.15, 0.15, seed=4, stratify_bins=5)
    bins = pd.qcut(out["target"], 5, labels=False)
    counts = pd.crosstab(out["split"], bins)
    assert (counts > 0).all().all()  # every bin in every split
    assert (counts.loc["train"] == 28).all()  # 40 rows per bin, 70% of each in train
    assert list(out.columns) == list(samples.columns)  # no helper column left behind


def test_too_many_bins_fall_back_to_fewer(caplog):
    samples = table([1] * 30, group=False)  # 5 held out for test: 10 bins cannot fit
    out = split_regression(samples, 0.7, 0.15, 0.15, seed=0, stratify_bins=10)
    assert set(out["split"]) == {"train", "val", "test"}
    assert "target bins are too small to stratify" in caplog.text


def test_too_few_groups():
    with pytest.raises(DataError, match="only 2 group\\(s\\) in column 'group'"):
        split_regression(table([10, 10]), 0.7, 0.15, 0.15, seed=0)


def test_missing_group_on_some_rows():
    samples = table([2, 2, 2, 2])
    samples.loc[3, "group"] = ""
    with pytest.raises(DataError, match="1 of 8 rows have no 'group'"):
        split_regression(samples, 0.5, 0.25, 0.25, seed=0)


def test_few_groups_and_an_empty_split_is_an_error():
    with pytest.raises(DataError, match="3 groups .* a split would be empty"):
        split_regression(table([4, 4, 4]), 0.7, 0.15, 0.15, seed=0)
