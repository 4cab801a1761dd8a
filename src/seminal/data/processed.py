"""A cache of processed data (decoded, resized, normalised arrays), shared by every paper on the same data.

An entry is keyed by the SHA-256 of its source and by the processing settings, so two papers asking for
the same data processed the same way read one copy, and a new source or a new setting never reads a stale
one. It lives in `<cache>/processed/<name>-<key>/`: one `.npy` a named array (read with
allow_pickle=False) and `manifest.json` holding each array's SHA-256, shape and dtype, checked on every
load. A damaged entry is rebuilt, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from seminal.core.errors import SeminalError
from seminal.core.paths import cache_dir

_FORMAT = 1


def cache_key(source_sha256: str, settings: Mapping[str, object]) -> str:
    """The entry's key: SHA-256 of the source checksum and the settings (JSON, sorted keys)."""
    blob = json.dumps({"format": _FORMAT, "source": source_sha256, "settings": dict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def entry_dir(name: str, source_sha256: str, settings: Mapping[str, object]) -> Path:
    """Where the entry for this source and these settings lives."""
    return cache_dir() / "processed" / f"{name}-{cache_key(source_sha256, settings)[:20]}"


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def _load(folder: Path, source_sha256: str, settings: Mapping[str, object]) -> dict[str, np.ndarray]:
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("source_sha256") != source_sha256 or manifest.get("settings") != json.loads(
            json.dumps(dict(settings))):
        raise ValueError("its manifest is for another source or other settings")
    out = {}
    for key, meta in manifest["arrays"].items():
        array = np.load(folder / meta["file"], allow_pickle=False)
        if str(array.dtype) != meta["dtype"] or list(array.shape) != meta["shape"]:
            raise ValueError(f"{meta['file']} is {array.dtype} {array.shape}, expected {meta['dtype']} {meta['shape']}")
        if array_sha256(array) != meta["sha256"]:
            raise ValueError(f"{meta['file']} does not match its sha256")
        out[key] = array
    return out


def _save(folder: Path, arrays: Mapping[str, np.ndarray], source_sha256: str,
          settings: Mapping[str, object]) -> None:
    bad = [key for key in arrays if not key.isidentifier()]
    if bad:
        raise SeminalError(f"processed-data array names must be identifiers (they become file names), not {bad}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)  # an entry without its manifest is never read
    meta = {}
    for key, array in arrays.items():
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, folder / f"{key}.npy")
        meta[key] = {"file": f"{key}.npy", "sha256": array_sha256(array), "shape": list(array.shape),
                     "dtype": str(array.dtype)}
    manifest = {"format": _FORMAT, "source_sha256": source_sha256, "settings": dict(settings), "arrays": meta}
    tmp = folder / f".manifest.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, folder / "manifest.json")


def cached_arrays(name: str, source_sha256: str, settings: Mapping[str, object],
                  build: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays `build()` makes from a source, read from the cache when an intact entry exists.

    `name` labels the entry (e.g. `cifar10-jpeg`); `settings` (JSON-able) are every choice that changes
    the output. A missing entry is built and written; a damaged one is rebuilt with a warning on stderr.
    Keys of the returned dict are `build()`'s (plain identifiers: they become file names).
    """
    folder = entry_dir(name, source_sha256, settings)
    if (folder / "manifest.json").is_file():
        try:
            return _load(folder, source_sha256, settings)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"warning: the processed-data cache entry {folder} is damaged ({e}); rebuilding it",
                  file=sys.stderr)
    arrays = {k: np.asarray(v) for k, v in build().items()}
    try:
        _save(folder, arrays, source_sha256, settings)
    except OSError as e:
        print(f"warning: could not write the processed-data cache {folder} ({e}); set SEMINAL_CACHE to a "
              "writable folder to keep it", file=sys.stderr)
    return arrays
