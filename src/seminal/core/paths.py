"""Where things live: the project checkout (docs, results, README), caches and the data search path."""

from __future__ import annotations

import os
from pathlib import Path

from seminal.core.errors import SeminalError

_PKG = Path(__file__).resolve().parents[1]  # .../src/seminal


def _find_checkout() -> Path | None:
    """The checkout (editable install or PYTHONPATH=src): pyproject.toml of `seminal` two levels above the package."""
    root = _PKG.parents[1]
    try:
        return root if 'name = "seminal"' in (root / "pyproject.toml").read_text() else None
    except OSError:
        return None


PROJECT_ROOT: Path | None = _find_checkout()
"""The checkout holding README.md, results/ and docs/; None when seminal is installed (never the cwd)."""
DOCS_DIR = (PROJECT_ROOT or _PKG) / "docs"
RECORD_FILES = ("results", "README.md", "RESULTS.md")
"""The committed record, relative to the checkout: written only on an explicit `--record`."""


def checkout(action: str = "this") -> Path:
    """The checkout, or a one-line error for actions that need one (writing or checking the committed record)."""
    if PROJECT_ROOT is None:
        raise SeminalError(f"{action} needs the seminal checkout, but seminal runs from an installed copy "
                           f"({_PKG}); clone the repository and `pip install -e .` there, or use --results DIR")
    return PROJECT_ROOT


def results_dir() -> Path:
    """The record read by `list`, `show`, `runs` and `report`: $SEMINAL_RESULTS, else the checkout's results/.

    Installed without a checkout it is runs/results, where `seminal reproduce` writes by default.
    """
    if os.environ.get("SEMINAL_RESULTS"):
        return Path(os.environ["SEMINAL_RESULTS"])
    return PROJECT_ROOT / "results" if PROJECT_ROOT is not None else Path("runs") / "results"


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
        roots += [PROJECT_ROOT.parent / "shared" / "data"] if PROJECT_ROOT is not None else []
        roots += [Path.cwd().parent / "shared" / "data"]
        roots += [Path("/usr/share/datasets")]
    roots += [cache_dir() / "data"]
    seen, out = set(), []
    for r in roots:
        key = str(r.resolve()) if r.exists() else str(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
