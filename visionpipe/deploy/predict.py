"""predict: run an exported model or a checkpoint on an image or a folder of images.

    python -m visionpipe.predict models/export/model.onnx path/to/image_or_folder \
        --out predictions.jsonl

low_confidence uses the threshold the export stage resolved into model.json (params'
simulate.threshold: a confidence, or a target such as {flag_share: 0.1}, resolved on the
validation split); --threshold 0.6 overrides it.

Prints one JSON line per image (class, confidence and low_confidence; or the value of a regression
model's target; latency_ms; or error) and writes the same lines to --out. Files that cannot be
decoded are reported and counted, not fatal.
"""

from __future__ import annotations

import json
import logging
import sys

from visionpipe.core.errors import UserError
from visionpipe.core.io import atomic_path
from visionpipe.core.stage import setup_logging
from visionpipe.deploy.predictor import (
    cli_parser,
    image_frames,
    list_images,
    load_predictor,
    predict_frame,
)

log = logging.getLogger("visionpipe.deploy.predict")


def main(argv: list[str] | None = None) -> int:
    parser = cli_parser("python -m visionpipe.predict", __doc__)
    parser.add_argument("input", help="an image file or a folder of images")
    parser.add_argument(
        "--threshold",
        type=float,
        help="confidence below this is flagged low_confidence (default: the threshold the "
        "export resolved into model.json, else 0.5)",
    )
    parser.add_argument("--out", help="also write the JSON lines to this file")
    args = parser.parse_args(argv)
    setup_logging()
    records: list[dict] = []
    interrupted = False
    try:
        predictor = load_predictor(args.model, args.threads)
        threshold = predictor.threshold if args.threshold is None else args.threshold
        for frame in image_frames(list_images(args.input), predictor):
            record = predict_frame(predictor, frame, threshold)
            print(json.dumps(record), flush=True)
            records.append(record)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the images predicted so far are kept, in --out too
        interrupted = True
    if args.out:
        try:
            with atomic_path(args.out) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        except OSError as exc:  # WriteFailed (a full disk) says it in one line already
            print(
                f"error: {exc if isinstance(exc, UserError) else f'{args.out}: {exc}'}",
                file=sys.stderr,
            )
            return 2
    failed = sum("error" in r for r in records)
    low = sum(bool(r.get("low_confidence")) for r in records)
    log.info(
        "%d images: %d predicted, %d low confidence, %d unreadable",
        len(records),
        len(records) - failed,
        low,
        failed,
    )
    if interrupted:
        print(f"interrupted after {len(records)} images (Ctrl-C)", file=sys.stderr)
        return 130
    return 2 if failed == len(records) else 0


if __name__ == "__main__":
    sys.exit(main())
