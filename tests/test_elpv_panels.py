"""EL module panels composed from the real elpv cells: layout, states, determinism, no reuse."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionpipe.core.errors import DataError
from visionpipe.embedded import elpv
from visionpipe.embedded import panels as elpv_panels
from visionpipe.embedded.panels import compose_panels
from visionpipe.tasks.detection.data.coco_source import scan_coco

TINY = {"panels": 3, "rows": 2, "cols": 2, "cell_size": 32, "seed": 3}
FRACTIONS = {"absent_fraction": 0.25, "occluded_fraction": 0.25}


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("panels")
    return out, compose_panels(out, **TINY, **FRACTIONS)


def test_layout_states_and_files(tiny: tuple[Path, dict]) -> None:
    out, coco = tiny
    assert sorted(files(out)) == [
        "LICENSE.md",
        "panels.json",
        "panels/panel_0001.png",
        "panels/panel_0002.png",
        "panels/panel_0003.png",
    ]
    assert (out / "LICENSE.md").read_text() == elpv.licence_text()
    assert coco["categories"] == [{"id": 1, "name": "mono"}, {"id": 2, "name": "poly"}]
    assert coco["states"] == ["intact", "damaged", "absent", "occluded"]
    assert len(coco["annotations"]) == 3 * 4
    states = Counter(a["attributes"]["state"] for a in coco["annotations"])
    assert states["absent"] == states["occluded"] == 3  # a quota: exactly a quarter each
    assert states["intact"] > 0 and states["damaged"] > 0

    for image in coco["images"]:
        with Image.open(out / image["file_name"]) as img:
            assert (img.width, img.height, img.mode) == (image["width"], image["height"], "L")
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(anns) == 4
        assert len({a["category_id"] for a in anns}) == 1  # one cell type per module
        for a in anns:
            x, y, w, h = a["bbox"]
            assert (w, h) == (32, 32) and x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]
        boxes = sorted((a["bbox"][1], a["bbox"][0]) for a in anns)
        assert boxes[0][1] < boxes[1][1] and boxes[0][0] < boxes[2][0]  # a 2 x 2 grid, not stacked


def test_slot_contents_match_their_state(tiny: tuple[Path, dict]) -> None:
    out, coco = tiny
    pixels = {i["id"]: np.asarray(Image.open(out / i["file_name"])) for i in coco["images"]}
    for a in coco["annotations"]:
        x, y, w, h = (int(v) for v in a["bbox"])
        slot = pixels[a["image_id"]][y : y + h, x : x + w]
        attributes = a["attributes"]
        state = attributes["state"]
        if state == "absent":
            assert set(np.unique(slot)) <= {elpv_panels.EMPTY_SLOT, elpv_panels.EMPTY_FRAME}
            assert "cell" not in attributes
            continue
        probability = attributes["defect_probability"]
        if state == "intact":
            assert probability == 0
        elif state == "damaged":
            assert probability >= 2 / 3 - 1e-6
        else:  # occluded: one flat value covers about 35-65 % of the cell
            assert probability == 0 or probability >= 2 / 3 - 1e-6
            assert np.bincount(slot.ravel()).max() >= 0.3 * slot.size
        assert np.unique(slot).size > 10  # a real cell, not an empty slot


def test_same_arguments_same_bytes_and_scan_accepts_them(
    tiny: tuple[Path, dict], tmp_path: Path
) -> None:
    out, coco = tiny
    again = compose_panels(tmp_path / "again", **TINY, **FRACTIONS)
    assert again == coco
    assert files(tmp_path / "again") == files(out)
    other = compose_panels(tmp_path / "other", **{**TINY, "seed": 4}, **FRACTIONS)
    assert other != coco

    scan = scan_coco(out, "panels.json", "state", coco["states"], workers=1)
    assert scan.report["annotations"]["kept"] == 12 and scan.report["dropped"] == []
    assert scan.manifest["path"].tolist() == [i["file_name"] for i in coco["images"]]


@pytest.fixture
def few_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only 10 usable mono and 6 usable poly cells (plus ambiguous ones, never used)."""
    labels = elpv.read_labels()
    usable = labels["probability"].isin([0.0, 1.0])
    subset = [
        labels[usable & (labels["type"] == "mono")].head(10),
        labels[usable & (labels["type"] == "poly")].head(6),
        labels[labels["probability"].between(0.3, 0.4)].head(5),  # 1/3: ambiguous
    ]
    small = labels.loc[sorted(np.concatenate([s.index for s in subset]))]
    monkeypatch.setattr(elpv_panels, "read_labels", lambda: small)


@pytest.mark.usefixtures("few_cells")
def test_all_panels_the_cells_allow_and_no_cell_reused(tmp_path: Path) -> None:
    coco = compose_panels(tmp_path, 0, 2, 2, 16, 0, absent_fraction=0.0, occluded_fraction=0.0)
    # 10 mono cells fill 2 panels of 4, 6 poly cells fill 1: 3 panels, 4 cells left over
    assert len(coco["images"]) == 3
    cells = [a["attributes"]["cell"] for a in coco["annotations"]]
    assert len(cells) == len(set(cells)) == 12
    with pytest.raises(DataError, match=r"the cells fill only 3 of 4 panels of 2x2"):
        compose_panels(tmp_path, 4, 2, 2, 16, 0, absent_fraction=0.0, occluded_fraction=0.0)
    assert sorted(p.name for p in (tmp_path / "panels").iterdir()) == [
        "panel_0001.png",
        "panel_0002.png",
        "panel_0003.png",
    ]  # the failed call left the earlier panels in place


@pytest.mark.usefixtures("few_cells")
def test_rerun_replaces_the_panels_folder_only(tmp_path: Path) -> None:
    (tmp_path / "0_functional").mkdir()
    (tmp_path / "0_functional" / "keep.png").write_bytes(b"x")
    compose_panels(tmp_path, 3, 2, 2, 16, 0)
    compose_panels(tmp_path, 1, 2, 2, 16, 0)
    assert sorted(p.name for p in (tmp_path / "panels").iterdir()) == ["panel_0001.png"]
    assert (tmp_path / "0_functional" / "keep.png").exists()
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"must be non-negative and sum to at most 1"):
        compose_panels(tmp_path, 1, 2, 2, 16, 0, absent_fraction=0.7, occluded_fraction=0.4)
    with pytest.raises(DataError, match=r"bad layout"):
        compose_panels(tmp_path, 1, 0, 2, 16, 0)
