"""Our RL algorithms against Stable-Baselines3 on the same env, budget, seeds and machine, one thread each.

    python benchmarks/rl_vs_sb3.py --algos ppo,ppo-same,dqn,dqn-same --seeds 3

PPO is reported twice: `ppo` with each side's tuned settings (ours: the quick preset; SB3: the zoo's, twice our
gradient steps per env step) and `ppo-same` with identical hyperparameters on both sides (our preset's); DQN the
same way (`dqn`: SB3 with the zoo's 256x256 net and 128 updates every 256 steps; `dqn-same`: SB3 given our
preset's 64x64 net, schedule and target period, without gradient clipping as ours).

For every pair and seed it prints env steps/s, the wall time until the greedy policy first reaches the
threshold (both sides evaluated every `eval_every` env steps with `seminal.core.rl.evaluate`: 10 episodes,
the same start seeds), and the final greedy return. Wall times exclude the evaluations themselves (timed
and subtracted on both sides) and include building the model. SB3 uses its rl-baselines3-zoo
hyperparameters; ours uses the paper module's quick preset. SB3 is the `bench` extra; without it only our side
runs (no ratios). Our evaluations are timed through `evaluator=` hooks (`ppo.train_policy`, `dqn.learn`), not
patched module globals.

To add a pair (SAC/TD3 on Pendulum, say), add a `Pair` to PAIRS: how to run ours and SB3's with a
`Timer` (ours: call `timer.eval_done(step, mean_return)`-style hooks through `TimedRun`, SB3: `timer.callback`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from seminal.core.rl import evaluate
from seminal.core.run import Run, seed_everything


class Timer:
    """Wall clock minus time spent evaluating; records (step, greedy return, seconds) at each evaluation."""

    def __init__(self):
        self.start = time.perf_counter()
        self.eval_seconds = 0.0
        self.evals: list[tuple[int, float, float]] = []

    def now(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds

    def timed_evaluate(self, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.eval_seconds += time.perf_counter() - t

        return wrapper

    def record(self, step: int, mean_return: float) -> None:
        self.evals.append((int(step), float(mean_return), self.now()))


class TimedRun(Run):
    """A throwaway Run that tells the timer when the paper module logs its greedy evaluation."""

    def __init__(self, timer: Timer, eval_key: str, seed: int):
        super().__init__(Path(tempfile.mkdtemp(prefix="bench-")), "bench", seed, None, progress=False,
                         tensorboard=False)
        self.timer, self.eval_key = timer, eval_key

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.eval_key in metrics:
            self.timer.record(step, metrics[self.eval_key])
        super().log(metrics, step)


def sb3_eval_callback(timer: Timer, env_id: str, eval_every: int, episodes: int):
    from stable_baselines3.common.callbacks import BaseCallback

    class EvalEvery(BaseCallback):
        def __init__(self):
            super().__init__()
            self.last = 0

        def _on_step(self) -> bool:
            if self.num_timesteps // eval_every > self.last // eval_every:
                returns = timer.timed_evaluate(evaluate)(
                    lambda o: int(self.model.predict(o, deterministic=True)[0]), env_id, episodes)
                timer.record(self.num_timesteps, float(np.mean(returns)))
            self.last = self.num_timesteps
            return True

    return EvalEvery()


# ---- the pairs ------------------------------------------------------------------------------------------
def ours_dqn(seed: int, pair: Pair, timer: Timer) -> float:
    from seminal.papers.rl import dqn

    cfg = dqn.replace(dqn.PRESETS["quick"], env_id=pair.env_id, total_steps=pair.budget, eval_every=pair.eval_every,
                      eval_episodes=pair.episodes)
    run = TimedRun(timer, "eval/return", seed)  # evaluations timed (and subtracted) through a hook, no globals
    return dqn.learn(cfg, run, evaluator=timer.timed_evaluate(evaluate))["eval/return"]


# PPO, CartPole-v1. "tuned": each side's own settings (ours: the quick preset, T = 64, K = 10; SB3: the
# rl-baselines3-zoo's, T = 32, K = 20 with clip and lr annealed), so SB3 takes twice our gradient steps per env
# step. "same": SB3 given our quick preset's settings exactly (`ppo_quick`: T, K, M, lr and its annealing, gamma,
# lambda, clip held constant as ours is), so the ratio measures the implementations alone.
def ppo_quick() -> dict:
    """Our PPO quick preset's hyperparameters (what "same" gives SB3 too)."""
    from seminal.papers.rl import ppo

    q = ppo.PRESETS["quick"]
    return {"n_envs": q.n_envs, "n_steps": q.n_steps, "epochs": q.epochs, "minibatch": q.minibatch, "lr": q.lr,
            "gamma": q.gamma, "lam": q.lam, "clip": q.clip, "anneal_lr": q.anneal_lr}


def ours_ppo(seed: int, pair: Pair, timer: Timer) -> float:
    from seminal.papers.rl import ppo

    run = TimedRun(timer, "ppo/eval_return", seed)
    overrides = [f"eval_every={pair.eval_every}", f"eval_episodes={pair.episodes}"]
    policy = ppo.train_policy(pair.env_id, total_steps=pair.budget, seed=seed, run=run, prefix="ppo",
                              overrides=overrides, evaluator=timer.timed_evaluate(evaluate))  # a hook, no globals
    return policy.eval_return


def sb3_dqn(seed: int, pair: Pair, timer: Timer) -> float:
    from stable_baselines3 import DQN

    if pair.settings == "same":  # our quick preset's values, network and schedule
        from seminal.papers.rl import dqn

        q = dqn.PRESETS["quick"]
        updates_per_step = q.gradient_steps / q.train_freq  # ours counts C in updates, SB3 in env steps
        kw = dict(learning_rate=q.lr, batch_size=q.batch_size, buffer_size=q.buffer_size,
                  learning_starts=q.learning_starts, gamma=q.gamma,
                  target_update_interval=round(q.target_update / updates_per_step), train_freq=q.train_freq,
                  gradient_steps=q.gradient_steps, exploration_initial_eps=q.eps_start,
                  exploration_fraction=q.exploration_steps / pair.budget, exploration_final_eps=q.eps_end,
                  max_grad_norm=1e9,  # ours does not clip gradients
                  policy_kwargs={"net_arch": list(q.hidden)})
    else:  # rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1
        kw = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
                  target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                  exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]})
    model = DQN("MlpPolicy", pair.env_id, seed=seed, device="cpu", **kw)
    model.learn(pair.budget, callback=sb3_eval_callback(timer, pair.env_id, pair.eval_every, pair.episodes))
    return float(np.mean(evaluate(lambda o: int(model.predict(o, deterministic=True)[0]), pair.env_id, pair.episodes)))


def sb3_ppo(seed: int, pair: Pair, timer: Timer) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    def lin(x: float) -> Callable[[float], float]:
        return lambda progress_remaining: progress_remaining * x

    if pair.settings == "same":  # our quick preset's values
        o = ppo_quick()
        kw = dict(n_steps=o["n_steps"], batch_size=o["minibatch"], gae_lambda=o["lam"], gamma=o["gamma"],
                  n_epochs=o["epochs"], learning_rate=lin(o["lr"]) if o["anneal_lr"] else o["lr"],
                  clip_range=o["clip"])
        n_envs = o["n_envs"]
    else:  # rl-baselines3-zoo hyperparams/ppo.yml, CartPole-v1
        kw = dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, learning_rate=lin(1e-3),
                  clip_range=lin(0.2))
        n_envs = 8
    env = make_vec_env(pair.env_id, n_envs=n_envs, seed=seed)
    model = PPO("MlpPolicy", env, ent_coef=0.0, seed=seed, device="cpu", **kw)
    model.learn(pair.budget, callback=sb3_eval_callback(timer, pair.env_id, pair.eval_every, pair.episodes))
    return float(np.mean(evaluate(lambda o: int(model.predict(o, deterministic=True)[0]), pair.env_id, pair.episodes)))


@dataclass(frozen=True)
class Pair:
    env_id: str
    budget: int
    """Env steps for both sides."""
    threshold: float
    """Greedy mean return that counts as solved."""
    ours: Callable[[int, Pair, Timer], float]
    sb3: Callable[[int, Pair, Timer], float]
    ours_module: str
    eval_every: int = 5_000
    episodes: int = 10
    settings: str = "tuned"
    """"tuned": each side's own tuned hyperparameters; "same": identical hyperparameters on both sides."""
    notes: list[str] = field(default_factory=list)


PAIRS: dict[str, Pair] = {
    "ppo": Pair("CartPole-v1", 100_000, 475.0, ours_ppo, sb3_ppo, "seminal.papers.rl.ppo"),
    "ppo-same": Pair("CartPole-v1", 100_000, 475.0, ours_ppo, sb3_ppo, "seminal.papers.rl.ppo", settings="same"),
    "dqn": Pair("CartPole-v1", 50_000, 475.0, ours_dqn, sb3_dqn, "seminal.papers.rl.dqn"),
    "dqn-same": Pair("CartPole-v1", 50_000, 475.0, ours_dqn, sb3_dqn, "seminal.papers.rl.dqn", settings="same"),
}


def run_side(side: str, algo: str, seed: int) -> dict:
    pair = PAIRS[algo]
    seed_everything(seed)
    timer = Timer()
    final = (pair.ours if side == "ours" else pair.sb3)(seed, pair, timer)
    total = timer.now()
    solved = next(((s, t) for s, r, t in timer.evals if r >= pair.threshold), None)
    return {"steps_per_s": pair.budget / total, "seconds": total, "solve_step": solved[0] if solved else None,
            "solve_seconds": solved[1] if solved else None, "final": final, "eval_seconds": timer.eval_seconds}


def _fmt(x: float | None, spec: str) -> str:
    return "never" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", default="ppo,dqn", help=f"comma-separated, from {', '.join(PAIRS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="override every budget (a smoke test; 0: the pair's)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread each side: the comparison is per core
    sides = ("ours", "sb3") if importlib.util.find_spec("stable_baselines3") is not None else ("ours",)
    if sides == ("ours",):
        print("Stable-Baselines3 is missing (pip install -e '.[bench]'): running our side only, no ratios")
    for algo in [a.strip() for a in args.algos.split(",") if a.strip()]:
        if algo not in PAIRS:
            raise SystemExit(f"unknown algo '{algo}'; choose from {', '.join(PAIRS)}")
        pair = PAIRS[algo]
        if args.steps:
            pair = PAIRS[algo] = replace(pair, budget=args.steps, eval_every=min(pair.eval_every, args.steps))
        if importlib.util.find_spec(pair.ours_module) is None:
            print(f"{algo}: skipped, {pair.ours_module} is not implemented yet")
            continue
        print(f"\n== {algo.upper()} on {pair.env_id}: {pair.budget:,} env steps, solved = greedy return >= "
              f"{pair.threshold:g} (eval every {pair.eval_every:,} steps, {pair.episodes} episodes) ==")
        print(f"{'seed':>4} {'side':>5} {'steps/s':>8} {'wall s':>7} {'solve step':>10} {'solve s':>8} {'final':>6}")
        rows: dict[str, list[dict]] = {side: [] for side in sides}
        for seed in range(args.seeds):
            for side in sides:
                r = run_side(side, algo, seed)
                rows[side].append(r)
                print(f"{seed:>4} {side:>5} {r['steps_per_s']:>8.0f} {r['seconds']:>7.1f} "
                      f"{_fmt(r['solve_step'], ',d'):>10} {_fmt(r['solve_seconds'], '.1f'):>8} {r['final']:>6.1f}",
                      flush=True)
        for side in sides:
            rs = rows[side]
            solved = [r["solve_seconds"] for r in rs if r["solve_seconds"] is not None]
            print(f"{side:>5}: {np.mean([r['steps_per_s'] for r in rs]):.0f} steps/s, solved {len(solved)}/{len(rs)}"
                  f" seeds, mean time to solve {_fmt(float(np.mean(solved)) if solved else None, '.1f')} s, "
                  f"final {np.mean([r['final'] for r in rs]):.1f}")
        if "sb3" not in rows:
            continue
        ours_t = [r["solve_seconds"] for r in rows["ours"]]
        sb3_t = [r["solve_seconds"] for r in rows["sb3"]]
        if all(t is not None for t in ours_t + sb3_t):
            print(f"time-to-solve ratio ours/SB3 (mean over seeds): {np.mean(ours_t) / np.mean(sb3_t):.2f}")
        else:
            print("time-to-solve ratio: not defined (a seed never reached the threshold; see 'never' above)")


if __name__ == "__main__":
    main()
