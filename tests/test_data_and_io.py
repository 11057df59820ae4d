import os
import signal

import pytest
import torch

from tests.conftest import write_image
from visionpipe.core.batches import batches
from visionpipe.core.errors import DataError
from visionpipe.core.images import load_images
from visionpipe.core.io import atomic_file, atomic_path, interrupts_deferred, write_json
from visionpipe.core.models import Normalizer


def test_grayscale_decoded_to_rgb_at_size(tmp_path):
    write_image(tmp_path / "g.png", value=100, size=(30, 20), mode="L")
    write_image(tmp_path / "c.png", value=50, size=(10, 40), mode="RGB")
    x = load_images(tmp_path, ["g.png", "c.png"], 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.uint8
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 1], x[0, 2])


def test_undecodable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.png: cannot decode image"):
        load_images(tmp_path, ["bad.png"], 8)


def test_normalizer_and_batches():
    n = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    out = n(torch.full((1, 3, 2, 2), 127.5))
    assert torch.allclose(out, torch.zeros_like(out))
    idx = list(batches(10, 4))
    assert [len(i) for i in idx] == [4, 4, 2]
    shuffled = torch.cat(list(batches(10, 4, shuffle=True, gen=torch.Generator().manual_seed(0))))
    assert sorted(shuffled.tolist()) == list(range(10))


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"accur')
        raise RuntimeError("killed")
    assert target.read_text().strip().endswith("}")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.fixture
def sigint(request):
    """SIGINT set to the handler the test names, the worker's own restored after (a worker
    under a background shell job starts with it ignored)."""
    before = signal.signal(signal.SIGINT, request.param)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("sigint", [signal.default_int_handler], indirect=True)
def test_ctrl_c_while_a_file_is_written_waits_for_the_whole_file(sigint, tmp_path):
    target = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as handle:
        handle.write(b"first half ")
        os.kill(os.getpid(), signal.SIGINT)  # held: the block goes on
        handle.write(b"second half")
    assert target.read_bytes() == b"first half second half"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("sigint", [signal.default_int_handler], indirect=True)
def test_without_a_ctrl_c_the_deferral_raises_nothing(sigint):
    with interrupts_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("sigint", [signal.SIG_IGN], indirect=True)
def test_an_ignored_ctrl_c_stays_ignored(sigint, tmp_path):
    with atomic_file(tmp_path / "a.pt") as handle:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        handle.write(b"x")
    assert (tmp_path / "a.pt").read_bytes() == b"x"


def test_cuda_requested_without_cuda(monkeypatch):
    from visionpipe.core.errors import UserError
    from visionpipe.core.runtime import choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="train.device: 'cuda' requested but no CUDA device"):
        choose_device("cuda")
    assert choose_device("auto").type == "cpu"


def test_missing_split_manifest(tmp_path):
    from visionpipe.core.errors import UserError
    from visionpipe.core.manifests import read_split

    with pytest.raises(UserError, match="train.csv: split manifest not found"):
        read_split(tmp_path, "train")
