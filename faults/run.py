"""Inject each catalogued fault into a copy of the source, run the tests that should catch it, and say which did.

The catalogue is `faults/<slug>.toml`, one file a paper: the paper's key lines broken one at a time
(a reversed ratio, a target from the wrong network, a missing mask...), each with the tests that must fail.
A fault is caught when its tests fail (pytest exit 1); it survives when they pass; anything else (an import
error, a test that no longer exists, a timeout) is an error, since a fault that breaks the import proves nothing
about the math. Before the faults, each distinct test selection is run once on the unbroken source: a
selection that already fails would make every fault look caught.

    python faults/run.py               # every catalogue
    python faults/run.py dqn ppo       # two papers
    python faults/run.py dqn --list    # what would be injected, without running
    python faults/run.py dqn -k huber  # only the faults whose name says "huber"
    python faults/run.py --jobs 2      # two faults at a time (each test run is one process)

The source is copied (`src/`, with pyproject.toml and the record and notes that tests read) into a temporary
folder and put first on PYTHONPATH, so the checkout is never modified and an editable install of seminal is
shadowed. Exit status: 0 when every fault is caught, 1 otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "faults"
REQUIRED = ("name", "file", "find", "replace")


@dataclass
class Fault:
    slug: str
    name: str
    file: str
    find: str
    replace: str
    tests: list[str]
    pytest_args: list[str] = field(default_factory=list)
    timeout: int = 300


class CatalogueError(ValueError):
    pass


def load(path: Path) -> list[Fault]:
    """One catalogue file; a paper-level `tests` / `pytest_args` / `timeout` is the default of its faults."""
    data = tomllib.loads(path.read_text())
    slug = path.stem
    top_tests = data.get("tests", [])
    top_args = data.get("pytest_args", [])
    faults = []
    for i, entry in enumerate(data.get("fault", [])):
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise CatalogueError(f"{path.name}: fault {i + 1} lacks {', '.join(missing)}")
        tests = entry.get("tests", top_tests)
        if not tests:
            raise CatalogueError(f"{path.name}: fault {entry['name']!r} names no tests (per fault or at the top)")
        faults.append(Fault(slug, entry["name"], entry["file"], entry["find"], entry["replace"], list(tests),
                            list(entry.get("pytest_args", top_args)),
                            int(entry.get("timeout", data.get("timeout", 300)))))
    return faults


def catalogue(slugs: list[str] | None = None, root: Path = CATALOGUE) -> list[Fault]:
    paths = sorted(root.glob("*.toml"))
    if slugs:
        known = {p.stem for p in paths}
        unknown = [s for s in slugs if s not in known]
        if unknown:
            raise CatalogueError(f"no catalogue for {', '.join(unknown)}; have: {', '.join(sorted(known))}")
        paths = [p for p in paths if p.stem in slugs]
    return [f for p in paths for f in load(p)]


def injected(fault: Fault, root: Path = ROOT) -> str:
    """The text of the fault's file under `root` with the fault written in; exactly one match."""
    text = (root / fault.file).read_text()
    n = text.count(fault.find)
    if n != 1:
        raise CatalogueError(f"{fault.slug}: {fault.name!r}: `find` occurs {n} times in {fault.file} (need exactly 1)")
    if fault.find == fault.replace:
        raise CatalogueError(f"{fault.slug}: {fault.name!r}: `replace` equals `find`")
    return text.replace(fault.find, fault.replace)


def apply(fault: Fault, src_root: Path) -> None:
    """Write the fault into the copy at `src_root` (the repo-relative `file` under it)."""
    (src_root / fault.file).write_text(injected(fault, src_root))


def _pytest(tree: Path, tests: list[str], args: list[str], timeout: int) -> tuple[int, str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), PYTHONDONTWRITEBYTECODE="1",
               SEMINAL_THREADS=os.environ.get("SEMINAL_THREADS", "1"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args, *tests]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout} s", time.time() - t0
    return p.returncode, p.stdout + p.stderr, time.time() - t0


def _copy_src(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # what makes the copy a checkout to `seminal.core.paths` (pyproject.toml) and the record and notes some tests
    # read from there (README.md, RESULTS.md, results/, docs/): copies, so that no test can touch the originals
    for name in ("pyproject.toml", "README.md", "RESULTS.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("results", "docs"):
        shutil.copytree(ROOT / name, dest / name)


def _first_failure(output: str) -> str:
    m = re.search(r"^FAILED (\S+)", output, re.M) or re.search(r"^ERROR (\S+)", output, re.M)
    return m.group(1).split("::", 1)[-1] if m else ""


def run(faults: list[Fault], baseline: bool = True, log=print, jobs: int = 1) -> list[dict]:
    """Verdicts in catalogue order; `jobs` faults at a time, each in its own copy of src/."""
    with tempfile.TemporaryDirectory(prefix="seminal-faults-") as tmp:
        counter = itertools.count()

        def fresh_tree() -> Path:
            tree = Path(tmp) / f"tree{next(counter)}"
            _copy_src(tree)
            return tree

        probe_tree = fresh_tree()
        probe = subprocess.run([sys.executable, "-c", "import seminal; print(seminal.__file__)"],
                               env=dict(os.environ, PYTHONPATH=str(probe_tree / "src")), capture_output=True,
                               text=True)
        if not probe.stdout.startswith(str(probe_tree)):
            raise CatalogueError(f"the copy does not shadow the installed seminal ({probe.stdout.strip()})")
        for f in faults:  # every fault must apply before anything runs
            injected(f)

        def key(f: Fault) -> tuple:
            return tuple(f.tests), tuple(f.pytest_args), f.timeout

        def unbroken(k: tuple) -> tuple[tuple, int, str]:
            tree = fresh_tree()
            rc, out, _ = _pytest(tree, list(k[0]), list(k[1]), k[2])
            shutil.rmtree(tree)
            return k, rc, out

        def broken(f: Fault) -> dict:
            tree = fresh_tree()
            apply(f, tree)
            rc, out, secs = _pytest(tree, f.tests, f.pytest_args, f.timeout)
            shutil.rmtree(tree)
            verdict = {0: "SURVIVED", 1: "caught"}.get(rc, "error")
            caught_by = _first_failure(out) if rc == 1 else ""
            last = (out.strip().splitlines() or [""])[-1]
            detail = caught_by or ("" if rc in (0, 1) else last)
            log(f"{verdict:>9}  {f.slug}: {f.name}  ({secs:.0f} s){'  ' + detail if detail else ''}")
            return {"slug": f.slug, "fault": f.name, "file": f.file, "verdict": verdict, "caught_by": caught_by,
                    "seconds": round(secs, 1)}

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            failing = set()
            if baseline:
                for k, rc, out in pool.map(unbroken, dict.fromkeys(key(f) for f in faults)):
                    if rc != 0:
                        failing.add(k)
                        log(f"baseline FAILS ({rc}) for {' '.join(k[0])}: {_first_failure(out) or out[-300:]}")
            for f in faults:
                if key(f) in failing:
                    log(f"baseline-fails  {f.slug}: {f.name}")
            todo = [f for f in faults if key(f) not in failing]
            done = dict(zip(map(id, todo), pool.map(broken, todo)))
        return [done[id(f)] if id(f) in done else
                {"slug": f.slug, "fault": f.name, "file": f.file, "verdict": "baseline-fails", "caught_by": "",
                 "seconds": 0.0} for f in faults]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python faults/run.py dqn --json /tmp/dqn-faults.json")
    ap.add_argument("slugs", nargs="*", help="papers whose catalogue to run (default: all)")
    ap.add_argument("-k", dest="match", help="only the faults whose name contains this text (case-insensitive)")
    ap.add_argument("--list", action="store_true", help="print the faults and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of each test selection unbroken")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="faults run at a time (each test run is one process)")
    ap.add_argument("--json", type=Path, help="write the verdicts there")
    args = ap.parse_args(argv)
    try:
        faults = catalogue(args.slugs or None)
        if args.match:
            faults = [f for f in faults if args.match.lower() in f.name.lower()]
            if not faults:
                raise CatalogueError(f"no fault's name contains {args.match!r}")
        if args.list:
            for f in faults:
                print(f"{f.slug}: {f.name}  [{f.file}] -> {' '.join(f.tests)}")
            return 0
        results = run(faults, baseline=not args.no_baseline, jobs=args.jobs)
    except CatalogueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    caught = sum(r["verdict"] == "caught" for r in results)
    print(f"{caught} of {len(results)} faults caught")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
