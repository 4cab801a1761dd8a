"""The command line refuses meaningless input and impossible resumes with one line naming the fix, turns an
unexpected exception into one line (the traceback with --debug), and exits non-zero when a claim fails."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest

import seminal.papers.foundations.backprop as backprop
from seminal import cli
from seminal.core import runner
from seminal.core.config import NonNegInt, PosFloat, PosInt, Sizes
from seminal.core.errors import Interrupted


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ goes here
    monkeypatch.delenv("SEMINAL_QUIET", raising=False)  # --quiet sets it in this process; undone after each test
    for name in ("SEMINAL_THREADS", "SEMINAL_DEVICE", "SEMINAL_CHECKPOINT_SECONDS"):
        monkeypatch.delenv(name, raising=False)


def _main(argv: list[str]) -> int:
    """cli.main, with argparse's exit (a usage error) as a return code too."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code)


def _one_line(capsys, code: int, *patterns: str, exit_code: int = 2) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == exit_code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for p in patterns:
        assert p in lines[0], lines[0]
    return lines[0]


def _checkpointing_train(metrics: dict[str, float]):
    def train(cfg, run):
        if run.restore() is None:
            run.checkpoint({"epoch": 1})
        return metrics
    return train


@pytest.fixture
def stub(monkeypatch):
    """backprop trains in no time, passing its claims; returns a way to interrupt it after its checkpoint."""
    monkeypatch.setattr(backprop, "train", _checkpointing_train(
        {"xor/success_rate": 1.0, "encoder/binary_code_rate": 1.0, "mnist/test_acc": 1.0}))

    def interrupted_run(tmp_path) -> str:
        with pytest.raises(Interrupted) as stop:
            runner.execute("backprop", "quick", 0, None, tmp_path / "runs", stop_after_checkpoints=1)
        return stop.value.run_dir
    return interrupted_run


# ---- --resume ------------------------------------------------------------------------------------------
def test_resume_of_a_finished_run_is_refused_and_its_summary_kept(stub, tmp_path, capsys):
    assert _main(["run", "backprop", "--quiet"]) == 0
    run_dir = next((tmp_path / "runs" / "backprop").iterdir())
    summary = (run_dir / "summary.json").read_bytes()
    capsys.readouterr()
    code = _main(["run", "backprop", "--resume", str(run_dir)])
    _one_line(capsys, code, "already finished", "seminal run backprop")
    assert (run_dir / "summary.json").read_bytes() == summary


def test_resume_continues_an_interrupted_run(stub, tmp_path, capsys):
    run_dir = stub(tmp_path)
    assert _main(["run", "backprop", "--resume", run_dir]) == 0
    summary = json.loads(open(f"{run_dir}/summary.json").read())
    assert summary["resumed"] and summary["seed"] == 0


@pytest.mark.parametrize("content", ["{not json", "{}", '{"paper": "backprop", "preset": "quick"}', "[1, 2]"])
def test_resume_with_a_corrupt_config_is_one_line(content, stub, tmp_path, capsys):
    run_dir = stub(tmp_path)
    open(f"{run_dir}/config.json", "w").write(content)
    capsys.readouterr()
    assert _one_line(capsys, _main(["run", "backprop", "--resume", run_dir]), "config.json is unreadable or incomplete")


@pytest.mark.parametrize("extra,named", [(["--seed", "0"], "--seed"), (["--set", "xor_lr=1"], "--set"),
                                         (["--preset", "full"], "--preset"), (["--out", "elsewhere"], "--out"),
                                         (["--seed", "2", "--preset", "quick"], "--seed, --preset")])
def test_resume_refuses_what_it_would_ignore(extra, named, stub, tmp_path, capsys):
    run_dir = stub(tmp_path)
    capsys.readouterr()
    assert _one_line(capsys, _main(["run", "backprop", "--resume", run_dir, *extra]), f"drop {named}")


# ---- meaningless values --------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,env,pattern", [
    (["--seed", "-1"], {}, "--seed -1: must be a non-negative integer"),
    ([], {"SEMINAL_THREADS": "abc"}, "SEMINAL_THREADS='abc': must be a positive integer"),
    ([], {"SEMINAL_THREADS": "0"}, "SEMINAL_THREADS='0': must be a positive integer"),
    ([], {"SEMINAL_CHECKPOINT_SECONDS": "-5"}, "SEMINAL_CHECKPOINT_SECONDS='-5': must be a positive number"),
    ([], {"SEMINAL_DEVICE": "gpu"}, "SEMINAL_DEVICE='gpu': use auto, cpu or cuda"),
    (["--checkpoint-seconds", "0"], {}, "must be a positive number of seconds"),
])
def test_bad_values_are_one_line_before_any_run(argv, env, pattern, stub, tmp_path, monkeypatch, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _one_line(capsys, _main(["run", "backprop", *argv]), pattern)
    assert not (tmp_path / "runs").exists()


def test_unwritable_out_is_one_line(stub, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert _one_line(capsys, _main(["run", "backprop", "--out", str(tmp_path / "a-file" / "runs")]),
              "cannot create a run folder there", "pass a writable folder with --out")


@dataclass(frozen=True)
class Ranged:
    epochs: PosInt = 3
    """Passes."""
    batch_size: PosInt = 8
    lr: PosFloat = 0.1
    alpha: PosFloat = 1e-3
    train_limit: NonNegInt = 0
    hidden: Sizes = (4, 4)
    act: Literal["relu", "tanh"] = "relu"


@pytest.fixture
def ranged(monkeypatch):
    monkeypatch.setattr(backprop, "PRESETS", {"quick": Ranged(), "full": Ranged(epochs=30)})
    monkeypatch.setattr(backprop, "train", lambda cfg, run: {})


@pytest.mark.parametrize("pair,pattern", [
    ("epochs=-3", "epochs=-3: must be > 0"), ("batch_size=0", "batch_size=0: must be > 0"),
    ("lr=-1", "lr=-1.0: must be > 0"), ("alpha=-1", "alpha=-1.0: must be > 0"),
    ("train_limit=-5", "train_limit=-5: must be >= 0"), ("hidden=", "hidden=(): must not be empty"),
    ("hidden=4,0", "every value must be > 0; 0 is not"), ("act=gelu", "expected one of relu, tanh"),
])
def test_out_of_range_override_is_one_line(pair, pattern, ranged, tmp_path, capsys):
    _one_line(capsys, _main(["run", "backprop", "--set", pair]), pattern)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("slug,pair", [("lenet5", "epochs=-3"), ("lenet5", "batch_size=0"), ("lenet5", "lr=-1"),
                                       ("lenet5", "train_limit=-5"), ("adam", "alpha=-1"), ("adam", "train_limit=-5"),
                                       ("dropout", "hidden="), ("dropout", "batch_size=0")])
def test_the_issues_meaningless_values_are_refused_by_the_papers(slug, pair, tmp_path, monkeypatch, capsys):
    """The values of issue 9 that ran silently (Adam's alpha=-1 ran gradient ascent and exited 0)."""
    from seminal import syllabus

    monkeypatch.setattr(syllabus.resolve(slug).load(), "train", lambda cfg, run: {})  # accepted: a fast failure
    _one_line(capsys, _main(["run", slug, "--set", pair]), pair.split("=")[0] + "=")
    assert not (tmp_path / "runs").exists()


# ---- show ----------------------------------------------------------------------------------------------
def test_show_prints_ranges_choices_and_the_whole_docstring(ranged, monkeypatch, capsys):
    doc = "Title.\n\nEquation map:\n" + "\n".join(f"  Eq. ({i})  x_{i} -> `f{i}`" for i in range(1, 30))
    monkeypatch.setattr(backprop, "__doc__", doc)
    assert _main(["show", "backprop"]) == 0
    out = capsys.readouterr().out
    assert "Eq. (29)  x_29 -> `f29`" in out  # the last line of the equation map, not only its first ones
    assert "epochs (int, > 0): quick=3  full=30" in out and "train_limit (int, >= 0)" in out
    assert "hidden (tuple[int, ...], non-empty, each > 0)" in out and "act (one of: relu, tanh)" in out


# ---- unexpected errors, exit codes ---------------------------------------------------------------------
def _crash(cfg, run):
    raise RuntimeError("boom\nsecond line")


def test_unexpected_exception_is_one_line_with_a_debug_hint(monkeypatch, capsys):
    monkeypatch.setattr(backprop, "train", _crash)
    assert _one_line(capsys, _main(["run", "backprop"]), "error: RuntimeError: boom second line",
              "rerun with --debug", exit_code=1)


@pytest.mark.parametrize("argv", [["--debug", "run", "backprop"], ["run", "backprop", "--debug"]])
def test_debug_shows_the_traceback(argv, monkeypatch):
    monkeypatch.setattr(backprop, "train", _crash)
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(argv)


def test_run_exits_1_when_a_claim_fails(monkeypatch, capsys):
    monkeypatch.setattr(backprop, "train", lambda cfg, run: {"xor/success_rate": 0.1, "encoder/binary_code_rate": 1,
                                                             "mnist/test_acc": 1.0})
    assert _main(["run", "backprop"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] XOR" in out and "1 of 3 claims failed" in out


# ---- --preset full without a GPU -----------------------------------------------------------------------
def _full_record(results, gpu: str, seconds: list[float]):
    results.mkdir(exist_ok=True)
    (results / "backprop.full.json").write_text(json.dumps({"run_seconds": seconds, "machine": {"gpu": gpu}}))


def test_full_preset_without_gpu_warns_with_the_recorded_time(stub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEMINAL_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("SEMINAL_DEVICE", "cpu")
    _full_record(tmp_path / "results", "NVIDIA H200", [540.0, 660.0])
    _main(["run", "backprop", "--preset", "full"])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "without a GPU" in err and "~10 min on NVIDIA H200" in err
    _main(["reproduce", "backprop", "--preset", "full", "--seeds", "3"])
    assert "~30 min on NVIDIA H200" in capsys.readouterr().err


def test_full_preset_warning_without_a_record_or_on_a_gpu(stub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEMINAL_RESULTS", str(tmp_path / "empty"))
    monkeypatch.setenv("SEMINAL_DEVICE", "cpu")
    _main(["run", "backprop", "--preset", "full"])
    assert "no recorded time for backprop" in capsys.readouterr().err
    import torch

    monkeypatch.setattr(runner, "device", lambda: torch.device("cuda"))
    _main(["run", "backprop", "--preset", "full"])
    assert "warning" not in capsys.readouterr().err


# ---- progress ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,disabled", [(["run", "backprop", "--quiet"], True), (["run", "backprop"], None),
                                           (["reproduce", "backprop", "--seeds", "1", "--quiet"], True)])
def test_quiet_hides_progress_bars_in_run_and_reproduce(argv, disabled, monkeypatch, capsys):
    import tqdm.auto

    seen = []
    real = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **kw: seen.append(kw["disable"]) or real(*a, **kw))

    def train(cfg, run):
        run.progress(total=10, unit="img").close()
        return {}

    monkeypatch.setattr(backprop, "train", train)
    cli.main(argv)
    assert seen and set(seen) == {disabled}  # every bar, the paper's and any of reproduce's own


def test_show_prints_what_each_claim_rests_on(monkeypatch, capsys):
    from seminal.core.claims import Claim

    claims = [Claim("A beats B", "cmp/gap", ">", 0.0, "A better", "Fig. 2", aggregate="k_of_n", k=2, bar="paper",
                    paired=("a/x", "b/x")),
              Claim("solves", "eval/return", ">=", 1.0, "zoo: 2", "zoo", bar="peer")]
    monkeypatch.setattr(backprop, "CLAIMS", {"quick": claims})
    assert _main(["show", "backprop"]) == 0
    out = capsys.readouterr().out
    assert "pass rests on 2 of n seeds; bar from the paper's figure; paired per seed: a/x vs b/x" in out
    assert "pass rests on the mean over seeds; bar from a peer's published figure" in out
