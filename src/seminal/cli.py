"""The `seminal` command line: list, show, run, reproduce, report and data.

Every user error is one line on stderr that names the fix, and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from seminal.core.errors import Interrupted, SeminalError

EPILOG = """examples:
  seminal list                                   the syllabus and each paper's status
  seminal show lenet5                            a paper's claim, presets and config keys
  seminal run 3 --preset quick --seed 1          one run, written to runs/weight-decay/<time>-s1/
  seminal run adam --set lr=0.01 --set epochs=2  override config keys (typed, checked)
  seminal run lenet5 --resume runs/lenet5/...    continue an interrupted run
  seminal reproduce --all --preset quick         every implemented claim over 3 seeds
  seminal report                                 report/index.html, RESULTS.md, README table
  seminal data verify mnist                      check a dataset's checksums
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help="quick (CPU, minutes) or full (the paper's scale, GPU)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set lr=0.01 (repeatable; `seminal show ID` lists keys)")
    p.add_argument("--out", default="runs", help="folder for run folders (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seminal", description="Reimplementations of the papers that built modern ML, "
                     "deep learning and RL, each with its central claim checked.", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("list", help="the whole syllabus by number, with each paper's status")

    p = sub.add_parser("show", help="one paper: citation, claims, presets, config keys and their meaning")
    p.add_argument("paper", help="number or slug, e.g. 3 or weight-decay")

    p = sub.add_parser("run", help="train one paper once; writes runs/<slug>/<time>-s<seed>/",
                       description="Train one paper once. The run folder gets config.json, metrics.jsonl, "
                       "TensorBoard events (tb/), plots/*.png, checkpoint.pt and summary.json. Ctrl-C saves "
                       "a checkpoint; --resume continues it.")
    p.add_argument("paper", help="number or slug, e.g. 2 or lenet5")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same numbers on CPU)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    _add_run_options(p)

    p = sub.add_parser("reproduce", help="check papers' claims over several seeds; writes results/<slug>.json",
                       description="Run each paper's claim over N seeds, write results/<slug>.json (mean, std, "
                       "per-seed values, pass/fail) and exit non-zero if any claim failed.")
    p.add_argument("papers", nargs="*", help="numbers or slugs")
    p.add_argument("--all", action="store_true", help="every implemented paper")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 (default 3)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes (default 1)")
    p.add_argument("--results", default=None, help="folder for results/*.json (default: the checkout's results/)")
    _add_run_options(p)

    p = sub.add_parser("report", help="build report/index.html, RESULTS.md and the README status table")
    p.add_argument("--results", default=None, help="folder of results/*.json (default: the checkout's results/)")
    p.add_argument("--out", default=None, help="report folder (default: the checkout's report/)")
    p.add_argument("--check", action="store_true", help="only check that README's table is up to date")

    p = sub.add_parser("data", help="datasets: list, fetch, verify")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    dsub.add_parser("list", help="known datasets and where each was found")
    for name, text in (("fetch", "download a dataset into the cache (checks SHA-256)"),
                       ("verify", "check every file of a dataset against its checksum")):
        q = dsub.add_parser(name, help=text)
        q.add_argument("name", help="dataset name (see `seminal data list`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `seminal list | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
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


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from seminal import syllabus

    if args.command == "list":
        return _cmd_list()
    if args.command == "show":
        return _cmd_show(syllabus.resolve(args.paper))
    if args.command == "run":
        from seminal.core.runner import execute

        entry = syllabus.resolve(args.paper)
        summary = execute(entry, args.preset, args.seed, args.overrides, args.out, resume_dir=args.resume,
                          progress=False if args.quiet else None)
        print(f"run folder: {summary['run_dir']}  ({summary['seconds']:.1f}s)")
        for key, value in summary["metrics"].items():
            print(f"  {key:<28} {value:.6g}" if isinstance(value, float) else f"  {key:<28} {value}")
        for c in summary["claims"]:
            mark = "PASS" if c["passed"] else "FAIL"
            value = "missing" if c["value"] is None else f"{c['value']:.4g}"
            print(f"  [{mark}] {c['name']}: {c['metric']} = {value} (need {c['op']} {c['threshold']:g}; "
                  f"paper: {c['paper_value']}, {c['source']})")
        return 0
    if args.command == "reproduce":
        from seminal.core.paths import results_dir
        from seminal.core.runner import reproduce

        if args.all and args.papers:
            raise SeminalError("give paper IDs or --all, not both")
        if not args.all and not args.papers:
            raise SeminalError("name papers to reproduce (e.g. `seminal reproduce 1 3`) or pass --all")
        entries = syllabus.implemented() if args.all else [syllabus.resolve(p) for p in args.papers]
        for e in entries:
            e.load()
        records = reproduce(entries, args.preset, args.seeds, args.overrides, args.out,
                            args.results or results_dir(), args.jobs)
        failed = [r["paper"] for r in records if not r["passed"]]
        print(f"{len(records) - len(failed)}/{len(records)} papers passed" +
              (f"; failing: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    if args.command == "report":
        from seminal.core.report import build_report, check_readme

        if args.check:
            return 0 if check_readme(args.results) else 1
        paths = build_report(args.results, args.out)
        for p in paths:
            print(f"wrote {p}")
        return 0
    if args.command == "data":
        return _cmd_data(args, parser)
    raise SeminalError(f"unknown command {args.command}")


def _cmd_list() -> int:
    from seminal.syllabus import SYLLABUS

    print(f"{'#':>2}  {'slug':<22} {'status':<15} title")
    for e in SYLLABUS:
        print(f"{e.number:>2}  {e.slug:<22} {e.status():<15} {e.title} ({e.citation})")
    print("(the syllabus numbers its 45 entries 1-46; number 22 is not assigned)")
    return 0


def _cmd_show(entry) -> int:
    from seminal.core.config import field_docs, field_types, to_dict

    print(f"{entry.number}. {entry.title} — {entry.citation}")
    print(f"status: {entry.status()}   notes: {entry.notes_path}")
    if not entry.implemented:
        return 0
    mod = entry.load()
    doc = (mod.__doc__ or "").strip().splitlines()
    if doc:
        print("\n" + "\n".join(doc[:12]))
    for preset, claims in getattr(mod, "CLAIMS", {}).items():
        for c in claims:
            print(f"\nclaim ({preset}): {c.name}\n  {c.metric} {c.op} {c.threshold:g}   "
                  f"paper: {c.paper_value} ({c.source}); over seeds: {c.aggregate}")
    presets = mod.PRESETS
    cfg_cls = type(next(iter(presets.values())))
    docs = field_docs(cfg_cls)
    types_ = field_types(cfg_cls)
    values = {name: to_dict(cfg) for name, cfg in presets.items()}
    print(f"\nconfig keys (set with --set key=value):   presets: {', '.join(presets)}")
    for key in types_:
        shown = "  ".join(f"{p}={json.dumps(v[key])}" for p, v in values.items())
        tname = getattr(types_[key], "__name__", str(types_[key]).replace("typing.", ""))
        print(f"  {key} ({tname}): {shown}")
        if docs.get(key):
            print(f"      {docs[key]}")
    result = entry.result()
    if result:
        print(f"\nlast reproduce ({result['preset']}, seeds {result['seeds']}): "
              f"{'PASS' if result['passed'] else 'FAIL'}")
    return 0


def _cmd_data(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from seminal.data import DATASETS
    from seminal.data.store import fetch, find_local, verify

    if args.data_command in (None, "list"):
        for ds in DATASETS.values():
            where = find_local(ds)
            print(f"{ds.name:<14} {ds.title:<28} {'found: ' + str(where) if where else 'not found locally'}")
        return 0
    if args.name not in DATASETS:
        raise SeminalError(f"unknown dataset '{args.name}'; known: {', '.join(DATASETS)}")
    ds = DATASETS[args.name]
    if args.data_command == "fetch":
        where = find_local(ds)
        if where is not None:
            print(f"{ds.title} already present in {where}")
            return 0
        print(f"downloaded {ds.title} to {fetch(ds)}")
        return 0
    if args.data_command == "verify":
        if ds.name == "cifar10":
            from seminal.data.vision import _cifar_folder

            _cifar_folder()
        bad = 0
        for path, status in verify(ds):
            print(f"{'ok ' if status == 'ok' else 'BAD'} {path}" + ("" if status == "ok" else f": {status}"))
            bad += status != "ok"
        if bad:
            raise SeminalError(f"{bad} file(s) of {ds.title} failed verification; delete them and fetch again")
        return 0
    raise SeminalError(f"unknown data action {args.data_command}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
