"""RLlib against seminal: PPO and IMPALA on CartPole-v1, SAC on Pendulum-v1, same machine, seed, budget and threads.

    make rllib   # RLlib pins its own gymnasium: it lives in .venv-rllib
    nice -n 19 env SEMINAL_THREADS=1 .venv-rllib/bin/python benchmarks/rllib_comparison.py \\
        --algos ppo,impala,sac --seeds 100 --out bench-rllib

For every algorithm and seed it trains RLlib's arm and then seminal's (paper 20's `train_rllib` and `train_ours`:
RLlib given our quick preset's hyperparameters through `rllib_config`, or its own defaults with
--settings defaults), both evaluated every `eval_every` env steps with `seminal.core.rl.evaluate` (10 greedy
episodes from seeds 10000..), both timed without their evaluations, RLlib's build and Ray's start included. It
writes `table.md` (env steps and wall seconds to the target, env steps/s, final and best greedy return, and
ours/RLlib), `results.json` and, per algorithm, return against env steps and against wall seconds. By default
each arm stops at its first evaluation at or above the target (475 on CartPole-v1, -200 on Pendulum-v1);
--no-stop trains the whole budget. The same numbers come from `seminal run rllib --set algo=...`, one seed a run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from seminal.core.plots import line_plot
from seminal.core.run import Run, seed_everything
from seminal.papers.distributed_rl import rllib


def one(algo: str, seed: int, args: argparse.Namespace) -> dict:
    cfg = replace(rllib.PRESETS["quick"], algo=algo, settings=args.settings, stop_at_target=not args.no_stop,
                  max_seconds=args.max_seconds, total_steps=args.budget.get(algo))
    cfg.validate()
    out = {"algo": algo, "seed": seed, "env": cfg.env, "target": cfg.target, "settings": cfg.settings,
           "rllib_config": rllib.rllib_config(cfg, seed)}
    for arm in args.arms:
        seed_everything(seed)
        run = Run(Path(tempfile.mkdtemp(prefix=f"bench-rllib-{algo}-{arm}-")), "rllib", seed, cfg, progress=False,
                  tensorboard=False)
        t = time.perf_counter()
        res = rllib.train_rllib(cfg, run) if arm == "rllib" else rllib.train_ours(cfg, run)
        steps, seconds = rllib.to_target(res["evals"], cfg.target)
        out[arm] = {**res, "steps_to_target": steps, "seconds_to_target": seconds,
                    "steps_per_second": res["steps"] / max(res["seconds"], 1e-9), "wall": time.perf_counter() - t}
        print(f"{algo} seed {seed} {arm}: {steps:g} steps, {seconds:.1f} s to {cfg.target:g}; "
              f"{out[arm]['steps_per_second']:.0f} steps/s; final {res['evals'][-1][1] if res['evals'] else math.nan}",
              flush=True)
    return out


def fmt(x: float, spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(rows: list[dict]) -> str:
    lines = ["| algo | env | seed | arm | env steps to target | seconds to target | env steps/s | final return | "
             "best return | ours/RLlib seconds to target |", "|---" * 10 + "|"]
    for r in rows:
        for arm in ("rllib", "ours"):
            if arm not in r:
                continue
            a = r[arm]
            ratio = (r["ours"]["seconds_to_target"] / r["rllib"]["seconds_to_target"]
                     if arm == "ours" and "rllib" in r else math.nan)
            final = a["evals"][-1][1] if a["evals"] else math.nan
            best = max((e[1] for e in a["evals"]), default=math.nan)
            lines.append(f"| {r['algo']} | {r['env']} | {r['seed']} | {arm} | {fmt(a['steps_to_target'], '.0f')} | "
                         f"{fmt(a['seconds_to_target'])} | {fmt(a['steps_per_second'], '.0f')} | {fmt(final)} | "
                         f"{fmt(best)} | {fmt(ratio, '.3f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", default="ppo,impala,sac")
    p.add_argument("--seeds", default="100", help="comma-separated seeds (tuning: 100-102; the record: 1000-1002)")
    p.add_argument("--arms", default="rllib,ours")
    p.add_argument("--settings", choices=["ours", "defaults"], default="ours")
    p.add_argument("--no-stop", action="store_true", help="train the whole budget (no stop at the target)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="wall-time budget of each arm")
    p.add_argument("--budget", default="", help="env steps per algo, e.g. ppo=100000,sac=10000 (default: presets)")
    p.add_argument("--out", type=Path, default=Path("bench-rllib"))
    args = p.parse_args(argv)
    args.arms = args.arms.split(",")
    args.budget = {k: int(v) for k, v in (kv.split("=") for kv in args.budget.split(",") if kv)}
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for algo in args.algos.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(one(algo, seed, args))
            (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
            (args.out / "table.md").write_text(table(rows))
        mine = [r for r in rows if r["algo"] == algo]
        for axis, idx, label in (("steps", 0, "env steps"), ("seconds", 2, "wall seconds (evaluations excluded)")):
            line_plot(args.out / f"{algo}_return_vs_{axis}.png",
                      {f"{arm} s{r['seed']}": ([e[idx] for e in r[arm]["evals"]], [e[1] for e in r[arm]["evals"]])
                       for r in mine for arm in ("rllib", "ours") if arm in r},
                      xlabel=label, ylabel="greedy return", title=f"{algo.upper()} on {mine[0]['env']}: RLlib vs ours",
                      hline=mine[0]["target"])
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
