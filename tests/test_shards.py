"""Tar shards (WebDataset layout): packing class folders, a table and a COCO set, reading the
members in place (scan, decoded cache, COCO), and bad shards counted instead of read wrong."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import make_class_folders, write_image
from visionpipe.core import shards
from visionpipe.core.cache import cached_images, quick_key
from visionpipe.core.errors import DataError
from visionpipe.core.images import decode_image, load_images
from visionpipe.core.sources.folder import data_report, scan_folder
from visionpipe.core.sources.shards import holds_shards, sample_key, scan_shards
from visionpipe.onboard import pack
from visionpipe.tasks.classification.data.split import split_manifest
from visionpipe.tasks.detection.data.coco_source import scan_coco

STATES = ["intact", "damaged", "absent", "occluded"]


def packed_folder(tmp_path: Path, shard_size: int = 4) -> tuple[Path, Path, pack.Packed]:
    raw = make_class_folders(tmp_path / "raw", {"cat": 5, "dog": 6})
    dest = tmp_path / "shards"
    return raw, dest, pack.write_shards(pack.folder_samples(raw), dest, shard_size)


def sources(dest: Path, frame: pd.DataFrame) -> list[str]:
    """Each manifest row's original path, from its sample's .json member."""
    out = []
    for path in frame["path"]:
        key, _ = sample_key(path.split(".tar/", 1)[1])
        shard = path.split(".tar/", 1)[0] + ".tar"
        out.append(json.loads(shards.read_bytes(dest / shard / f"{key}.json"))["source"])
    return out


def test_class_folders_round_trip_with_the_same_manifest_and_split(tmp_path):
    raw, dest, packed = packed_folder(tmp_path)
    assert [p.name for p in packed.shards] == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    assert packed.samples == 11 and holds_shards(dest) and not holds_shards(raw)
    loose, sharded = scan_folder(raw), scan_shards(dest)
    assert sharded.classes == loose.classes and not sharded.skipped
    assert sources(dest, sharded.samples) == loose.samples["path"].tolist()
    columns = ["label", "width", "height", "mode"]
    assert sharded.samples[columns].equals(loose.samples[columns])
    for path, original in zip(sharded.samples["path"], loose.samples["path"], strict=True):
        assert (decode_image(dest / path, 16) == decode_image(raw / original, 16)).all()
    # the same split, image for image
    a = split_manifest(loose.samples, 0.6, 0.2, 0.2, seed=1)
    b = split_manifest(sharded.samples, 0.6, 0.2, 0.2, seed=1)
    assert a["split"].tolist() == b["split"].tolist()
    report = data_report(sharded)
    assert report["num_images"] == 11 and report["images_per_class"] == {"cat": 5, "dog": 6}


def test_packing_is_deterministic_and_shrinks_to_fewer_shards(tmp_path):
    _, dest, first = packed_folder(tmp_path)
    before = {p.name: p.read_bytes() for p in first.shards}
    again = pack.write_shards(pack.folder_samples(tmp_path / "raw"), dest, 4)
    assert {p.name: p.read_bytes() for p in again.shards} == before
    pack.write_shards(pack.folder_samples(tmp_path / "raw"), dest, 100)
    assert [p.name for p in dest.glob("*.tar")] == ["shard-000000.tar"]


def test_a_presplit_folder_keeps_its_splits(tmp_path):
    raw = tmp_path / "raw"
    make_class_folders(raw, {"a": 3, "b": 3}, prefix="train")
    make_class_folders(raw, {"a": 2, "b": 2}, prefix="val")
    dest = tmp_path / "shards"
    pack.write_shards(pack.folder_samples(raw), dest, 5)
    result = scan_shards(dest)
    assert result.layout == "shards, presplit"
    assert result.samples["split"].value_counts().to_dict() == {"train": 6, "val": 4}


def test_a_table_is_packed_with_its_columns(tmp_path):
    raw = tmp_path / "raw"
    for i in range(4):
        write_image(raw / f"img/{i}.png", value=30 * i)
    pd.DataFrame(
        {
            "image": [f"{i}.png" for i in range(4)] + ["gone.png"],
            "grade": ["ok", "bad", "ok", None, "ok"],
            "weight": [1.5, 2.0, 3.0, 4.0, 5.0],
        }
    ).to_csv(raw / "labels.csv", index=False)
    dest = tmp_path / "shards"
    packed = pack.write_shards(
        pack.table_samples(raw, "labels.csv", "image", images="img"), dest, 10
    )
    assert packed.samples == 4 and packed.missing == ["gone.png"]
    result = scan_shards(dest, label_key="grade")
    assert sorted(result.samples["label"]) == ["bad", "ok", "ok"]
    (missing,) = result.skipped  # the row without a grade
    assert "missing label" in missing["reason"] and "'grade'" in missing["reason"]
    record = json.loads(shards.read_bytes(dest / "shard-000000.tar/00000001.json"))
    assert record == {"image": "1.png", "grade": "bad", "weight": 2.0, "source": "1.png"}


def test_a_coco_set_round_trips_through_shards(tmp_path):
    raw = tmp_path / "raw"
    names = ["a.png", "sub/b.png", "c.png"]
    for i, name in enumerate(names):
        write_image(raw / name, value=50 + 40 * i, size=(40, 30), mode="RGB")
    coco = {
        "images": [
            {"id": i + 1, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names)
        ],
        "categories": [{"id": 1, "name": "part"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "bbox": [2, 3, 10 + i, 8],
                "area": 80.0,
                "iscrowd": 0,
                "attributes": {"state": STATES[i]},
            }
            for i in range(3)
        ],
    }
    (raw / "ann.json").write_text(json.dumps(coco))
    dest = tmp_path / "shards"
    packed = pack.pack_coco(raw, "ann.json", dest, shard_size=2)
    assert packed.samples == 3 and len(packed.shards) == 2
    loose = scan_coco(raw, "ann.json", "state", STATES, workers=1)
    sharded = scan_coco(dest, "annotations.json", "state", STATES, workers=1)
    assert sharded.report["images"] == loose.report["images"]
    assert len(sharded.manifest) == len(loose.manifest) == 3
    assert sharded.coco["annotations"] == loose.coco["annotations"]
    for a, b in zip(sharded.coco["images"], loose.coco["images"], strict=True):
        assert ".tar/" in a["file_name"] and (a["width"], a["height"]) == (b["width"], b["height"])
        assert (
            decode_image(dest / a["file_name"], 24) == decode_image(raw / b["file_name"], 24)
        ).all()


def test_the_decoded_cache_reads_members_and_keys_them_cheaply(tmp_path):
    raw, dest, _ = packed_folder(tmp_path)
    frame = scan_shards(dest).samples
    paths = frame["path"].tolist()
    disk = cached_images(dest, paths, 16, directory=tmp_path / "cache")
    originals = load_images(raw, scan_folder(raw).samples["path"].tolist(), 16)
    assert torch.equal(disk[:], originals)
    key, _ = quick_key(dest, paths, 16)
    real = shards.read_bytes
    shards.read_bytes = lambda *a: (_ for _ in ()).throw(AssertionError("read a member"))
    try:  # the stat key reads no member's bytes
        assert quick_key(dest, paths, 16)[0] == key
    finally:
        shards.read_bytes = real
    pack.write_shards(pack.folder_samples(raw), dest, 5)  # repacked: other shards, offsets
    assert quick_key(dest, paths, 16)[0] != key


def tar_with(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 10), value).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_shards_are_counted_never_read_wrong(tmp_path):
    dest = tmp_path / "shards"
    good = [(f"{i:03d}.png", png(20 * i)) for i in range(6)]
    labels = [(f"{i:03d}.cls", b"even" if i % 2 == 0 else b"odd") for i in range(6)]
    tar_with(dest / "a.tar", [m for pair in zip(good, labels, strict=True) for m in pair])
    # a clash: the same member name twice (two different pictures), and a non-image sample
    tar_with(
        dest / "b.tar",
        [
            ("x.png", png(1)),
            ("x.cls", b"even"),
            ("x.png", png(200)),
            ("notes.txt", b"hello"),
            ("notes.cls", b"odd"),
            ("junk.png", b"not a png at all"),
            ("junk.cls", b"odd"),
        ],
    )
    whole = tar_with(dest / "c.tar", [m for pair in zip(good, labels, strict=True) for m in pair])
    with tarfile.open(whole) as tar:  # cut short by a failed copy, inside the 4th image
        fourth = [m for m in tar.getmembers() if m.name == "003.png"][0]
    whole.write_bytes(whole.read_bytes()[: fourth.offset_data + fourth.size // 2])
    between = tar_with(dest / "e.tar", [("1.png", png(5)), ("1.cls", b"odd")])
    with tarfile.open(between) as tar:  # cut exactly after a member: looks whole to tarfile
        cls = tar.getmember("1.cls")
    between.write_bytes(between.read_bytes()[: cls.offset_data + tarfile.BLOCKSIZE])
    (dest / "d.tar").write_bytes(b"this is not a tar file" * 100)

    result = scan_shards(dest)
    reasons = {item["path"]: item["reason"] for item in result.skipped}
    assert "appears more than once" in reasons["b.tar/x.png"]
    assert not any(p.startswith("b.tar/x.") for p in result.samples["path"])
    assert "no image member" in reasons["b.tar/notes"]
    assert "corrupt or truncated image" in reasons["b.tar/junk.png"]
    assert "shard cut short (ends inside member 003.png)" in reasons["c.tar"]
    assert "not a readable tar shard" in reasons["d.tar"]
    assert "no end-of-archive marker" in reasons["e.tar"]
    kept_c = {p for p in result.samples["path"] if p.startswith("c.tar/")}
    assert kept_c == {"c.tar/000.png", "c.tar/001.png", "c.tar/002.png"}  # the whole ones
    for path in result.samples["path"]:
        decode_image(dest / path, 8)
    with pytest.raises(FileNotFoundError, match="appears more than once"):
        shards.read_bytes(dest / "b.tar/x.png")


def test_no_shards_or_one_class_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .tar shards found"):
        scan_shards(tmp_path / "empty")
    tar_with(tmp_path / "one/a.tar", [("1.png", png(3)), ("1.cls", b"only")])
    with pytest.raises(DataError, match="1 class"):
        scan_shards(tmp_path / "one")


def test_the_pack_command(tmp_path, capsys):
    raw = make_class_folders(tmp_path / "raw", {"a": 2, "b": 2})
    assert pack.main([str(raw), str(tmp_path / "out"), "--shard-size", "3"]) == 0
    assert "4 images in 2 shard(s)" in capsys.readouterr().out
    assert pack.main([str(raw), str(raw / "shards")]) == 2
    assert "inside" in capsys.readouterr().err
    assert pack.main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2


def test_init_recognises_shards_and_their_label_field(tmp_path):
    from visionpipe.onboard.layouts import recognise

    _, dest, _ = packed_folder(tmp_path)
    layout = recognise(dest)
    assert layout.kind == "tar shards (WebDataset)" and layout.task == "classification"
    assert layout.data == {"table": ""} and "labels from each sample's .cls member" in layout.notes
    raw = tmp_path / "t"
    write_image(raw / "a.png", value=1)
    write_image(raw / "b.png", value=2)
    pd.DataFrame({"image": ["a.png", "b.png"], "grade": ["x", "y"], "w": [1, 2]}).to_csv(
        raw / "t.csv", index=False
    )
    by_json = pack.write_shards(pack.table_samples(raw, "t.csv", "image"), tmp_path / "j", 5)
    assert recognise(by_json.shards[0].parent).data == {"table": "", "label_column": "grade"}
    by_cls = pack.write_shards(
        pack.table_samples(raw, "t.csv", "image", label_column="grade"), tmp_path / "c", 5
    )
    assert shards.read_bytes(by_cls.shards[0] / "00000001.cls") == b"y"
    with pytest.raises(Exception, match="no column 'nope'"):
        list(pack.table_samples(raw, "t.csv", "image", label_column="nope"))


def test_a_regression_table_round_trips_with_targets_groups_and_metadata(tmp_path):
    from visionpipe.core.sources.shards import shard_frame
    from visionpipe.core.sources.table import scan_regression_frame, scan_regression_table

    raw = tmp_path / "plants"
    rows = []
    for i in range(8):
        write_image(raw / f"img/p{i}.png", value=20 + 25 * i)
        rows.append({"image": f"img/p{i}.png", "fresh_weight": 1.5 * i, "plant": i // 2})
    rows[3]["fresh_weight"] = None  # no target: skipped in both
    rows.append({"image": "img/missing.png", "fresh_weight": 9.0, "plant": 9})
    pd.DataFrame(rows).assign(site="north").to_csv(raw / "biomass.csv", index=False)
    args = ("image", "fresh_weight", "plant", ["site"])
    loose = scan_regression_table(raw, "biomass.csv", "", *args)
    dest = tmp_path / "shards"
    packed = pack.write_shards(pack.table_samples(raw, "biomass.csv", "image"), dest, 3)
    assert packed.missing == ["img/missing.png"]  # the packer lists it; prepare never sees it
    frame, skipped = shard_frame(dest, "image")
    sharded = scan_regression_frame(dest, frame, dest, *args, layout="shards", skipped=skipped)
    columns = ["target", "group", "width", "height", "mode", "site"]
    assert sharded.samples[columns].equals(loose.samples[columns])
    assert sources(dest, sharded.samples) == loose.samples["path"].tolist()
    assert [s["reason"] for s in sharded.skipped] == ["missing target"]


def test_members_named_dot_slash_or_outside_the_shard(tmp_path):
    """``tar -C dir .`` writes ``./a.png``; a name with ``..`` or ``/`` in front would lead
    outside the shard: the first reads as ``a.png``, the others are listed, never read."""
    dest = tmp_path / "shards"
    tar_with(
        dest / "a.tar",
        [
            ("./1.png", png(10)),
            ("./1.cls", b"x"),
            ("./2.png", png(90)),
            ("./2.json", b'{"label": "y"}'),
            ("../3.png", png(50)),
            ("/4.png", png(60)),
        ],
    )
    result = scan_shards(dest)
    assert sorted(result.samples["path"]) == ["a.tar/1.png", "a.tar/2.png"]
    assert sorted(result.samples["label"]) == ["x", "y"]
    outside = [s["path"] for s in result.skipped if "outside the shard" in s["reason"]]
    assert outside == ["a.tar/../3.png", "a.tar//4.png"]


def test_a_member_that_does_not_decode_is_named_in_the_reason(tmp_path):
    dest = tmp_path / "shards"
    tar_with(dest / "a.tar", [("1.png", b"nope"), ("1.cls", b"x")])
    from visionpipe.core.sources.folder import check_image

    reason = check_image(dest / "a.tar/1.png", dest)
    assert "a.tar/1.png" in reason and "BytesIO" not in reason
