"""Where things live: the project checkout (docs, results, README), caches and the data search path."""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parents[1]  # .../src/seminal
# In a checkout (editable install) the project root holds pyproject.toml two levels above the package.
PROJECT_ROOT = _PKG.parents[1] if (_PKG.parents[1] / "pyproject.toml").exists() else Path.cwd()
DOCS_DIR = PROJECT_ROOT / "docs"


def results_dir() -> Path:
    """`results/` of the checkout, or $SEMINAL_RESULTS."""
    return Path(os.environ.get("SEMINAL_RESULTS", PROJECT_ROOT / "results"))


def cache_dir() -> Path:
    """Downloaded and converted data: $SEMINAL_CACHE, else $XDG_CACHE_HOME/seminal, else ~/.cache/seminal."""
    if "SEMINAL_CACHE" in os.environ:
        return Path(os.environ["SEMINAL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "seminal"


def data_search_path() -> list[Path]:
    """Folders searched for local dataset copies, in order (each holds one sub-folder per dataset).

    SEMINAL_DATA_STRICT=1 searches only $SEMINAL_DATA and the cache (tests; pinning an exact copy).
    """
    roots: list[Path] = []
    if os.environ.get("SEMINAL_DATA"):
        roots += [Path(p) for p in os.environ["SEMINAL_DATA"].split(os.pathsep) if p]
    if os.environ.get("SEMINAL_DATA_STRICT", "") not in ("1", "true"):  # strict: only $SEMINAL_DATA + cache
        roots += [PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
        roots += [Path("/usr/share/datasets")]
    roots += [cache_dir() / "data"]
    seen, out = set(), []
    for r in roots:
        key = str(r.resolve()) if r.exists() else str(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
