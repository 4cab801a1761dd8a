"""Past runs: the run folders under runs/ (`seminal runs`), and one run compared with the record."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from seminal.core.errors import SeminalError
from seminal.core.paths import results_dir
from seminal.syllabus import resolve


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _when(run_dir: Path) -> str:
    """The run's start, from its folder name `<YYYYmmdd-HHMMSS>-s<seed>` (else the folder's time)."""
    try:
        return datetime.strptime(run_dir.name[:15], "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return datetime.fromtimestamp(run_dir.stat().st_mtime).strftime("%Y-%m-%d %H:%M")


def runs(out: Path | str = "runs", papers: list[str] | None = None) -> list[dict]:
    """Every run folder under `out` (oldest first): paper, preset, seed, overrides, when, status, folder."""
    found = []
    for cfg in Path(out).glob("*/*/config.json"):
        meta = _read(cfg)
        if not meta or "paper" not in meta or (papers and meta["paper"] not in papers):
            continue
        run_dir = cfg.parent
        summary = _read(run_dir / "summary.json")
        if summary is not None:
            claims = summary.get("claims", [])
            ok = sum(bool(c.get("passed")) for c in claims)
            status = "pass" if claims and ok == len(claims) else f"fail ({ok} of {len(claims)} claims)"
        else:
            status = "interrupted" if (run_dir / "checkpoint.pt").exists() else "unfinished"
        found.append({"paper": meta["paper"], "preset": meta.get("preset"), "seed": meta.get("seed"),
                      "overrides": meta.get("overrides") or [], "when": _when(run_dir), "status": status,
                      "dir": str(run_dir)})
    return sorted(found, key=lambda r: (r["when"], r["dir"]))


def list_runs(out: Path | str = "runs", papers: list[str] | None = None) -> str:
    """`seminal runs`: one line a run."""
    rows = runs(out, papers)
    if not rows:
        return f"no runs under {out}; `seminal run ID` or `seminal reproduce ID` makes them (or pass --out DIR)"
    lines = [f"{'when':<16}  {'paper':<20} {'preset':<6} {'seed':>4}  {'result':<22} {'overrides':<24} folder"]
    for r in rows:
        lines.append(f"{r['when']:<16}  {r['paper']:<20} {r['preset'] or '?':<6} {r['seed']!s:>4}  {r['status']:<22} "
                     f"{' '.join(r['overrides']) or '-':<24} {r['dir']}")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def compare_run(run_dir: Path | str, results: Path | str | None = None) -> str:
    """`seminal runs --compare RUN_DIR`: the run's claims and config beside the record of its paper and preset."""
    run_dir = Path(run_dir)
    meta, summary = _read(run_dir / "config.json"), _read(run_dir / "summary.json")
    if meta is None:
        raise SeminalError(f"--compare {run_dir}: no readable config.json there; pass a folder made by `seminal run`")
    if summary is None:
        raise SeminalError(f"--compare {run_dir}: the run has not finished (no summary.json); finish it with "
                           f"`seminal run {meta.get('paper')} --resume {run_dir}`")
    entry = resolve(meta["paper"])
    preset, seed = meta.get("preset", "quick"), meta.get("seed")
    folder = Path(results) if results else results_dir()
    record = entry.result(folder, preset)
    if record is None:
        raise SeminalError(f"no record of {entry.slug} ({preset}) in {folder}; `seminal reproduce {entry.slug} "
                           f"--preset {preset}` writes one (or pass --results DIR)")
    from seminal.core.report import commit_label, seeds_text

    run_set = " ".join(meta.get("overrides") or []) or "none"
    rec_set = " ".join(record.get("overrides") or []) or "none"
    lines = [f"run    {run_dir}: {entry.slug} {preset}, seed {seed}, overrides: {run_set}, commit {meta.get('commit')}",
             f"record {folder}: seeds {record['seeds']}, overrides: {rec_set}, commit {commit_label(record)}, "
             f"{record.get('date')}"]
    diff = [f"{k}={_fmt(v)} (record {_fmt((record.get('config') or {}).get(k))})"
            for k, v in (meta.get("config") or {}).items() if (record.get("config") or {}).get(k, v) != v]
    lines.append("config: " + ("; ".join(diff) if diff else "the same as the record's"))
    in_record = seed in record["seeds"]
    for c in record["claims"]:
        mine = next((x for x in summary.get("claims", []) if x["name"] == c["name"]), None)
        value = None if mine is None else mine.get("value")
        text = f"  {c['name']}: run {_fmt(value)} {'pass' if mine and mine.get('passed') else 'FAIL'}"
        text += f" | record {_fmt(c['mean'])} ± {_fmt(c['std'])}, {seeds_text(c)}"
        if in_record:
            same = c["values"][record["seeds"].index(seed)]
            text += f"; record's seed {seed}: {_fmt(same)}" + (" (identical)" if same == value else " (differs)")
        finite = [v for v in c["values"] if isinstance(v, (int, float)) and math.isfinite(v)]
        if isinstance(value, (int, float)) and finite:
            inside = min(finite) <= value <= max(finite)
            text += f"; {'inside' if inside else 'outside'} the record's seed range [{_fmt(min(finite))}, " \
                    f"{_fmt(max(finite))}]"
        lines.append(text)
    return "\n".join(lines)
