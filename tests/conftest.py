"""Shared fixtures: tiny datasets written by the tests themselves, and an isolated cache."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> bytes:
    """Write `array` (uint8) as a gzipped IDX file; returns the uncompressed content."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    content = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(content))
    return content


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """No download, no discovery beyond $SEMINAL_DATA, and a private cache."""
    monkeypatch.setenv("SEMINAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEMINAL_DATA_STRICT", "1")
    monkeypatch.setenv("SEMINAL_OFFLINE", "1")
    monkeypatch.setenv("SEMINAL_DATA", str(tmp_path / "data"))
    return tmp_path
