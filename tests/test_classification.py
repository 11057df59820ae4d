from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from visionpipe.core.errors import UserError
from visionpipe.tasks import get_task
from visionpipe.tasks.classification.evaluate import write_results

LABELS = ["0_ok", "1_minor", "2_bad"]


def params(positive=(), confident_threshold=0.9, draw_images=16):
    return SimpleNamespace(
        evaluate=SimpleNamespace(
            binary_positive=list(positive),
            binary_threshold=0.5,
            confident_threshold=confident_threshold,
            draw_images=draw_images,
        ),
        classification=SimpleNamespace(label_smoothing=0.0),
    )


def images(n):
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8)


def test_targets_and_unknown_class():
    task = get_task("classification")
    m = pd.DataFrame({"label": ["2_bad", "0_ok"]})
    assert task.targets(m, LABELS).tolist() == [2, 0]
    assert task.labels(pd.DataFrame({"label": ["b", "a", "b"]}), None) == ["a", "b"]
    with pytest.raises(UserError, match="class 'zzz' is not in the model's class index"):
        task.targets(pd.DataFrame({"label": ["zzz"]}), LABELS)
    with pytest.raises(UserError, match="base.task: 'segmentation' is not one of"):
        get_task("segmentation")


def test_evaluate_writes_predictions_confusion_and_metrics(tmp_path):
    task = get_task("classification")
    true = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = [0, 1, 1, 1, 2, 0]
    outputs = torch.nn.functional.one_hot(torch.tensor(pred), 3).float() * 4
    manifest = pd.DataFrame({"path": [f"img{i}.png" for i in range(6)]})
    _, metrics = write_results(
        task,
        outputs,
        true,
        manifest,
        images(6),
        LABELS,
        params(["2_bad"]),
        tmp_path,
        tmp_path / "fig",
    )
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["per_class"]["1_minor"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    # binary: 2_bad vs the rest -> one positive missed (2 -> 0), no false alarm
    assert metrics["binary"]["accuracy"] == pytest.approx(5 / 6)
    assert metrics["binary"]["recall"] == pytest.approx(0.5)
    frame = pd.read_csv(tmp_path / "predictions.csv")
    assert list(frame.columns) == [
        "path",
        "true",
        "predicted",
        "confidence",
        "correct",
        *[f"p_{name}" for name in LABELS],
    ]
    assert frame["predicted"].tolist() == [LABELS[p] for p in pred]
    assert np.all((frame["confidence"] > 0.9) & (frame["confidence"] <= 1))
    assert (tmp_path / "fig" / "confusion_matrix.png").stat().st_size > 1000


def test_binary_uses_the_summed_probability_of_the_positive_classes():
    from visionpipe.tasks.classification.evaluate import binary_metrics

    # sample 0: argmax is "0_ok" (0.4) but "1_minor" + "2_bad" hold 0.6 -> positive
    probs = np.array([[0.4, 0.3, 0.3], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    out = binary_metrics(np.array([1, 0, 2]), probs, LABELS, ["1_minor", "2_bad"])
    assert out["accuracy"] == 1.0 and out["recall"] == 1.0


def test_unknown_binary_class(tmp_path):
    task = get_task("classification")
    with pytest.raises(UserError, match="evaluate.binary_positive: 'broken' is not a class"):
        write_results(
            task,
            torch.zeros(2, 3),
            torch.tensor([0, 1]),
            pd.DataFrame({"path": ["a", "b"]}),
            images(2),
            LABELS,
            params(["broken"]),
            tmp_path,
            tmp_path,
        )


def test_parity():
    task = get_task("classification")
    ref = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    res = task.parity(ref, ref + torch.tensor([[0.0, 0.5], [0.0, 4.0]]))
    assert res == {"max_abs_diff": 4.0, "class_agreement": 0.5}
