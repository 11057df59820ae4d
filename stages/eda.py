"""Stage eda: class distribution, samples, image sizes and pixel intensities."""

import argparse
from pathlib import Path

from visionpipe import eda
from visionpipe.io import write_json
from visionpipe.manifests import read_splits
from visionpipe.params import Params
from visionpipe.stage import run_stage


def main(params: Params, args: argparse.Namespace) -> None:
    frame = read_splits(args.splits)
    root, figures = Path(params.data.path), Path(args.figures)
    classes = sorted(frame["label"].unique())
    counts = eda.class_distribution(frame, classes, figures / "class_distribution.png")
    eda.sample_grid(
        root,
        frame,
        classes,
        params.eda.samples_per_class,
        params.base.seed,
        figures / "samples.png",
    )
    sizes = eda.image_sizes(frame, figures / "image_sizes.png")
    intensity = eda.pixel_intensity(
        root,
        frame,
        classes,
        params.eda.intensity_samples_per_class,
        params.base.seed,
        figures / "pixel_intensity.png",
    )
    per_class = counts.sum(axis=1)
    write_json(
        args.summary,
        {
            "num_images": int(len(frame)),
            "num_classes": len(classes),
            "images_per_split": {k: int(v) for k, v in counts.sum(axis=0).items()},
            "images_per_class": {k: int(v) for k, v in per_class.items()},
            "per_class_and_split": {
                c: {k: int(v) for k, v in row.items()} for c, row in counts.iterrows()
            },
            "imbalance_ratio": float(per_class.max() / per_class.min()),
            "image_size": sizes,
            "pixel_intensity": intensity,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--splits", required=True)
    parser.add_argument("--figures", required=True)
    parser.add_argument("--summary", required=True)
    run_stage("eda", main, parser)
