"""The `seminal` command line: list, show, run, reproduce, report, runs and data.

Every user error is one line on stderr that names the fix, and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from seminal.core.errors import Interrupted, SeminalError

EPILOG = """examples:
  seminal list                                   the syllabus and each paper's status
  seminal show lenet5                            a paper's claim, presets and config keys
  seminal run 3 --preset quick --seed 1          one run, written to runs/weight-decay/<time>-s1/
  seminal run adam --set alpha=0.01 --set logreg_epochs=5
                                                 override config keys (typed, checked)
  seminal run lenet5 --resume runs/lenet5/...    continue an interrupted run
  seminal reproduce --all --preset quick         every implemented claim over 3 seeds
  seminal report                                 report/index.html and a page per paper, from the record
  seminal runs                                   past runs: paper, preset, seed, overrides, when, pass/fail
  seminal data verify mnist                      check a dataset's checksums
  seminal --debug run 1                          a traceback instead of one line, for bug reports
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help="quick (CPU, minutes) or full (the paper's scale, GPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set alpha=0.01 for adam (repeatable; `seminal show "
                   "ID` lists each paper's keys and their ranges)")
    p.add_argument("--out", default="runs", help="folder for run folders (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (also SEMINAL_QUIET=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seminal", description="Reimplementations of the papers that built modern ML, "
                     "deep learning and RL, each with its central claim checked.", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("list", help="the whole syllabus by number, with each paper's status")

    p = sub.add_parser("show", help="one paper: citation, claims, presets, config keys and their meaning")
    p.add_argument("paper", help="number or slug, e.g. 3 or weight-decay")

    p = sub.add_parser("run", help="train one paper once; writes runs/<slug>/<time>-s<seed>/",
                       description="Train one paper once. The run folder gets config.json, metrics.jsonl, "
                       "TensorBoard events (tb/), plots/*.png, checkpoint.pt and summary.json. Ctrl-C saves "
                       "a checkpoint; --resume continues it.")
    p.add_argument("paper", help="number or slug, e.g. 2 or lenet5")
    p.add_argument("--seed", type=int, default=None, help="random seed, >= 0 (default 0; same seed, same numbers "
                   "on CPU)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint, with its "
                   "own preset, seed and config")
    p.add_argument("--checkpoint-seconds", type=_positive_seconds, default=None, metavar="S",
                   help="checkpoint at least every S seconds where the paper allows (default 60; also "
                   "SEMINAL_CHECKPOINT_SECONDS)")
    _add_run_options(p)
    p.set_defaults(preset=None, out=None)  # None: not given, so --resume can refuse what it would ignore

    p = sub.add_parser("reproduce", help="check papers' claims over several seeds; writes <out>/results/<slug>.json",
                       description="Run each paper's claims over seeds, write <out>/results/<slug>.json (mean, std, "
                       "k of n seeds, per-seed values, pass/fail) with its plots beside it, and exit non-zero if "
                       "any claim failed. The committed record (results/, README's table, RESULTS.md) changes "
                       "only with --record.")
    p.add_argument("papers", nargs="*", help="numbers or slugs")
    p.add_argument("--all", action="store_true", help="every implemented paper")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of seeds, from --first-seed (default: the paper's own count, 3 for most: 0, 1, 2)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S", help="first of the --seeds seeds (default 0)")
    p.add_argument("--seed-list", default=None, metavar="A,B,C",
                   help="explicit seeds, e.g. 10,11,12 (keep tuning seeds apart from claim seeds)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes (default 1)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the seed-runs as Ray tasks, one CPU each: alone, on a Ray instance started on this "
                   "machine; with an ADDRESS (e.g. ray://head:10001 or auto), on that cluster (needs "
                   "seminal[distributed])")
    p.add_argument("--resume", action="store_true", help="reuse finished seed-runs in --out with the same config "
                   "and commit, and continue interrupted ones")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--results", default=None, metavar="DIR",
                       help="folder for <slug>.json and plots (default: <out>/results)")
    where.add_argument("--record", action="store_true", help="write the committed record: the checkout's "
                       "results/, README's status table and RESULTS.md (needs a clean, committed tree)")
    _add_run_options(p)

    p = sub.add_parser("report", help="build the HTML report (report/index.html and a page per paper)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="record folder to read (default: the checkout's results/)")
    p.add_argument("--out", default=None, help="report folder (default: report/)")
    p.add_argument("--record", action="store_true",
                   help="also regenerate the checkout's README status table and RESULTS.md from its results/")
    p.add_argument("--check", action="store_true", help="only check that README's table and RESULTS.md are current")

    p = sub.add_parser("runs", help="past runs (paper, preset, seed, overrides, when, pass/fail); compare one with "
                       "the record")
    p.add_argument("papers", nargs="*", help="only these papers (numbers or slugs)")
    p.add_argument("--out", default="runs", help="folder of run folders (default: runs)")
    p.add_argument("--compare", metavar="RUN_DIR", help="compare one run with the record of its paper and preset")
    p.add_argument("--results", default=None, metavar="DIR", help="record to compare with (default: the checkout's "
                   "results/)")

    p = sub.add_parser("data", help="datasets: list, fetch, verify")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    dsub.add_parser("list", help="known datasets and where each was found")
    for name, text in (("fetch", "download a dataset into the cache (checks SHA-256)"),
                       ("verify", "check every file of a dataset against its checksum")):
        q = dsub.add_parser(name, help=text)
        q.add_argument("name", help="dataset name (see `seminal data list`)")
    _add_debug(parser)
    return parser


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """`--debug` after a sub-command too (`seminal run 1 --debug`), without resetting one given before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                   help="show the traceback of an unexpected error")
                _add_debug(child)


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `seminal list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command in ("run", "reproduce"):
            _check_environment(args)
        return _dispatch(args, parser)
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint (if any) is kept in the run folder", file=sys.stderr)
        return 130
    except SeminalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line, and the traceback on request
        if args.debug:
            raise
        text = " ".join(str(e).split()) or "(no message)"
        print(f"error: {type(e).__name__}: {text} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _check_environment(args: argparse.Namespace) -> None:
    """Bad SEMINAL_* settings fail before any training; --quiet reaches every run (and worker) as SEMINAL_QUIET;
    a `full` preset without a GPU warns with the expected time."""
    from seminal import syllabus
    from seminal.core.run import checkpoint_seconds_from_env
    from seminal.core.runner import device, full_preset_warning, threads_from_env

    threads_from_env()
    checkpoint_seconds_from_env()
    device()
    if args.quiet:
        os.environ["SEMINAL_QUIET"] = "1"
    if args.preset == "full" and not getattr(args, "resume", None):
        if args.command == "run":
            entries, seeds = [syllabus.resolve(args.paper)], 1
        else:
            entries = syllabus.implemented() if args.all else [syllabus.resolve(p) for p in args.papers]
            seeds = len(args.seed_list.split(",")) if getattr(args, "seed_list", None) else (args.seeds or 3)
        warning = full_preset_warning([e for e in entries if e.implemented], max(seeds, 1))
        if warning:
            print(warning, file=sys.stderr)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from seminal import syllabus

    if args.command == "list":
        return _cmd_list()
    if args.command == "show":
        return _cmd_show(syllabus.resolve(args.paper))
    if args.command == "run":
        from seminal.core.runner import execute

        entry = syllabus.resolve(args.paper)
        if args.resume:
            options = {"--seed": args.seed, "--set": args.overrides, "--preset": args.preset, "--out": args.out}
            given = [flag for flag, value in options.items() if value not in (None, [])]
            if given:
                raise SeminalError(f"--resume continues a run with its own preset, seed, config and folder; drop "
                                   f"{', '.join(given)} (or start a new run without --resume)")
        summary = execute(entry, args.preset or "quick", 0 if args.seed is None else args.seed, args.overrides,
                          args.out or "runs", resume_dir=args.resume, progress=False if args.quiet else None,
                          checkpoint_seconds=args.checkpoint_seconds)
        print(f"run folder: {summary['run_dir']}  ({summary['seconds']:.1f}s)")
        for key, value in summary["metrics"].items():
            print(f"  {key:<28} {value:.6g}" if isinstance(value, float) else f"  {key:<28} {value}")
        for c in summary["claims"]:
            mark = "PASS" if c["passed"] else "FAIL"
            value = "missing" if c["value"] is None else f"{c['value']:.4g}"
            print(f"  [{mark}] {c['name']}: {c['metric']} = {value} (need {c['op']} {c['threshold']:g}; "
                  f"paper: {c['paper_value']}, {c['source']})")
        failed = [c["name"] for c in summary["claims"] if not c["passed"]]
        if failed:
            print(f"{len(failed)} of {len(summary['claims'])} claims failed in this run (exit status 1)")
        return 1 if failed else 0
    if args.command == "reproduce":
        return _cmd_reproduce(args)
    if args.command == "report":
        from seminal.core.paths import checkout
        from seminal.core.report import build_report, check_readme, write_record_docs

        if args.record and args.results:
            raise SeminalError("--record rebuilds README and RESULTS.md from the checkout's results/; drop --results")
        if args.check:
            return 0 if check_readme(args.results) else 1
        root = checkout("--record") if args.record else None
        paths = build_report(args.results, args.out) + (write_record_docs(root) if root else [])
        for p in paths:
            print(f"wrote {p}")
        return 0
    if args.command == "runs":
        from seminal.core.history import compare_run, list_runs

        if args.compare:
            print(compare_run(args.compare, args.results))
            return 0
        print(list_runs(args.out, [syllabus.resolve(p).slug for p in args.papers]))
        return 0
    if args.command == "data":
        return _cmd_data(args, parser)
    raise SeminalError(f"unknown command {args.command}")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from seminal import syllabus
    from seminal.core.paths import checkout
    from seminal.core.runner import reproduce

    if args.all and args.papers:
        raise SeminalError("give paper IDs or --all, not both")
    if not args.all and not args.papers:
        raise SeminalError("name papers to reproduce (e.g. `seminal reproduce 1 3`) or pass --all")
    seeds = args.seeds
    if args.seed_list is not None:
        if args.seeds is not None or args.first_seed != 0:
            raise SeminalError("give --seed-list, or --seeds with --first-seed, not both")
        try:
            seeds = [int(x) for x in args.seed_list.split(",") if x.strip()]
        except ValueError:
            raise SeminalError(f"--seed-list {args.seed_list}: expected integers separated by commas, e.g. "
                               "10,11,12") from None
    entries = syllabus.implemented() if args.all else [syllabus.resolve(p) for p in args.papers]
    broken = []
    for e in list(entries):
        try:
            mod = e.load()
        except (SeminalError, ImportError) as err:
            if not args.all:
                raise
            broken.append(f"{e.slug} ({' '.join(str(err).split())})")
            entries.remove(e)
            print(f"SKIP {e.number:>2} {e.slug}: cannot be imported: {err}", file=sys.stderr)
            continue
        reason = getattr(mod, "missing", lambda: None)()  # a paper that runs only beside a peer in its own venv
        if reason and args.all:
            entries.remove(e)
            print(f"SKIP {e.number:>2} {e.slug}: {reason}", file=sys.stderr)
    records = reproduce(entries, args.preset, seeds, args.overrides, args.out, args.results, args.jobs,
                        first_seed=args.first_seed, record=checkout("--record") if args.record else None,
                        resume=args.resume, progress=False if args.quiet else None, ray=args.ray)
    failed = [r["paper"] + (" (error)" if r.get("error") else "") for r in records if not r["passed"]]
    where = "the committed record (results/)" if args.record else (args.results or f"{args.out}/results")
    print(f"{len(records) - len(failed)}/{len(records)} papers passed" +
          (f"; failing: {', '.join(failed)}" if failed else "") +
          (f"; not run: {', '.join(broken)}" if broken else "") + f"; records in {where}")
    return 1 if failed or broken else 0


def _cmd_list() -> int:
    from seminal.core.runner import expected_seconds
    from seminal.syllabus import SYLLABUS

    print(f"{'#':>2}  {'slug':<22} {'status':<15} {'quick/seed':>10}  title")
    for e in SYLLABUS:
        t = expected_seconds(e)
        took = "" if t is None else f"~{t:.0f} s" if t < 120 else f"~{t / 60:.0f} min"
        print(f"{e.number:>2}  {e.slug:<22} {e.status():<15} {took:>10}  {e.title} ({e.citation})")
    print("(the syllabus numbers its 45 entries 1-46; number 22 is not assigned)")
    return 0


def _type_text(typ) -> str:
    """`int`, `tuple[int, ...]`, `one of: sigmoid, tanh` for a Literal."""
    import typing

    if typing.get_origin(typ) is typing.Literal:
        return "one of: " + ", ".join(map(str, typing.get_args(typ)))
    return getattr(typ, "__name__", None) if typing.get_origin(typ) is None else str(typ).replace("typing.", "")


_BARS = {"paper": "the paper's figure", "peer": "a peer's published figure",
         "sanity": "a sanity bar (no published figure)"}


def _cmd_show(entry) -> int:
    from seminal.core.config import field_docs, field_ranges, field_types, to_dict

    print(f"{entry.number}. {entry.title} — {entry.citation}")
    print(f"status: {entry.status()}   notes: {entry.notes_path}")
    if not entry.implemented:
        return 0
    mod = entry.load()
    doc = (mod.__doc__ or "").strip()
    if doc:  # the whole docstring: citation, idea and the equation map
        print("\n" + doc)
    for preset, claims in getattr(mod, "CLAIMS", {}).items():
        for c in claims:
            over = f"{c.k} of n seeds" if c.aggregate == "k_of_n" else {"mean": "the mean over seeds",
                                                                         "all": "every seed"}.get(c.aggregate)
            paired = f"; paired per seed: {c.paired[0]} vs {c.paired[1]}" if c.paired else ""
            print(f"\nclaim ({preset}): {c.name}\n  {c.metric} {c.op} {c.threshold:g}   "
                  f"paper: {c.paper_value} ({c.source})\n  pass rests on {over or c.aggregate}; bar from "
                  f"{_BARS.get(c.bar, c.bar)}{paired}")
    presets = mod.PRESETS
    cfg_cls = type(next(iter(presets.values())))
    docs = field_docs(cfg_cls)
    types_ = field_types(cfg_cls)
    ranges = field_ranges(cfg_cls)
    values = {name: to_dict(cfg) for name, cfg in presets.items()}
    print(f"\nconfig keys (set with --set key=value):   presets: {', '.join(presets)}")
    for key in types_:
        shown = "  ".join(f"{p}={json.dumps(v[key])}" for p, v in values.items())
        kind = _type_text(types_[key]) + (f", {ranges[key]}" if key in ranges else "")
        print(f"  {key} ({kind}): {shown}")
        if docs.get(key):
            print(f"      {docs[key]}")
    result = entry.result()
    if result:
        print(f"\nlast reproduce ({result['preset']}, seeds {result['seeds']}): "
              f"{'PASS' if result['passed'] else 'FAIL'}")
    return 0


def _cmd_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from seminal.data import DATASETS
    from seminal.data.store import UNCHECKED, discover, fetch, verify

    def form(found, ds) -> str:  # the alternative form found (CIFAR-10's JPEG copy), if not the dataset's own
        return f" as {found.dataset.title}" if found.dataset is not None and found.dataset.name != ds.name else ""

    if args.data_command in (None, "list"):
        for ds in DATASETS.values():
            found = discover(ds, warn=False)
            where = f"found: {found.folder}{form(found, ds)}" if found.folder else "not found locally"
            print(f"{ds.name:<14} {ds.title:<28} {where}")
            for s in found.skipped:
                print(f"{'':<14} skipped {'damaged' if s.damaged else 'incomplete'} copy: {s.reason}")
        return 0
    if args.name not in DATASETS:
        raise SeminalError(f"unknown dataset '{args.name}'; known: {', '.join(DATASETS)}")
    ds = DATASETS[args.name]
    if args.data_command == "fetch":
        found = discover(ds, warn=False)
        if found.folder is not None:
            print(f"{ds.title} already present in {found.folder}{form(found, ds)} (content checked)")
            return 0
        dest = fetch(ds)
        damaged = [s for s in found.skipped if s.damaged]
        replaced = any(s.folder.resolve() == dest.resolve() for s in damaged)
        print(f"downloaded {ds.title} to {dest}" + (" (replacing the damaged copy there)" if replaced else ""))
        for s in damaged:
            if s.folder.resolve() != dest.resolve():
                print(f"note: a damaged copy is still in {s.folder} and will be skipped; delete it ({s.reason})")
        return 0
    if args.data_command == "verify":
        found = discover(ds, warn=False)
        if found.folder is not None:
            for s in found.skipped:
                if s.damaged:
                    print(f"{'skipped':<9} {s.reason}")
        bad = unchecked = 0
        for path, status in verify(ds):
            label = "ok" if status == "ok" else "unchecked" if status.startswith(UNCHECKED) else "BAD"
            print(f"{label:<9} {path}" + ("" if status == "ok" else f": {status}"))
            bad += label == "BAD"
            unchecked += label == "unchecked"
        if bad:
            raise SeminalError(f"{bad} file(s) of {ds.title} failed verification; delete them and fetch again")
        if unchecked:
            print(f"{unchecked} file(s) of {ds.title} checked by size and structure only: no content SHA-256 "
                  "is published for them")
        return 0
    raise SeminalError(f"unknown data action {args.data_command}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
