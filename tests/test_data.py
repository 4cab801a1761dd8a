"""Data layer: IDX and CIFAR parsing on tiny files the tests write, checksums, discovery and errors."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from conftest import write_idx

from seminal.core.errors import SeminalError
from seminal.data import MNIST, parse_cifar_batch, parse_idx
from seminal.data.store import DataFile, Dataset, locate, read_verified, verify
from seminal.data.vision import _idx_split, load_cifar10


def _tiny_mnist(folder, n_train=12, n_test=5):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files, arrays = [], {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte.gz"
            content = write_idx(folder / name, arr)
            files.append(DataFile(name, hashlib.sha256(content).hexdigest(), len(content)))
        arrays[prefix] = (images, labels)
    return dataclasses.replace(MNIST, files=tuple(files), urls=()), arrays


def test_parse_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    content = write_idx(tmp_path / "x.gz", arr)
    np.testing.assert_array_equal(parse_idx(content), arr)


def test_parse_idx_rejects_truncation_and_bad_magic(tmp_path):
    content = write_idx(tmp_path / "x.gz", np.zeros((2, 3), np.uint8))
    with pytest.raises(SeminalError, match="IDX header says"):
        parse_idx(content[:-1])
    with pytest.raises(SeminalError, match="not an IDX"):
        parse_idx(b"\x01\x02" + content[2:])


def test_loader_reads_tiny_mnist_from_seminal_data(isolated_cache):
    spec, arrays = _tiny_mnist(isolated_cache / "data" / "mnist")
    folder = locate(spec)
    assert folder == isolated_cache / "data" / "mnist"
    images, labels = _idx_split(spec, "train", folder)
    np.testing.assert_array_equal(images, arrays["train"][0])
    np.testing.assert_array_equal(labels, arrays["train"][1].astype(np.int64))
    assert labels.dtype == np.int64
    assert all(status == "ok" for _, status in verify(spec, folder))


def test_corrupt_file_is_an_error_not_garbage(isolated_cache):
    spec, _ = _tiny_mnist(isolated_cache / "data" / "mnist")
    path = isolated_cache / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    import gzip

    content = bytearray(gzip.decompress(path.read_bytes()))
    content[100] ^= 0xFF  # one flipped pixel
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(SeminalError, match="corrupt data file .*sha256"):
        _idx_split(spec, "train", path.parent)
    path.write_bytes(path.read_bytes()[:40])  # truncated gzip
    with pytest.raises(SeminalError, match="corrupt data file"):
        read_verified(path, spec.files[0])
    assert any(status != "ok" for _, status in verify(spec, path.parent))


def test_missing_dataset_offline_names_where_to_put_it(isolated_cache):
    with pytest.raises(SeminalError, match=r"SEMINAL_DATA/mnist"):
        locate(MNIST)


def test_real_mnist_checksums_are_the_published_ones():
    # The spec's content SHA-256s must be those of the real files: hash a local MNIST (../shared/data here) found
    # without the checksum, by name only, and compare. Skipped where no copy is on disk.
    import gzip

    from seminal.data.store import candidates

    folders = [c for c in candidates(MNIST) if (c / MNIST.files[0].name).is_file()]
    if not folders:
        pytest.skip("no local MNIST copy to hash")
    for f in MNIST.files:
        raw = (folders[0] / f.name).read_bytes()
        content = gzip.decompress(raw) if f.name.endswith(".gz") else raw
        assert hashlib.sha256(content).hexdigest() == f.content_sha256, f.name


def test_cifar_binary_records(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    pixels = rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    record = np.concatenate([labels[:, None], pixels.reshape(7, -1)], axis=1)
    images, got = parse_cifar_batch(record.tobytes())
    np.testing.assert_array_equal(images, pixels)  # R plane, then G, then B, row-major
    np.testing.assert_array_equal(got, labels)
    with pytest.raises(SeminalError, match="whole number"):
        parse_cifar_batch(record.tobytes()[:-5])
    bad = record.copy()
    bad[0, 0] = 11
    with pytest.raises(SeminalError, match="outside 0..9"):
        parse_cifar_batch(bad.tobytes())


def test_cifar_loader_reads_binary_layout(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    expected = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = rng.integers(0, 256, (10000, 3073), dtype=np.uint8)
        rec[:, 0] %= 10
        (folder / name).write_bytes(rec.tobytes())
        expected[name] = rec
    images, labels = load_cifar10.__wrapped__("test", tmp_path / "cifar10")
    assert images.shape == (10000, 3, 32, 32)
    np.testing.assert_array_equal(labels, expected["test_batch.bin"][:, 0])
    (folder / "test_batch.bin").write_bytes(expected["test_batch.bin"].tobytes()[:-3073])
    with pytest.raises(SeminalError, match="corrupt data file"):
        load_cifar10.__wrapped__("test", tmp_path / "cifar10")


def test_unknown_split():
    with pytest.raises(SeminalError, match="unknown split"):
        _idx_split(Dataset("x", "X", "x", ()), "validation", None)


def _real(ds):
    from seminal.data.store import find_local

    folder = find_local(ds)
    if folder is None:
        pytest.skip(f"no local copy of {ds.title}")
    return folder


def test_real_mnist_class_counts():
    from seminal.data import load_mnist

    _real(MNIST)
    images, labels = load_mnist("train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    # Per-class counts published with the dataset (and in shared/data/mnist/SOURCES.md).
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(load_mnist("test")[1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist_is_balanced():
    from seminal.data import FASHION_MNIST, load_fashion_mnist

    _real(FASHION_MNIST)
    images, labels = load_fashion_mnist("train")
    assert images.shape == (60000, 28, 28)
    assert np.bincount(labels).tolist() == [6000] * 10  # Fashion-MNIST has 6,000 images per class


def test_a_file_that_failed_its_check_is_never_served_from_the_check_cache(isolated_cache):
    from seminal.data.store import check_file

    spec, _ = _tiny_mnist(isolated_cache / "data" / "mnist")
    path = isolated_cache / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    file_spec = next(f for f in spec.files if f.name == path.name)
    import gzip

    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] = (content[-1] + 1) % 10  # one label changed, still a valid IDX file
    path.write_bytes(gzip.compress(bytes(content)))
    assert "sha256" in check_file(path, file_spec)  # the failure is now in the per-process cache
    for _ in range(2):
        with pytest.raises(SeminalError, match="corrupt data file .*sha256"):
            read_verified(path, file_spec)


def test_images_flat_scales_pixels_to_the_unit_interval(monkeypatch):
    import torch

    from seminal.data import vision

    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 0, :3] = (255, 51, 0)  # 255 -> 1, 51 -> 0.2, 0 -> 0
    images[1, 27, 27] = 102
    monkeypatch.setattr(vision, "load_images", lambda name, split: (images, np.array([3, 7])))
    x, y = vision.images_flat("mnist", "train")
    assert x.shape == (2, 784) and x.dtype == torch.float32 and y.tolist() == [3, 7]
    assert x[0, :3].tolist() == pytest.approx([1.0, 0.2, 0.0]) and x[1, 783].item() == pytest.approx(0.4)
    assert float(x.sum()) == pytest.approx(1.0 + 0.2 + 0.4)
