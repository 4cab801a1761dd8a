"""MNIST, Fashion-MNIST and CIFAR-10: real parsing of the official formats.

- MNIST / Fashion-MNIST: the IDX format (big-endian header: 2 zero bytes, a type byte, the number of
  dimensions, then one uint32 per dimension; then the data, row-major).
- CIFAR-10: the official *binary version* (cifar-10-batches-bin/*.bin, records of 1 label byte +
  3072 pixel bytes, R then G then B planes). Never the pickled version.
"""

from __future__ import annotations

import functools
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

from seminal.core.errors import SeminalError
from seminal.core.paths import cache_dir, data_search_path
from seminal.data.store import DataFile, Dataset, find_local, locate, read_verified

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST = Dataset(
    name="mnist",
    title="MNIST",
    folder="mnist",
    files=(
        DataFile("train-images-idx3-ubyte.gz",
                 "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
        DataFile("train-labels-idx1-ubyte.gz",
                 "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
        DataFile("t10k-images-idx3-ubyte.gz",
                 "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
        DataFile("t10k-labels-idx1-ubyte.gz",
                 "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
    ),
    urls=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    license="CC BY-SA 3.0 (Y. LeCun, C. Cortes)",
    citation="LeCun, Bottou, Bengio & Haffner 1998",
)

FASHION_MNIST = Dataset(
    name="fashion-mnist",
    title="Fashion-MNIST",
    folder="fashion-mnist",
    folder_aliases=("fashion_mnist",),
    files=(
        DataFile("train-images-idx3-ubyte.gz",
                 "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
        DataFile("train-labels-idx1-ubyte.gz",
                 "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
        DataFile("t10k-images-idx3-ubyte.gz",
                 "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
        DataFile("t10k-labels-idx1-ubyte.gz",
                 "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
    ),
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    license="MIT (Zalando Research)",
    citation="Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747",
)

_CIFAR_DIR = "cifar-10-batches-bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR10 = Dataset(
    name="cifar10",
    title="CIFAR-10 (binary version)",
    folder="cifar10",
    folder_aliases=("cifar-10", "cifar10-bin"),
    files=tuple(DataFile(f"{_CIFAR_DIR}/data_batch_{i}.bin", None, 10000 * _CIFAR_RECORD) for i in range(1, 6))
    + (DataFile(f"{_CIFAR_DIR}/test_batch.bin", None, 10000 * _CIFAR_RECORD),),
    urls=("https://www.cs.toronto.edu/~kriz/",),
    archive="cifar-10-binary.tar.gz",
    download_sha256={"cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
    license="see https://www.cs.toronto.edu/~kriz/cifar.html",
    citation="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, CIFAR10)}


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse an IDX buffer into an array, checking the header against the payload length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise SeminalError(f"{source} is not an IDX file (bad magic number); fetch it again")
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SeminalError(f"{source}: truncated IDX header; fetch it again")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise SeminalError(f"{source}: IDX header says {expected} bytes, file has {len(data)}; fetch it again")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_split(ds: Dataset, split: str, folder: Path | None) -> tuple[np.ndarray, np.ndarray]:
    if split not in ("train", "test"):
        raise SeminalError(f"unknown split '{split}': use 'train' or 'test'")
    folder = folder or locate(ds)
    prefix = "train" if split == "train" else "t10k"
    specs = {f.name: f for f in ds.files}
    img_spec, lab_spec = specs[f"{prefix}-images-idx3-ubyte.gz"], specs[f"{prefix}-labels-idx1-ubyte.gz"]
    images = parse_idx(read_verified(folder / img_spec.name, img_spec), str(folder / img_spec.name))
    labels = parse_idx(read_verified(folder / lab_spec.name, lab_spec), str(folder / lab_spec.name))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise SeminalError(f"{ds.title} in {folder}: images {images.shape} and labels {labels.shape} disagree")
    if labels.max(initial=0) > 9:
        raise SeminalError(f"{ds.title} in {folder}: labels outside 0..9; the label file is corrupt")
    return images, labels.astype(np.int64)


@functools.lru_cache(maxsize=8)
def load_mnist(split: str = "train", folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 28, 28) uint8 and labels (N,) int64."""
    return _idx_split(MNIST, split, folder)


def mnist_flat(split: str, limit: int = 0, device=None):
    """MNIST as torch tensors: images (N, 784) float32 in [0, 1] and labels (N,) int64; `limit` keeps the first N."""
    import torch

    images, labels = load_mnist(split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.tensor(images.reshape(len(images), -1), dtype=torch.float32, device=device) / 255.0  # (N, 784)
    return x, torch.tensor(labels, device=device)


@functools.lru_cache(maxsize=8)
def load_fashion_mnist(split: str = "train", folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and labels (N,) int64."""
    return _idx_split(FASHION_MNIST, split, folder)


def parse_cifar_batch(data: bytes, source: str = "CIFAR-10 batch") -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file -> images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    if len(data) % _CIFAR_RECORD:
        raise SeminalError(f"{source}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte records")
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max(initial=0) > 9:
        raise SeminalError(f"{source}: label bytes outside 0..9; the file is corrupt or not CIFAR-10")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _cifar_folder() -> Path:
    folder = find_local(CIFAR10)
    if folder is not None:
        return folder
    # The shared JPEG copy: write the binary layout once into the cache with the tool beside it.
    for root in data_search_path():
        tool = root.parent / "tools" / "cifar10_from_jpeg.py"
        if (root / "cifar10" / "cifar10-jpeg.zip").is_file() and tool.is_file():
            dest = cache_dir() / "data" / "cifar10"
            print(f"writing CIFAR-10's binary layout from {root / 'cifar10'} into {dest} (once)", file=sys.stderr)
            subprocess.run([sys.executable, str(tool), str(dest)], check=True, capture_output=True)
            return dest
    return locate(CIFAR10)


@functools.lru_cache(maxsize=4)
def load_cifar10(split: str = "train", folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images (N, 3, 32, 32) uint8 and labels (N,) int64 from the binary version."""
    if split not in ("train", "test"):
        raise SeminalError(f"unknown split '{split}': use 'train' or 'test'")
    folder = folder or _cifar_folder()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    specs = {f.name: f for f in CIFAR10.files}
    parts = [parse_cifar_batch(read_verified(folder / _CIFAR_DIR / n, specs[f"{_CIFAR_DIR}/{n}"]),
                               str(folder / _CIFAR_DIR / n)) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
