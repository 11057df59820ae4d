import json

import pytest

from tests.conftest import make_class_folders, write_image
from visionpipe.core.errors import DataError
from visionpipe.core.sources.folder import data_report, scan_folder


def test_flat_folder(flat_dataset):
    scan = scan_folder(flat_dataset)
    assert scan.layout == "flat"
    assert scan.classes == ["cat", "dog", "owl"]
    assert len(scan.samples) == 30
    row = scan.samples.iloc[0]
    assert row["path"] == "cat/cat_000.png" and row["split"] == ""
    assert (row["width"], row["height"], row["mode"]) == (24, 20, "L")


def test_presplit_folder(tmp_path):
    root = tmp_path / "ds"
    for split, n in [("train", 6), ("val", 3), ("test", 2)]:
        make_class_folders(root, {"a": n, "b": n}, prefix=split)
    scan = scan_folder(root)
    assert scan.layout == "presplit"
    assert scan.samples.groupby("split").size().to_dict() == {"test": 4, "train": 12, "val": 6}
    assert scan.samples["path"].str.startswith(("train/", "val/", "test/")).all()


def test_corrupt_truncated_and_non_image_files_are_skipped_and_listed(flat_dataset):
    good = (flat_dataset / "cat" / "cat_000.png").read_bytes()
    (flat_dataset / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (flat_dataset / "dog" / "fake.jpg").write_bytes(b"this is not a jpeg")
    (flat_dataset / "owl" / "notes.txt").write_text("field notes")
    (flat_dataset / "owl" / ".DS_Store").write_bytes(b"\0\0")
    scan = scan_folder(flat_dataset)
    assert len(scan.samples) == 30
    reasons = {s["path"]: s["reason"] for s in scan.skipped}
    assert set(reasons) == {"cat/truncated.png", "dog/fake.jpg", "owl/notes.txt"}
    assert reasons["cat/truncated.png"].startswith("corrupt or truncated image")
    assert reasons["dog/fake.jpg"].startswith("corrupt or truncated image")
    assert reasons["owl/notes.txt"] == "not an image file (.txt)"
    report = data_report(scan)
    assert report["num_skipped"] == 3 and report["num_images"] == 30
    json.dumps(report)  # serializable as the data report


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "data path does not exist"),
        (
            lambda r: make_class_folders(r, {"only": 3}),
            "found 1 class folder(s) (only); need at least two",
        ),
        (lambda r: r.mkdir(), "found 0 class folder(s); need at least two"),
        (lambda r: (make_class_folders(r, {"a": 2}), (r / "b").mkdir()), "b: empty class folder"),
        (
            lambda r: make_class_folders(r, {"a": 2}, prefix="train"),
            "has train/ but a pre-split dataset needs train/ and val/",
        ),
        (
            lambda r: (
                make_class_folders(r, {"a": 2, "b": 2}, prefix="train"),
                make_class_folders(r, {"a": 2, "b": 2}, prefix="val"),
                make_class_folders(r, {"c": 2}),
            ),
            "mixes split folders with other folders (c)",
        ),
        (
            lambda r: (
                make_class_folders(r, {"a": 2, "b": 2}, prefix="train"),
                make_class_folders(r, {"a": 2, "z": 2}, prefix="val"),
            ),
            "val/z: class not present in train/",
        ),
    ],
)
def test_unusable_folders_fail_with_one_line_naming_the_path(tmp_path, setup, message):
    root = tmp_path / "ds"
    setup(root)
    with pytest.raises(DataError) as err:
        scan_folder(root)
    assert message in str(err.value)
    assert str(root) in str(err.value)


def test_class_with_only_broken_files(tmp_path):
    root = make_class_folders(tmp_path / "ds", {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="b: no readable images"):
        scan_folder(root)


def test_file_instead_of_folder(tmp_path):
    f = write_image(tmp_path / "one.png")
    with pytest.raises(DataError, match="not a directory"):
        scan_folder(f)
