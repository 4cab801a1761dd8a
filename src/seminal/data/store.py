"""Finding, downloading and verifying dataset files.

Search order for a dataset folder (the first complete copy whose content checks out wins):
  1. each folder in $SEMINAL_DATA (os.pathsep-separated), as `<root>/<folder>`
  2. `../shared/data/<folder>` beside the checkout (and beside the working directory)
  3. `/usr/share/datasets/<folder>` (Debian's dataset packages)
  4. the cache, `~/.cache/seminal/data/<folder>` ($SEMINAL_CACHE moves it)
At each location the dataset's own form is tried first, then its alternatives (CIFAR-10's JPEG copy).
Discovery checks content (the SHA-256 of the decompressed file, or its size where no checksum is
published): a damaged copy is skipped with a warning naming the file, and the search falls through to
the next location. If no copy is good, the files are downloaded from the canonical source into the
cache, each checked against its SHA-256 before use (an archive before it is unpacked, with tarfile's
`data` extraction filter). Nothing found beside the data is ever executed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from seminal.core.errors import SeminalError
from seminal.core.paths import cache_dir, data_search_path

UNCHECKED = "structure-checked only"
"""Status prefix in `verify` for a file without a known content checksum (never reported as 'ok')."""


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
    alternatives: tuple[Dataset, ...] = ()
    """Other forms of the same data, tried at each location after this one (CIFAR-10's JPEG copy)."""
    parse: Callable[[bytes, str], Any] | None = None
    """Parses one file's content, raising SeminalError on bad structure (`verify`, for unchecksummed files)."""


@dataclass(frozen=True)
class Skipped:
    """A copy that discovery passed over."""

    folder: Path
    file: Path
    reason: str
    damaged: bool
    """True: a file's content is wrong; False: the copy is incomplete (files missing)."""


@dataclass(frozen=True)
class Found:
    """The outcome of a search: the form and folder found (None if none), and the copies skipped on the way."""

    dataset: Dataset | None
    folder: Path | None
    skipped: tuple[Skipped, ...] = ()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _corrupt(path: Path, e: BaseException) -> SeminalError:
    return SeminalError(
        f"corrupt data file {path} ({e.__class__.__name__}: {e}); delete it and fetch it again "
        f"(`seminal data fetch`), or put a good copy there"
    )


def read_content(path: Path) -> bytes:
    """The bytes of a file, gunzipped if it ends in .gz; a truncated or corrupt .gz is a SeminalError."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, e) from e


# Verification results within this process: (file, size, mtime, inode, spec) -> None (good) or the error.
_CHECKED: dict[tuple, str | None] = {}


def _key(path: Path, spec: DataFile) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, spec.content_sha256, spec.size)


def _mismatch(path: Path, spec: DataFile, size: int, digest: str | None) -> str | None:
    if spec.size is not None and size != spec.size:
        return (f"corrupt data file {path}: {size} bytes, expected {spec.size}; delete it and fetch it again "
                "(`seminal data fetch NAME`)")
    if spec.content_sha256 is not None and digest != spec.content_sha256:
        return (f"corrupt data file {path}: sha256 {(digest or '')[:12]}… does not match the expected "
                f"{spec.content_sha256[:12]}…; delete it and fetch it again (`seminal data fetch NAME`)")
    return None


def check_file(path: Path, spec: DataFile) -> str | None:
    """None if the file's content matches `spec` (streamed, not held in memory), else why not; cached per process."""
    if not path.is_file():
        return f"missing {path}"
    key = _key(path, spec)
    if key in _CHECKED:
        return _CHECKED[key]
    gz = path.suffix == ".gz"
    if spec.content_sha256 is None and not gz:
        error = _mismatch(path, spec, path.stat().st_size, None)  # size is all there is to check
    else:
        h, size = hashlib.sha256(), 0
        try:
            with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    size += len(chunk)
            error = _mismatch(path, spec, size, h.hexdigest())
        except (OSError, EOFError, zlib.error) as e:
            error = str(_corrupt(path, e))
    _CHECKED[key] = error
    return error


def read_verified(path: Path, spec: DataFile) -> bytes:
    """Read a data file and check its content SHA-256 (and size) against the spec (once per file per process)."""
    key = _key(path, spec) if path.is_file() else None
    data = read_content(path)
    if key is not None and key in _CHECKED and _CHECKED[key] is None:
        return data  # this very file (same size, mtime and inode) was checked already
    error = _mismatch(path, spec, len(data), sha256_bytes(data) if spec.content_sha256 else None)
    if key is not None:
        _CHECKED[key] = error
    if error:
        raise SeminalError(error)
    return data


def candidates(ds: Dataset) -> list[Path]:
    out = []
    for root in data_search_path():
        for name in dict.fromkeys((ds.folder, *ds.folder_aliases)):
            out.append(root / name)
    return out


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr)


def discover(ds: Dataset, warn: bool = True) -> Found:
    """The first copy of `ds` (or of one of its alternatives) whose content checks out, in search order.

    With `warn`, each damaged copy skipped on the way to a good one is named once on stderr; when no copy
    is good nothing is printed (`locate`'s error names the damage).
    """
    skipped: list[Skipped] = []
    for root in data_search_path():
        for form in (ds, *ds.alternatives):
            for name in dict.fromkeys((form.folder, *form.folder_aliases)):
                folder = root / name
                missing = [f.name for f in form.files if not (folder / f.name).is_file()]
                if missing:
                    if len(missing) < len(form.files):
                        skipped.append(Skipped(folder, folder / missing[0], f"{folder} lacks {missing[0]}", False))
                    continue
                bad = next(((f, e) for f in form.files if (e := check_file(folder / f.name, f))), None)
                if bad is not None:
                    skipped.append(Skipped(folder, folder / bad[0].name, bad[1], True))
                    continue
                if warn:
                    for s in skipped:
                        if s.damaged:
                            _warn_once(f"skipped a damaged copy of {ds.title} ({s.reason}); using {folder}")
                return Found(form, folder, tuple(skipped))
    return Found(None, None, tuple(skipped))


def find_local(ds: Dataset) -> Path | None:
    """The folder of the first good copy of `ds` (or of an alternative form) on the search path."""
    return discover(ds).folder


def locate(ds: Dataset, download: bool = True) -> Path:
    """A folder with a good copy of the dataset: found locally, else downloaded into the cache."""
    found = discover(ds)
    if found.folder is not None:
        return found.folder
    if download and os.environ.get("SEMINAL_OFFLINE", "") not in ("1", "true"):
        try:
            return fetch(ds)
        except SeminalError as e:
            damaged = [sk.reason for sk in found.skipped if sk.damaged]
            where = f"has no good copy here ({damaged[0]})" if damaged else "is not on this machine"
            raise SeminalError(f"{ds.title} {where} and {e}") from e
    raise SeminalError(_missing_message(ds, found.skipped))


def _missing_message(ds: Dataset, skipped: tuple[Skipped, ...] = ()) -> str:
    damaged = [s.reason for s in skipped if s.damaged]
    if damaged:
        return f"no good copy of {ds.title}: {damaged[0]}"
    names = ", ".join(f.name for f in ds.files[:4]) + (" …" if len(ds.files) > 4 else "")
    return (
        f"{ds.title} not found: put its files ({names}) in $SEMINAL_DATA/{ds.folder}/ "
        f"(set SEMINAL_DATA=/path/to/data), or in ../shared/data/{ds.folder}/ beside the checkout, "
        f"or run `seminal data fetch {ds.name}` on a machine with internet"
    )


def progress_bar(total: int | None, desc: str, stream: IO[str] | None = None, **kw: Any) -> Any:
    """A tqdm bar on `stream` (default stderr), shown only when it is a terminal."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    tty = getattr(stream, "isatty", lambda: False)()
    return tqdm(total=total, desc=desc, file=stream, disable=not tty, leave=False, dynamic_ncols=True, **kw)


def copy_with_progress(src: IO[bytes], dst: IO[bytes], total: int | None, desc: str,
                       stream: IO[str] | None = None) -> int:
    """Copy a byte stream in 1 MiB chunks with a progress bar (`progress_bar`); returns the bytes copied."""
    copied = 0
    with progress_bar(total, desc, stream, unit="B", unit_scale=True, unit_divisor=1024) as bar:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            dst.write(chunk)
            bar.update(len(chunk))
            copied += len(chunk)
    return copied


def _download(url: str, dest: Path, expected_sha256: str | None = None, timeout: float = 30) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
            length = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            copy_with_progress(resp, out, int(length) if length and length.isdigit() else None, dest.name)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise SeminalError(f"the download from {url} failed ({e}); {_hint_offline()}") from e
    if expected_sha256 is not None:
        got = sha256_file(dest)
        if got != expected_sha256:
            dest.unlink(missing_ok=True)
            raise SeminalError(f"download {url} has sha256 {got[:12]}…, expected {expected_sha256[:12]}…")


def _hint_offline() -> str:
    return "without internet, put a copy in $SEMINAL_DATA/<name>/ (see `seminal data list`)"


def unpack_archive(archive: Path, dest: Path) -> None:
    """Unpack a tar archive with tarfile's `data` filter: no absolute paths, `..`, links out of `dest`, devices."""
    if not hasattr(tarfile, "data_filter"):
        raise SeminalError("this Python has no safe tar extraction filter; use Python >= 3.10.12 or >= 3.11.4")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise SeminalError(f"refusing to unpack {archive.name} ({e.__class__.__name__}: {e}); "
                           "the download is damaged or unsafe: fetch it again from the canonical source") from e


def fetch(ds: Dataset) -> Path:
    """Download `ds` into the cache, checking SHA-256s, replacing any damaged copy there; returns the folder."""
    if not ds.urls:
        raise SeminalError(f"{ds.title} has no download source; {_missing_message(ds)}")
    if ds.archive and ds.archive not in ds.download_sha256:
        raise SeminalError(f"{ds.title}: no SHA-256 for {ds.archive}, so it is not downloaded; add it to the spec")
    dest = cache_dir() / "data" / ds.folder
    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in ds.urls:
        try:
            with tempfile.TemporaryDirectory(dir=dest) as tmp:
                tmp = Path(tmp)
                if ds.archive:
                    archive = tmp / ds.archive
                    _download(base + ds.archive, archive, ds.download_sha256[ds.archive])  # checked before unpacking
                    unpack_archive(archive, tmp / "unpacked")
                    for f in ds.files:
                        src = tmp / "unpacked" / f.name
                        if not src.is_file():
                            raise SeminalError(f"{ds.archive} from {base} has no {f.name}; it is not {ds.title}")
                        read_verified(src, f)
                    for f in ds.files:
                        (dest / f.name).parent.mkdir(parents=True, exist_ok=True)
                        os.replace(tmp / "unpacked" / f.name, dest / f.name)
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


def form_in(ds: Dataset, folder: Path) -> Dataset:
    """Which form of `ds` (itself or an alternative) `folder` holds: the first with every file present."""
    for form in (ds, *ds.alternatives):
        if all((folder / f.name).is_file() for f in form.files):
            return form
    return ds


def verify(ds: Dataset, folder: Path | None = None) -> list[tuple[str, str]]:
    """Check every file of a dataset; returns (file, status) pairs, status 'ok', UNCHECKED + why, or the error.

    Without `folder`: the copy discovery picks, else the first damaged copy (to report on it).
    """
    if folder is None:
        found = discover(ds, warn=False)
        damaged = [s.folder for s in found.skipped if s.damaged]
        folder = found.folder or (damaged[0] if damaged else None)
        if folder is None:
            raise SeminalError(_missing_message(ds))
    form = form_in(ds, folder)
    report = []
    for f in form.files:
        path = folder / f.name
        try:
            if not path.is_file():
                raise SeminalError(f"missing {path}")
            data = read_verified(path, f)
            if f.content_sha256 is not None:
                report.append((str(path), "ok"))
                continue
            if form.parse is not None:
                form.parse(data, str(path))
            report.append((str(path), f"{UNCHECKED}: size{' and records parse' if form.parse else ''}; "
                                      f"no published SHA-256 for this file"))
        except SeminalError as e:
            report.append((str(path), str(e)))
    return report
