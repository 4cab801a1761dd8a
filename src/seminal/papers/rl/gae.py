"""High-dimensional continuous control using generalized advantage estimation — Schulman, Moritz, Levine,
Jordan & Abbeel, ICLR 2016 (arXiv:1506.02438).

A policy gradient needs an estimate of the advantage A(s_t, a_t). The one-step TD error delta_t (Eq. 10)
is low-variance but biased whenever V is wrong; the Monte Carlo return minus V is unbiased but noisy.
GAE(gamma, lambda) is the exponentially weighted sum of TD errors (Eq. 16): lambda = 0 is the TD error,
lambda = 1 the discounted return minus the baseline, and values in between trade bias for variance, as
TD(lambda) does for value functions. The paper finds intermediate lambda (0.92-0.99) learns best.

The estimator is pure NumPy over a (T, N) rollout of N vectorised envs; PPO imports it. Episode ends come
in two kinds, and they differ:
  * terminated: the MDP ended; V(s_{t+1}) = 0, nothing to bootstrap.
  * truncated (time limit): the MDP did not end; bootstrap from V of the true next state, the env's final
    observation (not the reset observation the vector env already returned).
Both stop the lambda-recursion: advantages never flow across an episode boundary.

Equation map:
  Eq. (10)  delta_t = r_t + gamma V(s_{t+1}) - V(s_t)                -> `deltas`
  Eq. (11-16)  A_t = sum_l (gamma lambda)^l delta_{t+l}, computed as
            A_t = delta_t + gamma lambda A_{t+1} (backwards)          -> `gae`
  Eq. (17)  lambda = 0: A = delta_t; lambda = 1: A = sum_l gamma^l r_{t+l} - V(s_t)
  §6.1      the learner: TRPO, V fitted to Monte Carlo returns        -> `trpo.train_policy(advantages=...)`

Two experiments (`train`):
  * mechanism (§3): a frozen policy and a deliberately imperfect V on Pendulum, many rollouts from the same
    (s_0, a_0): the bias |E[A_lambda] - A_MC| against the Monte Carlo advantage falls with lambda, the variance
    Var[A_lambda] rises                                               -> `mechanism`, `bias_variance`
  * sweep (§6.1, Fig. 2): TRPO on Pendulum-v1 with whole-episode batches and V fitted to the Monte Carlo
    returns, only lambda varied, every lambda of a seed from the same initial policy; area under the learning
    curve over env steps                                              -> `train`, `auc_over_steps`
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Annotated

import numpy as np
import torch

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Prob, Range, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import gym, make_env
from seminal.core.run import Run
from seminal.papers.rl import trpo
from seminal.papers.rl._onpolicy import ActorCritic, NumpyActor, one_thread

SEEDS = 10
"""Seeds `reproduce` runs for this paper: the sweep's claims rest on paired per-seed comparisons."""

Lambdas = Annotated[tuple[float, ...], Range(ge=0, le=1, nonempty=True)]


@dataclass(frozen=True)
class Config:
    lambdas: Lambdas = (0.0, 0.5, 0.9, 0.96, 0.99, 1.0)
    """lambda values swept (Eq. 16): from the TD error (0) to Monte Carlo (1), dense in the paper's best range."""
    lam_star: Prob = 0.96
    """The pre-stated intermediate lambda that the sweep's claims compare with lambda = 0 and lambda = 1."""
    gammas: Annotated[tuple[float, ...], Range(gt=0, lt=1, nonempty=True)] = (0.99,)
    """Discounts gamma of the sweep (every lambda at every gamma); claims at 0.99 (and 0.96 in full)."""
    total_steps: PosInt = 30_000
    """Env steps per (gamma, lambda) arm: the horizon of the learning curve whose area is compared."""
    n_envs: PosInt = 5
    """Whole episodes per TRPO batch: each batch is n_envs x 200 Pendulum steps from a reset."""
    reward_scale: PosFloat = 0.01
    """Rewards are multiplied by this for learning (V's targets a few units, not hundreds); reports are unscaled."""
    max_kl: PosFloat = 0.01
    """TRPO's trust-region radius delta (the paper's 0.01)."""
    vf_lr: PosFloat = 3e-3
    """Adam step size of V's regression on the Monte Carlo returns."""
    vf_epochs: NonNegInt = 5
    """Passes of V's regression over each batch."""
    hidden: Sizes = (64, 64)
    """Hidden sizes of the tanh MLPs of policy and V."""
    mech_states: PosInt = 16
    """Mechanism: (s_0, a_0) pairs at which the advantage estimators are compared (K)."""
    mech_rollouts: PosInt = 64
    """Mechanism: rollouts of the frozen policy continuing from each (s_0, a_0) (M)."""
    mech_gamma: Annotated[float, Range(gt=0, lt=1)] = 0.99
    """Mechanism: discount gamma."""
    mech_fit_episodes: PosInt = 4
    """Mechanism: episodes of the frozen policy whose discounted returns V is briefly fitted to."""
    mech_vf_steps: NonNegInt = 100
    """Mechanism: full-batch Adam steps of that fit (few on purpose: V stays imperfect; 0 = the initial V)."""

    def validate(self) -> None:
        if not any(0 < lam < 1 for lam in self.lambdas) or not {0.0, 1.0} <= set(self.lambdas):
            raise SeminalError(f"lambdas={self.lambdas}: the sweep needs 0, 1 and at least one value in between")

    @property
    def learner(self) -> trpo.Config:
        """The TRPO learner's config: whole-episode batches, no greedy evaluation (the curve is the training one)."""
        return replace(trpo.PRESETS["quick"], env_id="Pendulum-v1", total_steps=self.total_steps, n_envs=self.n_envs,
                       n_steps=EPISODE, max_kl=self.max_kl, vf_lr=self.vf_lr, vf_epochs=self.vf_epochs,
                       hidden=self.hidden, eval_every=0, eval_episodes=0, checkpoint_every=10)


EPISODE = 200
"""Pendulum-v1's time limit: every episode is exactly this long."""

PRESETS = {
    "quick": Config(),
    # Paper-scale: 20 episodes a batch, 400k steps a lambda, both discounts of Fig. 2's best range.
    "full": Config(gammas=(0.96, 0.99), total_steps=400_000, n_envs=20, mech_states=64, mech_rollouts=1024),
}

_FIG2 = "best at intermediate lambda in [0.92, 0.99]; lambda = 0 and 1 worse (cart-pole, gamma in [0.96, 0.99])"
_S3 = "lambda < 1 biased unless V = V^pi; lambda = 1 unbiased, variance grows with lambda"


def _sweep_claims(gamma: float, suffix: str = "") -> list[Claim]:
    key = f"sweep/g{gamma:g}"
    return [
        Claim(f"gamma={gamma:g}: lambda=0.96 has a larger area under the learning curve than lambda=1 "
              f"(mean of paired per-seed gaps){suffix}", f"{key}/auc_gap_vs_1", ">", 0.0, _FIG2,
              "Schulman et al. 2016, §6.1, Fig. 2", bar="sanity",
              paired=(f"{key}/auc_lam=0.96", f"{key}/auc_lam=1")),
        Claim(f"gamma={gamma:g}: lambda=0.96 has a larger area under the learning curve than lambda=0 "
              f"(mean of paired per-seed gaps){suffix}", f"{key}/auc_gap_vs_0", ">", 0.0, _FIG2,
              "Schulman et al. 2016, §6.1, Fig. 2", bar="sanity",
              paired=(f"{key}/auc_lam=0.96", f"{key}/auc_lam=0")),
    ]


_MECH = [
    Claim("Frozen policy, imperfect V: bias against Monte Carlo falls from lambda=0 to lambda=0.96 "
          "(bias(0.96) / bias(0) < 1; lambda=1 has none), every seed", "mech/bias_ratio", "<", 1.0, _S3,
          "Schulman et al. 2016, §3 (Eqs. 11-17)", aggregate="all", bar="sanity",
          paired=("mech/bias_lam=0.96", "mech/bias_lam=0")),
    Claim("Frozen policy, imperfect V: variance falls from lambda=1 to lambda=0.96 (var(0.96) / var(1) < 1), "
          "every seed", "mech/var_ratio", "<", 1.0, _S3, "Schulman et al. 2016, §3 (Eqs. 11-17)", aggregate="all",
          bar="sanity", paired=("mech/var_lam=0.96", "mech/var_lam=1")),
    Claim("Frozen policy, imperfect V: variance rises with lambda along the whole grid (rank correlation >= 0.9), "
          "every seed", "mech/var_rank", ">=", 0.9, _S3, "Schulman et al. 2016, §3 (Eqs. 11-17)", aggregate="all",
          bar="sanity"),
]
CLAIMS = {
    "quick": [*_MECH, *_sweep_claims(0.99)],
    "full": [*_MECH, *_sweep_claims(0.99, " (full)"), *_sweep_claims(0.96, " (full)")],
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


def gae_advantages(lam: float) -> trpo.Advantages:
    """GAE(gamma, lam) as the advantage estimator TRPO takes: (rollout, gamma) -> A (T, N)."""

    def advantages(rollout: dict[str, np.ndarray], gamma: float) -> np.ndarray:
        return gae(rollout["rewards"], rollout["values"], rollout["next_values"], rollout["terminated"],
                   rollout["dones"], gamma, lam)

    return advantages


def auc_over_steps(steps: list[int] | np.ndarray, returns: list[float] | np.ndarray) -> float:
    """Area under the learning curve per env step: the curve is the mean return of the episodes that ended at
    each logged step, held over the steps since the previous one; integral / last step. Episodes that end at
    the same step (one batch) share that stretch, so a batch of many short episodes counts once, not per episode."""
    steps, returns = np.asarray(steps, dtype=np.float64), np.asarray(returns, dtype=np.float64)
    if not len(steps):
        return math.nan
    ends, group = np.unique(steps, return_inverse=True)
    means = np.bincount(group, weights=returns) / np.bincount(group)  # the curve at each end step
    widths = np.diff(ends, prepend=0.0)  # env steps each value is held
    return float((means * widths).sum() / ends[-1])


def bias_variance(adv: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """adv, reference: (K, M) estimates of A(s_k, a_k) from M rollouts at each of K pairs. Returns the mean over
    k of |E_m[adv] - E_m[reference]| (bias against the Monte Carlo advantage) and of Var_m[adv] (ddof 1)."""
    bias = np.abs(adv.mean(axis=1) - reference.mean(axis=1)).mean()
    return float(bias), float(adv.var(axis=1, ddof=1).mean())


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (no ties): 1 when y rises strictly with x, -1 when it falls strictly; one
    adjacent pair out of order among 6 points gives +-0.943."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    n = len(x)
    return float(1.0 - 6.0 * ((rx - ry) ** 2).sum() / (n * (n * n - 1))) if n > 1 else math.nan


# ---- Pendulum-v1 in batched NumPy (equal to gymnasium's, step for step: tests/test_gae.py) ----------
def pendulum_obs(theta: np.ndarray, theta_dot: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(theta), np.sin(theta), theta_dot], axis=-1).astype(np.float32)  # (B, 3)


def pendulum_step(theta: np.ndarray, theta_dot: np.ndarray, u: np.ndarray, g: float = 10.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of gymnasium's PendulumEnv (m = l = 1, dt = 0.05) for a batch: (theta', theta_dot', reward)."""
    u = np.clip(u, -2.0, 2.0)
    norm = (theta + np.pi) % (2 * np.pi) - np.pi
    reward = -(norm**2 + 0.1 * theta_dot**2 + 0.001 * u**2)
    theta_dot = np.clip(theta_dot + (3 * g / 2 * np.sin(theta) + 3.0 * u) * 0.05, -8.0, 8.0)
    return theta + theta_dot * 0.05, theta_dot, reward


# ---- the mechanism (§3): bias and variance of GAE(lambda) against Monte Carlo -------------------------
def continuation_rollouts(actor: NumpyActor, theta: np.ndarray, theta_dot: np.ndarray, a0: np.ndarray,
                          rng: np.random.Generator, value_scale: float) -> dict[str, np.ndarray]:
    """From states (B,) take actions a0 (B, 1), then follow the frozen policy to the time limit: (T, B) arrays
    for `gae` (V in reward units: the critic's output / value_scale; truncation at T bootstraps with V(s_T))."""
    rewards, values = np.zeros((EPISODE, len(theta))), np.zeros((EPISODE + 1, len(theta)))
    a = a0
    for t in range(EPISODE):
        obs = pendulum_obs(theta, theta_dot)
        if t:
            a, _, values[t] = actor.act(obs, rng)  # the frozen policy's action and V(s_t)
        else:
            values[t] = actor.value(obs)
        theta, theta_dot, rewards[t] = pendulum_step(theta, theta_dot, a[:, 0])
    values[EPISODE] = actor.value(pendulum_obs(theta, theta_dot))
    values /= value_scale
    dones = np.zeros(rewards.shape, bool)
    dones[-1] = True  # the time limit: truncated, not terminated
    return {"rewards": rewards, "values": values[:-1], "next_values": values[1:],
            "terminated": np.zeros(rewards.shape, bool), "dones": dones}


def fit_value_briefly(model: ActorCritic, actor: NumpyActor, rng: np.random.Generator, cfg: Config) -> None:
    """The imperfect V: a few full-batch Adam steps on the discounted rewards-to-go of a few episodes."""
    n = cfg.mech_fit_episodes
    theta, theta_dot = rng.uniform(-np.pi, np.pi, n), rng.uniform(-1.0, 1.0, n)
    obs, rewards = [], []
    for _ in range(EPISODE):
        o = pendulum_obs(theta, theta_dot)
        obs.append(o)
        theta, theta_dot, r = pendulum_step(theta, theta_dot, actor.act(o, rng)[0][:, 0])
        rewards.append(r * cfg.reward_scale)
    to_go = np.zeros((EPISODE, n))
    running = np.zeros(n)
    for t in range(EPISODE - 1, -1, -1):
        running = rewards[t] + cfg.mech_gamma * running
        to_go[t] = running
    x, y = torch.as_tensor(np.concatenate(obs)), torch.as_tensor(to_go.reshape(-1), dtype=torch.float32)
    opt = torch.optim.Adam([*model.v_body.parameters(), *model.v_head.parameters()], lr=cfg.vf_lr)
    for _ in range(cfg.mech_vf_steps):
        loss = 0.5 * (model.value(x) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    actor.refresh()


def advantage_samples(actor: NumpyActor, theta0: np.ndarray, theta_dot0: np.ndarray, a0: np.ndarray, n_rollouts: int,
                      rng: np.random.Generator, gamma: float, lambdas: tuple[float, ...], value_scale: float
                      ) -> tuple[dict[float, np.ndarray], np.ndarray, np.ndarray]:
    """GAE(lambda) at t = 0 from `n_rollouts` continuations of each (s_0, a_0) (K of them): {lambda: (K, M)}, the
    Monte Carlo advantage A_MC (K, M) (the discounted return to the time limit, bootstrapped there, minus V(s_0):
    lambda = 1 on the same rollouts) and V(s_0) (K,)."""
    K, M = len(theta0), n_rollouts
    rollout = continuation_rollouts(actor, np.repeat(theta0, M), np.repeat(theta_dot0, M), np.repeat(a0, M, axis=0),
                                    rng, value_scale)
    adv = {lam: gae(**rollout, gamma=gamma, lam=lam)[0].reshape(K, M) for lam in lambdas}  # Eq. (16)
    reference = gae(**rollout, gamma=gamma, lam=1.0)[0].reshape(K, M)  # Eq. (17), lambda = 1: A_MC
    return adv, reference, rollout["values"][0].reshape(K, M)[:, 0]


def mechanism(cfg: Config, seed: int) -> dict[str, float]:
    """K start pairs (s_0, a_0), M rollouts each of the frozen initial policy; GAE(lambda) at t = 0 against the
    Monte Carlo advantage A_MC, with an imperfect V fitted briefly."""
    rng = np.random.default_rng([seed, 9])
    space = gym().spaces.Box(-2.0, 2.0, (1,), np.float32)
    model = ActorCritic(3, space, cfg.hidden, shared=False, seed=seed)  # the sweep's initial policy: frozen
    actor = NumpyActor(model, space)
    fit_value_briefly(model, actor, rng, cfg)
    K = cfg.mech_states
    theta0, theta_dot0 = rng.uniform(-np.pi, np.pi, K), rng.uniform(-1.0, 1.0, K)  # Pendulum's reset distribution
    a0 = actor.act(pendulum_obs(theta0, theta_dot0), rng)[0]  # one action per start state, shared by its rollouts
    adv, reference, v0 = advantage_samples(actor, theta0, theta_dot0, a0, cfg.mech_rollouts, rng, cfg.mech_gamma,
                                           cfg.lambdas, cfg.reward_scale)
    out = {}
    for lam in cfg.lambdas:
        out[f"mech/bias_lam={lam:g}"], out[f"mech/var_lam={lam:g}"] = bias_variance(adv[lam], reference)
    star = cfg.lam_star if cfg.lam_star in cfg.lambdas else math.nan
    out["mech/bias_ratio"] = out.get(f"mech/bias_lam={star:g}", math.nan) / out["mech/bias_lam=0"]
    out["mech/var_ratio"] = out.get(f"mech/var_lam={star:g}", math.nan) / out["mech/var_lam=1"]
    lams = list(cfg.lambdas)
    out["mech/bias_rank"] = rank_correlation(lams, [out[f"mech/bias_lam={lam:g}"] for lam in lams])
    out["mech/var_rank"] = rank_correlation(lams, [out[f"mech/var_lam={lam:g}"] for lam in lams])
    out["mech/mc_advantage"] = float(np.abs(reference.mean(axis=1)).mean())  # |Q(s_0, a_0) - V(s_0)|: V's error
    return out


# ---- the sweep (§6.1, Fig. 2) ---------------------------------------------------------------------
def scaled_pendulum(scale: float):
    """A factory of Pendulum-v1 with its rewards multiplied by `scale` (a plain attribute: checkpointable)."""
    gymnasium = gym()

    class ScaledReward(gymnasium.RewardWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.scale = scale

        def reward(self, reward):
            return self.scale * reward

    def make():
        return ScaledReward(make_env("Pendulum-v1"))

    make.__name__ = "Pendulum-v1"
    return make


def train(cfg: Config, run: Run) -> dict[str, float]:
    with one_thread(run.device):
        metrics = mechanism(cfg, run.seed)
    state = run.restore() or {"done": {}}
    curves: dict[float, dict[str, tuple]] = {g: {} for g in cfg.gammas}
    for gamma in cfg.gammas:
        for lam in cfg.lambdas:
            key = f"g{gamma:g}/lam={lam:g}"
            if key not in state["done"]:
                resume = state.get("loop") if state.get("arm") == key else None
                policy = trpo.train_policy(scaled_pendulum(cfg.reward_scale), replace(cfg.learner, gamma=gamma),
                                           seed=run.seed, run=run, prefix=f"sweep/{key}", resume=resume,
                                           outer={"done": state["done"], "arm": key},
                                           advantages=gae_advantages(lam))  # only lambda differs between arms
                steps, rets = policy.curve
                state = {"done": {**state["done"], key: {"steps": list(steps),
                                                         "returns": [r / cfg.reward_scale for r in rets]}}}
                run.checkpoint(state)
            res = state["done"][key]
            metrics[f"sweep/{key.replace('/lam', '/auc_lam')}"] = auc_over_steps(res["steps"], res["returns"])
            ends, group = np.unique(res["steps"], return_inverse=True)
            curves[gamma][f"lambda={lam:g}"] = (ends, np.bincount(group, weights=res["returns"]) / np.bincount(group))
        auc = {lam: metrics[f"sweep/g{gamma:g}/auc_lam={lam:g}"] for lam in cfg.lambdas}
        star = auc.get(cfg.lam_star, math.nan)  # nan when lam_star is not swept: the claims then fail
        metrics[f"sweep/g{gamma:g}/auc_gap_vs_1"] = star - auc[1.0]  # paired: same seed, same initial policy
        metrics[f"sweep/g{gamma:g}/auc_gap_vs_0"] = star - auc[0.0]
        metrics[f"sweep/g{gamma:g}/best_lambda"] = max(auc, key=auc.get)
        line_plot(run.plots_dir / f"learning_curves_g{gamma:g}.png", curves[gamma], xlabel="env steps",
                  ylabel="training return (batch mean)", title=f"TRPO on Pendulum-v1, gamma={gamma:g}: GAE lambda")
    run.log(metrics, step=cfg.total_steps)
    lams = list(cfg.lambdas)
    line_plot(run.plots_dir / "auc_vs_lambda.png",
              {f"gamma={g:g}": (lams, [metrics[f"sweep/g{g:g}/auc_lam={lam:g}"] for lam in lams]) for g in cfg.gammas},
              xlabel="lambda", ylabel="area under the curve (mean return per env step)",
              title="TRPO on Pendulum-v1: learning speed vs lambda")
    line_plot(run.plots_dir / "bias_variance_vs_lambda.png",
              {"|bias| against Monte Carlo": (lams, [metrics[f"mech/bias_lam={lam:g}"] for lam in lams]),
               "standard deviation (sqrt of the variance)": (lams, [math.sqrt(metrics[f"mech/var_lam={lam:g}"])
                                                                    for lam in lams])},
              xlabel="lambda", ylabel="advantage at t = 0 (reward units)",
              title=f"GAE at a frozen policy, imperfect V (gamma={cfg.mech_gamma:g})")
    return metrics
