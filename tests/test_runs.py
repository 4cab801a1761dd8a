"""Runs: folder layout, same seed same numbers, Ctrl-C checkpoint and an exact resume, reproduce, report."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

from seminal.core.claims import Claim
from seminal.core.errors import Interrupted
from seminal.core.report import _readme_with_table, check_readme, results_markdown, status_table
from seminal.core.run import Run, _from_safe, _to_safe
from seminal.core.runner import execute, reproduce
from seminal.syllabus import resolve

SMALL = ["xor_starts=4", "xor_sweeps=50", "encoder_starts=2", "encoder_sweeps=50", "mnist_train_limit=600",
         "mnist_epochs=3", "mnist_hidden=16"]


def test_run_folder_has_everything(tmp_path):
    s = execute("backprop", "quick", 0, SMALL, tmp_path)
    folder = tmp_path / "backprop"
    run_dir = next(folder.iterdir())
    assert run_dir.name.endswith("-s0")
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "plots").glob("*.png")) and list((run_dir / "tb").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= {"paper", "number", "preset", "seed", "seconds", "metrics", "claims"}
    assert summary["paper"] == "backprop" and summary["number"] == 1 and summary == s | {"run_dir": s["run_dir"]}
    for c in summary["claims"]:
        assert set(c) >= {"name", "metric", "op", "threshold", "value", "paper_value", "source", "passed"}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "mnist/test_acc" in r] == [1, 2, 3]


def test_same_seed_same_numbers_and_resume_matches(tmp_path):
    a = execute("backprop", "quick", 3, SMALL, tmp_path / "a")
    b = execute("backprop", "quick", 3, SMALL, tmp_path / "b")
    assert a["metrics"] == b["metrics"]
    with pytest.raises(Interrupted) as info:  # a Ctrl-C after the first epoch's checkpoint
        execute("backprop", "quick", 3, SMALL, tmp_path / "c", stop_after_checkpoints=1)
    run_dir = info.value.run_dir
    c = execute("backprop", "quick", 999, None, tmp_path / "ignored", resume_dir=run_dir)
    assert c["metrics"] == a["metrics"] and c["seed"] == 3 and c["resumed"]
    rows = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    assert [r["step"] for r in rows if "mnist/test_acc" in r] == [1, 2, 3]  # no duplicated epochs


def test_checkpoint_round_trips_numpy_and_rng(tmp_path):
    state = {"a": np.arange(5.0), "nested": [{"b": np.int64(3)}], "s": "x"}
    back = _from_safe(_to_safe(state))
    np.testing.assert_array_equal(back["a"], state["a"])
    assert back["nested"][0]["b"] == 3 and back["s"] == "x"
    run = Run(tmp_path, "backprop", 0, None, tensorboard=False)
    np.random.seed(1)
    torch.manual_seed(1)
    random.seed(1)
    run.checkpoint(state)
    expected = np.random.rand(3), torch.rand(3), random.random()
    np.random.seed(2)
    torch.manual_seed(2)
    random.seed(2)
    restored = run.restore()
    np.testing.assert_array_equal(np.random.rand(3), expected[0])  # each RNG continues where the checkpoint was
    assert torch.equal(torch.rand(3), expected[1])
    assert random.random() == expected[2]
    np.testing.assert_array_equal(restored["a"], state["a"])


def test_resume_drops_the_metrics_logged_after_the_checkpoint(tmp_path):
    with Run(tmp_path, "walk", 0, None, tensorboard=False) as run:
        run.log({"train/x": 1.0}, step=1)
        run.log({"train/x": 2.0}, step=2)
        run.checkpoint({"step": 2})
        run.log({"train/x": 3.0}, step=3)  # after the checkpoint: a crash here loses it, and the resume redoes it
    with Run(tmp_path, "walk", 0, None, tensorboard=False) as run:
        assert run.restore() == {"step": 2}
        run.log({"train/x": 3.5}, step=3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/x"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 3.5)]


def _random_walk(run: Run, steps: int = 400, sigint_at: int | None = None) -> float:
    """A paper's inner loop in miniature: one step of work, then a checkpoint whenever `run.due()`."""
    state = run.restore() or {"i": 0, "x": 0.0}
    i, x = state["i"], state["x"]
    while i < steps:
        if i == sigint_at:
            os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C, in the middle of an "epoch"
        x += float(np.random.randn())
        i += 1
        if run.due():
            run.checkpoint({"i": i, "x": x})
    return x


def test_ctrl_c_stops_within_a_step_and_the_resume_matches(tmp_path, capsys):
    kw = {"tensorboard": False, "checkpoint_seconds": 1e9}  # no checkpoint by time: only the Ctrl-C makes one
    np.random.seed(0)
    with Run(tmp_path / "whole", "walk", 0, None, **kw) as run:
        whole = _random_walk(run)
    assert run.checkpoints == 0
    np.random.seed(0)
    with pytest.raises(Interrupted), Run(tmp_path / "cut", "walk", 0, None, **kw) as run:
        _random_walk(run, sigint_at=150)
    assert 151 <= torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["state"]["i"] <= 152
    assert "stopping at the next checkpoint" in capsys.readouterr().out
    with Run(tmp_path / "cut", "walk", 0, None, **kw) as run:
        assert _random_walk(run) == whole


def test_due_by_elapsed_time_from_the_last_checkpoint(tmp_path, monkeypatch):
    with Run(tmp_path, "walk", 0, None, tensorboard=False, checkpoint_seconds=0.5) as run:
        start = time.monotonic()
        assert not run.due()
        while not run.due() and time.monotonic() - start < 10:  # bounded: a due() that never fires fails, not hangs
            time.sleep(0.01)
        assert run.due() and time.monotonic() - start >= 0.5
        run.checkpoint({})
        assert not run.due() and run.checkpoints == 1
    monkeypatch.setenv("SEMINAL_CHECKPOINT_SECONDS", "0.25")
    assert Run(tmp_path, "walk", 0, None, tensorboard=False).checkpoint_seconds == 0.25


def test_elapsed_time_carries_over_a_resume(tmp_path):
    with Run(tmp_path, "walk", 0, None, tensorboard=False) as run:
        time.sleep(0.3)
        run.checkpoint({})
    with Run(tmp_path, "walk", 0, None, tensorboard=False) as run:
        assert run.elapsed < 0.3
        run.restore()
        assert run.elapsed >= 0.3  # a resumed run's summary counts the first session too


def test_progress_counts_units_with_eta_and_postfix(tmp_path, monkeypatch):
    bar = Run(tmp_path, "walk", 0, None, tensorboard=False, progress=True).progress(
        total=1000, unit="img", initial=200, loss="0.512")
    meter, state = str(bar), bar.format_dict
    bar.close()
    assert (state["n"], state["total"], state["unit"]) == (200, 1000, "img") and "loss=0.512" in meter
    assert "<" in meter  # elapsed<remaining: the ETA
    monkeypatch.setenv("SEMINAL_QUIET", "1")
    assert Run(tmp_path, "walk", 0, None, tensorboard=False).progress(total=5).disable


def test_claim_checks_and_seed_aggregation():
    c = Claim("x", "m", ">=", 0.5, "p", "s")
    assert c.check(0.5) and not c.check(0.49) and not c.check(float("nan"))
    rec = c.evaluate_seeds([0.4, 0.7, 0.7])
    assert rec["passed"] and abs(rec["mean"] - 0.6) < 1e-12 and rec["seeds_passed"] == 2
    strict = Claim("x", "m", ">=", 0.5, "p", "s", aggregate="all")
    assert not strict.evaluate_seeds([0.4, 0.7, 0.7])["passed"]
    assert not c.evaluate_seeds([0.9, float("nan")])["passed"]  # a diverged seed fails the claim


def test_each_operator_at_its_threshold_and_beyond_finite_values():
    """The four operators at the threshold itself, a hair either side, and at +-inf and NaN (a value that blew up
    is not a pass, whichever way the claim points)."""
    t, eps = 2.0, 1e-9
    want = {">=": (True, True, False), ">": (False, True, False), "<=": (True, False, True), "<": (False, False, True)}
    for op, (at, above, below) in want.items():
        c = Claim("x", "m", op, t, "p", "s")
        assert (c.check(t), c.check(t + eps), c.check(t - eps)) == (at, above, below), op
        assert not c.check(float("inf")) and not c.check(float("-inf")) and not c.check(float("nan")), op
        assert not c.check(None), op


def test_the_mean_and_spread_over_seeds_leave_out_diverged_seeds():
    rec = Claim("x", "m", ">=", 0.5, "p", "s", aggregate="k_of_n").evaluate_seeds([0.4, float("nan"), 1.0])
    assert rec["mean"] == pytest.approx(0.7) and rec["std"] == pytest.approx(0.3)  # over the two finite seeds
    assert rec["seeds_passed"] == 1 and rec["seeds_needed"] == 2 and not rec["passed"]
    inf = Claim("x", "m", ">=", 0.5, "p", "s", aggregate="all").evaluate_seeds([1.0, float("inf"), 2.0])
    assert inf["seeds_passed"] == 2 and not inf["passed"]  # an overflowed seed is a failed seed


def test_reproduce_writes_results_and_report(tmp_path):
    records = reproduce([resolve("backprop")], "quick", 2, SMALL, tmp_path / "runs", tmp_path / "results",
                        echo=lambda *_: None)
    rec = json.loads((tmp_path / "results" / "backprop.json").read_text())
    assert rec == json.loads(json.dumps(records[0]))
    assert rec["seeds"] == [0, 1] and len(rec["claims"]) == 3
    for c in rec["claims"]:
        assert len(c["values"]) == 2 and abs(c["mean"] - sum(c["values"]) / 2) < 1e-12
        assert c["seeds"] == [0, 1] and c["n"] == 2
        assert c["seeds_passed"] == sum(v >= c["threshold"] for v in c["values"])  # all three claims are `>=`
    assert rec["passed"] == all(c["passed"] for c in rec["claims"])
    assert rec["plots"] and all((tmp_path / "results" / p).is_file() for p in rec["plots"])
    assert all(not r.startswith("/") for r in rec["runs"])
    table = status_table(tmp_path / "results")
    assert "| 1 | Backpropagation (MLP in NumPy) |" in table and "| 2 | LeNet-5 |" in table
    assert "## 1. Backpropagation" in results_markdown(tmp_path / "results")
    readme = "intro\n<!-- status-table:start (generated by `seminal report`; do not edit) -->\nold\n" \
             "<!-- status-table:end -->\ntail\n"
    new = _readme_with_table(readme, table)
    assert table in new and "old" not in new and new.endswith("tail\n")


def test_committed_readme_table_and_results_md_are_current():
    assert check_readme(), "run `seminal report --record` after `seminal reproduce --record`"


def test_recorded_commit_is_git_head_or_seminal_commit(monkeypatch):
    from seminal.core import runner

    monkeypatch.delenv("SEMINAL_COMMIT", raising=False)
    head = runner.commit()
    assert head is None or len(head.split("-")[0]) == 12
    monkeypatch.setenv("SEMINAL_COMMIT", "abc123def456")
    assert runner.commit() == "abc123def456"


def test_batches_cover_every_index_once_with_the_last_partial_batch():
    from seminal.core.run import batches

    plain = list(batches(10, 4))
    assert [b.tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = list(batches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in shuffled] == [4, 4, 2]
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(10))
    np.testing.assert_array_equal(np.concatenate(shuffled), np.random.default_rng(0).permutation(10))


def test_epoch_rng_depends_on_seed_and_epoch_alone():
    from seminal.core.run import epoch_rng

    first = epoch_rng(3, 0).permutation(50)
    np.testing.assert_array_equal(epoch_rng(3, 0).permutation(50), first)  # same (seed, epoch), same shuffle
    assert not np.array_equal(epoch_rng(3, 1).permutation(50), first)  # the next epoch shuffles anew
    assert not np.array_equal(epoch_rng(4, 0).permutation(50), first)
    np.testing.assert_array_equal(first, np.random.default_rng([3, 0]).permutation(50))


def test_seed_everything_seeds_python_numpy_and_torch():
    import random

    from seminal.core.run import seed_everything

    seed_everything(11)
    got = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    want = (random.Random(11).random(), float(np.random.RandomState(11).rand()),
            float(torch.rand(1, generator=torch.Generator().manual_seed(11))))
    assert got == want
