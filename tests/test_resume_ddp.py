"""Resuming an interrupted training, and the pieces of multi-process (DDP) training."""

import os
import socket

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from tests.test_training import params, synthetic
from visionpipe.core import distributed
from visionpipe.core.distributed import Dist
from visionpipe.core.errors import UserError
from visionpipe.core.image.train import fit_images as fit
from visionpipe.core.models import build_model
from visionpipe.core.runtime import seed_everything
from visionpipe.tasks import get_task


class Interrupted(Exception):
    pass


def run(tmp_path, key="k", stop_at=None, **train):
    """fit() as the train stage calls it: seeds, data and a fresh model first."""
    p = params(epochs=4, **train)
    gen = seed_everything(0)
    train_x, train_y = synthetic(96, gen)
    val_x, val_y = synthetic(48, gen)
    model = build_model("small_cnn", 2, pretrained=False, dropout=0.3).model
    logged = []

    def log_epoch(epoch, metrics):
        if epoch == stop_at:
            raise Interrupted  # a kill while epoch `stop_at` is being logged
        logged.append(epoch)

    result = fit(
        model,
        get_task("classification"),
        p,
        torch.nn.CrossEntropyLoss(),
        train_x,
        train_y,
        val_x,
        val_y,
        torch.device("cpu"),
        gen,
        log_epoch,
        str(tmp_path / "state.pt"),
        key,
    )
    return result, logged


def without_time(history):
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])  # with a weight average, it resumes too
def test_an_interrupted_fit_resumes_to_exactly_the_uninterrupted_result(
    tmp_path, caplog, ema_decay
):
    caplog.set_level("INFO")
    whole, _ = run(tmp_path / "whole", ema_decay=ema_decay)
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", stop_at=2, ema_decay=ema_decay)  # epochs 1 and 2 done and saved
    resumed, logged = run(tmp_path / "cut", ema_decay=ema_decay)
    assert "resuming after epoch 2 of 4" in caplog.text
    assert logged == [0, 1, 2, 3]  # the saved epochs are replayed to the logger, then 2 more
    assert without_time(resumed.history) == without_time(whole.history)
    assert resumed.best_epoch == whole.best_epoch
    for name, tensor in whole.best_state.items():
        assert torch.equal(tensor, resumed.best_state[name]), name


def test_other_params_or_data_start_afresh(tmp_path, caplog):
    caplog.set_level("INFO")
    with pytest.raises(Interrupted):
        run(tmp_path, stop_at=1)
    _, logged = run(tmp_path, key="other params")
    assert "saved for other params or data; training from the start" in caplog.text
    assert logged == [0, 1, 2, 3] and "resuming" not in caplog.text
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    _, logged = run(tmp_path, key="other params")
    assert "unreadable" in caplog.text and logged == [0, 1, 2, 3]


def test_the_code_is_part_of_the_fingerprint(tmp_path):
    from visionpipe.core.resume import code_fingerprint

    for clone in ("a", "b"):
        (tmp_path / clone / "pkg").mkdir(parents=True)
        (tmp_path / clone / "pkg" / "loop.py").write_text("lr = 1\n")
        (tmp_path / clone / "stage.py").write_text("main()\n")
    a, b = (code_fingerprint(tmp_path / c / "pkg", tmp_path / c / "stage.py") for c in "ab")
    assert a == b  # the same code in two clones
    (tmp_path / "b" / "pkg" / "loop.py").write_text("lr = 2\n")
    assert code_fingerprint(tmp_path / "b" / "pkg", tmp_path / "b" / "stage.py") != a


def test_early_stopping_is_remembered_by_the_saved_state(tmp_path):
    first, _ = run(tmp_path, lr=0.0, early_stopping_patience=1)  # lr 0: no improvement
    assert first.stopped_early and len(first.history) == 2
    again, logged = run(tmp_path, lr=0.0, early_stopping_patience=1)
    assert again.stopped_early and len(again.history) == 2 and logged == [0, 1]


def test_more_processes_than_cores_is_one_line():
    with pytest.raises(UserError, match=r"train.nproc: 4096 processes but this machine has \d+"):
        distributed.check_nproc(4096, torch.device("cpu"))
    distributed.check_nproc(1, torch.device("cpu"))


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    dist = Dist(rank, world, rank)
    full = torch.arange(7 * 2, dtype=torch.float32).reshape(7, 2)
    mine = dist.shard(torch.arange(7))
    gathered = dist.gather(full[mine], 7)
    total = dist.sum(float(len(mine)), 1.0)
    out[rank] = (mine.tolist(), gathered.tolist(), total)
    torch_dist.destroy_process_group()


def test_shard_and_gather_restore_the_split_order_across_processes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2)
    full = torch.arange(14, dtype=torch.float32).reshape(7, 2).tolist()
    assert out[0][0] == [0, 2, 4, 6] and out[1][0] == [1, 3, 5]
    assert out[0][1] == out[1][1] == full
    assert out[0][2] == out[1][2] == [7.0, 2.0]
