"""Models and frames that are not what they claim, writes that fail, Ctrl-C: one line or a
counted skip, never a traceback or a silent wrong result (issue #18)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import REPO, write_huge_png, write_image
from visionpipe.core import checkpoint, io
from visionpipe.core.errors import UserError, WriteFailed
from visionpipe.core.images import TOO_LARGE
from visionpipe.deploy import predict as predict_module
from visionpipe.deploy import simulate as simulate_module
from visionpipe.deploy.predict import main as predict_main
from visionpipe.deploy.predictor import image_frames, list_images, load_predictor

STATES = ["intact", "damaged", "absent", "occluded"]


@pytest.mark.parametrize("side", [10_000, 30_000])  # over the limit; over twice the limit
def test_a_huge_image_in_a_folder_does_not_stop_predict(exported, tmp_path, capsys, side) -> None:
    folder = tmp_path / "frames"
    write_image(folder / "a.png")
    write_huge_png(folder / "b.png", side, side)
    write_image(folder / "c.png")
    out = tmp_path / "preds.jsonl"
    assert predict_main([str(exported / "model.onnx"), str(folder), "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in records] == ["a.png", "b.png", "c.png"]
    assert "class" in records[0] and "class" in records[2]
    assert records[1]["error"].startswith(f"{folder / 'b.png'}: {TOO_LARGE} (")


# --- predict on files that are not what they claim -----------------------------------------


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("name", ["model.onnx", "model.ts"])
def test_predict_on_a_truncated_model_is_one_line(exported, tmp_path, capsys, name) -> None:
    cut = tmp_path / "cut"
    shutil.copytree(exported, cut)
    data = (cut / name).read_bytes()
    (cut / name).write_bytes(data[: len(data) // 3])
    image = write_image(tmp_path / "a.png")
    assert predict_main([str(cut / name), str(image)]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"error: {cut / name}: cannot load the model (")
    assert err.endswith("export it again")


def test_predict_with_a_broken_model_json_is_one_line(exported, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    shutil.copytree(exported, other)
    image = write_image(tmp_path / "a.png")
    (other / "model.json").write_text('{"task": "classification", ')
    assert predict_main([str(other / "model.onnx"), str(image)]) == 2
    assert one_line_error(capsys).startswith(f"error: {other / 'model.json'}: not readable JSON")
    (other / "model.json").write_text('["a list"]')
    assert predict_main([str(other / "model.onnx"), str(image)]) == 2
    assert "not an export's model.json (no task, labels, image_size)" in one_line_error(capsys)


def test_a_model_json_of_another_kind_of_model_is_one_line(exported, tmp_path) -> None:
    other = tmp_path / "other"
    shutil.copytree(exported, other)
    meta = json.loads((other / "model.json").read_text())
    detector = {**meta, "task": "detection", "states": STATES, "image_size": [32, 32]}
    (other / "model.json").write_text(json.dumps(detector))
    with pytest.raises(UserError, match="model.json describes a detector, but the model's outp"):
        load_predictor(other / "model.onnx", 1)


def test_a_model_json_with_states_beside_a_plain_detector_is_one_line() -> None:
    """The output names tell a detector with states from a plain one; model.json must agree."""
    from types import SimpleNamespace

    from visionpipe.deploy.predictor import _check_outputs

    def run_of(*names: str) -> functools.partial:
        outputs = [SimpleNamespace(name=n) for n in names]
        session = SimpleNamespace(get_outputs=lambda: outputs)
        return functools.partial(lambda session, x: None, session)

    plain, full = (
        ("boxes", "labels", "scores"),
        ("boxes", "labels", "scores", "states", "state_scores"),
    )
    meta = {"task": "detection", "states": ["intact"]}
    with pytest.raises(UserError, match=r"describes a detector with states, but the model's outp"):
        _check_outputs(Path("m.onnx"), run_of(*plain), meta)
    with pytest.raises(UserError, match=r"detector with no states \(a plain detector\), but"):
        _check_outputs(Path("m.onnx"), run_of(*full), {**meta, "states": []})
    _check_outputs(Path("m.onnx"), run_of(*plain), {**meta, "states": []})
    _check_outputs(Path("m.onnx"), run_of(*full), meta)


def test_a_detector_checkpoint_is_one_line(tmp_path) -> None:
    checkpoint.save_torch(tmp_path / "model.pt", {"meta": {"task": "detection"}, "state_dict": {}})
    with pytest.raises(UserError, match="a detector checkpoint; predict and simulate run the "):
        load_predictor(tmp_path / "model.pt", 1)
    checkpoint.save_torch(tmp_path / "model.pt", {"meta": {"task": "x"}, "state_dict": {}})
    with pytest.raises(UserError, match="checkpoint metadata without 'arch'"):
        load_predictor(tmp_path / "model.pt", 1)


def test_a_scripted_detector_loads_in_a_fresh_process(tmp_path) -> None:
    """torchvision's ops (nms) are registered before a detector's TorchScript is loaded, as
    predict does it: in a process that has not imported torchvision."""

    class Nms(torch.nn.Module):
        def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return torch.ops.torchvision.nms(boxes, scores, 0.5)

    import torchvision  # noqa: F401 - scripting needs the op registered too

    torch.jit.save(torch.jit.script(Nms()), str(tmp_path / "nms.ts"))
    code = (
        "import sys, torch; from visionpipe.core.runtimes import load_torchscript;"
        "m = load_torchscript(sys.argv[1], detector=True);"
        "print(m(torch.tensor([[0., 0, 2, 2], [0, 0, 2, 2.1]]), torch.tensor([0.9, 0.8])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "nms.ts")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tensor([0])" in proc.stdout


def test_an_unreadable_frames_folder_is_one_line(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "frames"
    write_image(folder / "a.png")
    scandir = os.scandir

    def refuse(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(folder))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(UserError, match=f"^{folder}: cannot read the folder \\(Permission denied"):
        list_images(folder)


# --- files written -------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_umask_mode_not_0600(tmp_path, umask, mode) -> None:
    """In a fresh process under ``umask`` (the mode is read once, at import)."""
    code = (
        "import os, sys, torch; os.umask(int(sys.argv[2], 8));"
        "from visionpipe.core import checkpoint, io;"
        "io.write_json(sys.argv[1] + '/a.json', {'a': 1});"
        "checkpoint.save_torch(sys.argv[1] + '/b.pt', {'a': torch.zeros(2)})"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path), oct(umask)], cwd=REPO, check=True)
    for name in ("a.json", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_the_built_pipeline_exports_readable_files(built_repo) -> None:
    """The pipeline ran under this process's umask: its files have the mode any new file gets."""
    for path in [*(built_repo / "models/export").iterdir(), built_repo / "models/model.pt"]:
        assert stat.S_IMODE(path.stat().st_mode) == io.FILE_MODE, path


def test_a_full_disk_is_one_line_and_leaves_no_file(tmp_path, monkeypatch) -> None:
    """torch.save on a full disk: /dev/full stands in for the file (every write ENOSPC)."""
    real_open = open
    monkeypatch.setattr(io, "open", lambda _path, mode: real_open("/dev/full", mode), raising=False)
    target = tmp_path / "train_state.pt"
    with pytest.raises(WriteFailed, match=f"^{target}: cannot write it \\(No space left on dev"):
        checkpoint.save_torch(target, {"a": torch.zeros(100_000)})
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one
    with (
        pytest.raises(WriteFailed),
        io.atomic_path(tmp_path / "a.json"),
        real_open("/dev/full", "w") as handle,
    ):
        handle.write("x" * 100_000)
    assert isinstance(WriteFailed("x"), OSError)  # the image cache still only warns


# --- Ctrl-C in the commands ----------------------------------------------------------------


def ctrl_c_on_call(number: int, real):
    """``real``, except that its call ``number`` raises KeyboardInterrupt (a Ctrl-C there)."""
    calls = []

    def wrapped(*args):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(*args)

    return wrapped


def test_ctrl_c_stops_the_conveyor_with_a_summary(exported, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "frames"
    for i in range(5):
        write_image(folder / f"{i}.png", value=40 + i)
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:  # waiting for the third frame (the first is due at once)
            raise KeyboardInterrupt

    loop = functools.partial(simulate_module.simulate, sleep=sleep)
    monkeypatch.setattr(simulate_module, "simulate", loop)
    log, summary = tmp_path / "log.csv", tmp_path / "summary.json"
    argv = [str(exported / "model.onnx"), str(folder), "--csv", str(log), "--summary", str(summary)]
    assert simulate_module.main([*argv, "--interval-ms", "1000"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted after 2 frames (Ctrl-C)"
    assert len(pd.read_csv(log)) == 2
    written = json.loads(summary.read_text())
    assert written["frames"] == written["predicted"] == 2 and written["interrupted"] is True


def test_ctrl_c_while_a_frame_is_predicted(exported, tmp_path, monkeypatch):
    """Ctrl-C inside the model run: that frame is neither logged nor counted."""
    folder = tmp_path / "frames"
    for i in range(4):
        write_image(folder / f"{i}.png", value=40 + i)
    monkeypatch.setattr(
        simulate_module, "predict_frame", ctrl_c_on_call(3, simulate_module.predict_frame)
    )
    predictor = load_predictor(exported / "model.onnx", 1)
    frames = image_frames(sorted(folder.iterdir()), predictor)
    summary = simulate_module.simulate(predictor, frames, 1.0, 0.5, tmp_path / "log.csv")
    assert summary["interrupted"] and summary["frames"] == summary["predicted"] == 2
    assert len(pd.read_csv(tmp_path / "log.csv")) == 2


def test_a_log_that_cannot_be_written_is_one_line(exported, tmp_path, capsys):
    image = write_image(tmp_path / "a.png")
    (tmp_path / "log").mkdir()  # a folder where the CSV should go
    argv = [str(exported / "model.onnx"), str(image), "--csv", str(tmp_path / "log")]
    assert simulate_module.main([*argv, "--summary", str(tmp_path / "s.json")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'log'}: cannot write the log (Is a directory)"
    )


def test_ctrl_c_in_predict_keeps_what_was_predicted(exported, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "frames"
    for i in range(3):
        write_image(folder / f"{i}.png", value=40 + i)
    monkeypatch.setattr(
        predict_module, "predict_frame", ctrl_c_on_call(2, predict_module.predict_frame)
    )
    out = tmp_path / "preds.jsonl"
    assert predict_main([str(exported / "model.onnx"), str(folder), "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted after 1 images (Ctrl-C)"
    assert len(out.read_text().splitlines()) == 1
