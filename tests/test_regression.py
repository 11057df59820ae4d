"""The regression task: targets in model space, metrics and artifacts in target units, and the
whole path (table -> grouped split -> training -> evaluation) learns a target from pixels."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from visionpipe.core.errors import DataError, UserError
from visionpipe.core.image.train import fit_images as fit
from visionpipe.core.models import build_model
from visionpipe.core.params import Augment, Data, Evaluate, Params, Regression, Split, Train
from visionpipe.core.runtime import seed_everything
from visionpipe.deploy.decode import regression as decode_regression
from visionpipe.tasks import get_task, task_data
from visionpipe.tasks.regression.evaluate import rec_curve, write_results

LABELS = ["weight"]


def fitted(values, log1p=False, standardize=True):
    task = get_task("regression")
    params = Params(regression=Regression(log1p=log1p, standardize=standardize))
    task.fit_targets(pd.DataFrame({"target": values}), params)
    return task


def test_targets_round_trip_through_the_transform():
    task = fitted([1.0, 3.0, 5.0, 7.0], log1p=True)
    m = pd.DataFrame({"target": [2.0, 9.0]})
    z = task.targets(m, LABELS)
    assert z.dtype == torch.float32
    assert task.values(z[:, None]) == pytest.approx([2.0, 9.0], rel=1e-6)
    metrics = task.epoch_metrics(z[:, None] + 0.0, z)
    assert metrics["rmse"] == pytest.approx(0.0, abs=1e-5) and metrics["r2"] == pytest.approx(1.0)


def test_transform_is_restored_from_checkpoint_meta_and_from_model_json():
    task = fitted([10.0, 20.0, 30.0])
    meta = task.fit_targets(pd.DataFrame({"target": [10.0, 20.0, 30.0]}), Params())
    z = torch.tensor([[0.5], [-1.0]])
    for source in (meta, {"output": task.output_description()}):
        other = get_task("regression")
        other.load_meta(source)
        assert other.values(z) == pytest.approx(task.values(z))
    assert "value = output *" in task.output_description()["meaning"]
    with pytest.raises(UserError, match="without a target_transform"):
        get_task("regression").load_meta({"labels": LABELS})


def test_params_that_do_not_fit_regression_fail_with_one_line():
    task = get_task("regression")
    with pytest.raises(UserError, match="data.table: regression reads its targets from a table"):
        task_data("regression").scan(Params(data=Data(path="anywhere", table="")))
    with pytest.raises(UserError, match=r"'val_accuracy' is not a regression metric.*val_rmse"):
        task.monitor(Params(train=Train(monitor="val_accuracy")))
    assert task.monitor(Params(train=Train(monitor="auto"))) == "val_rmse"
    assert get_task("classification").monitor(Params()) == "val_f1_macro"


def test_rec_curve_is_the_share_within_each_tolerance():
    curve = rec_curve(np.array([0.5, 0.0, 0.5, 2.0]))
    assert curve["x"].tolist() == [0.0, 0.5, 2.0]
    assert curve["y"].tolist() == [0.25, 0.75, 1.0]
    assert curve["point"].tolist() == [0, 1, 2] and set(curve["curve"]) == {"rec"}
    assert rec_curve(np.array([1.0]))[["x", "y"]].values.tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_evaluate_writes_predictions_curves_tables_and_figures(tmp_path):
    true = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0, 5.5, 9.0])
    task = fitted(true)
    outputs = task.transform.forward(torch.tensor(pred))[:, None].float()
    manifest = pd.DataFrame(
        {
            "path": [f"p{i}.png" for i in range(6)],
            "target": true,
            "group": list("aabbcc"),
            "split": "",
            "width": 8,
            "height": 8,
            "mode": "L",
            "age_days": [3, 4, 5, 6, 7, 8],
        }
    )
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    params = Params(evaluate=Evaluate(draw_images=2))
    res, fig = tmp_path / "res", tmp_path / "fig"
    headline, metrics = write_results(
        task, outputs, task.targets(manifest, LABELS), manifest, images, LABELS, params, res, fig
    )
    assert headline["rmse"] == metrics["rmse"] and "transform" not in headline
    errors = np.abs(pred - true)
    assert metrics["target"] == "weight" and metrics["num_samples"] == 6
    assert metrics["mae"] == pytest.approx(errors.mean(), rel=1e-5)
    assert metrics["rmse"] == pytest.approx(np.sqrt((errors**2).mean()), rel=1e-5)
    assert metrics["max_abs_error"] == pytest.approx(3.0, rel=1e-5)
    assert metrics["bias"] == pytest.approx((pred - true).mean(), rel=1e-5)
    json.dumps(metrics, allow_nan=False)

    frame = pd.read_csv(res / "predictions.csv")
    assert list(frame.columns) == [
        "path",
        "true",
        "predicted",
        "residual",
        "abs_error",
        "group",
        "age_days",
    ]
    assert frame["predicted"].to_numpy() == pytest.approx(pred, rel=1e-5)
    assert frame["abs_error"].to_numpy() == pytest.approx(errors, abs=1e-5)
    worst = pd.read_csv(res / "tables" / "worst.csv")
    assert worst["path"].iloc[0] == "p5.png" and worst["abs_error"].is_monotonic_decreasing
    bins = pd.read_csv(res / "tables" / "by_target_bin.csv")
    assert bins["count"].sum() == 6 and {"bias", "mae", "rmse"} <= set(bins.columns)
    curves = pd.read_csv(res / "curves.csv")
    assert curves["y"].is_monotonic_increasing and curves["y"].iloc[-1] == 1.0
    for png in ("predicted_vs_actual", "residuals", "worst_predictions"):
        assert (fig / f"{png}.png").stat().st_size > 1000, png
    meta = {"labels": LABELS, "target_transform": task.transform.to_dict()}
    record = decode_regression(outputs[:1], meta)[0]
    assert record == {"value": pytest.approx(1.5, rel=1e-5), "target": "weight"}


def bright_fraction_images(root, n, rng, size=32):
    """Images whose target is the share of bright pixels, in a table with a plant per 4 rows."""
    rows = []
    for i in range(n):
        frac = rng.uniform(0.05, 0.95)
        bright = rng.random((size, size)) < frac
        pixels = np.where(bright, 220, 40) + rng.normal(0, 8, (size, size))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"img{i:03d}.png")
        rows.append({"file": f"img{i:03d}.png", "fresh_weight": 100 * bright.mean()})
        rows[-1]["plant"] = f"plant{i // 4}"
    return pd.DataFrame(rows)


def test_the_whole_path_learns_a_target_from_pixels(tmp_path):
    """Table -> grouped split -> fit -> evaluate, with R2 > 0.8 on the held-out plants."""
    rng = np.random.default_rng(0)
    table = bright_fraction_images(tmp_path, 320, rng)
    table.to_excel(tmp_path / "plants.xlsx", sheet_name="weights", index=False)
    params = Params(
        data=Data(
            path=str(tmp_path),
            table="plants.xlsx",
            sheet="weights",
            image_column="file",
            target_column="fresh_weight",
            group_column="plant",
        ),
        split=Split(train=0.6, val=0.2, test=0.2),
        augment=Augment(ops=["hflip", "vflip"]),
        train=Train(epochs=6, batch_size=32, lr=3e-3, weight_decay=0.0),
        regression=Regression(head_hidden=0),
    )
    task = get_task("regression")
    scan, _ = task_data("regression").scan(params)
    frame = task_data("regression").split(scan.samples, params)
    parts = {
        name: frame[frame["split"] == name].reset_index(drop=True)
        for name in ("train", "val", "test")
    }
    plants = [set(p["group"]) for p in parts.values()]
    assert not (plants[0] & plants[1] or plants[0] & plants[2] or plants[1] & plants[2])

    def pixels(part):
        from visionpipe.core.images import load_images

        return load_images(tmp_path, part["path"].tolist(), 32, desc="decode")

    labels = task.labels(parts["train"], params)
    task.fit_targets(parts["train"], params)
    train_y = task.targets(parts["train"], labels)
    gen = seed_everything(0)
    model = build_model("small_cnn", 1, pretrained=False, dropout=0.0).model
    result = fit(
        model,
        task,
        params,
        task.criterion(params, labels, train_y),
        pixels(parts["train"]),
        train_y,
        pixels(parts["val"]),
        task.targets(parts["val"], labels),
        torch.device("cpu"),
        gen,
        lambda epoch, metrics: None,
    )
    assert result.best_epoch >= 0 and "val_rmse" in result.history[0]
    model.load_state_dict(result.best_state)
    model.eval()
    test_x = pixels(parts["test"])
    with torch.no_grad():
        outputs = model(test_x)
    _, metrics = write_results(
        task,
        outputs,
        task.targets(parts["test"], labels),
        parts["test"],
        test_x,
        labels,
        params,
        tmp_path / "res",
        tmp_path / "fig",
    )
    assert metrics["r2"] > 0.8, metrics


def test_a_grouped_split_error_names_the_users_group_column():
    manifest = pd.DataFrame(
        {"path": [f"p{i}.png" for i in range(6)], "target": range(6), "group": list("aaabbb")}
    )
    params = Params(data=Data(group_column="plant_number"))
    with pytest.raises(DataError, match="only 2 group\\(s\\) in column 'plant_number'"):
        task_data("regression").split(manifest, params)


def test_error_bins_are_quantiles_or_the_values_of_a_discrete_target():
    from visionpipe.tasks.regression.evaluate import errors_by_bin, prediction_table

    grades = np.array([0.0] * 6 + [1 / 3, 2 / 3, 1.0, 1.0])
    table = errors_by_bin(prediction_table(pd.DataFrame({"path": "p", "target": grades}), grades))
    assert table["bin"].tolist() == ["0", "0.333333", "0.666667", "1"]
    assert table["count"].tolist() == [6, 1, 1, 2]
    weights = np.linspace(1, 100, 50)
    table = errors_by_bin(prediction_table(pd.DataFrame({"path": "p", "target": weights}), weights))
    assert len(table) == 5 and table["count"].sum() == 50 and table["mae"].max() == 0
