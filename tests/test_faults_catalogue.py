"""The fault catalogue (`faults/<slug>.toml`) stays true to the code, and its runner tells caught from survived.

Running every fault takes minutes (`make faults`); these checks take a second: each fault still matches its
source exactly once and still compiles once injected, the tests it names exist, and every implemented paper
has a catalogue its notes page points to. Then the runner itself on two faults of a tiny catalogue: one that
its test must catch and one that changes nothing the test can see.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from seminal import syllabus

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fault_runner", ROOT / "faults" / "run.py")
fault_runner = importlib.util.module_from_spec(spec)
sys.modules["fault_runner"] = fault_runner  # dataclasses look their module up there
spec.loader.exec_module(fault_runner)

FAULTS = fault_runner.catalogue()
MIN_FAULTS = 5  # a paper's key lines are more than a handful; fewer means its catalogue was not written


def _implemented() -> list:
    return [e for e in syllabus.SYLLABUS if e.implemented]


@pytest.mark.parametrize("fault", FAULTS, ids=[f"{f.slug}:{f.name}" for f in FAULTS])
def test_each_fault_matches_once_compiles_and_names_existing_tests(fault):
    path = ROOT / fault.file
    assert path.is_file(), fault.file
    assert path.read_text().count(fault.find) == 1, f"`find` must occur exactly once in {fault.file}"
    ast.parse(fault_runner.injected(fault))  # a fault that does not parse proves nothing; replace != find
    for node in fault.tests:
        file, _, name = node.partition("::")
        assert (ROOT / file).is_file(), node
        if name:
            base = name.split("[")[0]
            assert re.search(rf"^\s*def {re.escape(base)}\(", (ROOT / file).read_text(), re.M), node
    for i, arg in enumerate(fault.pytest_args):
        if arg == "--deselect":
            target = fault.pytest_args[i + 1].split("::")
            assert re.search(rf"^def {re.escape(target[-1].split('[')[0])}\(", (ROOT / target[0]).read_text(), re.M)


def test_every_implemented_paper_has_a_catalogue_its_notes_point_to():
    slugs = {f.slug for f in FAULTS}
    missing, thin, unlinked = [], [], []
    for entry in _implemented():
        if entry.slug not in slugs:
            missing.append(entry.slug)
            continue
        if sum(f.slug == entry.slug for f in FAULTS) < MIN_FAULTS:
            thin.append(entry.slug)
        if f"faults/{entry.slug}.toml" not in entry.notes_path.read_text():
            unlinked.append(entry.slug)
    assert not missing, f"no faults/<slug>.toml for {missing}"
    assert not thin, f"fewer than {MIN_FAULTS} faults for {thin}"
    assert not unlinked, f"notes pages that do not name their catalogue: {unlinked}"


def test_a_catalogue_names_only_papers_of_the_syllabus_or_the_platform():
    known = {e.slug for e in syllabus.SYLLABUS} | {"core"}  # core.toml: claims, config, runs, RL evaluation, data
    assert {f.slug for f in FAULTS} <= known
    assert sum(f.slug == "core" for f in FAULTS) >= MIN_FAULTS


def test_the_runner_tells_a_caught_fault_from_a_surviving_one(tmp_path):
    """A real fault in backprop's sigmoid (its derivative test must fail) and a change to a comment only."""
    (tmp_path / "backprop.toml").write_text('''
tests = ["tests/test_backprop.py::test_backward_matches_finite_differences"]
[[fault]]
name = "sigmoid derivative from the pre-activation"
file = "src/seminal/papers/foundations/backprop.py"
find = "return y * (1.0 - y) if kind"
replace = "return y * (1.0 + y) if kind"
[[fault]]
name = "a comment only"
file = "src/seminal/papers/foundations/backprop.py"
find = "else 1.0 - y * y  # Eq. (5)"
replace = "else 1.0 - y * y  # Eq. (5) (a comment only)"
''')
    faults = fault_runner.catalogue(root=tmp_path)
    lines = []
    results = fault_runner.run(faults, baseline=True, log=lines.append)
    assert [r["verdict"] for r in results] == ["caught", "SURVIVED"], lines
    assert results[0]["caught_by"].startswith("test_backward_matches_finite_differences")
