"""Faults nobody chose: random one-operator mutants of each paper's module, run against its tests.

The catalogues (`faults/<slug>.toml`) hold the faults we thought of. This draws others at random, as a reviewer
with faults of their own would: in the functions of a paper's module (the file most of its catalogue targets) it
picks `--per-paper` binary operators, comparisons and negations (f-strings, log and print calls, raises and
asserts left alone) and flips one each (+ <-> -, * <-> /, ** -> *, > <-> >=, < <-> <=, == <-> !=, -x -> x). Each
mutant is written into a copy of `src/` (the module re-emitted by `ast.unparse`) and the paper's catalogue
selection is run against it; `--full` runs the paper's whole test files and its case of the resume contract
instead. A survivor is either a missing test or a change that cannot matter (a wall-clock measurement, a log's
cadence, an equality at a boundary the data never hits): read each one.

    python faults/mutate.py                    # 8 mutants a paper, every paper
    python faults/mutate.py dqn ppo --per-paper 20 --jobs 2
    python faults/mutate.py --full --json /tmp/mutants.json
    python faults/mutate.py --module src/seminal/papers/rl/_offpolicy.py --per-paper 15
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as runner  # noqa: E402 - faults/run.py, beside this file

ROOT = runner.ROOT
_QUIET_CALLS = {"log", "progress", "print", "SeminalError", "line_plot", "savefig", "say", "set_postfix", "write",
                "_warn_once", "check_finite", "format", "join", "echo", "set_description_str"}
_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
          ast.FloorDiv: ast.Mult}
_CMP = {ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


def sites(tree: ast.AST) -> list[ast.AST]:
    """The mutable nodes inside functions, in a fixed (source) order."""
    out: list[ast.AST] = []

    def visit(node: ast.AST, in_function: bool, quiet: bool) -> None:
        if isinstance(node, (ast.JoinedStr, ast.Raise, ast.Assert)):
            quiet = True
        if isinstance(node, ast.Call):
            f = node.func
            quiet |= (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")) in _QUIET_CALLS
        in_function |= isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if in_function and not quiet and (
                isinstance(node, ast.BinOp) and type(node.op) in _BINOP
                or isinstance(node, ast.Compare) and type(node.ops[0]) in _CMP
                or isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and not isinstance(node.operand, ast.Constant)):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child, in_function, quiet)

    visit(tree, False, False)
    return out


def mutate(source: str, index: int) -> tuple[int, str, str]:
    """(line, the original expression, the module with site `index` flipped)."""
    tree = ast.parse(source)
    node = sites(tree)[index]
    before = " ".join((ast.get_source_segment(source, node) or "").split())
    if isinstance(node, ast.BinOp):
        node.op = _BINOP[type(node.op)]()
    elif isinstance(node, ast.Compare):
        node.ops[0] = _CMP[type(node.ops[0])]()
    else:  # -x -> x
        for parent in ast.walk(tree):
            for name, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, name, node.operand)
                elif isinstance(value, list) and any(v is node for v in value):
                    value[[v is node for v in value].index(True)] = node.operand
    return node.lineno, before, ast.unparse(tree)


def _targets(slugs: list[str], modules: list[str]) -> list[tuple[Path, dict, str]]:
    """(catalogue, its data, the module to mutate): each paper's own module (the file most of its faults target),
    or with `modules` each given file, run against the test files of every catalogued fault in it."""
    catalogues = [(p, tomllib.loads(p.read_text())) for p in sorted(runner.CATALOGUE.glob("*.toml"))]
    if modules:
        out = []
        for module in modules:  # the tests of every catalogued fault in this file, whole files, no deselects
            tests = sorted({t.split("::")[0] for p, d in catalogues for f in d.get("fault", []) if f["file"] == module
                            for t in f.get("tests", d.get("tests", []))})
            if not tests:
                raise SystemExit(f"no catalogue has a fault in {module}: it has no test selection to run")
            out.append((Path(module), {"tests": tests, "pytest_args": []}, module))
        return out
    out = []
    for path, data in catalogues:
        if path.stem == "core" or (slugs and path.stem not in slugs):
            continue
        files = [f["file"] for f in data.get("fault", [])]
        out.append((path, data, max(sorted(set(files)), key=files.count)))
    return out


def plan(slugs: list[str], per_paper: int, seed: int, full: bool, modules: list[str] | None = None) -> list[dict]:
    rng = random.Random(seed)
    jobs = []
    for path, data, module in _targets(slugs, modules or []):
        source = (ROOT / module).read_text()
        n = len(sites(ast.parse(source)))
        if full:
            own = (ROOT / "tests").glob(f"test_{path.stem.replace('-', '_')}*.py")
            tests = sorted(str(p.relative_to(ROOT)) for p in own)
            tests.append(f"tests/test_resume_contract.py::test_resume_from_a_checkpoint_matches_uninterrupted"
                         f"[{path.stem}]")
            args: list[str] = []
        else:
            tests, args = data["tests"], data.get("pytest_args", [])
        for index in sorted(rng.sample(range(n), min(per_paper, n))):
            line, before, text = mutate(source, index)
            jobs.append({"slug": path.stem, "module": module, "line": line, "before": before, "text": text,
                         "tests": tests, "args": args})
    return jobs


def run_one(job: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="seminal-mutant-") as tmp:
        tree = Path(tmp)
        runner._copy_src(tree)
        (tree / job["module"]).write_text(job["text"])
        rc, out, seconds = runner._pytest(tree, job["tests"], job["args"], 300)
    verdict = "caught" if rc == 1 else "SURVIVED" if rc == 0 else "error"
    first = runner._first_failure(out) if rc == 1 else ""
    return {k: job[k] for k in ("slug", "module", "line", "before")} | {
        "verdict": verdict, "seconds": round(seconds, 1), "first_failure": first}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("papers", nargs="*", help="slugs (default: every catalogue but core)")
    ap.add_argument("--per-paper", type=int, default=8, help="mutants drawn per paper (default 8)")
    ap.add_argument("--seed", type=int, default=20261208, help="the draw's seed (default 20261208)")
    ap.add_argument("--full", action="store_true", help="the paper's whole test files and resume-contract case")
    ap.add_argument("--module", action="append", default=[], metavar="PATH",
                    help="mutate this file instead (repeatable), e.g. src/seminal/papers/rl/_onpolicy.py")
    ap.add_argument("--jobs", type=int, default=1, help="mutants at a time (default 1)")
    ap.add_argument("--json", type=Path, help="write every verdict here")
    a = ap.parse_args(argv)
    jobs = plan(a.papers, a.per_paper, a.seed, a.full, a.module)
    print(f"{len(jobs)} mutants", flush=True)

    def one(job: dict) -> dict:
        r = run_one(job)
        print(f"{r['verdict']:>9}  {r['slug']} {Path(r['module']).name}:{r['line']} `{r['before'][:80]}` "
              f"({r['seconds']:.0f} s) {r['first_failure']}", flush=True)
        return r

    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results = list(pool.map(one, jobs))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    caught = sum(r["verdict"] == "caught" for r in results)
    print(f"{caught} of {len(results)} mutants caught")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
