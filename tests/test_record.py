"""The record: where reproduce writes, --record's guard, seeds, resume, plots beside the record, claim aggregates.

Training is replaced by a fake `train` (values chosen per seed) so each test runs in well under a second a seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seminal import cli
from seminal.core import paths, runner
from seminal.core.claims import Claim
from seminal.core.errors import Interrupted, SeminalError
from seminal.core.plots import line_plot
from seminal.core.runner import record_guard, reproduce, seed_list
from seminal.syllabus import resolve

# per seed: arm A, arm B (A beats B in seeds 0 and 3 only), and a rate
VALUES = {0: (5.0, 3.0, 0.9), 1: (1.0, 2.0, 0.9), 2: (1.0, 4.0, 0.1), 3: (9.0, 1.0, 0.1)}
CLAIMS = [
    Claim("A beats B", "cmp/a_minus_b", ">", 0.0, "A better", "Fig. 1", aggregate="k_of_n", k=2, bar="paper",
          paired=("arm/a", "arm/b")),
    Claim("rate is high", "rate", ">=", 0.5, "0.5", "peer zoo", bar="peer"),
    Claim("rate is high on every seed", "rate", ">=", 0.5, "0.5", "sanity", aggregate="all", bar="sanity"),
]


@pytest.fixture
def fake(monkeypatch):
    """backprop's `train` and CLAIMS replaced: metrics from VALUES, one plot, and a list of the seeds trained."""
    mod = resolve("backprop").load()
    trained: list[int] = []

    def train(cfg, run):
        trained.append(run.seed)
        if getattr(train, "interrupt_seed", None) == run.seed:
            train.interrupt_seed = None
            raise Interrupted(str(run.dir), "backprop")
        a, b, rate = VALUES[run.seed]
        line_plot(run.plots_dir / "curve.png", {"a": ([0, 1], [0, a])}, xlabel="step", ylabel="a", title="t")
        return {"arm/a": a, "arm/b": b, "rate": rate}

    monkeypatch.setattr(mod, "train", train)
    monkeypatch.setattr(mod, "CLAIMS", {"quick": CLAIMS})
    monkeypatch.setenv("SEMINAL_COMMIT", "feedc0ffee00")
    return train, trained


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def test_reproduce_writes_the_users_folder_not_the_checkout(fake, tmp_path):
    committed = paths.PROJECT_ROOT / "results" / "backprop.json"
    before = _digest(committed), _digest(paths.PROJECT_ROOT / "README.md"), _digest(paths.PROJECT_ROOT / "RESULTS.md")
    (rec,) = reproduce([resolve("backprop")], "quick", [3, 0, 2], ["xor_starts=4"], tmp_path / "runs",
                       echo=lambda *_: None)
    assert (_digest(committed), _digest(paths.PROJECT_ROOT / "README.md"),
            _digest(paths.PROJECT_ROOT / "RESULTS.md")) == before
    folder = tmp_path / "runs" / "results"
    assert json.loads((folder / "backprop.json").read_text()) == json.loads(json.dumps(rec))
    assert rec["seeds"] == [3, 0, 2] and rec["overrides"] == ["xor_starts=4"]
    assert rec["command"] == "seminal reproduce backprop --preset quick --seed-list 3,0,2 --set xor_starts=4"
    assert rec["commit"] == "feedc0ffee00" and rec["commit_from"] == "SEMINAL_COMMIT"
    assert rec["plots"] == ["backprop/curve.png"] and (folder / "backprop" / "curve.png").stat().st_size > 0
    for run in rec["runs"]:  # relative, and naming a real run folder under --out
        assert not Path(run).is_absolute() and str(tmp_path) not in run
        assert (tmp_path / "runs" / run / "summary.json").is_file()
    pair, mean, every = rec["claims"]
    assert pair["values"] == [8.0, 2.0, -3.0]  # A - B of the same seed, seeds in the order given
    assert pair["arms"] == {"arm/a": [9.0, 5.0, 1.0], "arm/b": [1.0, 3.0, 4.0]}
    assert pair["seeds_passed"] == 2 and pair["seeds_needed"] == 2 and pair["passed"]
    assert pair["bar"] == "paper" and pair["paired"] == ["arm/a", "arm/b"] and pair["rests_on"] == "2 of 3 seeds"
    assert mean["seeds_passed"] == 1 and abs(mean["mean"] - 1.1 / 3) < 1e-12 and not mean["passed"]
    assert not every["passed"] and every["rests_on"] == "all 3 seeds"


def test_explicit_seeds(fake, tmp_path):
    assert seed_list(3) == [0, 1, 2] and seed_list(2, first_seed=10) == [10, 11] and seed_list([7, 3]) == [7, 3]
    for bad in (0, [], [1, 1], [-1]):
        with pytest.raises(SeminalError):
            seed_list(bad)
    train, trained = fake
    assert cli.main(["reproduce", "1", "--seed-list", "3,1", "--out", str(tmp_path / "r")]) == 1
    assert trained == [3, 1]
    rec = json.loads((tmp_path / "r" / "results" / "backprop.json").read_text())
    assert rec["seeds"] == [3, 1] and rec["claims"][0]["seeds"] == [3, 1]
    assert cli.main(["reproduce", "1", "--seeds", "2", "--first-seed", "2", "--out", str(tmp_path / "s")]) == 1
    assert trained[2:] == [2, 3]


def test_without_seeds_a_paper_runs_its_own_count(fake, tmp_path, monkeypatch):
    """GAE's sweep needs 10 seeds (`SEEDS = 10`): `reproduce` without --seeds runs them; others run 3."""
    train, trained = fake
    monkeypatch.setattr(resolve("backprop").load(), "SEEDS", 5, raising=False)
    monkeypatch.setitem(VALUES, 4, VALUES[0])
    assert cli.main(["reproduce", "1", "--out", str(tmp_path / "r")]) == 1
    assert trained == [0, 1, 2, 3, 4]
    monkeypatch.delattr(resolve("backprop").load(), "SEEDS")
    assert cli.main(["reproduce", "1", "--out", str(tmp_path / "s")]) == 1
    assert trained[5:] == [0, 1, 2]
    assert resolve("gae").load().SEEDS == 10


def test_resume_reuses_finished_seed_runs(fake, tmp_path, monkeypatch):
    train, trained = fake
    train.interrupt_seed = 2
    with pytest.raises(Interrupted, match="--resume"):
        reproduce([resolve("backprop")], "quick", 3, None, tmp_path, echo=lambda *_: None)
    assert trained == [0, 1, 2] and not (tmp_path / "results" / "backprop.json").exists()
    (rec,) = reproduce([resolve("backprop")], "quick", 3, None, tmp_path, echo=lambda *_: None, resume=True)
    assert trained == [0, 1, 2, 2]  # seeds 0 and 1 reused, the interrupted seed 2 continued in its own folder
    assert rec["seeds"] == [0, 1, 2] and len(set(rec["runs"])) == 3
    assert len(list((tmp_path / "backprop").glob("*-s2*"))) == 1
    reproduce([resolve("backprop")], "quick", 3, ["xor_starts=4"], tmp_path, echo=lambda *_: None, resume=True)
    assert trained[4:] == [0, 1, 2]  # another config: nothing to reuse
    monkeypatch.setenv("SEMINAL_COMMIT", "another00000")
    reproduce([resolve("backprop")], "quick", [0], None, tmp_path, echo=lambda *_: None, resume=True)
    assert trained[7:] == [0]  # another commit: nothing to reuse


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def _checkout(tmp_path: Path) -> Path:
    """A tiny committed checkout: README with the status-table markers, a source file, results/."""
    from seminal.core.report import END, START

    root = tmp_path / "checkout"
    (root / "results").mkdir(parents=True)
    (root / "README.md").write_text(f"intro\n{START}\nold table\n{END}\ntail\n")
    (root / "code.py").write_text("x = 1\n")
    (root / "results" / "old.json").write_text("{}\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "init")
    return root


def test_record_guard_refuses_unknown_commit_and_dirty_tree(tmp_path, monkeypatch):
    monkeypatch.delenv("SEMINAL_COMMIT", raising=False)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(SeminalError, match="no git commit"):
        record_guard(bare)
    root = _checkout(tmp_path)
    record_guard(root)  # clean
    (root / "results" / "old.json").write_text('{"changed": 1}\n')
    (root / "README.md").write_text("regenerated\n")
    record_guard(root)  # the record itself may differ
    (root / "code.py").write_text("x = 2\n")
    with pytest.raises(SeminalError, match="differ from HEAD"):
        record_guard(root)
    assert runner.commit_info(root)["dirty"] is True
    monkeypatch.setenv("SEMINAL_COMMIT", "abc123def456")
    record_guard(root)  # a tree copied from a named commit


def test_record_writes_the_checkout_record_and_docs(fake, tmp_path, monkeypatch):
    root = _checkout(tmp_path)
    monkeypatch.delenv("SEMINAL_COMMIT", raising=False)
    (rec,) = reproduce([resolve("backprop")], "quick", 2, None, tmp_path / "runs", echo=lambda *_: None,
                       record=root)
    assert json.loads((root / "results" / "backprop.json").read_text())["seeds"] == [0, 1]
    assert (root / "results" / "backprop" / "curve.png").is_file() and not (tmp_path / "runs" / "results").exists()
    assert rec["commit"] and not rec["dirty"] and rec["commit_from"] == "git"
    readme = (root / "README.md").read_text()
    assert "old table" not in readme and readme.endswith("tail\n")
    assert "| 1 | Backpropagation (MLP in NumPy) | claim failing |" in readme
    assert "## 1. Backpropagation" in (root / "RESULTS.md").read_text()
    with pytest.raises(SeminalError, match="drop --results"):
        reproduce([resolve("backprop")], "quick", 1, None, tmp_path / "runs", tmp_path / "x", record=root)
    (root / "code.py").write_text("x = 3\n")
    with pytest.raises(SeminalError, match="differ from HEAD"):
        reproduce([resolve("backprop")], "quick", 1, None, tmp_path / "runs", record=root)


def test_outside_a_checkout_nothing_falls_back_to_the_cwd(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_PKG", tmp_path / "site-packages" / "seminal")
    assert paths._find_checkout() is None  # no pyproject.toml above the package
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')
    monkeypatch.setattr(paths, "_PKG", tmp_path / "lib" / "seminal")
    assert paths._find_checkout() is None  # another project's
    monkeypatch.setattr(paths, "PROJECT_ROOT", None)
    monkeypatch.delenv("SEMINAL_RESULTS", raising=False)
    assert paths.results_dir() == Path("runs") / "results"
    assert cli.main(["report", "--record"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "installed copy" in err and "pip install -e ." in err
    assert not (tmp_path / "README.md").exists() and not (tmp_path / "RESULTS.md").exists()


def test_claim_aggregates():
    mean = Claim("x", "m", ">=", 0.5, "p", "s")
    rec = mean.evaluate_seeds([0.1, 0.2, 1.5])
    assert rec["passed"] and rec["seeds_passed"] == 1 and rec["n"] == 3  # passes on the mean alone
    k = Claim("x", "m", ">=", 0.5, "p", "s", aggregate="k_of_n")
    assert not k.evaluate_seeds([0.1, 0.2, 1.5])["passed"] and k.evaluate_seeds([0.6, 0.2, 0.7])["passed"]
    assert k.evaluate_seeds([0.6, float("nan"), 0.7])["passed"]  # a diverged seed is one failed seed
    assert not mean.evaluate_seeds([0.9, float("nan")])["passed"]
    k3 = Claim("x", "m", ">=", 0.5, "p", "s", aggregate="k_of_n", k=3)
    assert not k3.evaluate_seeds([0.6, 0.7])["passed"] and k3.evaluate_seeds([0.6, 0.7, 0.8, 0.1])["passed"]
    paired = Claim("x", "d", ">", 0, "p", "s", paired=("a", "b"))
    assert paired.evaluate({"a": 3.0, "b": 1.0})["value"] == 2.0
    assert paired.evaluate({"d": -1.0, "a": 3.0, "b": 1.0})["value"] == -1.0  # the paper's own metric wins
    assert paired.evaluate({"a": 3.0})["value"] is None
    for bad in ({"aggregate": "median"}, {"k": 2}, {"aggregate": "k_of_n", "k": 0}, {"bar": "vibes"},
                {"paired": ("a",)}):
        with pytest.raises(ValueError):
            Claim("x", "m", ">", 0, "p", "s", **bad)


def test_nothing_is_skipped_silently(fake, tmp_path, monkeypatch, capsys):
    lenet5, decay = resolve("lenet5").load(), resolve("weight-decay").load()
    monkeypatch.setattr(lenet5, "CLAIMS", {"full": lenet5.CLAIMS.get("full", [])})  # nothing for quick

    def broken(cfg, run):
        raise SeminalError("MNIST not found; fetch it")

    monkeypatch.setattr(decay, "train", broken)
    papers = [resolve("backprop"), resolve("lenet5"), resolve("weight-decay")]
    lines: list[str] = []
    records = reproduce(papers, "quick", 1, None, tmp_path, echo=lines.append, progress=True)
    assert [r["paper"] for r in records] == ["backprop", "weight-decay"] and "error" in records[1]
    assert any(line.startswith("SKIP  2 lenet5: no claims for preset 'quick'") for line in lines)
    assert any(line.startswith("ERROR  3 weight-decay: MNIST not found") for line in lines)
    assert sorted(p.name for p in (tmp_path / "results").glob("*.json")) == ["backprop.json"]
    assert "100%" in capsys.readouterr().err  # the one overall bar, finished


def test_list_shows_each_papers_recorded_time(tmp_path, monkeypatch, capsys):
    (tmp_path / "backprop.json").write_text(json.dumps({"passed": True, "run_seconds": [30.0, 50.0, 40.0]}))
    monkeypatch.setenv("SEMINAL_RESULTS", str(tmp_path))
    assert runner.expected_seconds(resolve("backprop")) == 40.0 and runner.expected_seconds(resolve("lenet5")) is None
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "~40 s" in next(line for line in out if " backprop " in line)
    assert "~" not in next(line for line in out if " lenet5 " in line)


def test_runs_lists_and_compares_with_the_record(fake, tmp_path, capsys):
    from seminal.core.history import compare_run, list_runs

    train, _ = fake
    reproduce([resolve("backprop")], "quick", 2, None, tmp_path, echo=lambda *_: None)
    train.interrupt_seed = 5
    with pytest.raises(Interrupted):
        reproduce([resolve("backprop")], "quick", [5], ["xor_starts=4"], tmp_path, echo=lambda *_: None)
    lines = list_runs(tmp_path).splitlines()
    assert len(lines) == 4 and all(" backprop " in line and " quick " in line for line in lines[1:])
    assert [line.split()[5] for line in lines[1:]] == ["pass", "fail", "unfinished"]  # seed 1: A loses to B
    assert "xor_starts=4" in lines[3] and "xor_starts=4" not in lines[1]
    assert list_runs(tmp_path, ["lenet5"]).startswith("no runs under")
    first = sorted((tmp_path / "backprop").glob("*-s1"))[0]
    text = compare_run(first, tmp_path / "results")
    assert "config: the same as the record's" in text and "record's seed 1: -1 (identical)" in text
    other = execute_one(tmp_path, ["xor_starts=7"], seed=3)
    text = compare_run(other, tmp_path / "results")
    recorded = json.loads((tmp_path / "results" / "backprop.json").read_text())["config"]["xor_starts"]
    assert f"xor_starts=7 (record {recorded})" in text and "record's seed 3" not in text
    assert "run 8 pass" in text and "outside the record's seed range [-1, 2]" in text
    with pytest.raises(SeminalError, match="has not finished"):
        compare_run(sorted((tmp_path / "backprop").glob("*-s5"))[0], tmp_path / "results")
    assert cli.main(["runs", "--out", str(tmp_path), "1"]) == 0 and "unfinished" in capsys.readouterr().out


def execute_one(out: Path, overrides: list[str], seed: int) -> Path:
    return Path(runner.execute("backprop", "quick", seed, overrides, out)["run_dir"])


def test_the_need_line_reads_as_english_for_every_aggregate():
    from seminal.core.claims import on_seeds, rests_on

    mean = rests_on({"aggregate": "mean", "values": [1, 2, 3]})
    every = rests_on({"aggregate": "all", "values": [1, 2, 3]})
    some = rests_on({"aggregate": "k_of_n", "k": 2, "values": [1, 2, 3]})
    assert [on_seeds(r) for r in (mean, every, some)] == ["on the mean of 3 seeds", "on all 3 seeds",
                                                         "on 2 of 3 seeds"]


def test_every_recorded_preset_reaches_the_table_and_a_failing_one_fails_the_status(tmp_path):
    from seminal.core.report import status_table

    def record(preset, passed):
        claim = {"name": f"{preset} claim", "metric": "m", "op": ">", "threshold": 0.0, "mean": 1.0 if passed else -1.0,
                 "std": 0.0, "values": [1.0 if passed else -1.0], "passed": passed, "paper_value": "p", "source": "s"}
        return {"paper": "backprop", "preset": preset, "seeds": [0], "passed": passed, "claims": [claim]}

    (tmp_path / "backprop.json").write_text(json.dumps(record("quick", True)))
    entry = resolve("backprop")
    assert entry.status(tmp_path) == "claim verified"
    (tmp_path / "backprop.ablation.json").write_text(json.dumps(record("ablation", False)))
    (tmp_path / "backprop.full.json").write_text(json.dumps(record("full", True)))
    assert [r["preset"] for r in entry.records(tmp_path)] == ["quick", "full", "ablation"]
    assert entry.status(tmp_path) == "claim failing"
    table = status_table(tmp_path)
    assert "❌ ablation claim (ablation)" in table and "✅ full claim (full)" in table


def test_determinism_names_numpys_blas_kernels_which_openblas_coretype_chooses():
    """The RL papers' NumPy actors multiply through NumPy's OpenBLAS, whose kernels depend on the CPU unless
    OPENBLAS_CORETYPE picks them: the record names them, and the report says how to pick the same ones."""
    import numpy

    from seminal.core.report import determinism_label
    from seminal.core.runner import determinism

    d = determinism([1, 1])
    assert d["numpy"] == numpy.__version__ and d["blas"].startswith("openblas ")
    code = "from seminal.core.runner import blas_kernels; print(blas_kernels())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OPENBLAS_CORETYPE": "Haswell"}).stdout.strip()
    assert out == "openblas Haswell"
    label = determinism_label({**d, "blas": "openblas Haswell"})
    assert "NumPy " + numpy.__version__ + " on openblas Haswell kernels (elsewhere: OPENBLAS_CORETYPE=Haswell)" in label
    assert "OPENBLAS" not in determinism_label({k: v for k, v in d.items() if k not in ("numpy", "blas")})
