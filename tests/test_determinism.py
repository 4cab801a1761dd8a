"""What a record's numbers depend on. A seed-run gives the same numbers to the digit with one or two torch threads,
and inside or outside `reproduce --jobs` worker processes; the record says so (`determinism`) and names the torch
version and CPU instruction set, which may change the last digits."""

from __future__ import annotations

import json
import re

import pytest
import torch
from test_resume_contract import TINY

from seminal import syllabus
from seminal.core import runner

_WALL_CLOCK = re.compile(r"seconds|steps_per_s|per_second")


def _numbers(summary: dict) -> dict:
    return {k: v for k, v in summary["metrics"].items() if not _WALL_CLOCK.search(k)}


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **kw: None)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# One paper of each kind of loop: convolutions and minibatch SGD, on-policy, replay with target nets, and the
# soft actor-critic's sampled actions.
@pytest.mark.parametrize("slug", ["lenet5", "ppo", "dqn", "sac"])
def test_one_or_two_threads_give_the_same_numbers(slug, tmp_path, monkeypatch):
    out = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("SEMINAL_THREADS", threads)
        summary = runner.execute(slug, "quick", 3, TINY[slug], tmp_path / threads, progress=False)
        assert summary["threads"] == int(threads)
        out[threads] = _numbers(summary)
    assert out["1"] == out["2"] and len(out["1"]) >= 1


def test_jobs_worker_processes_give_the_numbers_of_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMINAL_THREADS", "1")
    entry = syllabus.resolve("ppo")
    records = {}
    for jobs in (1, 2):
        runner.reproduce([entry], "quick", [5, 6], TINY["ppo"], tmp_path / f"j{jobs}", jobs=jobs, progress=False)
        records[jobs] = json.loads((tmp_path / f"j{jobs}" / "results" / "ppo.json").read_text())
    values = {jobs: {k: m["values"] for k, m in r["metrics"].items() if not _WALL_CLOCK.search(k)}
              for jobs, r in records.items()}
    assert values[1] == values[2] and values[1]
    d = records[2]["determinism"]
    assert d["threads"] == [1, 1] and d["torch"] == torch.__version__ and d["cpu_capability"]


def test_ray_tasks_give_the_numbers_of_one_process(tmp_path, monkeypatch):
    """`reproduce --ray`: the seed-runs as Ray tasks on a local 2-CPU instance give the numbers of one process, their
    run folders land in --out, and the instance is shut down after."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("SEMINAL_THREADS", "1")
    entry = syllabus.resolve("ppo")
    records = {}
    for name, kw in (("one", {}), ("ray", {"ray": "local"})):
        runner.reproduce([entry], "quick", [5, 6], TINY["ppo"], tmp_path / name, progress=False, **kw)
        records[name] = json.loads((tmp_path / name / "results" / "ppo.json").read_text())
    values = {name: {k: m["values"] for k, m in r["metrics"].items() if not _WALL_CLOCK.search(k)}
              for name, r in records.items()}
    assert values["one"] == values["ray"] and values["one"]
    summaries = (tmp_path / "ray" / "ppo").glob("*/summary.json")  # folders named by start time: either may be first
    assert sorted(json.loads(p.read_text())["seed"] for p in summaries) == [5, 6]
    assert not ray.is_initialized()


def test_a_ray_task_that_cannot_write_to_out_sends_its_run_folder_back(tmp_path, monkeypatch):
    """On another node of a cluster --out may not exist: the task runs into a temporary folder and returns the files
    the record needs (config, summary, metrics, plots), which the driver writes into --out."""
    monkeypatch.setenv("SEMINAL_THREADS", "1")
    locked = tmp_path / "a-file"  # no folder can be made under a file, even by root
    locked.write_text("")
    summary, files = runner._run_seed_on_ray(("ppo", "quick", 4, TINY["ppo"], str(locked / "runs"), None))
    assert not str(summary["run_dir"]).startswith(str(locked))
    written = runner.Path(summary["run_dir"]) / "summary.json"
    assert json.loads(files["summary.json"]) == json.loads(written.read_text())
    assert json.loads(files["config.json"])["seed"] == 4 and files["metrics.jsonl"]
    assert set(files) >= {"config.json", "summary.json", "metrics.jsonl"}


def test_ray_refuses_jobs():
    with pytest.raises(runner.SeminalError, match="drop --jobs"):
        runner.reproduce([syllabus.resolve("ppo")], "quick", [0], TINY["ppo"], "unused", jobs=2, ray="local",
                         progress=False)


def test_papers_with_their_own_ray_actors_are_kept_out_of_ray_tasks():
    """Under --ray a distributed-RL paper in mode=ray runs on this machine (its actors need the cluster's CPUs)."""
    impala, ppo = syllabus.resolve("impala"), syllabus.resolve("ppo")
    assert runner.uses_ray(impala, "quick", [])
    assert not runner.uses_ray(impala, "quick", ["mode=local"])
    assert not runner.uses_ray(ppo, "quick", [])
    seed = syllabus.resolve("seed-rl")  # local learner, but Ray throughput arms
    assert runner.uses_ray(seed, "quick", ["mode=local"])
    assert not runner.uses_ray(seed, "quick", ["mode=local", "ray_bench_steps=0"])
