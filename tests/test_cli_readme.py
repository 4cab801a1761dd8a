"""Every `seminal ...` command written in README.md and in the CLI's --help texts runs as written.

`list`, `show`, `data list` and the help screens run for real; `run`, `reproduce` and `report` go through the
real parser, config resolution and override checking, with each paper's `train` replaced by a stub that
returns metrics passing its claims (the training itself is tested elsewhere).
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from seminal import cli, syllabus
from seminal.core.errors import Interrupted
from seminal.core.paths import PROJECT_ROOT, results_dir
from seminal.core.runner import execute

README = PROJECT_ROOT / "README.md"


def _readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("seminal "):
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [span for span in re.findall(r"`(seminal [^`]+)`", prose) if len(span.split()) >= 3]
    return commands


def _help_texts(parser: argparse.ArgumentParser) -> list[str]:
    texts = [parser.description or "", parser.epilog or ""]
    for action in parser._actions:
        texts.append(action.help or "")
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                texts += _help_texts(child)
    return texts


def _help_commands() -> list[str]:
    commands = []
    for text in _help_texts(cli.build_parser()):
        for line in text.splitlines():  # the epilog's examples: `  seminal ...   what it does`
            m = re.match(r"\s+(seminal \S.*?)(\s{2,}|$)", line)
            if m:
                commands.append(m.group(1))
        commands += re.findall(r"`(seminal [^`]+)`", text)
    return commands


COMMANDS = sorted(set(_readme_commands() + _help_commands()))


def test_the_docs_name_the_commands_this_test_runs():
    readme, helps = _readme_commands(), _help_commands()
    assert len(readme) >= 10 and len(helps) >= 8, (readme, helps)
    assert {c.split()[1] for c in COMMANDS} >= {"list", "show", "run", "reproduce", "report", "data"}


def _passing(claims) -> dict[str, float]:
    """One value per claimed metric that passes every claim on it."""
    values: dict[str, float] = {}
    for c in claims:
        v = c.threshold + 1 if c.op in (">", ">=") else c.threshold - 1
        old = values.get(c.metric)
        values[c.metric] = v if old is None else (max(old, v) if c.op in (">", ">=") else min(old, v))
    return values


def _record_files() -> dict[Path, int]:
    """The committed record (results/, README.md, RESULTS.md) with each file's mtime."""
    paths = [*(PROJECT_ROOT / "results").rglob("*"), PROJECT_ROOT / "README.md", PROJECT_ROOT / "RESULTS.md"]
    return {p: p.stat().st_mtime_ns for p in paths if p.is_file()}


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """Every implemented paper trains in no time; runs, results and the report go to tmp_path."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(results_dir(), tmp_path / "results")
    shutil.copytree(results_dir(), tmp_path / "runs" / "results")
    monkeypatch.setenv("SEMINAL_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SEMINAL_QUIET", "1")
    record = _record_files()
    for entry in syllabus.implemented():
        mod = entry.load()
        metrics = _passing([c for claims in getattr(mod, "CLAIMS", {}).values() for c in claims])

        def train(cfg, run, metrics=metrics):
            if run.restore() is None:
                run.checkpoint({"done": True})  # so that `--resume` has a checkpoint to continue
            run.log(metrics, step=1)
            return metrics

        monkeypatch.setattr(mod, "train", train)
    from seminal.data import store

    monkeypatch.setattr(store, "fetch", lambda ds: tmp_path / "cache" / ds.name)
    monkeypatch.setattr(store, "verify", lambda ds: [(tmp_path / "file", "ok")])
    yield tmp_path
    assert _record_files() == record, "a documented command wrote the committed record"


def _argv(command: str, tmp_path: Path) -> list[str]:
    argv = command.split()[1:]
    if "--resume" in argv:  # the docs' `runs/lenet5/...`: a real interrupted run of that paper
        paper = argv[1]
        with pytest.raises(Interrupted) as stop:
            execute(paper, "quick", 0, None, tmp_path / "runs", stop_after_checkpoints=1)
        argv[argv.index("--resume") + 1] = stop.value.run_dir
    argv = ["lenet5" if a == "ID" else a for a in argv]  # `seminal show ID`
    if "--jobs" in argv:  # worker processes would not see the stub; the parallel path is tested with real runs
        argv[argv.index("--jobs") + 1] = "1"
    if "--ray" in argv:  # nor would Ray's; `reproduce --ray` is tested with real runs in tests/test_determinism.py
        argv.remove("--ray")
    if argv[0] == "reproduce" and not {"--seeds", "--seed-list", "--record"} & set(argv):
        argv += ["--seeds", "1"]  # the default of 3 only repeats the same stub
    return argv


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_runs(command, stubbed, capsys):
    argv = _argv(command, stubbed)
    if "--record" in argv:  # writes the committed record from a clean tree: parsed here, run by its own tests
        assert cli.build_parser().parse_args(argv).record
        return
    try:
        code = cli.main(argv)
    except SystemExit as e:  # --help
        code = e.code
    out, err = capsys.readouterr()
    # reproduce exits 1 for a claim that fails on too few seeds (a "k of n seeds" claim): a verdict, not an error
    ok = (0, 1) if argv[0] == "reproduce" else (0,)
    assert code in ok and "error:" not in err, f"`{command}` exited {code}: {err or out[-2000:]}"
