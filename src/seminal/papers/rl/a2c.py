"""Asynchronous methods for deep reinforcement learning — Mnih, Badia, Mirza, Graves, Lillicrap, Harley,
Silver & Kavukcuoglu, ICML 2016 (arXiv:1602.01783); the synchronous variant, A2C.

Many actors run copies of the environment in parallel; their experience, decorrelated because each actor
is somewhere else in its episode, replaces DQN's replay memory. Each actor rolls its policy forward
t_max = 5 steps, then the advantage actor-critic gradient is taken: the policy's log-probability times
the n-step advantage R_t - V(s_t), plus a value regression, plus an entropy bonus that keeps the policy
from collapsing early. A3C applies the actors' gradients asynchronously (Hogwild); A2C, the variant most
codebases ship, waits for all N actors and takes one batched step: same estimator, deterministic, and on
one machine faster (one batched forward for all envs instead of N small ones).

Equation map (Mnih et al. 2016, §4 and Algorithm S3):
  R_t = sum_{i<k} gamma^i r_{t+i} + gamma^k V(s_{t+k})                 -> `nstep_returns`
  A(s_t, a_t) = R_t - V(s_t)                                             -> `a2c_loss`
  policy gradient  grad log pi(a_t|s_t) A_t  + beta grad H(pi(s_t))      -> `a2c_loss` (beta: ent_coef)
  value loss  (R_t - V(s_t))^2                                           -> `a2c_loss`
  RMSProp with shared statistics g = alpha g + (1 - alpha) dtheta^2       -> torch RMSprop (alpha=0.99)
  learning rate annealed linearly to 0 (§8, Optimization details)       -> `train`, `update`

The vector envs, the actor-critic network, rollout collection and the training loop are the on-policy
plumbing in `seminal.papers.rl._onpolicy`, shared with TRPO and PPO: A2C is its `update`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Sizes
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.rl._onpolicy import ActorCritic, flat, make_vec_env, one_thread, onpolicy_loop


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (discrete actions, flat observations), e.g. CartPole-v1, LunarLander-v3, Acrobot-v1."""
    total_steps: PosInt = 200_000
    """Environment steps in total, over all actors."""
    n_envs: PosInt = 8
    """Parallel actors N (the paper used 16 actor-learner threads)."""
    n_steps: PosInt = 5
    """t_max: steps each actor takes between updates (n of the n-step return)."""
    gamma: Prob = 0.99
    """Discount gamma."""
    lr: PosFloat = 7e-4
    """Learning rate (RMSProp), annealed linearly to 0 when anneal_lr."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over training, as the paper did."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSProp (the paper's, alpha=0.99, eps=1e-5) or Adam (deviation)."""
    ent_coef: NonNegFloat = 0.01
    """beta: weight of the entropy bonus (the paper's 0.01)."""
    vf_coef: NonNegFloat = 0.5
    """Weight of the value loss in the shared loss."""
    max_grad_norm: NonNegFloat = 0.5
    """Clip the global gradient norm to this (0: no clipping)."""
    shared: bool = False
    """Share the hidden layers of actor and critic (the paper's Atari net did) or keep two MLPs."""
    hidden: Sizes = (64, 64)
    """Hidden sizes of each tanh MLP."""
    eval_every: NonNegInt = 20_000
    """Evaluate the deterministic (greedy) policy every this many env steps (0: only at the end)."""
    eval_episodes: NonNegInt = 10
    """Episodes per evaluation."""
    checkpoint_every: PosInt = 1000
    """Checkpoint every this many updates."""


PRESETS = {
    "quick": Config(eval_every=50_000),  # the claim reads only the final evaluation
    "full": Config(env_id="LunarLander-v3", total_steps=2_000_000, n_envs=16, gamma=0.995, ent_coef=0.01,
                   lr=7e-4, eval_every=100_000),
}

CLAIMS = {
    "quick": [Claim("A2C solves CartPole-v1 (greedy return >= 475) within 200k env steps", "eval/return", ">=",
                    475.0, "475 = CartPole-v1 reward_threshold; SB3 zoo A2C 500 at 500k steps",
                    "gymnasium CartPole-v1; rl-baselines3-zoo benchmark", bar="peer")],
    "full": [Claim("A2C solves LunarLander-v3 (return >= 200)", "eval/return", ">=", 200.0,
                   "200 = solved; SB3 zoo A2C ~150 (LunarLander-v2, 5M steps)", "rl-baselines3-zoo benchmark",
                   bar="peer")],
}


# ---- A2C: the paper's loss -----------------------------------------------------------------------------
def a2c_loss(logp: torch.Tensor, entropy: torch.Tensor, values: torch.Tensor, returns: torch.Tensor,
             ent_coef: float, vf_coef: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-(log pi * A) - beta H + c (R - V)^2, with A = R - V held fixed in the policy term. (B,) inputs."""
    advantages = (returns - values).detach()  # A(s_t, a_t) = R_t - V(s_t)
    pg = -(logp * advantages).mean()  # policy gradient term
    v_loss = 0.5 * (returns - values).pow(2).mean()  # value regression
    ent = entropy.mean()
    return pg + vf_coef * v_loss - ent_coef * ent, {"pg_loss": pg, "v_loss": v_loss, "entropy": ent}


def nstep_returns(rewards: np.ndarray, next_values: np.ndarray, terminated: np.ndarray, dones: np.ndarray,
                  gamma: float) -> np.ndarray:
    """n-step returns (T, N): R_t = r_t + gamma r_{t+1} + ... + gamma^k V(s_{t+k}), summed to the rollout's end
    or the episode's end, then V of the state reached (0 if terminated). Alg. S3. Equal to GAE(lambda=1) + V."""
    ret = np.zeros(rewards.shape, dtype=np.float64)
    boot = (1.0 - terminated.astype(np.float64)) * next_values  # V(s_{t+1}) where the chain is cut
    running = boot[-1]
    for t in range(len(rewards) - 1, -1, -1):
        running = np.where(dones[t], boot[t], running)  # an episode ended at t: restart from its bootstrap
        running = rewards[t] + gamma * running  # Alg. S3: R <- r_t + gamma R
        ret[t] = running
    return ret


def make_update(model: ActorCritic, opt: torch.optim.Optimizer, cfg: Config, device: torch.device | str = "cpu"):
    """The paper's update as `onpolicy_loop` calls it: `update(rollout, progress, rng) -> metrics` (Alg. S3)."""
    dtype = next(model.parameters()).dtype

    def update(rollout: dict[str, np.ndarray], progress: float, rng: np.random.Generator) -> dict[str, float]:
        """One synchronous A2C step on the N x t_max rollout (Alg. S3, all actors' gradients at once)."""
        if cfg.anneal_lr:
            opt.param_groups[0]["lr"] = cfg.lr * (1.0 - progress)  # §8: linear annealing to 0
        returns = nstep_returns(rollout["rewards"], rollout["next_values"], rollout["terminated"], rollout["dones"],
                                cfg.gamma)
        obs = flat(rollout["obs"], device, dtype)
        logp, entropy = model.log_prob_entropy(obs, flat(rollout["actions"], device, torch.long))
        loss, parts = a2c_loss(logp, entropy, model.value(obs), flat(returns, device, dtype), cfg.ent_coef,
                               cfg.vf_coef)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}

    return update


def train(cfg: Config, run: Run) -> dict[str, float]:
    with one_thread(run.device):
        return _train(cfg, run)


def _train(cfg: Config, run: Run) -> dict[str, float]:
    envs = make_vec_env(cfg.env_id, cfg.n_envs, run.seed, "A2C", discrete_only=True)
    model = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space, cfg.hidden, cfg.shared,
                        seed=run.seed).to(run.device)
    if cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr, alpha=0.99, eps=1e-5)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    state = run.restore()
    policy = onpolicy_loop(envs, cfg.env_id, model, make_update(model, opt, cfg, run.device), {"opt": opt}, cfg,
                           seed=run.seed, run=run, prefix="a2c", resume=state["loop"] if state else None, outer={},
                           log_every=50)
    steps, rets = policy.curve
    line_plot(run.plots_dir / "learning_curve.png",
              {"training episodes": (steps, rets),
               "greedy evaluation": ([s for s, _ in policy.evals], [r for _, r in policy.evals])},
              xlabel="env steps", ylabel="return", title=f"A2C on {cfg.env_id}",
              hline=CLAIMS["quick"][0].threshold if cfg.env_id == "CartPole-v1" else None)
    return {"eval/return": policy.eval_return, "train/steps_per_s": policy.steps / policy.seconds,
            "train/seconds": policy.seconds}
