"""Datasets: real loaders with checksums, local discovery and download (see `seminal.data.store`)."""

from seminal.data.vision import (
    CIFAR10,
    DATASETS,
    FASHION_MNIST,
    MNIST,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    mnist_flat,
    parse_cifar_batch,
    parse_idx,
)

__all__ = [
    "CIFAR10",
    "DATASETS",
    "FASHION_MNIST",
    "MNIST",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "mnist_flat",
    "parse_cifar_batch",
    "parse_idx",
]
