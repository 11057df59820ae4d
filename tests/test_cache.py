"""The decoded-image cache: entries on disk read a batch at a time, hits for the same files and
size (by stat, or by content), misses when either changes, and no half-written entry read."""

import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import write_image
from visionpipe.core import cache
from visionpipe.core.augment import augment_batch
from visionpipe.core.batches import batches
from visionpipe.core.cache import (
    ConcatImages,
    DiskImages,
    cache_key,
    cached_images,
    quick_key,
)
from visionpipe.core.images import load_images
from visionpipe.core.params import Augment


def settle(root, age=10.0):
    """Date the files back, as files that were not written a moment ago."""
    past = time.time() - age
    for path in root.rglob("*.png"):
        os.utime(path, (past, past))


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "data"
    for i in range(7):
        write_image(root / f"c/{i}.png", value=60 + 25 * i)
    settle(root)
    return root, [f"c/{i}.png" for i in range(7)]


def never(*args, **kwargs):
    raise AssertionError("called despite a cache entry")


def test_entries_read_as_the_in_memory_tensor(images, tmp_path):
    """Every way of indexing a cached split gives the bytes load_images gives."""
    root, paths = images
    disk = cached_images(root, paths, 16, directory=tmp_path / "cache")
    memory = load_images(root, paths, 16)
    assert isinstance(disk, DiskImages) and disk.shape == memory.shape and len(disk) == 7
    assert torch.equal(disk[:], memory) and torch.equal(disk[2:5], memory[2:5])
    assert torch.equal(disk[::3], memory[::3]) and torch.equal(disk[-1], memory[-1])
    order = torch.tensor([6, 0, 3, 4, 5, 1, 1])
    assert torch.equal(disk[order], memory[order]) and disk[torch.tensor([])].shape[0] == 0
    with pytest.raises(IndexError):
        disk[torch.tensor([7])]
    with pytest.raises(IndexError):
        disk[7]
    assert disk[order].is_contiguous()
    disk[0][0, 0, 0] = 0  # a read is a copy: the entry stays as written
    assert torch.equal(disk[0], memory[0])


def test_streamed_batches_are_byte_identical_to_the_in_memory_path(images, tmp_path):
    """The training loop's batches (same seed): index order and augmentation alike."""
    root, paths = images
    disk = cached_images(root, paths, 16, directory=tmp_path / "cache")
    memory = load_images(root, paths, 16)
    cfg = Augment(ops=["hflip", "vflip", "rot90"])
    gen_disk, gen_memory = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(2):  # two epochs
        disk_batches = list(batches(len(disk), 3, shuffle=True, gen=gen_disk))
        memory_batches = list(batches(len(memory), 3, shuffle=True, gen=gen_memory))
        for a, b in zip(disk_batches, memory_batches, strict=True):
            assert torch.equal(a, b)
            x_disk = augment_batch(disk[a], cfg, gen_disk)
            x_memory = augment_batch(memory[b], cfg, gen_memory)
            assert torch.equal(x_disk, x_memory)


def test_masks_are_refused_and_concatenated_negatives_wrap(images, tmp_path):
    root, paths = images
    disk = cached_images(root, paths, 16, directory=tmp_path / "cache")
    with pytest.raises(TypeError, match="boolean masks"):
        disk[torch.ones(7, dtype=torch.bool)]
    whole = ConcatImages([disk, load_images(root, paths[:2], 16)])
    assert torch.equal(whole[torch.tensor([-1])][0], whole[8])
    with pytest.raises(IndexError):
        whole[torch.tensor([9])]
    empty = ConcatImages([disk[:0], disk])
    assert torch.equal(empty[torch.tensor([0, 6])], disk[torch.tensor([0, 6])])


def test_an_entry_pruned_after_it_was_found_stays_readable(images, tmp_path):
    """Another process may prune an entry between a stage finding it and reading it."""
    root, paths = images
    disk = cached_images(root, paths, 16, directory=tmp_path / "cache")
    expected = load_images(root, paths, 16)
    disk.path.unlink()
    assert torch.equal(disk[:], expected)


def test_a_read_only_shared_entry_is_used_without_touching_it(images, tmp_path, monkeypatch):
    root, paths = images
    first = cached_images(root, paths, 16, directory=tmp_path / "cache")[:]

    def refused(*args, **kwargs):
        raise PermissionError("not the owner")

    monkeypatch.setattr(cache.os, "utime", refused)
    assert torch.equal(cached_images(root, paths, 16, directory=tmp_path / "cache")[:], first)


def test_no_writable_cache_and_no_room_in_memory_is_one_line(images, tmp_path, monkeypatch):
    from visionpipe.core.errors import WriteFailed

    root, paths = images
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(cache.os, "sysconf", lambda name: 1)  # one byte free
    with pytest.raises(WriteFailed, match="do not fit in memory.*VISIONPIPE_CACHE"):
        cached_images(root, paths, 16, directory=blocker / "cache")


def test_files_changed_while_hashed_get_no_alias(images, tmp_path, monkeypatch):
    """The alias maps the stats seen before hashing: if a file changes meanwhile, the content
    hashed may not be the one those stats describe, so no alias is written."""
    root, paths = images
    real = cache.cache_key

    def changing(*args):
        key = real(*args)
        write_image(root / paths[2], value=3)  # rewritten while the split is hashed
        past = time.time() - 10
        os.utime(root / paths[2], (past, past))
        return key

    monkeypatch.setattr(cache, "cache_key", changing)
    cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.alias"))


def test_a_forked_or_unpickled_reader_opens_its_own_file(images, tmp_path):
    root, paths = images
    disk = cached_images(root, paths, 16, directory=tmp_path / "cache")
    first = disk[:3]
    copy = pickle.loads(pickle.dumps(disk))
    assert copy._fd is None and torch.equal(copy[:3], first)
    pid = os.fork()
    if pid == 0:  # the child reads through the inherited object
        os._exit(0 if torch.equal(disk[:3], first) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_second_read_stats_the_files_and_reads_none(images, tmp_path, monkeypatch):
    root, paths = images
    first = cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.alias"))) == 1
    monkeypatch.setattr(cache, "cache_key", never)  # no hashing of the files' bytes
    monkeypatch.setattr(cache, "iter_decoded", never)
    again = cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert torch.equal(first[:], again[:])


def test_content_check_hashes_every_time(images, tmp_path, monkeypatch):
    root, paths = images
    cached_images(root, paths, 16, directory=tmp_path / "cache", check="content")
    assert not list((tmp_path / "cache").glob("*.alias"))
    calls = []
    real = cache.cache_key
    monkeypatch.setattr(cache, "cache_key", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(cache, "iter_decoded", never)
    cached_images(root, paths, 16, directory=tmp_path / "cache", check="content")
    assert calls == [1]
    with pytest.raises(ValueError, match="check must be one of"):
        cached_images(root, paths, 16, directory=tmp_path / "cache", check="mtime")


def test_touched_or_moved_files_find_the_entry_by_content(images, tmp_path, monkeypatch):
    """A fresh checkout or an experiment's copy of the data: new times or a new folder miss
    the stat key, then the content key finds the same entry without decoding."""
    root, paths = images
    first = cached_images(root, paths, 16, directory=tmp_path / "cache")
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    settle(moved, age=5.0)
    monkeypatch.setattr(cache, "iter_decoded", never)
    again = cached_images(moved, paths, 16, directory=tmp_path / "cache")
    assert torch.equal(first[:], again[:])
    assert len(list((tmp_path / "cache").glob("*.alias"))) == 2


def test_key_changes_with_size_split_and_content(images):
    root, paths = images
    key, _ = quick_key(root, paths, 16)
    assert cache_key(root, paths, 16) == cache_key(root, paths, 16)
    assert quick_key(root, paths, 16)[0] == key
    for other in (paths[:2], list(reversed(paths))):  # membership, order
        assert quick_key(root, other, 16)[0] != key and cache_key(root, other, 16) != key
    assert quick_key(root, paths, 24)[0] != key
    content = cache_key(root, paths, 16)
    write_image(root / paths[0], value=7)  # same name, new pixels
    assert quick_key(root, paths, 16)[0] != key and cache_key(root, paths, 16) != content


def test_changed_image_is_decoded_again(images, tmp_path):
    root, paths = images
    before = cached_images(root, paths, 16, directory=tmp_path / "cache")
    write_image(root / paths[1], value=250)
    after = cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert not torch.equal(before[1], after[1]) and torch.equal(before[0], after[0])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_a_file_written_just_now_is_checked_by_content(images, tmp_path):
    """Within its clock's resolution a file can change again with the same size and time:
    no stat alias is kept for it, so its next change is seen."""
    root, paths = images
    write_image(root / paths[0], value=9)  # just now
    cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.alias"))


def test_entry_cut_short_is_reported_and_decoded_again(images, tmp_path, caplog):
    root, paths = images
    good = cached_images(root, paths, 16, directory=tmp_path / "cache")[:]
    (entry,) = (tmp_path / "cache").glob("*.npy")
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) - 100])
    again = cached_images(root, paths, 16, directory=tmp_path / "cache")
    assert torch.equal(again[:], good)
    assert "is broken" in caplog.text and "cut short" in caplog.text
    assert np.load(entry).shape == (7, 3, 16, 16)  # rewritten whole


def test_garbage_entry_is_ignored_and_rewritten(images, tmp_path):
    root, paths = images
    good = cached_images(root, paths, 16, directory=tmp_path / "cache")[:]
    (entry,) = (tmp_path / "cache").glob("*.npy")
    entry.write_bytes(b"garbage")
    assert torch.equal(cached_images(root, paths, 16, directory=tmp_path / "cache")[:], good)
    assert np.load(entry).shape == (7, 3, 16, 16)


KILLED_DECODE = """
import os, sys
from pathlib import Path
from visionpipe.core import cache, images

real, count = images.decode_image, [0]
def dying(path, size):
    count[0] += 1
    if count[0] == 4:
        os._exit(9)  # killed halfway: nothing is cleaned up
    return real(path, size)
images.decode_image = dying
root = Path(sys.argv[1])
cache.cached_images(root, [f"c/{i}.png" for i in range(7)], 16, directory=Path(sys.argv[2]))
"""


def test_a_killed_decode_leaves_no_entry_that_is_read_later(images, tmp_path):
    root, paths = images
    directory = tmp_path / "cache"
    cmd = [sys.executable, "-c", KILLED_DECODE, str(root), str(directory)]
    assert subprocess.run(cmd, check=False).returncode == 9
    assert not list(directory.glob("*.npy")) and not list(directory.glob("*.alias"))
    (partial,) = directory.glob(".*.tmp")  # the killed process's temporary file
    again = cached_images(root, paths, 16, directory=directory)
    assert torch.equal(again[:], load_images(root, paths, 16))
    assert partial.exists()  # recent: it could belong to a decode still running
    old = time.time() - cache.STALE_TEMP_SECONDS - 60
    os.utime(partial, (old, old))
    cache._prune(directory)
    assert not partial.exists()


def test_unwritable_cache_still_returns_images(images, tmp_path):
    root, paths = images
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = cached_images(root, paths, 16, directory=blocker / "cache")
    assert isinstance(out, torch.Tensor) and out.shape == (7, 3, 16, 16)


def test_old_entries_and_dangling_aliases_are_pruned(tmp_path):
    for i in range(5):
        np.save(tmp_path / f"{i}.npy", np.zeros(1))
        os.utime(tmp_path / f"{i}.npy", (i, i))
    (tmp_path / "a.alias").write_text("4\n")
    (tmp_path / "b.alias").write_text("0\n")
    cache._prune(tmp_path, keep=2)
    assert sorted(p.stem for p in tmp_path.glob("*.npy")) == ["3", "4"]
    assert [p.stem for p in tmp_path.glob("*.alias")] == ["a"]


def test_concatenated_splits_index_as_one(images, tmp_path):
    root, paths = images
    parts = [
        cached_images(root, paths[:3], 16, directory=tmp_path),
        load_images(root, paths[3:], 16),
    ]
    whole = ConcatImages(parts)
    memory = load_images(root, paths, 16)
    assert len(whole) == 7 and whole.shape == memory.shape
    order = torch.tensor([6, 0, 3, 2, 4])
    assert torch.equal(whole[order], memory[order]) and torch.equal(whole[5], memory[5])
    assert torch.equal(whole[1:6], memory[1:6])


def test_scaled_images_of_different_sizes_read_one_at_a_time(tmp_path, caplog):
    """Detection's splits: each image at its own scale, in one entry, read as asked."""
    from visionpipe.core.cache import RaggedImages, cached_scaled
    from visionpipe.core.images import decode_scaled

    root = tmp_path / "data"
    sizes = [(40, 30), (24, 20), (50, 50)]
    for i, size in enumerate(sizes):
        write_image(root / f"{i}.png", value=50 + 60 * i, size=size, mode="RGB")
    settle(root)
    paths, scales = [f"{i}.png" for i in range(3)], [0.5, 1.0, 0.3]
    expected = [decode_scaled(root / p, s) for p, s in zip(paths, scales, strict=True)]
    images = cached_scaled(root, paths, scales, directory=tmp_path / "cache")
    assert isinstance(images, RaggedImages) and len(images) == 3
    for got, want in zip(images, expected, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(images[torch.tensor(2)], expected[2]) and len(images[1:]) == 2
    with pytest.raises(IndexError):
        images[3]
    # other scales are another entry; the same ones a hit without decoding
    assert len(cached_scaled(root, paths, [1.0, 1.0, 1.0], directory=tmp_path / "cache")) == 3
    assert len(list((tmp_path / "cache").glob("*.ragged"))) == 2
    real = cache.iter_mapped
    cache.iter_mapped = never  # a hit decodes nothing
    try:
        again = cached_scaled(root, paths, scales, directory=tmp_path / "cache")
    finally:
        cache.iter_mapped = real
    assert torch.equal(again[0], expected[0])
    # cut short: reported, decoded again
    entry = again.path
    data = entry.read_bytes()
    entry.write_bytes(data[:-20])
    rebuilt = cached_scaled(root, paths, scales, directory=tmp_path / "cache")
    assert "is broken" in caplog.text and torch.equal(rebuilt[2], expected[2])
    # no writable cache: a list in memory
    blocker = tmp_path / "file"
    blocker.write_text("x")
    listed = cached_scaled(root, paths, scales, directory=blocker / "cache")
    assert isinstance(listed, list) and torch.equal(listed[1], expected[1])
