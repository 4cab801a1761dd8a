"""Data that is found, checked and safe: content-checked discovery, fetch over a damaged copy, the CIFAR-10
JPEG zip read by seminal itself (cached, rebuilt when damaged), no code run from beside the data, safe
archive extraction, honest `verify` for unchecksummed files, download progress and the processed cache."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import urllib.request
import zipfile

import numpy as np
import pytest
from conftest import write_idx

from seminal import cli
from seminal.core.errors import SeminalError
from seminal.data import CIFAR10, CIFAR10_CLASSES, CIFAR10_JPEG, MNIST, cached_arrays, load_images, store, vision
from seminal.data.processed import entry_dir
from seminal.data.store import DataFile, check_file, copy_with_progress, discover, fetch, locate, unpack_archive
from seminal.data.vision import _idx_split, load_cifar10, load_cifar10_jpeg


@pytest.fixture(autouse=True)
def _fresh_loaders():
    """Loaders memoise per process; tests swap dataset specs, so start and end with empty memos."""
    for f in (load_cifar10, vision.load_mnist, vision.load_fashion_mnist):
        f.cache_clear()
    yield
    for f in (load_cifar10, vision.load_mnist, vision.load_fashion_mnist):
        f.cache_clear()


def _tiny_mnist(folder, seed=0):
    """Four tiny IDX files in `folder`; returns a spec whose checksums are theirs, and the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files, arrays = [], {}
    for prefix, n in (("train", 6), ("t10k", 3)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte.gz"
            content = write_idx(folder / name, arr)
            files.append(DataFile(name, hashlib.sha256(content).hexdigest(), len(content)))
        arrays[prefix] = (images, labels)
    return dataclasses.replace(MNIST, files=tuple(files), urls=()), arrays


def _damage(path):
    """Flip one pixel inside a gzipped file: still a valid gzip of the right size, wrong content."""
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(content)))


def _copy_tree(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())


# ---- discovery checks content and falls through ----------------------------------------------------------


def test_damaged_copy_in_seminal_data_falls_through_to_a_good_copy(isolated_cache, monkeypatch, capsys):
    first, second = isolated_cache / "first", isolated_cache / "second"
    spec, arrays = _tiny_mnist(second / "mnist")
    _copy_tree(second / "mnist", first / "mnist")
    _damage(first / "mnist" / "train-images-idx3-ubyte.gz")
    monkeypatch.setenv("SEMINAL_DATA", f"{first}{os.pathsep}{second}")

    found = discover(spec)
    assert found.folder == second / "mnist"
    assert [s.file for s in found.skipped] == [first / "mnist" / "train-images-idx3-ubyte.gz"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and str(first / "mnist" / "train-images-idx3-ubyte.gz") in err
    images, _ = _idx_split(spec, "train", None)  # the loader reads the good copy
    np.testing.assert_array_equal(images, arrays["train"][0])
    assert capsys.readouterr().err == ""  # warned once, not on every look-up


def test_only_damaged_copies_is_one_error_naming_the_damage(isolated_cache, capsys):
    spec, _ = _tiny_mnist(isolated_cache / "data" / "mnist")
    _damage(isolated_cache / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(SeminalError, match="no good copy of MNIST: corrupt data file .*t10k-labels"):
        locate(spec)
    assert capsys.readouterr().err == ""  # the error carries the news; no warning as well


def test_a_load_does_not_hash_a_file_twice(isolated_cache, monkeypatch):
    spec, _ = _tiny_mnist(isolated_cache / "data" / "mnist")
    assert discover(spec).folder is not None
    calls = []
    real = store.sha256_bytes
    monkeypatch.setattr(store, "sha256_bytes", lambda data: calls.append(1) or real(data))
    _idx_split(spec, "train", None)
    assert calls == []  # discovery's check of these very files (same size, mtime, inode) is reused
    path = isolated_cache / "data" / "mnist" / "train-images-idx3-ubyte.gz"
    _damage(path)  # a changed file is a new file: checked again
    with pytest.raises(SeminalError, match="corrupt data file"):
        store.read_verified(path, spec.files[0])


# ---- fetch replaces a damaged copy -------------------------------------------------------------------------


def test_fetch_replaces_a_damaged_cache_copy(isolated_cache, monkeypatch, capsys):
    server = isolated_cache / "server"
    spec, arrays = _tiny_mnist(server)
    spec = dataclasses.replace(spec, urls=(server.as_uri() + "/",))
    cached = isolated_cache / "cache" / "data" / "mnist"
    _copy_tree(server, cached)
    _damage(cached / "train-labels-idx1-ubyte.gz")
    monkeypatch.setitem(vision.DATASETS, "mnist", spec)

    assert cli.main(["data", "fetch", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "already present" not in out and "downloaded" in out and "replacing the damaged copy" in out
    assert all(check_file(cached / f.name, f) is None for f in spec.files)
    assert cli.main(["data", "fetch", "mnist"]) == 0
    assert "already present" in capsys.readouterr().out


def test_download_checks_sha256_and_shows_no_bar_off_a_terminal(tmp_path, monkeypatch, capsys):
    payload = bytes(range(256)) * 5000

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Response(payload))
    store._download("https://example.org/x.bin", tmp_path / "x.bin", hashlib.sha256(payload).hexdigest())
    assert (tmp_path / "x.bin").read_bytes() == payload
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest: no bar
    with pytest.raises(SeminalError, match="has sha256"):
        store._download("https://example.org/x.bin", tmp_path / "y.bin", "0" * 64)
    assert not (tmp_path / "y.bin").exists()


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    src = bytes(3 << 20)
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        dst = io.BytesIO()
        assert copy_with_progress(io.BytesIO(src), dst, len(src), "mnist.gz", stream) == len(src)
        assert dst.getvalue() == src
        text = stream.getvalue()
        assert ("mnist.gz" in text and "3.00M" in text) if shown else text == ""  # name, size in MiB


# ---- the CIFAR-10 JPEG zip, read by seminal ------------------------------------------------------------------


def _colour(split, c, k):
    """A distinct flat colour per image, so decode order and channels can be checked after JPEG."""
    return (20 * c + 10, 200 - 60 * k - (split == "test") * 30, 17 * c + 40 * k + 5)


def _tiny_cifar_zip(path, per_class=None):
    from PIL import Image

    per_class = per_class or {"train": 2, "test": 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for split, n in per_class.items():
            for c, cls in enumerate(CIFAR10_CLASSES):
                for k in range(n):
                    buf = io.BytesIO()
                    Image.new("RGB", (32, 32), _colour(split, c, k)).save(buf, "JPEG", quality=95)
                    zf.writestr(f"{split}/{cls}/{k:04d}.jpg", buf.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected(split, n):
    images = np.array([[_colour(split, c, k) for c in range(10)] for k in range(n)], np.int16).reshape(-1, 3)
    return images, np.tile(np.arange(10), n)  # item 10*k + c is image k of class c


def test_jpeg_zip_is_decoded_in_order_and_cached(isolated_cache, monkeypatch):
    zip_path = isolated_cache / "data" / "cifar10" / "cifar10-jpeg.zip"
    sha = _tiny_cifar_zip(zip_path)
    images, labels = load_cifar10_jpeg(zip_path, "train", sha)
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    colours, want_labels = _expected("train", 2)
    assert np.abs(images.astype(np.int16).mean(axis=(2, 3)) - colours).max() <= 3  # R, G, B planes, in order
    np.testing.assert_array_equal(labels, want_labels)
    assert load_cifar10_jpeg(zip_path, "test", sha)[0].shape == (10, 3, 32, 32)

    monkeypatch.setattr(vision, "decode_cifar_jpeg_zip", lambda *a: pytest.fail("decoded again: cache missed"))
    hit_images, hit_labels = load_cifar10_jpeg(zip_path, "train", sha)
    np.testing.assert_array_equal(hit_images, images)
    np.testing.assert_array_equal(hit_labels, labels)
    with pytest.raises(SeminalError, match="corrupt data file .*sha256"):
        load_cifar10_jpeg(zip_path, "train", "0" * 64)  # the zip's checksum is checked before use


def test_damaged_decoded_cache_is_rebuilt_with_a_warning(isolated_cache, monkeypatch, capsys):
    zip_path = isolated_cache / "data" / "cifar10" / "cifar10-jpeg.zip"
    sha = _tiny_cifar_zip(zip_path)
    images, _ = load_cifar10_jpeg(zip_path, "test", sha)
    (entry,) = (isolated_cache / "cache" / "processed").iterdir()
    npy = entry / "images.npy"
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF  # one pixel of the cached array
    npy.write_bytes(bytes(raw))

    decodes = []
    real = vision.decode_cifar_jpeg_zip
    monkeypatch.setattr(vision, "decode_cifar_jpeg_zip", lambda *a: decodes.append(1) or real(*a))
    again, _ = load_cifar10_jpeg(zip_path, "test", sha)
    assert decodes == [1]
    np.testing.assert_array_equal(again, images)
    assert "damaged" in capsys.readouterr().err
    load_cifar10_jpeg(zip_path, "test", sha)
    assert decodes == [1]  # the rebuilt entry is intact


def test_jpeg_zip_with_the_wrong_layout_is_an_error(tmp_path, isolated_cache):
    zip_path = tmp_path / "bad.zip"
    sha = _tiny_cifar_zip(zip_path, {"test": 1})
    with pytest.raises(SeminalError, match="not CIFAR-10's JPEG copy"):
        load_cifar10_jpeg(zip_path, "train", sha)


def test_no_code_beside_the_data_is_run(isolated_cache, monkeypatch):
    root = isolated_cache / "data"
    zip_path = root / "cifar10" / "cifar10-jpeg.zip"
    sha = _tiny_cifar_zip(zip_path)
    marker = isolated_cache / "RAN"
    for tools in (isolated_cache / "tools", root / "tools", root / "cifar10" / "tools"):
        tools.mkdir(parents=True, exist_ok=True)
        (tools / "cifar10_from_jpeg.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    jpeg = dataclasses.replace(CIFAR10_JPEG, files=(DataFile(zip_path.name, sha, zip_path.stat().st_size),))
    monkeypatch.setattr(vision, "CIFAR10", dataclasses.replace(CIFAR10, alternatives=(jpeg,)))

    def refuse(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "system", refuse)
    images, labels = load_images("cifar10", "test")
    assert images.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(labels, np.arange(10))
    assert not marker.exists()


def test_load_images_names_the_choices():
    with pytest.raises(SeminalError, match="unknown image dataset 'svhn': use one of mnist, fashion-mnist, cifar10"):
        load_images("svhn", "train")


# ---- archives: checksum first, then unpack with a filter ------------------------------------------------------


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpack_refuses_path_traversal(tmp_path):
    archive = tmp_path / "a.tar.gz"
    _tar(archive, {"ok.txt": b"fine", "../evil.txt": b"owned"})
    with pytest.raises(SeminalError, match="refusing to unpack a.tar.gz"):
        unpack_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    _tar(archive, {"ok.txt": b"fine", str(tmp_path / "evil.txt"): b"owned"})  # absolute: kept inside dest
    unpack_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
    assert (tmp_path / "out" / "ok.txt").read_bytes() == b"fine"
    link = tmp_path / "l.tar.gz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("escape")
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tar.addfile(info)
    with pytest.raises(SeminalError, match="refusing to unpack"):
        unpack_archive(link, tmp_path / "out2")


def _tiny_cifar_binary(n=3, seed=3):
    rng = np.random.default_rng(seed)
    rec = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
    rec[:, 0] %= 10
    return rec


def test_fetch_checks_the_archive_then_unpacks_it_safely(isolated_cache):
    server = isolated_cache / "server"
    server.mkdir()
    rec = _tiny_cifar_binary()
    name = "cifar-10-batches-bin/test_batch.bin"
    spec = dataclasses.replace(CIFAR10, files=(DataFile(name, None, rec.size),), urls=(server.as_uri() + "/",),
                               alternatives=())
    good = _tar(server / spec.archive, {name: rec.tobytes()})
    with pytest.raises(SeminalError, match="has sha256"):
        fetch(dataclasses.replace(spec, download_sha256={spec.archive: "0" * 64}))
    folder = fetch(dataclasses.replace(spec, download_sha256={spec.archive: good}))
    assert (folder / name).read_bytes() == rec.tobytes()

    evil = _tar(server / spec.archive, {name: rec.tobytes(), "../../../evil.txt": b"owned"})
    with pytest.raises(SeminalError, match="refusing to unpack"):
        fetch(dataclasses.replace(spec, download_sha256={spec.archive: evil}))
    assert not any(p.name == "evil.txt" for p in isolated_cache.rglob("*"))


# ---- verify says plainly what it could not check ------------------------------------------------------------


def test_cifar_verify_does_not_say_ok_for_unchecksummed_files(isolated_cache, monkeypatch, capsys):
    folder = isolated_cache / "data" / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rec = _tiny_cifar_binary()
    (folder / "test_batch.bin").write_bytes(rec.tobytes())
    spec = dataclasses.replace(CIFAR10, files=(DataFile("cifar-10-batches-bin/test_batch.bin", None, rec.size),))
    monkeypatch.setitem(vision.DATASETS, "cifar10", spec)

    assert cli.main(["data", "verify", "cifar10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("ok") for line in lines), lines
    assert any(line.startswith("unchecked") and "structure-checked only" in line for line in lines)
    rec[1, 0] = 200  # a label byte outside 0..9: same size, bad structure
    (folder / "test_batch.bin").write_bytes(rec.tobytes())
    assert cli.main(["data", "verify", "cifar10"]) == 2
    out = capsys.readouterr().out
    assert "BAD" in out and "outside 0..9" in out


def test_data_list_shows_where_and_what_was_skipped(isolated_cache, monkeypatch, capsys):
    first, second = isolated_cache / "first", isolated_cache / "second"
    spec, _ = _tiny_mnist(second / "mnist")
    _copy_tree(second / "mnist", first / "mnist")
    _damage(first / "mnist" / "t10k-images-idx3-ubyte.gz")
    monkeypatch.setenv("SEMINAL_DATA", f"{first}{os.pathsep}{second}")
    monkeypatch.setitem(vision.DATASETS, "mnist", spec)
    assert cli.main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"found: {second / 'mnist'}" in out
    assert "skipped damaged copy" in out and str(first / "mnist" / "t10k-images-idx3-ubyte.gz") in out


# ---- the processed-data cache -------------------------------------------------------------------------------


def test_processed_cache_is_keyed_by_source_and_settings(isolated_cache):
    builds = []

    def build(scale):
        return lambda: builds.append(scale) or {"x": np.arange(6, dtype=np.float32).reshape(2, 3) * scale}

    a = cached_arrays("toy", "a" * 64, {"scale": 2}, build(2))
    b = cached_arrays("toy", "a" * 64, {"scale": 2}, build(2))  # another paper, same data, same settings
    np.testing.assert_array_equal(b["x"], np.array([[0, 2, 4], [6, 8, 10]], np.float32))
    np.testing.assert_array_equal(a["x"], b["x"])
    assert builds == [2]
    cached_arrays("toy", "a" * 64, {"scale": 3}, build(3))  # other settings: another entry
    cached_arrays("toy", "b" * 64, {"scale": 2}, build(2))  # another source: another entry
    assert builds == [2, 3, 2]
    assert len({entry_dir("toy", s, {"scale": k}) for s, k in (("a" * 64, 2), ("a" * 64, 3), ("b" * 64, 2))}) == 3


@pytest.mark.slow
def test_real_cifar10_jpeg_test_split(tmp_path, monkeypatch):
    from seminal.core.paths import data_search_path

    monkeypatch.setenv("SEMINAL_CACHE", str(tmp_path / "cache"))
    zips = [r / "cifar10" / "cifar10-jpeg.zip" for r in data_search_path()]
    zips = [z for z in zips if z.is_file()]
    if not zips:
        pytest.skip("no local copy of CIFAR-10's JPEG zip")
    images, labels = load_cifar10_jpeg(zips[0], "test")
    assert images.shape == (10000, 3, 32, 32)
    assert np.bincount(labels).tolist() == [1000] * 10
    # Per-channel means published in shared/data/cifar10/SOURCES.md (test split): 0.4941, 0.4851, 0.4504.
    np.testing.assert_allclose(images.mean(axis=(0, 2, 3)) / 255, [0.4941, 0.4851, 0.4504], atol=2e-4)
    import PIL

    if PIL.__version__.startswith("13."):  # SOURCES.md: test_batch.bin written with Pillow 13.0.0 has sha256 2696e48a…
        rec = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
        assert hashlib.sha256(rec.tobytes()).hexdigest().startswith("2696e48a")
