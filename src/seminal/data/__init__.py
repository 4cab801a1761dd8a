"""Datasets: real loaders with checksums, local discovery and download (see `seminal.data.store`).

Papers take images with `load_images(name, split)` (`name` in IMAGE_DATASETS, a config key), and cache
their own processed arrays with `cached_arrays` (`seminal.data.processed`), shared by source checksum.
"""

from seminal.data.processed import cached_arrays
from seminal.data.vision import (
    CIFAR10,
    CIFAR10_CLASSES,
    CIFAR10_JPEG,
    DATASETS,
    FASHION_MNIST,
    IMAGE_DATASETS,
    MNIST,
    images_flat,
    load_cifar10,
    load_fashion_mnist,
    load_images,
    load_mnist,
    mnist_flat,
    parse_cifar_batch,
    parse_idx,
)

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASSES",
    "CIFAR10_JPEG",
    "DATASETS",
    "FASHION_MNIST",
    "IMAGE_DATASETS",
    "MNIST",
    "cached_arrays",
    "load_cifar10",
    "load_fashion_mnist",
    "images_flat",
    "load_images",
    "load_mnist",
    "mnist_flat",
    "parse_cifar_batch",
    "parse_idx",
]
