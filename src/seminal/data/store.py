"""Finding, downloading and verifying dataset files.

Search order for a dataset folder (first complete one wins):
  1. each folder in $SEMINAL_DATA (os.pathsep-separated), as `<root>/<folder>`
  2. `../shared/data/<folder>` beside the checkout (and beside the working directory)
  3. `/usr/share/datasets/<folder>` (Debian's dataset packages)
  4. the cache, `~/.cache/seminal/data/<folder>` ($SEMINAL_CACHE moves it)
If none is complete, the files are downloaded from the canonical source into the cache, and each is
checked against its SHA-256 before use. Every load checks the SHA-256 of the (decompressed) content, so
a corrupt or truncated file is an error, never silent training on garbage.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from seminal.core.errors import SeminalError
from seminal.core.paths import cache_dir, data_search_path


@dataclass(frozen=True)
class DataFile:
    name: str
    """File name inside the dataset folder (may include a sub-folder)."""
    content_sha256: str | None
    """SHA-256 of the content after gunzip (for .gz) or of the file itself; None: checked by structure."""
    size: int | None = None
    """Content size in bytes, after gunzip."""


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    folder: str
    """Folder name under each search root, e.g. `mnist`."""
    files: tuple[DataFile, ...]
    urls: tuple[str, ...] = ()
    """Base URLs (mirrors); file i is fetched from `url + download_names[i]`."""
    license: str = ""
    citation: str = ""
    download_sha256: dict[str, str] = field(default_factory=dict)
    """SHA-256 of the downloaded files (archives) by name, checked before unpacking."""
    archive: str | None = None
    """A single archive (tar.gz) to download and unpack instead of per-file downloads."""
    folder_aliases: tuple[str, ...] = ()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_content(path: Path) -> bytes:
    """The bytes of a file, gunzipped if it ends in .gz; a truncated or corrupt .gz is a SeminalError."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise SeminalError(
            f"corrupt data file {path} ({e.__class__.__name__}: {e}); delete it and fetch it again "
            f"(`seminal data fetch`), or put a good copy there"
        ) from e


def read_verified(path: Path, spec: DataFile) -> bytes:
    """Read a data file and check its content SHA-256 (and size) against the spec."""
    data = read_content(path)
    if spec.size is not None and len(data) != spec.size:
        raise SeminalError(
            f"corrupt data file {path}: {len(data)} bytes, expected {spec.size}; delete it and fetch it again "
            "(`seminal data fetch NAME`)"
        )
    if spec.content_sha256 is not None:
        digest = sha256_bytes(data)
        if digest != spec.content_sha256:
            raise SeminalError(
                f"corrupt data file {path}: sha256 {digest[:12]}… does not match the published "
                f"{spec.content_sha256[:12]}…; delete it and fetch it again (`seminal data fetch NAME`)"
            )
    return data


def candidates(ds: Dataset) -> list[Path]:
    out = []
    for root in data_search_path():
        for name in (ds.folder, *ds.folder_aliases):
            out.append(root / name)
    return out


def find_local(ds: Dataset) -> Path | None:
    """The first folder on the search path holding every file of `ds`."""
    for folder in candidates(ds):
        if all((folder / f.name).is_file() for f in ds.files):
            return folder
    return None


def locate(ds: Dataset, download: bool = True) -> Path:
    """A folder with all of the dataset's files: found locally, else downloaded into the cache."""
    folder = find_local(ds)
    if folder is not None:
        return folder
    if download and os.environ.get("SEMINAL_OFFLINE", "") not in ("1", "true"):
        try:
            return fetch(ds)
        except SeminalError as e:
            raise SeminalError(f"{ds.title} is not on this machine and {e}") from e
    raise SeminalError(_missing_message(ds))


def _missing_message(ds: Dataset) -> str:
    names = ", ".join(f.name for f in ds.files[:4]) + (" …" if len(ds.files) > 4 else "")
    return (
        f"{ds.title} not found: put its files ({names}) in $SEMINAL_DATA/{ds.folder}/ "
        f"(set SEMINAL_DATA=/path/to/data), or in ../shared/data/{ds.folder}/ beside the checkout, "
        f"or run `seminal data fetch {ds.name}` on a machine with internet"
    )


def _download(url: str, dest: Path, expected_sha256: str | None = None, timeout: float = 30) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise SeminalError(f"the download from {url} failed ({e}); {_hint_offline()}") from e
    if expected_sha256 is not None:
        got = sha256_file(dest)
        if got != expected_sha256:
            dest.unlink(missing_ok=True)
            raise SeminalError(f"download {url} has sha256 {got[:12]}…, expected {expected_sha256[:12]}…")


def _hint_offline() -> str:
    return "without internet, put a copy in $SEMINAL_DATA/<name>/ (see `seminal data list`)"


def fetch(ds: Dataset) -> Path:
    """Download `ds` into the cache, checking SHA-256s; returns the folder."""
    if not ds.urls:
        raise SeminalError(f"{ds.title} has no download source; {_missing_message(ds)}")
    dest = cache_dir() / "data" / ds.folder
    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in ds.urls:
        try:
            with tempfile.TemporaryDirectory(dir=dest) as tmp:
                tmp = Path(tmp)
                if ds.archive:
                    archive = tmp / ds.archive
                    _download(base + ds.archive, archive, ds.download_sha256.get(ds.archive))
                    shutil.unpack_archive(str(archive), str(tmp / "unpacked"))
                    for f in ds.files:
                        src = tmp / "unpacked" / f.name
                        read_verified(src, f)
                        (dest / f.name).parent.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dest / f.name)
                else:
                    for f in ds.files:
                        _download(base + f.name, tmp / Path(f.name).name, ds.download_sha256.get(f.name))
                        read_verified(tmp / Path(f.name).name, f)
                    for f in ds.files:
                        os.replace(tmp / Path(f.name).name, dest / f.name)
            return dest
        except SeminalError as e:
            errors.append(str(e))
    raise SeminalError(errors[-1] if errors else _missing_message(ds))


def verify(ds: Dataset, folder: Path | None = None) -> list[tuple[str, str]]:
    """Check every file of a dataset; returns (file, 'ok' | error) pairs."""
    folder = folder or find_local(ds)
    if folder is None:
        raise SeminalError(_missing_message(ds))
    report = []
    for f in ds.files:
        path = folder / f.name
        try:
            if not path.is_file():
                raise SeminalError(f"missing {path}")
            read_verified(path, f)
            report.append((str(path), "ok"))
        except SeminalError as e:
            report.append((str(path), str(e)))
    return report
