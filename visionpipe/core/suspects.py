"""Suspect labels: which images (or boxes) are most likely labelled wrong.

Confident learning (the ``cleanlab`` package) needs out-of-sample predicted probabilities for
every labelled item. Training the task's network k times is too dear on a CPU, so the
probabilities come from a cheap, well-known stand-in: a frozen ImageNet backbone's pooled
features, and a logistic regression fitted k-fold on them (each item is predicted by the fold
that did not see it). The backbone never sees the labels, so a wrong label cannot be learnt
into the features. Regression items get k-fold ridge predictions and cleanlab's regression
label-quality scores.

The result is a ranking, not a verdict: it points a person at the items worth a second look.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from visionpipe.core.batches import batches
from visionpipe.core.cache import ConcatImages, Images, cached_images
from visionpipe.core.errors import UserError
from visionpipe.core.io import atomic_path, write_csv, write_json
from visionpipe.core.manifests import SPLITS, read_split
from visionpipe.core.models import feature_extractor
from visionpipe.core.runtime import set_threads

log = logging.getLogger(__name__)

#: the columns of suspects.csv, most suspect first
#: (score: cleanlab's label quality, for a class the out-of-sample probability of the given label;
#: suggested_prob: that of the suggested class, empty for regression)
COLUMNS = ["rank", "path", "split", "item", "given", "suggested", "score", "suggested_prob"]


@dataclass
class LabelledItems:
    """What a task hands the suspects stage: one row per labelled item (``path``, ``split``,
    ``item``: what in the file is labelled, e.g. a box; ``label``: a class name or a number),
    the items' pixels as ``N x 3 x S x S`` uint8, and what a label is (``kind``)."""

    table: pd.DataFrame
    images: Images  # indexed a batch at a time (a split's decoded cache, or a tensor)
    kind: str  # "class" (classification, a detector's state or part) or "value" (regression)
    label_name: str  # what the label is, for the report: "grade", "state", "fresh_weight"


@torch.no_grad()
def embed(model: torch.nn.Module, images: Images, batch_size: int = 64) -> np.ndarray:
    """Pooled backbone features of uint8 images, batch by batch (``model``: a network whose
    head is removed, taking 0..255 pixels)."""
    model.eval()
    order = list(batches(len(images), batch_size))
    out = [
        model(images[idx].float()).flatten(1)
        for idx in tqdm(order, desc="features", unit="batch", disable=len(order) < 2)
    ]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 0))


class TooFewLabels(UserError):
    """Not enough labelled items to rank: the stage says why and writes empty outputs."""


def out_of_sample_probs(
    features: np.ndarray, labels: np.ndarray, folds: int, seed: int
) -> np.ndarray:
    """Class probabilities for every item from a logistic regression fitted on the other
    folds (stratified: every class needs at least ``folds`` items)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(classifier, features, labels, cv=cv, method="predict_proba")


def class_suspects(labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Per item: cleanlab's label quality (self-confidence, low is suspect), whether confident
    learning calls it a label issue, and the class the probabilities suggest."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # n_jobs=1: no worker processes forked from a process that holds torch's threads
    issues = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    return pd.DataFrame(
        {
            "score": get_label_quality_scores(labels, probs),
            "is_issue": issues,
            "suggested": probs.argmax(1),
            "suggested_prob": probs.max(1),
        }
    )


def value_suspects(features: np.ndarray, values: np.ndarray, folds: int, seed: int) -> pd.DataFrame:
    """Per item: k-fold ridge predictions and cleanlab's regression label issues (its
    CleanLearning fits the folds itself)."""
    from cleanlab.regression.learn import CleanLearning
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 12)))
    found = CleanLearning(model, cv_n_folds=folds, seed=seed).find_label_issues(features, values)
    return pd.DataFrame(
        {
            "score": found["label_quality"].to_numpy(),
            "is_issue": found["is_label_issue"].to_numpy(dtype=bool),
            "suggested": found["predicted_label"].to_numpy(),
            "suggested_prob": np.nan,
        }
    )


def rank_suspects(
    items: LabelledItems, features: np.ndarray, folds: int, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The label issues, most suspect first (suspects.csv's columns and ``position``, the
    item's row in ``items.images``), and the summary: how many, per
    given label, and how well the k-fold stand-in predicts the labels (a low figure means its
    suspicions are weak)."""
    table = items.table.reset_index(drop=True)
    summary: dict[str, Any] = {
        "method": "cleanlab confident learning on out-of-sample probabilities: a k-fold "
        "logistic regression on frozen ImageNet features"
        if items.kind == "class"
        else "cleanlab regression label quality: k-fold ridge regression on frozen ImageNet "
        "features",
        "label": items.label_name,
        "items": len(table),
        "folds": folds,
    }
    if not len(table):
        raise TooFewLabels(f"suspects: no labelled items ({items.label_name}) in the splits")
    table["position"] = np.arange(len(table))  # the item's row in ``items.images``
    if items.kind == "class":
        counts = table["label"].astype(str).value_counts()
        names = sorted(counts[counts >= folds].index)  # a class needs an item in every fold
        unscored = {str(k): int(v) for k, v in counts[counts < folds].items()}
        if unscored:
            summary["unscored"] = {"fewer_items_than_folds": unscored}
            log.warning("suspects: not ranked, fewer than %d items: %s", folds, unscored)
        if len(names) < 2:
            raise TooFewLabels(
                f"suspects: fewer than two {items.label_name} values with at least "
                f"suspects.folds ({folds}) items each ({dict(counts)}); nothing to rank"
            )
        table = table[table["label"].astype(str).isin(names)].reset_index(drop=True)
        index = {name: i for i, name in enumerate(names)}
        labels = table["label"].astype(str).map(index).to_numpy()
        probs = out_of_sample_probs(features[table["position"].to_numpy()], labels, folds, seed)
        found = class_suspects(labels, probs)
        found["suggested"] = [names[i] for i in found["suggested"]]
        summary["out_of_sample_accuracy"] = round(float((probs.argmax(1) == labels).mean()), 4)
    else:
        if len(table) < 2 * folds:
            raise TooFewLabels(
                f"suspects: {len(table)} items, fewer than twice suspects.folds ({folds})"
            )
        values = pd.to_numeric(table["label"]).to_numpy(dtype=np.float64)
        found = value_suspects(features, values, folds, seed)
        residual = found["suggested"].to_numpy() - values
        summary["out_of_sample_rmse"] = round(float(np.sqrt(np.mean(residual**2))), 6)
    summary["ranked"] = len(table)
    ranked = pd.concat([table, found], axis=1)
    ranked = ranked[ranked["is_issue"]].sort_values("score", kind="stable")
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked = ranked.rename(columns={"label": "given"})
    summary["label_issues"] = int(len(ranked))
    summary["label_issue_share"] = round(len(ranked) / max(len(table), 1), 4)
    summary["per_split"] = {str(k): int(v) for k, v in ranked["split"].value_counts().items()}
    if items.kind == "class":  # a regression target is a number: no count per value
        summary["per_given_label"] = {
            str(k): int(v) for k, v in ranked["given"].astype(str).value_counts().items()
        }
    return ranked[[*COLUMNS, "position"]].reset_index(drop=True), summary


def draw_suspects(
    items: LabelledItems, ranked: pd.DataFrame, path: Path, top: int, columns: int = 6
) -> None:
    """A grid of the ``top`` suspects: the pixels the features saw, with rank, given and
    suggested label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ranked.head(top)
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, row) in zip(axes.flat, shown.iterrows(), strict=False):
        image = items.images[int(row["position"])].permute(1, 2, 0).numpy()
        ax.imshow(image)
        given, suggested = _short(row["given"]), _short(row["suggested"])
        ax.set_title(f"#{row['rank']} {given}\n-> {suggested}", fontsize=8)
    if shown.empty:
        axes.flat[0].text(0.5, 0.5, "no label issues found", ha="center", va="center")
    fig.suptitle(f"Top suspect labels ({items.label_name}: given -> suggested)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_suspects(
    items: LabelledItems,
    features: np.ndarray,
    cfg: Any,
    seed: int,
    out: Path,
    figures: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Rank, then write suspects.csv, details.json, summary.json (the stage's metrics) and
    the grid of the ``cfg.top`` most suspect items."""
    ranked, summary = rank_suspects(items, features, cfg.folds, seed)
    summary.update(extra or {})
    write_csv(out / "suspects.csv", ranked[COLUMNS])
    write_json(out / "details.json", summary)
    write_json(out / "summary.json", headline(summary))
    draw_suspects(items, ranked, figures / "top_suspects.png", cfg.top)
    log.info(
        "%d of %d %s labels are suspects %s",
        summary["label_issues"],
        summary["ranked"],
        items.label_name,
        summary.get("per_given_label", ""),
    )
    return summary


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """What ``dvc metrics show`` compares: how many labels are suspect."""
    return {k: summary[k] for k in ("label_issues", "label_issue_share")}


def off(out: Path, figures: Path, reason: str) -> None:
    """The stage's outputs when it does not run (``suspects.enabled: false``)."""
    write_csv(out / "suspects.csv", pd.DataFrame(columns=COLUMNS))
    write_json(out / "details.json", {"enabled": False, "reason": reason})
    write_json(out / "summary.json", {"label_issues": None, "label_issue_share": None})
    figures.mkdir(parents=True, exist_ok=True)


def image_items(
    params: Any, splits: str | Path, column: str, kind: str, label_name: str
) -> LabelledItems:
    """Every image of every split with its label (``column`` of the manifests), decoded at
    ``suspects.image_size`` through the image cache (the train stage's entries when the size
    is the model's)."""
    tables, images = [], []
    for name in SPLITS:
        manifest = read_split(splits, name)
        if not len(manifest):
            continue
        tables.append(
            pd.DataFrame(
                {
                    "path": manifest["path"],
                    "split": name,
                    "item": "image",
                    "label": manifest[column],
                }
            )
        )
        size = params.suspects.image_size
        paths = manifest["path"].tolist()
        images.append(
            cached_images(
                params.data.path,
                paths,
                size,
                desc=f"decoding {name}",
                check=params.data.cache_check,
            )
        )
    if not tables:
        raise UserError(f"{splits}: the split manifests hold no images")
    table = pd.concat(tables, ignore_index=True)
    return LabelledItems(table, ConcatImages(images), kind, label_name)


def find_suspects(
    items: LabelledItems, params: Any, args: Any, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The stage's work once a task has listed its items: frozen features, then the ranking
    and its files (``args.out``, ``args.figures``)."""
    cfg = params.suspects
    set_threads(params.train.num_threads)
    torch.manual_seed(params.base.seed)
    try:
        model, source = feature_extractor(cfg.arch, cfg.weights)
    except UserError as exc:  # the weights' messages name the model section's keys
        text = str(exc).replace("model.weights", "suspects.weights")
        raise UserError(text.replace("model.pretrained", "suspects.arch")) from None
    log.info(
        "features: %s (%s) at %d px, %d items", cfg.arch, source, cfg.image_size, len(items.table)
    )
    features = embed(model, items.images)
    info = {"features": {"arch": cfg.arch, "weights": source, "image_size": cfg.image_size}}
    try:
        return write_suspects(
            items,
            features,
            cfg,
            params.base.seed,
            Path(args.out),
            Path(args.figures),
            {**info, **(extra or {})},
        )
    except TooFewLabels as exc:  # a tiny or one-label dataset: the pipeline goes on
        log.warning("%s", exc)
        off(Path(args.out), Path(args.figures), str(exc))
        return {"enabled": False, "reason": str(exc)}
