"""The decoded-image cache: hits for the same files and size, misses when either changes."""

import numpy as np
import pytest
import torch

from tests.conftest import write_image
from visionpipe.core import cache
from visionpipe.core.cache import cache_key, cached_images


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        write_image(root / f"c/{i}.png", value=60 + 40 * i)
    return root, [f"c/{i}.png" for i in range(3)]


def test_second_read_comes_from_the_cache(images, tmp_path, monkeypatch):
    root, paths = images
    first = cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite a cache entry")

    monkeypatch.setattr(cache, "load_images", no_decoding)
    again = cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert torch.equal(first, again) and again.dtype == torch.uint8


def test_key_changes_with_size_split_and_content(images):
    root, paths = images
    key = cache_key(root, paths, 16)
    assert cache_key(root, paths, 16) == key
    assert cache_key(root, paths, 24) != key  # image size
    assert cache_key(root, paths[:2], 16) != key  # split membership
    assert cache_key(root, list(reversed(paths)), 16) != key  # order
    write_image(root / paths[0], value=7)  # same name, new pixels
    assert cache_key(root, paths, 16) != key


def test_changed_image_is_decoded_again(images, tmp_path):
    root, paths = images
    before = cached_images(root, paths, 16, directory=tmp_path / "cache")
    write_image(root / paths[1], value=250)
    after = cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert not torch.equal(before[1], after[1]) and torch.equal(before[0], after[0])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_corrupt_entry_is_ignored_and_rewritten(images, tmp_path):
    root, paths = images
    good = cached_images(root, paths, 16, directory=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.npy")
    entry.write_bytes(b"garbage")
    assert torch.equal(cached_images(root, paths, 16, directory=tmp_path / "cache"), good)
    assert np.load(entry).shape == (3, 3, 16, 16)


def test_unwritable_cache_still_returns_images(images, tmp_path):
    root, paths = images
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = cached_images(root, paths, 16, directory=blocker / "cache")
    assert out.shape == (3, 3, 16, 16)


def test_old_entries_are_pruned(tmp_path):
    for i in range(5):
        np.save(tmp_path / f"{i}.npy", np.zeros(1))
    cache._prune(tmp_path, keep=2)
    assert len(list(tmp_path.glob("*.npy"))) == 2
