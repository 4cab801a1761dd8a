"""Soft actor-critic — Haarnoja, Zhou, Abbeel & Levine, ICML 2018, arXiv:1801.01290 (v1), and Haarnoja, Zhou,
Hartikainen, Tucker, Ha, Tan, Kumar, Zhu, Gupta, Abbeel & Levine 2018, arXiv:1812.05905 (v2).

Maximum-entropy RL: maximise return plus alpha times the policy's entropy. The critic learns the *soft*
Q-function (its target subtracts alpha log pi of the next action); the actor is a Gaussian squashed by
tanh, trained by the reparameterisation trick to minimise alpha log pi - Q. Two critics and the min of
their targets (as TD3) fight over-estimation. v2 adds automatic tuning of the temperature alpha, which is
moved so that the policy's entropy tracks a target (-dim(A)); `auto_alpha=False` is the fixed-alpha
variant.

Equation map (v1 = arXiv:1801.01290, v2 = arXiv:1812.05905):
  v2 Eq. (3)  y = r + gamma (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s')  -> `soft_q_target`
  v1 Eq. (5)  J_Q = 1/2 (Q(s, a) - y)^2, for each of the two critics                   -> `sac_update`
  v1 Eq. (11) a = f(eps; s) = tanh(mu(s) + sigma(s) eps)                                -> `squashed_gaussian`
  v1 Eq. (21) log pi(a|s) = log mu(u|s) - sum_i log(1 - tanh(u_i)^2)                     -> `squashed_gaussian`
  v1 Eq. (12) J_pi = alpha log pi(f(eps; s)|s) - min_i Q_i(s, f(eps; s))                -> `sac_update`
  v2 Eq. (18) J(alpha) = -alpha (log pi(a|s) + H_target)                                -> `temperature_loss`
  v1 Alg. 1   target networks by Polyak averaging                                        -> `ddpg.polyak_update`

Reusable: `train_sac(env, cfg, seed=..., device=..., run=...)` trains on any env (or env factory) with a
bounded Box action space and returns a `SquashedGaussianPolicy` (obs -> env action, deterministic). The loop
(act, store, sample, update, evaluate, checkpoint) is `_offpolicy.offpolicy_loop`; SAC passes it its
`act(obs, explore)` (a sample of pi, or tanh(mean)) and `sac_update`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Prob, Range, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import evaluate, require_box
from seminal.core.run import Run
from seminal.papers.rl._offpolicy import (
    CudaGraphed,
    EnsembleMLP,
    load_optimizer,
    make_box_env,
    offpolicy_loop,
    scale_action,
)
from seminal.papers.rl.ddpg import polyak_update

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the authors' code clamps log sigma to this range


@dataclass(frozen=True)
class Config:
    env_id: str = "Pendulum-v1"
    """Gymnasium id of a continuous-action (Box) env."""
    total_steps: PosInt = 20_000
    """Environment steps; one gradient update per step after `start_steps` (update-to-data ratio 1)."""
    start_steps: NonNegInt = 1_000
    """Initial steps with uniform random actions (v2: 1000 to 10000)."""
    hidden: Sizes = (256, 256)
    """Hidden widths of the actor and of each critic (v1/v2: 256, 256)."""
    lr: PosFloat = 3e-4
    """Adam step size for actor, critics and alpha (v1/v2: 3e-4)."""
    gamma: Prob = 0.99
    """Discount gamma (v1/v2: 0.99)."""
    tau: Annotated[float, Range(gt=0, le=1)] = 0.005
    """Polyak rate of the target critics (v1/v2: 0.005)."""
    batch_size: PosInt = 256
    """Minibatch size (v1/v2: 256)."""
    buffer_size: PosInt = 1_000_000
    """Replay buffer capacity (v1/v2: 1e6)."""
    auto_alpha: bool = True
    """Tune the temperature alpha by v2 Eq. (18); off: alpha is fixed at `alpha` (v1)."""
    alpha: PosFloat = 0.2
    """The temperature alpha: fixed value, or the initial value with auto_alpha (v1 uses 1/reward_scale)."""
    target_entropy: float | None = None
    """H_target of v2 Eq. (18) in nats; None: -dim(A), as in v2."""
    eval_every: PosInt = 2_000
    """Environment steps between deterministic evaluations."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation (policy mean, squashed); the final one gives `eval/return`."""
    checkpoint_every: PosInt = 5_000
    """Environment steps between checkpoints (nets, optimizers, alpha and the replay buffer)."""
    cuda_graph: bool = True
    """On a GPU, replay each update as one captured CUDA graph (same math, far fewer launches); CPU: no effect."""


PRESETS = {
    # quick: one CPU core, under a minute; 64x64 nets, batch 128 and lr 1e-3 (SB3 zoo's Pendulum step size)
    "quick": Config(total_steps=10_000, hidden=(64, 64), batch_size=128, lr=1e-3, eval_every=2_000),
    # the earlier quick preset: the papers' sizes (256x256, batch 256, lr 3e-4), about 250 s a seed on a CPU
    "pendulum": Config(),
    "full": Config(env_id="LunarLanderContinuous-v3", total_steps=300_000, start_steps=10_000,
                   eval_every=10_000, checkpoint_every=50_000),
    "halfcheetah": Config(env_id="HalfCheetah-v5", total_steps=1_000_000, start_steps=10_000,
                          eval_every=10_000, checkpoint_every=50_000),
}

_SOLVES = ("about -150 at 20k steps (SB3 zoo SAC); random policy about -1200",
           "rl-baselines3-zoo benchmark, Pendulum-v1")
CLAIMS = {
    "quick": [Claim("SAC solves Pendulum-v1 within 10k steps", "eval/return", ">=", -200.0, *_SOLVES, bar="peer")],
    "pendulum": [Claim("SAC solves Pendulum-v1 within 20k steps", "eval/return", ">=", -200.0, *_SOLVES, bar="peer")],
    "full": [
        Claim("SAC lands LunarLanderContinuous-v3", "eval/return", ">=", 200.0,
              "200 = 'solved' (env definition); SB3 zoo SAC about 270", "Gymnasium LunarLander docs; SB3 zoo",
              bar="peer"),
    ],
    "halfcheetah": [
        Claim("SAC on HalfCheetah at 1M steps", "eval/return", ">=", 9000.0,
              "about 10,000-11,000 at 1M steps (HalfCheetah-v2)", "Haarnoja et al. 2018 (v2), Fig. 1", bar="paper"),
    ],
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
def squashed_gaussian(mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """a = tanh(mean + std * eps) and log pi(a|s), summed over action dims. v1 Eq. (11) and (21).

    log(1 - tanh(u)^2) is computed as 2 (log 2 - u - softplus(-2u)), exact and stable for large |u|.
    """
    u = mean + log_std.exp() * eps  # Eq. (11), reparameterised
    log_mu = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)  # log N(u; mean, std)
    log_det = (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)  # sum log(1 - tanh^2)
    return torch.tanh(u), log_mu - log_det  # Eq. (21)


def soft_q_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float, q_next: torch.Tensor,
                  alpha: torch.Tensor | float, log_pi_next: torch.Tensor) -> torch.Tensor:
    """y = r + gamma (1 - terminated)(min_i Q'_i(s', a') - alpha log pi(a'|s')); q_next (K, B). v2 Eq. (3)."""
    return reward + gamma * (1.0 - terminated) * (q_next.min(dim=0).values - alpha * log_pi_next)


def temperature_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J(alpha) = E[-alpha (log pi + H_target)], written on log alpha as the authors' code does. v2 Eq. (18).

    Its gradient in log alpha is -(E[log pi] + H_target) = entropy - H_target: gradient descent raises alpha
    when the entropy is below the target and lowers it when above.
    """
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()  # Eq. (18)


# ---- networks ----------------------------------------------------------------------------------------
class SquashedGaussianActor(nn.Module):
    """s -> (mean, log_std) of the Gaussian over pre-tanh actions u; a = tanh(u) lies in [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip((obs_dim, *hidden[:-1]), hidden):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(hidden[-1], 2 * act_dim)  # mean and log_std in one matmul

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)  # (B, A) each
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self(obs)
        return squashed_gaussian(mean, log_std, torch.randn_like(mean))


class SquashedGaussianPolicy:
    """A trained SAC policy: `policy(obs)` is the deterministic action tanh(mean), scaled to the env bounds."""

    def __init__(self, actor: SquashedGaussianActor, low: np.ndarray, high: np.ndarray, device: Any = "cpu"):
        self.actor, self.low, self.high, self.device = actor, low, high, device

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        a = torch.tanh(self.actor(o)[0]) if deterministic else self.actor.sample(o.unsqueeze(0))[0][0]
        return scale_action(a.cpu().numpy(), self.low, self.high)


@dataclass
class Agent:
    actor: SquashedGaussianActor
    critic: EnsembleMLP  # Q_1, Q_2 as one stacked module: (2, B, 1)
    critic_target: EnsembleMLP
    log_alpha: torch.Tensor
    actor_opt: torch.optim.Optimizer  # actor and log alpha (separate losses, separate gradients)
    critic_opt: torch.optim.Optimizer

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("actor", "critic", "critic_target"):
            getattr(self, k).load_state_dict(state[k])
        for k in ("actor_opt", "critic_opt"):
            load_optimizer(getattr(self, k), state[k])  # a GPU (graph) checkpoint resumes on a CPU, and back
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])


def make_agent(obs_dim: int, act_dim: int, cfg: Config, device: Any = "cpu") -> Agent:
    actor = SquashedGaussianActor(obs_dim, act_dim, cfg.hidden).to(device)
    critic = EnsembleMLP(2, (obs_dim + act_dim, *cfg.hidden, 1)).to(device)
    log_alpha = torch.tensor(math.log(cfg.alpha), device=device, requires_grad=cfg.auto_alpha)
    # capturable: the optimizer's step counter stays on the GPU, so `step()` can sit inside a CUDA graph
    fast = {"foreach": True, "capturable": torch.device(device).type == "cuda" and cfg.cuda_graph}
    actor_params = list(actor.parameters()) + ([log_alpha] if cfg.auto_alpha else [])
    return Agent(actor, critic, copy.deepcopy(critic), log_alpha, torch.optim.Adam(actor_params, lr=cfg.lr, **fast),
                 torch.optim.Adam(critic.parameters(), lr=cfg.lr, **fast))


def sac_update(agent: Agent, batch: tuple[torch.Tensor, ...], cfg: Config, target_entropy: float) -> dict:
    """One SAC step: critics on the soft target, then actor and alpha, then Polyak (v1 Alg. 1, v2 Alg. 1).

    The order is the usual one (Stable-Baselines3's too): the new actions a ~ pi(.|s) are drawn once; the
    critics step first; the actor's loss then uses the updated critics, and alpha the pre-update log pi.
    """
    s, a, r, s2, d = batch
    alpha = agent.log_alpha.detach().exp()
    a_pi, log_pi = agent.actor.sample(s)  # f(eps; s), with gradient to the actor
    with torch.no_grad():
        a2, log_pi2 = agent.actor.sample(s2)
        q_next = agent.critic_target(torch.cat([s2, a2], -1))[..., 0]  # (2, B)
        y = soft_q_target(r, d, cfg.gamma, q_next, alpha, log_pi2)  # v2 Eq. (3)
    q = agent.critic(torch.cat([s, a], -1))[..., 0]  # (2, B): both critics in one batched forward
    critic_loss = 0.5 * ((q - y) ** 2).mean(dim=1).sum()  # v1 Eq. (5), both critics
    agent.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    agent.critic_opt.step()
    q_pi = agent.critic(torch.cat([s, a_pi], -1), frozen=True)[..., 0].min(dim=0).values  # min_i Q_i(s, a~)
    actor_loss = (alpha * log_pi - q_pi).mean()  # v1 Eq. (12)
    loss = actor_loss
    if cfg.auto_alpha:
        loss = loss + temperature_loss(agent.log_alpha, log_pi, target_entropy)  # v2 Eq. (18)
    agent.actor_opt.zero_grad(set_to_none=True)
    loss.backward()
    agent.actor_opt.step()
    polyak_update(list(agent.critic_target.parameters()), list(agent.critic.parameters()), cfg.tau)
    return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
            "entropy": -log_pi.detach().mean()}


# ---- the reusable trainer ----------------------------------------------------------------------------
def train_sac(env: Any | Callable[[], Any], cfg: Config, *, seed: int = 0, device: Any = "cpu",
              run: Run | None = None, tag: str = "sac",
              evaluator: Callable[..., list[float]] = evaluate) -> SquashedGaussianPolicy:
    """Train SAC on `env` (a gymnasium env, or a zero-argument factory that makes one) and return the policy.

    env:    Box actions (bounded) and flat Box observations. With a factory, one env is made for training
            and a fresh one for each evaluation; wrappers (e.g. domain randomisation on reset) are kept.
    cfg:    `Config`; `cfg.env_id` is only used for messages when `env` is given.
    seed:   seeds the env resets, the warm-up actions and the minibatch sampling (torch's global RNG
            drives the policy noise: seed it, e.g. with `seed_everything`, for a repeatable run).
    device: where the networks and the replay buffer live.
    run:    optional `Run`: metrics are logged as `<tag>/...`, evaluations every `cfg.eval_every` steps,
            checkpoints every `cfg.checkpoint_every` steps and whenever `run.due()`, resumed from exactly
            (the env's state included, where it can be saved). Without a run nothing is logged or saved.
    evaluator: replaces the deterministic evaluation (`seminal.core.rl.evaluate`'s signature), e.g. a timed one.
    Returns a `SquashedGaussianPolicy`: `policy(obs)` gives the deterministic action in env units;
    `policy.actor` is the network.
    """
    factory = env if callable(env) and not hasattr(env, "step") else None
    env = factory() if factory is not None else env
    name = getattr(getattr(env, "spec", None), "id", None) or cfg.env_id
    low, high = require_box(env, name, "SAC")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    target_entropy = -float(act_dim) if cfg.target_entropy is None else cfg.target_entropy  # v2 §5
    agent = make_agent(obs_dim, act_dim, cfg, device)
    policy = SquashedGaussianPolicy(agent.actor, low, high, device)

    def step_fn(*batch: torch.Tensor) -> dict:
        return sac_update(agent, batch, cfg, target_entropy)

    if torch.device(device).type == "cuda" and cfg.cuda_graph:
        step_fn = CudaGraphed(step_fn)  # the same update, replayed as one CUDA graph

    @torch.no_grad()
    def act(obs: np.ndarray, explore: bool) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
        u = agent.actor.sample(o)[0] if explore else torch.tanh(agent.actor(o)[0])  # a ~ pi(.|s), or tanh(mean)
        return u[0].cpu().numpy()

    state = run.restore() if run is not None else None
    offpolicy_loop(env, cfg, act, lambda batch, step: step_fn(*batch), {"agent": agent}, seed=seed, run=run,
                   tag=tag, eval_env=factory if factory is not None else name,
                   resume=state["loop"] if state else None, hint="lr", device=device, evaluator=evaluator)
    return policy


def train(cfg: Config, run: Run) -> dict[str, float]:
    env, _, _ = make_box_env(cfg.env_id, "SAC")  # one-line errors: unknown id, missing extra, discrete actions
    train_sac(env, cfg, seed=run.seed, device=run.device, run=run)
    _, returns = run.history("sac/eval_return")  # the last one: the final policy, deterministic
    line_plot(run.plots_dir / "eval_return.png", {"SAC": run.history("sac/eval_return")}, xlabel="env step",
              ylabel="return", title=f"SAC on {cfg.env_id}", hline=-200.0 if cfg.env_id == "Pendulum-v1" else None)
    line_plot(run.plots_dir / "alpha.png", {"alpha": run.history("sac/alpha"), "entropy": run.history("sac/entropy")},
              xlabel="env step", ylabel="value", title="Temperature and policy entropy")
    if not returns:
        raise SeminalError("no evaluation was logged; set eval_every <= total_steps")
    return {"eval/return": returns[-1]}
