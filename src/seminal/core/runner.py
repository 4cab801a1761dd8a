"""Running a paper: one run (`execute`) and its claim over seeds (`reproduce`)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from seminal.core.claims import Claim
from seminal.core.config import apply_overrides, from_dict, to_dict
from seminal.core.errors import SeminalError
from seminal.core.paths import PROJECT_ROOT
from seminal.core.run import Run, seed_everything
from seminal.syllabus import Entry, resolve


def paper_config(entry: Entry, preset: str, overrides: list[str] | None = None) -> Any:
    """The preset's config with `key=value` overrides applied."""
    mod = entry.load()
    presets: dict[str, Any] = mod.PRESETS
    if preset not in presets:
        raise SeminalError(f"unknown preset '{preset}' for {entry.slug}; choose one of: {', '.join(presets)}")
    return apply_overrides(presets[preset], overrides)


def paper_claims(entry: Entry, preset: str) -> list[Claim]:
    return list(getattr(entry.load(), "CLAIMS", {}).get(preset, []))


def device() -> torch.device:
    """cuda when present (unless SEMINAL_DEVICE=cpu), else cpu."""
    want = os.environ.get("SEMINAL_DEVICE", "auto")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _new_run_dir(out_root: Path, slug: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out_root) / slug / f"{stamp}-s{seed}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    path.mkdir(parents=True)
    return path


def execute(
    paper: str | Entry,
    preset: str = "quick",
    seed: int = 0,
    overrides: list[str] | None = None,
    out_root: Path | str = "runs",
    *,
    resume_dir: Path | str | None = None,
    progress: bool | None = None,
    stop_after_checkpoints: int | None = None,
) -> dict:
    """One run of a paper: make or reopen the run folder, train, check the claims, write summary.json."""
    entry = paper if isinstance(paper, Entry) else resolve(paper)
    mod = entry.load()
    if os.environ.get("SEMINAL_THREADS"):  # e.g. 1 when many runs share a machine
        _worker_init(int(os.environ["SEMINAL_THREADS"]))
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        meta_path = run_dir / "config.json"
        if not meta_path.exists():
            raise SeminalError(f"--resume {run_dir}: no config.json there; pass a folder made by `seminal run`")
        meta = json.loads(meta_path.read_text())
        if meta["paper"] != entry.slug:
            raise SeminalError(f"--resume {run_dir} is a run of '{meta['paper']}', not '{entry.slug}'")
        preset, seed = meta["preset"], meta["seed"]
        cfg = from_dict(type(mod.PRESETS[preset]), meta["config"])
    else:
        cfg = paper_config(entry, preset, overrides)
        run_dir = _new_run_dir(Path(out_root), entry.slug, seed)
        meta = {
            "paper": entry.slug,
            "number": entry.number,
            "preset": preset,
            "seed": seed,
            "overrides": list(overrides or []),
            "config": to_dict(cfg),
            "machine": machine(),
            "commit": commit(),
        }
        (run_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    seed_everything(seed)
    start = time.perf_counter()
    with Run(run_dir, entry.slug, seed, cfg, progress=progress,
             stop_after_checkpoints=stop_after_checkpoints) as run:
        run.device = device()
        metrics = mod.train(cfg, run)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in metrics.items()}
    claims = [c.evaluate(metrics) for c in paper_claims(entry, preset)]
    summary = {
        "paper": entry.slug,
        "number": entry.number,
        "preset": preset,
        "seed": seed,
        "seconds": round(seconds, 2),
        "metrics": {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()},
        "claims": claims,
        "run_dir": str(run_dir),
        "resumed": resume_dir is not None,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass


def _execute_quiet(args: tuple) -> dict:
    paper, preset, seed, overrides, out_root = args
    return execute(paper, preset, seed, overrides, out_root, progress=False)


def reproduce(
    papers: list[Entry],
    preset: str = "quick",
    seeds: int = 3,
    overrides: list[str] | None = None,
    out_root: Path | str = "runs",
    results: Path | str = "results",
    jobs: int = 1,
    echo=print,
) -> list[dict]:
    """Run each paper's claims over `seeds` seeds and write results/<slug>.json for each."""
    if seeds < 1:
        raise SeminalError(f"--seeds {seeds}: need at least 1 seed")
    if jobs < 1:
        raise SeminalError(f"--jobs {jobs}: need at least 1 job")
    for entry in papers:  # fail fast on bad presets and overrides, before any training
        paper_config(entry, preset, overrides)
    results_path = Path(results)
    results_path.mkdir(parents=True, exist_ok=True)
    records = []
    cores = os.cpu_count() or 1
    for entry in papers:
        t0 = time.perf_counter()
        tasks = [(entry.slug, preset, s, overrides, str(out_root)) for s in range(seeds)]
        if jobs > 1 and seeds > 1:
            import multiprocessing as mp

            n = min(jobs, seeds)
            threads = int(os.environ.get("SEMINAL_THREADS", 0)) or max(1, cores // n)
            with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                     initargs=(threads,)) as pool:
                summaries = list(pool.map(_execute_quiet, tasks))
        else:
            summaries = [execute(*t, progress=None) for t in tasks]
        for s in summaries:
            marks = " ".join(
                f"{c['metric']}={_fmt(c['value'])}{'✓' if c['passed'] else '✗'}" for c in s["claims"]
            )
            echo(f"  {entry.slug} seed {s['seed']}: {s['seconds']:.1f}s  {marks}")
        record = _aggregate(entry, preset, summaries, overrides, time.perf_counter() - t0)
        (results_path / result_name(entry.slug, preset)).write_text(json.dumps(record, indent=2) + "\n")
        verdict = "PASS" if record["passed"] else "FAIL"
        echo(f"{verdict} {entry.number:>2} {entry.slug}: " + "; ".join(
            f"{c['name']}: {_fmt(c['mean'])} ± {_fmt(c['std'])} (need {c['op']} {c['threshold']:g}, "
            f"paper {c['paper_value']})" for c in record["claims"]))
        records.append(record)
    return records


def result_name(slug: str, preset: str) -> str:
    """results/<slug>.json for the quick preset (the README's record), <slug>.<preset>.json for others."""
    return f"{slug}.json" if preset == "quick" else f"{slug}.{preset}.json"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _aggregate(entry: Entry, preset: str, summaries: list[dict], overrides, seconds: float) -> dict:
    claims = paper_claims(entry, preset)
    claim_records = []
    for claim in claims:
        values = [next(c["value"] for c in s["claims"] if c["name"] == claim.name) for s in summaries]
        claim_records.append(claim.evaluate_seeds(values))
    keys = sorted({k for s in summaries for k in s["metrics"]})
    metrics = {}
    for k in keys:
        vals = [s["metrics"].get(k) for s in summaries]
        nums = [v for v in vals if isinstance(v, (int, float))]
        mean = sum(nums) / len(nums) if nums else None
        std = (sum((v - mean) ** 2 for v in nums) / len(nums)) ** 0.5 if nums else None
        metrics[k] = {"mean": mean, "std": std, "values": vals}
    mod = entry.load()
    cfg = paper_config(entry, preset, overrides)
    return {
        "paper": entry.slug,
        "number": entry.number,
        "title": entry.title,
        "citation": entry.citation,
        "preset": preset,
        "seeds": [s["seed"] for s in summaries],
        "overrides": list(overrides or []),
        "passed": bool(claim_records) and all(c["passed"] for c in claim_records),
        "claims": claim_records,
        "metrics": metrics,
        "seconds": round(seconds, 1),
        "run_seconds": [s["seconds"] for s in summaries],
        "runs": [_relative(s["run_dir"]) for s in summaries],
        "config": {f.name: to_dict(cfg)[f.name] for f in fields(cfg)},
        "commit": commit(),
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "module": mod.__name__,
    }


def _relative(path: str) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return str(p)


def commit() -> str | None:
    """$SEMINAL_COMMIT if set, else the checkout's commit (with `-dirty` when tracked files differ), or None.

    SEMINAL_COMMIT names the commit of a tree copied without (or with stale) git metadata, e.g. to a GPU machine.
    """
    if os.environ.get("SEMINAL_COMMIT"):
        return os.environ["SEMINAL_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": sys.platform,
    }
