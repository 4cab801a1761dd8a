"""Running a paper: one run (`execute`) and its claim over seeds (`reproduce`)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from seminal.core.claims import Claim, on_seeds
from seminal.core.config import apply_overrides, from_dict, to_dict
from seminal.core.errors import Interrupted, SeminalError
from seminal.core.paths import PROJECT_ROOT, RECORD_FILES
from seminal.core.report import command
from seminal.core.run import CHECKPOINT, Run, seed_everything
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
    want = os.environ.get("SEMINAL_DEVICE", "auto").strip().lower() or "auto"
    if want not in ("auto", "cpu", "cuda"):
        raise SeminalError(f"SEMINAL_DEVICE={want!r}: use auto, cpu or cuda")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def threads_from_env() -> int | None:
    """$SEMINAL_THREADS as a positive int (torch/BLAS threads a run), or None when unset."""
    text = os.environ.get("SEMINAL_THREADS", "").strip()
    if not text:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise SeminalError(f"SEMINAL_THREADS={text!r}: must be a positive integer (threads a run), e.g. "
                           "SEMINAL_THREADS=1")
    return n


def full_preset_warning(entries: list[Entry], seeds: int = 1) -> str | None:
    """One warning line for `--preset full` on a machine without a GPU, with the time recorded in
    results/<slug>.full.json (`run_seconds`, a seed each) where there is one; None on a GPU."""
    if not entries or device().type == "cuda":
        return None
    minutes, machines, on_gpu, unknown = 0.0, set(), False, []
    for entry in entries:
        record = entry.result(preset="full") or {}
        times = [t for t in record.get("run_seconds", []) if isinstance(t, (int, float))]
        if times:
            minutes += seeds * sum(times) / len(times) / 60
            m = record.get("machine") or {}
            on_gpu = on_gpu or bool(m.get("gpu"))
            machines.add(m.get("gpu") or m.get("cpu") or "the recording machine")
        else:
            unknown.append(entry.slug)
    names = entries[0].slug if len(entries) == 1 else f"{len(entries)} papers"
    parts = []
    if machines:
        parts.append(f"{seeds} seed(s) took ~{minutes:.0f} min on {', '.join(sorted(machines))} (results/*.full.json)"
                     + ("; expect several times longer on a CPU" if on_gpu else ""))
    if unknown:
        parts.append(f"no recorded time for {', '.join(unknown)}, sized for a GPU (hours on a CPU)")
    return f"warning: --preset full for {names} without a GPU: {'; '.join(parts)}. --preset quick runs in minutes"


def _new_run_dir(out_root: Path, slug: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out_root) / slug / f"{stamp}-s{seed}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise SeminalError(f"--out {out_root}: cannot create a run folder there ({e.strerror or e}); pass a "
                           "writable folder with --out") from e
    return path


def _read_resume(run_dir: Path, entry: Entry, mod: Any) -> tuple[str, int, Any]:
    """The preset, seed and config of an interrupted run folder, or a one-line error saying why it cannot go on."""
    meta_path = run_dir / "config.json"
    if not meta_path.exists():
        raise SeminalError(f"--resume {run_dir}: no config.json there; pass a folder made by `seminal run`")
    if (run_dir / "summary.json").exists():
        raise SeminalError(f"--resume {run_dir}: this run already finished (see its summary.json); start a new "
                           f"one with `seminal run {entry.slug}`")
    try:
        meta = json.loads(meta_path.read_text())
        paper, preset, seed, config = meta["paper"], meta["preset"], int(meta["seed"]), dict(meta["config"])
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise SeminalError(f"--resume {run_dir}: its config.json is unreadable or incomplete "
                           f"({type(e).__name__}: {e}); the run cannot be resumed, start a new one") from e
    if paper != entry.slug:
        raise SeminalError(f"--resume {run_dir} is a run of '{paper}', not '{entry.slug}'")
    if preset not in mod.PRESETS:
        raise SeminalError(f"--resume {run_dir}: its preset '{preset}' no longer exists for {entry.slug}; "
                           "start a new run")
    try:
        cfg = from_dict(type(mod.PRESETS[preset]), config)
    except TypeError as e:
        raise SeminalError(f"--resume {run_dir}: its config.json does not fit {entry.slug}'s config ({e}); "
                           "start a new run") from e
    return preset, seed, cfg


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
    checkpoint_seconds: float | None = None,
) -> dict:
    """One run of a paper: make or reopen the run folder, train, check the claims, write summary.json.

    With `resume_dir`, the run's own preset, seed and config (from its config.json) are used: `preset`,
    `seed`, `overrides` and `out_root` are ignored (the command line refuses them).
    """
    entry = paper if isinstance(paper, Entry) else resolve(paper)
    mod = entry.load()
    threads = threads_from_env()  # e.g. 1 when many runs share a machine
    if threads:
        _worker_init(threads)
    run_device = device()
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        preset, seed, cfg = _read_resume(run_dir, entry, mod)
        if not (run_dir / CHECKPOINT).exists():  # stopped before its first checkpoint: start over in its folder
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    else:
        if seed < 0:
            raise SeminalError(f"--seed {seed}: must be a non-negative integer")
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
    with Run(run_dir, entry.slug, seed, cfg, progress=progress, stop_after_checkpoints=stop_after_checkpoints,
             checkpoint_seconds=checkpoint_seconds) as run:
        run.device = run_device
        metrics = mod.train(cfg, run)
        seconds = run.elapsed  # over every session of a resumed run
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
        "threads": torch.get_num_threads(),  # of the process that ran it (--jobs: SEMINAL_THREADS or cores/jobs)
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


def seed_list(seeds: int | Sequence[int] = 3, first_seed: int = 0) -> list[int]:
    """The seeds to run: `seeds` of them from `first_seed` (3 -> 0, 1, 2), or an explicit list (tuning seeds
    must not be claim seeds: `--seed-list 10,11,12`)."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise SeminalError(f"--seeds {seeds}: need at least 1 seed")
        if first_seed < 0:
            raise SeminalError(f"--first-seed {first_seed}: seeds are non-negative integers")
        return list(range(first_seed, first_seed + seeds))
    out = [int(s) for s in seeds]
    if not out:
        raise SeminalError("--seed-list is empty: need at least 1 seed, e.g. --seed-list 10,11,12")
    if len(set(out)) != len(out) or min(out) < 0:
        raise SeminalError(f"--seed-list {','.join(map(str, out))}: seeds must be distinct non-negative integers")
    return out


def expected_seconds(entry: Entry, preset: str = "quick", results: Path | None = None) -> float | None:
    """One seed-run's time in the record (mean of its `run_seconds`), or None when it has none."""
    record = entry.result(results, preset) or {}
    times = [t for t in record.get("run_seconds", []) if isinstance(t, (int, float))]
    return sum(times) / len(times) if times else None


def _run_seed(args: tuple) -> dict:
    slug, preset, seed, overrides, out_root, resume_dir = args
    return execute(slug, preset, seed, overrides, out_root, resume_dir=resume_dir, progress=False)


def _prior_run(out_root: Path, slug: str, preset: str, seed: int, cfg: dict, sha: str | None) -> Path | None:
    """The newest run folder of this paper, preset, seed, config and commit under `out_root`, finished or not."""
    for d in sorted((Path(out_root) / slug).glob(f"*-s{seed}*"), reverse=True):
        try:
            meta = json.loads((d / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if (meta.get("paper"), meta.get("preset"), meta.get("seed"), meta.get("commit")) == (slug, preset, seed, sha) \
                and meta.get("config") == cfg:
            return d
    return None


def reproduce(
    papers: list[Entry],
    preset: str = "quick",
    seeds: int | Sequence[int] | None = 3,
    overrides: list[str] | None = None,
    out_root: Path | str = "runs",
    results: Path | str | None = None,
    jobs: int = 1,
    echo: Callable[[str], None] | None = None,
    *,
    first_seed: int = 0,
    record: Path | str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    ray: str | None = None,
) -> list[dict]:
    """Check each paper's claims over seeds; write <results>/<slug>.json with its plots in <results>/<slug>/.

    `results` defaults to <out_root>/results, the user's own folder. `record` (a checkout) writes the committed
    record instead, <record>/results/, then regenerates its README status table and RESULTS.md; it refuses an
    unknown commit or a dirty tree. `resume` reuses finished seed-runs under `out_root` with the same config and
    commit, and continues interrupted ones. A paper without claims for `preset`, or (among several) one that
    fails with an error, is reported and the others go on; its entry in the returned list has an `error`.
    `ray` runs the seed-runs as Ray tasks, one CPU each (one GPU for the full preset where the cluster has one):
    "local" starts a Ray instance on this machine, anything else is the address of a cluster (`ray.init(address=)`).
    """
    def seeds_of(entry: Entry) -> list[int]:  # None: the paper's own count (`SEEDS` in its module), else 3
        return seed_list(getattr(entry.load(), "SEEDS", 3) if seeds is None else seeds, first_seed)

    per_paper = {e.slug: seeds_of(e) for e in papers}
    if jobs < 1:
        raise SeminalError(f"--jobs {jobs}: need at least 1 job")
    if ray is not None and jobs > 1:
        raise SeminalError("--ray runs the seed-runs as Ray tasks; drop --jobs (or --ray)")
    if record is not None and results is not None:
        raise SeminalError("--record writes the checkout's results/; drop --results DIR (or --record)")
    for entry in papers:  # fail fast on bad presets and overrides, before any training
        paper_config(entry, preset, overrides)
    if record is not None:
        record_guard(Path(record))
    results_path = Path(record) / "results" if record is not None else Path(results or Path(out_root) / "results")
    results_path.mkdir(parents=True, exist_ok=True)
    todo = [e for e in papers if paper_claims(e, preset)]
    skipped = [e for e in papers if e not in todo]
    guess = [t for t in (expected_seconds(e, preset) for e in todo) if t] or [60.0]
    expect = {e.slug: expected_seconds(e, preset) or sum(guess) / len(guess) for e in todo}
    from tqdm.auto import tqdm

    # one bar for everything, in expected seconds (each paper's recorded time a seed-run), so its ETA is honest
    bar = tqdm(total=sum(expect[e.slug] * len(per_paper[e.slug]) for e in todo), desc=f"reproduce {preset}",
               dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, ~{remaining} left")
    bar.runs = [0, sum(len(per_paper[e.slug]) for e in todo)]  # seed-runs done, in all
    say = echo or (tqdm.write if not bar.disable else print)
    for e in skipped:
        say(f"SKIP {e.number:>2} {e.slug}: no claims for preset '{preset}'")
    sha = commit()
    cluster = RayCluster(ray, preset) if ray is not None else None
    records: list[dict] = []
    try:
        for i, entry in enumerate(todo):
            bar.set_description_str(f"{entry.slug} (paper {i + 1}/{len(todo)}, seed-runs {bar.runs[0]}/{bar.runs[1]})")
            seed_ids = per_paper[entry.slug]
            t0, share = time.perf_counter(), bar.n + expect[entry.slug] * len(seed_ids)
            try:
                summaries = _run_seeds(entry, preset, seed_ids, overrides, Path(out_root), jobs, resume, sha, bar,
                                       expect[entry.slug], say, cluster)
            except Interrupted as e:
                bar.close()
                e.args = (f"interrupted; finished seed-runs and the checkpoint in {e.run_dir} are kept: run the same "
                          "`seminal reproduce` again with --resume to continue",)
                raise
            except SeminalError as e:
                if len(todo) == 1:
                    bar.close()
                    raise
                say(f"ERROR {entry.number:>2} {entry.slug}: {e}")
                records.append({"paper": entry.slug, "number": entry.number, "preset": preset, "passed": False,
                                "error": str(e)})
                bar.runs[0] += len(seed_ids)
                bar.update(share - bar.n)  # its seed-runs will not come: the bar and its ETA move past them
                continue
            rec = _aggregate(entry, preset, summaries, overrides, time.perf_counter() - t0, root=record)
            rec["plots"] = _copy_plots(summaries, results_path, plot_folder(entry.slug, preset))
            (results_path / result_name(entry.slug, preset)).write_text(json.dumps(rec, indent=2) + "\n")
            say(f"{'PASS' if rec['passed'] else 'FAIL'} {entry.number:>2} {entry.slug}: " + "; ".join(
                f"{c['name']}: {_fmt(c['mean'])} ± {_fmt(c['std'])}, {c['seeds_passed']} of {c['n']} seeds (need "
                f"{c['op']} {c['threshold']:g} {on_seeds(c['rests_on'])}; paper {c['paper_value']})"
                for c in rec["claims"]) + (f" [overrides: {' '.join(rec['overrides'])}]" if rec["overrides"] else ""))
            records.append(rec)
    finally:
        if cluster is not None:
            cluster.close()
    bar.close()
    if record is not None:
        from seminal.core.report import write_record_docs

        for p in write_record_docs(Path(record)):
            say(f"wrote {p}")
    if skipped:
        say(f"skipped (no claims for preset '{preset}'): {', '.join(e.slug for e in skipped)}")
    return records


def _run_seeds(entry: Entry, preset: str, seed_ids: list[int], overrides, out_root: Path, jobs: int, resume: bool,
               sha: str | None, bar, expect: float, say, cluster: RayCluster | None = None) -> list[dict]:
    """Each seed's summary, in seed order: reused, resumed or run (in `jobs` processes, or as Ray tasks)."""
    cfg = json.loads(json.dumps(to_dict(paper_config(entry, preset, overrides))))
    done: dict[int, dict] = {}
    tasks = []
    for s in seed_ids:
        prior = _prior_run(out_root, entry.slug, preset, s, cfg, sha) if resume else None
        if prior is not None and (prior / "summary.json").exists():
            done[s] = json.loads((prior / "summary.json").read_text())
            say(f"  {entry.slug} seed {s}: reused the finished run {prior}")
            bar.runs[0] += 1
            bar.set_description_str(f"{entry.slug} (seed-runs {bar.runs[0]}/{bar.runs[1]})")
            bar.update(expect)
        else:
            if prior is not None:
                say(f"  {entry.slug} seed {s}: continuing the interrupted run {prior}")
            tasks.append((entry.slug, preset, s, overrides, str(out_root), str(prior) if prior else None))

    def finished(s: dict) -> None:
        done[s["seed"]] = s
        bar.runs[0] += 1
        bar.set_description_str(f"{entry.slug} (seed-runs {bar.runs[0]}/{bar.runs[1]})")
        bar.update(expect)
        marks = " ".join(f"{c['metric']}={_fmt(c['value'])}{'✓' if c['passed'] else '✗'}" for c in s["claims"])
        say(f"  {entry.slug} seed {s['seed']}: {s['seconds']:.1f}s  {marks}")

    own_ray = bool(tasks) and (cluster is not None or jobs > 1) and uses_ray(entry, preset, overrides)
    if own_ray and cluster is None:  # its Ray actors take the cores: two seed-runs at once would halve each one's
        say(f"  {entry.slug}: its actors are Ray actors; its seed-runs run one at a time")
        jobs = 1
    if cluster is not None and own_ray:
        # its actors need the cluster's CPUs while it runs: one seed-run at a time, in a fresh process of this
        # machine, which starts its own Ray (or joins the one its `ray_address` key names), as without --ray
        import multiprocessing as mp

        say(f"  {entry.slug}: its actors are Ray actors; its seed-runs run one at a time on this machine")
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads_from_env() or 1,)) as pool:
            for t in tasks:
                finished(pool.submit(_run_seed, t).result())
    elif cluster is not None and tasks:
        for summary in cluster.run(tasks, out_root):
            finished(summary)
    elif jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp

        n = min(jobs, len(tasks))
        threads = threads_from_env() or max(1, (os.cpu_count() or 1) // n)
        with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            for fut in as_completed([pool.submit(_run_seed, t) for t in tasks]):
                finished(fut.result())
    else:
        for t in tasks:
            finished(execute(t[0], t[1], t[2], t[3], t[4], resume_dir=t[5], progress=not bar.disable or None))
    return [done[s] for s in seed_ids]


def uses_ray(entry: Entry, preset: str, overrides: list[str] | None) -> bool:
    """Whether the paper's runs start Ray actors of their own: its module's `uses_ray(cfg)` where it has one, else
    whether its config says `mode=ray` (distributed RL)."""
    cfg = paper_config(entry, preset, overrides)
    own = getattr(entry.load(), "uses_ray", None)
    return bool(own(cfg)) if own else getattr(cfg, "mode", None) == "ray"


_RUN_FILES = ("config.json", "summary.json", "metrics.jsonl")


def _run_seed_on_ray(args: tuple) -> tuple[dict, dict[str, bytes]]:
    """A seed-run inside a Ray task: into `out_root` if this node can write there, else a temporary folder; the
    run folder's record files and plots come back with the summary, for a driver that cannot see this node's disk."""
    import tempfile

    slug, preset, seed, overrides, out_root, resume_dir = args
    try:
        Path(out_root).mkdir(parents=True, exist_ok=True)
        if not os.access(out_root, os.W_OK):
            raise OSError(out_root)
    except OSError:
        out_root, resume_dir = tempfile.mkdtemp(prefix="seminal-"), None
    summary = execute(slug, preset, seed, overrides, out_root, resume_dir=resume_dir, progress=False)
    run_dir = Path(summary["run_dir"])
    files = {name: (run_dir / name).read_bytes() for name in _RUN_FILES if (run_dir / name).exists()}
    files.update({f"plots/{p.name}": p.read_bytes() for p in sorted((run_dir / "plots").glob("*.png"))})
    return summary, files


class RayCluster:
    """`reproduce --ray`: seed-runs as Ray tasks of one CPU (and one GPU for `full` where the cluster has GPUs),
    on a Ray instance started here ("local") or a running cluster (an address). Each task runs with one torch thread
    (`SEMINAL_THREADS=1`), so a seed gives the numbers it gives without Ray. On a cluster the package travels with
    the tasks (`py_modules`); the data must be where the nodes find it (`SEMINAL_DATA`)."""

    def __init__(self, address: str, preset: str):
        try:
            import ray
        except ImportError:
            raise SeminalError("--ray needs Ray: pip install 'seminal[distributed]'") from None
        self.ray, self.started = ray, False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"num_cpus": os.cpu_count() or 1} if address == "local" else {"address": address}
            try:
                ray.init(**kwargs, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise SeminalError(f"--ray {address}: cannot reach a Ray cluster there ({' '.join(str(e).split())}); "
                                   "start one with `ray start --head`, or give --ray alone for a local one") from None
            self.started = True
        gpu = 1 if preset == "full" and ray.cluster_resources().get("GPU", 0) >= 1 else 0
        env = {"SEMINAL_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        runtime: dict[str, Any] = {"env_vars": env}
        if address != "local":
            import seminal

            runtime["py_modules"] = [str(Path(seminal.__file__).parent)]
        self.task = ray.remote(num_cpus=1, num_gpus=gpu, max_retries=0)(_run_seed_on_ray).options(runtime_env=runtime)

    def run(self, tasks: list[tuple], out_root: Path):
        """Yield each task's summary as it finishes, its run folder copied into `out_root` if it ran elsewhere."""
        ray = self.ray
        tasks = [(*t[:4], str(Path(out_root).resolve()), t[5]) for t in tasks]
        pending = {self.task.remote(t): t for t in tasks}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                t = pending.pop(ref)
                try:
                    summary, files = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, SeminalError):
                        raise SeminalError(str(cause)) from None
                    raise SeminalError(f"{t[0]} seed {t[2]} failed on the cluster: "
                                       f"{' '.join(str(cause or e).split())[-300:]}") from None
                if not Path(summary["run_dir"]).exists():  # ran on another node: bring its record files here
                    run_dir = _new_run_dir(Path(out_root), t[0], t[2])
                    for name, data in files.items():
                        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
                        (run_dir / name).write_bytes(data)
                    summary["run_dir"] = str(run_dir)
                    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                yield summary
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


def result_name(slug: str, preset: str) -> str:
    """results/<slug>.json for the quick preset (the README's record), <slug>.<preset>.json for others."""
    return f"{slug}.json" if preset == "quick" else f"{slug}.{preset}.json"


def plot_folder(slug: str, preset: str) -> str:
    """The folder beside a record that holds its plots: <slug>/ (quick) or <slug>.<preset>/."""
    return result_name(slug, preset)[: -len(".json")]


MAX_PLOTS, PLOT_WIDTH = 8, 900


def _copy_plots(summaries: list[dict], results: Path, folder: str) -> list[str]:
    """Copy the first seed's plots (at most MAX_PLOTS, at most PLOT_WIDTH px wide) beside the record.

    Returns their paths relative to `results`, e.g. `lenet5/learning_curve.png`.
    """
    dest = results / folder
    for old in dest.glob("*.png"):
        old.unlink()
    pngs: list[Path] = []
    for s in summaries:
        pngs = sorted((Path(s["run_dir"]) / "plots").glob("*.png"))[:MAX_PLOTS]
        if pngs:
            break
    if not pngs:
        return []
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for png in pngs:
        with Image.open(png) as im:
            if im.width > PLOT_WIDTH:
                im = im.resize((PLOT_WIDTH, max(1, round(im.height * PLOT_WIDTH / im.width))), Image.LANCZOS)
            im.convert("RGB").quantize(256).save(dest / png.name, optimize=True)  # a palette: ~3x smaller
        out.append(f"{folder}/{png.name}")
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _aggregate(entry: Entry, preset: str, summaries: list[dict], overrides, seconds: float,
               root: Path | str | None = None) -> dict:
    claims = paper_claims(entry, preset)
    seeds = [s["seed"] for s in summaries]
    claim_records = []
    for claim in claims:
        per_run = [next((c for c in s["claims"] if c["name"] == claim.name), {}) for s in summaries]
        arms = {a: [(c.get("arms") or {}).get(a) for c in per_run] for a in claim.paired} if claim.paired else None
        claim_records.append(claim.evaluate_seeds([c.get("value") for c in per_run], seeds, arms))
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
    info = commit_info(Path(root) if root is not None else None)
    return {
        "paper": entry.slug,
        "number": entry.number,
        "title": entry.title,
        "citation": entry.citation,
        "preset": preset,
        "seeds": seeds,
        "overrides": list(overrides or []),
        "command": command(entry.slug, preset, seeds, list(overrides or [])),
        "passed": bool(claim_records) and all(c["passed"] for c in claim_records),
        "claims": claim_records,
        "metrics": metrics,
        "seconds": round(seconds, 1),
        "run_seconds": [s["seconds"] for s in summaries],
        "runs": [_relative(s["run_dir"], s["paper"]) for s in summaries],
        "resumed_runs": sum(bool(s.get("resumed")) for s in summaries),
        "config": {f.name: to_dict(cfg)[f.name] for f in fields(cfg)},
        "commit": info["commit"] + ("-dirty" if info["dirty"] else "") if info["commit"] else None,
        "dirty": info["dirty"],
        "commit_from": info["source"],
        "machine": machine(),
        "determinism": determinism([s.get("threads") for s in summaries]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "module": mod.__name__,
    }


def _relative(path: str, slug: str | None = None) -> str:
    """A run folder as the record names it: `<slug>/<time>-s<seed>`, relative to the `--out` folder it was
    written to (never a machine's absolute path)."""
    p = Path(path)
    return f"{slug or p.parent.name}/{p.name}"


def commit_info(root: Path | None = None) -> dict:
    """{commit, dirty, source}: $SEMINAL_COMMIT when set (dirty unknown), else git's HEAD of the checkout and
    whether tracked files differ from it outside the record (results/, README.md, RESULTS.md); commit None when
    neither is known."""
    if os.environ.get("SEMINAL_COMMIT"):
        return {"commit": os.environ["SEMINAL_COMMIT"], "dirty": None, "source": "SEMINAL_COMMIT"}
    root = root or PROJECT_ROOT
    if root is None:
        return {"commit": None, "dirty": None, "source": None}
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."]
                               + [f":(exclude){p}" for p in RECORD_FILES], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "source": None}
    return {"commit": sha, "dirty": bool(dirty), "source": "git"} if sha else {"commit": None, "dirty": None,
                                                                                   "source": None}


def commit() -> str | None:
    """$SEMINAL_COMMIT if set, else the checkout's commit (with `-dirty` when tracked files differ), or None.

    SEMINAL_COMMIT names the commit of a tree copied without (or with stale) git metadata, e.g. to a GPU machine.
    """
    info = commit_info()
    return info["commit"] + ("-dirty" if info["dirty"] else "") if info["commit"] else None


def record_guard(root: Path) -> None:
    """Refuse to write the committed record from an unknown commit or a dirty tree (unless SEMINAL_COMMIT is set)."""
    info = commit_info(root)
    if info["commit"] is None:
        raise SeminalError(f"--record: {root} has no git commit to record; commit there first, or set "
                           "SEMINAL_COMMIT=<sha> for a tree copied from that commit")
    if info["dirty"]:
        raise SeminalError("--record: tracked files differ from HEAD (`git status`); commit them first, so the "
                           "record names the code that made it, or write elsewhere with --results DIR")


def blas_kernels() -> str | None:
    """The BLAS NumPy runs its matrix products on, and the kernels it picked for this CPU (`openblas Haswell`,
    `openblas SkylakeX`): the NumPy actors of the RL papers act through it, so a record's numbers depend on it.
    OpenBLAS takes OPENBLAS_CORETYPE=<kernels> to use another CPU's kernels, which reproduces a record made there."""
    import numpy  # noqa: F401 - loads NumPy's BLAS, so that threadpoolctl sees it
    import threadpoolctl

    found = sorted({f"{i['internal_api']} {i.get('architecture') or '?'}" for i in threadpoolctl.threadpool_info()
                    if i.get("user_api") == "blas"})
    return ", ".join(found) or None


def determinism(threads: list) -> dict:
    """What a record's numbers depend on besides code, config and seed. tests/test_determinism.py checks that a
    seed-run gives the same numbers with 1 or 2 torch threads and in or out of `--jobs` worker processes; a
    different torch version or CPU instruction set (the kernels BLAS picks) may change the last digits, and a
    chaotic claim's verdict with them, which is why those claims run more seeds. NumPy's BLAS kernels are named,
    since they can be chosen (OPENBLAS_CORETYPE): measured, TRPO's seed 1000 gives the record's 331 with Haswell
    kernels and 500 with SkylakeX ones on the same AVX-512 machine."""
    import numpy

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": numpy.__version__,
        "blas": blas_kernels(),
        "threads": threads,
        "same_for": "threads and --jobs (tested); not guaranteed across torch versions or CPU instruction sets",
    }


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
