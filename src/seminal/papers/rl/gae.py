"""High-dimensional continuous control using generalized advantage estimation — Schulman, Moritz, Levine,
Jordan & Abbeel, ICLR 2016 (arXiv:1506.02438).

A policy gradient needs an estimate of the advantage A(s_t, a_t). The one-step TD error delta_t (Eq. 10)
is low-variance but biased whenever V is wrong; the Monte Carlo return minus V is unbiased but noisy.
GAE(gamma, lambda) is the exponentially weighted sum of TD errors (Eq. 16): lambda = 0 is the TD error,
lambda = 1 the discounted return minus the baseline, and values in between trade bias for variance, as
TD(lambda) does for value functions. The paper finds intermediate lambda (0.92-0.99) learns best.

This module holds the estimator as pure NumPy functions over a (T, N) rollout of N vectorised envs; A2C,
TRPO and PPO import them. Episode ends inside a rollout come in two kinds, and they differ:
  * terminated: the MDP ended; V(s_{t+1}) = 0, nothing to bootstrap.
  * truncated (time limit): the MDP did not end; bootstrap from V of the true next state, the env's final
    observation (not the reset observation the vector env already returned).
Both stop the lambda-recursion: advantages never flow across an episode boundary.

Equation map:
  Eq. (10)  delta_t = r_t + gamma V(s_{t+1}) - V(s_t)                -> `gae`, `deltas`
  Eq. (11-16)  A_t = sum_l (gamma lambda)^l delta_{t+l}, computed as
            A_t = delta_t + gamma lambda A_{t+1} (backwards)          -> `gae`
  Eq. (17)  lambda = 0: A = delta_t; lambda = 1: A = sum_l gamma^l r_{t+l} - V(s_t)
  §5  value targets V_target = A + V (the lambda-return)               -> callers

`train` is the paper's bias-variance experiment (§6.1, Fig. 2, cart-pole): the same learner (PPO, which
uses this estimator) on CartPole-v1 with lambda in (0, 0.9, 0.95, 1) and a fixed step budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from seminal.core.claims import Claim
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.run import Run


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Task of the sweep (any discrete- or Box-action env PPO accepts)."""
    lambdas: tuple[float, ...] = (0.0, 0.9, 0.95, 1.0)
    """The lambda values swept (Eq. 16); 0 and 1 are the two extremes, the rest 'intermediate'."""
    gamma: float = 0.99
    """Discount gamma, fixed across the sweep (inside the paper's best range [0.96, 0.99] on cart-pole)."""
    total_steps: int = 60_000
    """Env steps per lambda (a fixed budget, so that learning speed shows in the area under the curve)."""
    ppo_preset: str = "quick"
    """PPO preset the learner starts from (then gamma, lam, total_steps and this sweep's settings)."""

    def validate(self) -> None:
        if self.ppo_preset not in ("quick", "full"):
            raise SeminalError(f"ppo_preset={self.ppo_preset!r}: choose quick or full")
        if not any(0 < lam < 1 for lam in self.lambdas) or not {0.0, 1.0} <= set(self.lambdas):
            raise SeminalError(f"lambdas={self.lambdas}: the sweep needs 0, 1 and at least one value in between")


PRESETS = {
    "quick": Config(),
    "full": Config(env_id="LunarLander-v3", gamma=0.999, lambdas=(0.0, 0.9, 0.95, 0.98, 1.0), total_steps=500_000,
                   ppo_preset="full"),
}

CLAIMS = {
    preset: [
        Claim("An intermediate lambda learns faster than both lambda=0 and lambda=1 (area under the curve)",
              "sweep/auc_gap", ">", 0.0, "best at intermediate lambda in [0.92, 0.99], gamma in [0.96, 0.99]",
              "Schulman et al. 2016, §6.1 and Fig. 2 (cart-pole)"),
    ]
    for preset in ("quick", "full")
}


# ---- the estimator: pure functions -----------------------------------------------------------------
def deltas(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
           gamma: float) -> np.ndarray:
    """TD errors delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t); all arrays (T, N). Eq. (10)."""
    return rewards + gamma * (1.0 - terminated) * next_values - values  # Eq. (10)


def gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
        dones: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Generalized advantage estimates A_t (T, N), Eq. (16).

    rewards, values V(s_t): (T, N). next_values: V(s_{t+1}) of the *true* next state: V(final observation)
    where the episode was truncated, anything where it terminated (ignored). terminated: 1 where the MDP
    ended (no bootstrap). dones: terminated or truncated (the recursion stops at an episode boundary).
    The last row bootstraps through next_values[-1], which makes a finite rollout a truncated sum.
    """
    delta = deltas(rewards, values, next_values, terminated.astype(np.float64), gamma)
    keep = gamma * lam * (1.0 - dones.astype(np.float64))
    adv = np.zeros(delta.shape, dtype=np.float64)
    running = np.zeros(delta.shape[1:], dtype=np.float64)
    for t in range(len(delta) - 1, -1, -1):
        running = delta[t] + keep[t] * running  # Eq. (16): A_t = delta_t + gamma lambda A_{t+1}
        adv[t] = running
    return adv


# ---- the bias-variance experiment (§6.1, Fig. 2) ----------------------------------------------------
def train(cfg: Config, run: Run) -> dict[str, float]:
    from seminal.papers.rl import ppo  # the learner; imported here, ppo itself imports this module

    curves, metrics = {}, {}
    state = run.restore() or {"done": {}}
    for lam in cfg.lambdas:
        key = f"lam={lam:g}"
        if key not in state["done"]:
            base = replace(ppo.PRESETS[cfg.ppo_preset], env_id=cfg.env_id, gamma=cfg.gamma, lam=lam,
                           total_steps=cfg.total_steps, ablation=False, eval_every=0)
            resume = state.get("loop") if state.get("lam") == key else None
            policy = ppo.train_policy(cfg.env_id, base, seed=run.seed, run=run, prefix=f"sweep/{key}",
                                      resume=resume, outer={"done": state["done"], "lam": key})
            steps, rets = policy.curve
            state = {"done": {**state["done"], key: {"steps": steps, "returns": rets, "eval": policy.eval_return}}}
            run.checkpoint(state)
        res = state["done"][key]
        rets = np.asarray(res["returns"], dtype=float)
        smooth = np.convolve(rets, np.ones(20) / 20, mode="valid") if len(rets) >= 20 else rets  # 20-episode mean
        curves[key] = (res["steps"][len(rets) - len(smooth):], smooth)
        # Area under the learning curve: the mean training-episode return over the whole budget.
        metrics[f"sweep/auc_{key}"] = float(np.mean(res["returns"])) if res["returns"] else 0.0
        metrics[f"sweep/final_{key}"] = res["eval"]
    auc = {lam: metrics[f"sweep/auc_lam={lam:g}"] for lam in cfg.lambdas}
    extremes = [auc[lam] for lam in cfg.lambdas if lam in (0.0, 1.0)]
    middle = [auc[lam] for lam in cfg.lambdas if 0.0 < lam < 1.0]
    # > 0: an intermediate lambda beats both ends (nan when the sweep lacks one of the three kinds)
    metrics["sweep/auc_gap"] = max(middle) - max(extremes) if middle and len(extremes) == 2 else float("nan")
    metrics["sweep/best_lambda"] = max(auc, key=auc.get)
    run.log(metrics, step=cfg.total_steps)
    line_plot(run.plots_dir / "lambda_sweep.png", curves, xlabel="env steps",
              ylabel="training return (20-episode mean)",
              title=f"PPO on {cfg.env_id}, gamma={cfg.gamma}: GAE lambda sweep")
    return metrics
