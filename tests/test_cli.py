"""The command line: every bad input is one line naming the fix and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import write_idx

from seminal import cli
from seminal.syllabus import SYLLABUS

SEMINAL = [sys.executable, "-m", "seminal"]


def _run(args, env=None, **kw):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(SEMINAL + args, capture_output=True, text=True, env=full_env, timeout=300, **kw)


def _one_line_error(proc, pattern) -> bool:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern in lines[0], lines[0]
    return True


def test_list_shows_whole_syllabus():
    proc = _run(["list"])
    assert proc.returncode == 0
    for entry in SYLLABUS:
        assert f" {entry.slug} " in proc.stdout
    assert len(SYLLABUS) == 45 and {e.number for e in SYLLABUS} == set(range(1, 47)) - {22}


def test_help_on_every_command():
    for args in (["--help"], ["run", "--help"], ["reproduce", "--help"], ["show", "--help"], ["report", "--help"],
                 ["data", "--help"], ["data", "verify", "--help"], ["list", "--help"]):
        proc = _run(args)
        assert proc.returncode == 0 and "usage:" in proc.stdout, args


def test_show_prints_claims_and_documented_keys():
    proc = _run(["show", "backprop"])
    assert proc.returncode == 0
    assert "mnist/test_acc >= 0.97" in proc.stdout
    assert "xor_lr (float" in proc.stdout and "Learning rate epsilon" in proc.stdout


@pytest.mark.parametrize("args,pattern", [
    (["run", "nonsense"], "unknown paper 'nonsense'"),
    (["run", "backprp"], "did you mean 'backprop'"),
    (["run", "1", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "1", "--set", "lr=0.1"], "unknown config key 'lr'"),
    (["run", "1", "--set", "xor_starts=many"], "expected a value of type int"),
    (["run", "1", "--set", "mnist_activation=gelu"], "expected one of sigmoid, tanh"),
    (["run", "1", "--seed", "x"], "invalid int value"),
    (["reproduce", "1", "--seeds", "0"], "need at least 1 seed"),
    (["reproduce"], "or pass --all"),
    (["run", "alexnet"], "has no implementation yet"),
    (["data", "verify", "imagenet"], "unknown dataset 'imagenet'"),
    (["run", "1", "--resume", "/nonexistent/run"], "no config.json there"),
])
def test_bad_input_is_one_line(args, pattern):
    assert _one_line_error(_run(args), pattern)


def test_missing_dataset_is_one_line(tmp_path):
    env = {"SEMINAL_DATA": str(tmp_path / "nothing"), "SEMINAL_DATA_STRICT": "1", "SEMINAL_OFFLINE": "1",
           "SEMINAL_CACHE": str(tmp_path / "cache")}
    proc = _run(["run", "1", "--set", "xor_starts=2", "--set", "encoder_starts=2", "--set", "xor_sweeps=10",
                 "--set", "encoder_sweeps=10", "--out", str(tmp_path / "runs")], env=env)
    assert _one_line_error(proc, "MNIST not found")


def test_corrupt_dataset_is_one_line(tmp_path):
    import numpy as np

    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name, shape in (("train-images-idx3-ubyte.gz", (3, 28, 28)), ("train-labels-idx1-ubyte.gz", (3,)),
                        ("t10k-images-idx3-ubyte.gz", (3, 28, 28)), ("t10k-labels-idx1-ubyte.gz", (3,))):
        write_idx(folder / name, np.zeros(shape, np.uint8))
    env = {"SEMINAL_DATA": str(tmp_path / "data"), "SEMINAL_DATA_STRICT": "1", "SEMINAL_OFFLINE": "1",
           "SEMINAL_CACHE": str(tmp_path / "cache")}
    proc = _run(["run", "1", "--set", "xor_starts=2", "--set", "encoder_starts=2", "--set", "xor_sweeps=10",
                 "--set", "encoder_sweeps=10", "--out", str(tmp_path / "runs")], env=env)
    assert _one_line_error(proc, "corrupt data file")
    proc = _run(["data", "verify", "mnist"], env=env)
    assert proc.returncode != 0 and "BAD" in proc.stdout


def test_nan_loss_stops_with_the_step(monkeypatch, capsys, tmp_path):
    import seminal.papers.foundations.backprop as backprop

    def diverging_train(cfg, run):
        for step in range(5):
            run.check_finite(float("nan") if step == 3 else 1.0, step)
        return {}

    monkeypatch.setattr(backprop, "train", diverging_train)
    code = cli.main(["run", "backprop", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "loss became nan at step 3" in err and "--set lr=" in err


def test_missing_claim_metric_prints_missing(monkeypatch, capsys, tmp_path):
    import seminal.papers.foundations.backprop as backprop

    monkeypatch.setattr(backprop, "train", lambda cfg, run: {"xor/success_rate": 0.9})
    assert cli.main(["run", "backprop", "--out", str(tmp_path)]) == 1  # a failed claim fails the run
    out = capsys.readouterr().out
    assert "mnist/test_acc = missing" in out and "[FAIL]" in out and "[PASS]" in out
