"""Continuous control with deep reinforcement learning — Lillicrap, Hunt, Pritzel, Heess, Erez, Tassa, Silver &
Wierstra, ICLR 2016, arXiv:1509.02971.

DDPG is deterministic policy gradient (Silver et al. 2014) with DQN's two stabilisers: a replay buffer and
target networks. A critic Q(s, a) is regressed on the one-step target computed with slowly moving copies
of the actor and critic (Polyak averaging, "soft" target updates); the actor mu(s) climbs the critic's
action-gradient dQ/da. Exploration adds noise to mu(s): Ornstein-Uhlenbeck in the paper, Gaussian here by
default (both are offered). The paper's Fig. 3 compares the critic's estimate with the observed return;
we log that comparison at every evaluation (TD3, the next paper, is about its bias).

Equation map (numbers as in the paper):
  Eq. (5)  y_i = r_i + gamma Q'(s_{i+1}, mu'(s_{i+1}))            -> `ddpg_target`
  Eq. (4)  L = 1/N sum_i (y_i - Q(s_i, a_i))^2                     -> `ddpg_update`, critic loss
  Eq. (6)  grad J ~ 1/N sum_i dQ/da(s_i, mu(s_i)) dmu/dtheta       -> `ddpg_update`, actor loss -Q(s, mu(s))
  Alg. 1   theta' <- tau theta + (1 - tau) theta'                  -> `polyak_update`
  Alg. 1   a_t = mu(s_t) + N_t                                     -> `Exploration`
  §3, §7   N_t: Ornstein-Uhlenbeck, theta=0.15, sigma=0.2          -> `ou_step`
  Fig. 3   estimated Q vs observed (discounted) return             -> `_offpolicy.q_vs_return`, `late_mean`

The interaction loop of Algorithm 1 (act with noise, store, sample, update, evaluate, checkpoint) is
`_offpolicy.offpolicy_loop`; this module passes it its behaviour policy and `ddpg_update`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Range, Sizes
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.rl._offpolicy import Nets, make_box_env, make_nets, offpolicy_loop, plot_q_vs_return, q_vs_return


@dataclass(frozen=True)
class Config:
    env_id: str = "Pendulum-v1"
    """Gymnasium id of a continuous-action (Box) env."""
    total_steps: PosInt = 20_000
    """Environment steps (one gradient update per step after `start_steps`)."""
    start_steps: NonNegInt = 1_000
    """Initial steps with uniform random actions, filling the buffer before learning starts."""
    hidden: Sizes = (256, 256)
    """Hidden widths of actor and critic (the paper: 400, 300)."""
    actor_lr: PosFloat = 1e-3
    """Adam step size of the actor (the paper: 1e-4)."""
    critic_lr: PosFloat = 1e-3
    """Adam step size of the critic (the paper: 1e-3)."""
    critic_weight_decay: NonNegFloat = 0.0
    """L2 weight decay of the critic (the paper: 1e-2)."""
    gamma: Prob = 0.99
    """Discount gamma (Eq. 5)."""
    tau: Annotated[float, Range(gt=0, le=1)] = 0.005
    """Polyak rate tau of the target networks (the paper: 0.001)."""
    batch_size: PosInt = 256
    """Minibatch N sampled from the replay buffer (the paper: 64)."""
    buffer_size: PosInt = 1_000_000
    """Replay buffer capacity R (the paper: 1e6)."""
    noise: Literal["gaussian", "ou"] = "gaussian"
    """Exploration noise N_t: i.i.d. Gaussian, or the paper's Ornstein-Uhlenbeck process."""
    noise_sigma: NonNegFloat = 0.1
    """Noise scale sigma, in units of the [-1, 1] action range (the paper's OU: 0.2)."""
    ou_theta: Annotated[float, Range(gt=0, le=1)] = 0.15
    """OU mean reversion theta (the paper: 0.15)."""
    eval_every: PosInt = 2_000
    """Environment steps between deterministic evaluations (and Q-vs-return measurements)."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation; the final one gives `eval/return`."""
    mc_episodes: NonNegInt = 5
    """Rollouts per Q-vs-return measurement (Fig. 3); 0: no measurement."""
    mc_states: PosInt = 200
    """Compare Q and the discounted return at the first `mc_states` states of each rollout..."""
    mc_horizon: NonNegInt = 500
    """...each continued `mc_horizon` steps past them, so the return is truncated at gamma^horizon."""
    bias_after: Prob = 0.5
    """The per-run bias `ddpg/q_bias_mean` averages the measurements after this fraction of `total_steps`."""
    checkpoint_every: PosInt = 5_000
    """Environment steps between checkpoints (networks, optimizers and the replay buffer)."""


PRESETS = {
    # quick: one CPU core, under a minute. Small nets and batch (a step costs Python overhead, not FLOPs, at 64x64).
    "quick": Config(total_steps=10_000, hidden=(64, 64), batch_size=128, eval_every=2_000, mc_episodes=3,
                    mc_horizon=400),
    # the earlier quick preset: the TD3 paper's "our DDPG" sizes on Pendulum, about 250 s a seed on a CPU
    "pendulum": Config(),
    "full": Config(env_id="LunarLanderContinuous-v3", total_steps=300_000, start_steps=10_000,
                   hidden=(400, 300), eval_every=10_000, mc_states=1000, checkpoint_every=50_000),
    "halfcheetah": Config(env_id="HalfCheetah-v5", total_steps=1_000_000, start_steps=10_000,
                          hidden=(400, 300), eval_every=5_000, mc_states=1000, checkpoint_every=50_000),
}

_SOLVES = ("about -150 at 20k steps (SB3 zoo DDPG); random policy about -1200",
           "rl-baselines3-zoo benchmark, Pendulum-v1")
CLAIMS = {
    "quick": [Claim("DDPG solves Pendulum-v1 within 10k steps", "eval/return", ">=", -200.0, *_SOLVES, bar="peer")],
    "pendulum": [Claim("DDPG solves Pendulum-v1 within 20k steps", "eval/return", ">=", -200.0, *_SOLVES, bar="peer")],
    "full": [],
    "halfcheetah": [
        Claim("DDPG on HalfCheetah at 1M steps", "eval/return", ">=", 8000.0,
              "8577 +- 795 ('our DDPG', 1M steps, HalfCheetah-v1)", "Fujimoto et al. 2018, Table 1", bar="peer"),
    ],
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
def ddpg_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float, q_next: torch.Tensor) -> torch.Tensor:
    """y = r + gamma (1 - terminated) Q'(s', mu'(s')). Eq. (5); no bootstrap past a true terminal state."""
    return reward + gamma * (1.0 - terminated) * q_next  # Eq. (5)


@torch.no_grad()
def polyak_update(target: list[torch.Tensor], source: list[torch.Tensor], tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta', in place, for every tensor pair (Alg. 1, last line)."""
    torch._foreach_lerp_(target, source, tau)  # theta' + tau (theta - theta')


def ou_step(x: np.ndarray, theta: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """One step of the Ornstein-Uhlenbeck process dx = -theta x dt + sigma dW, with dt = 1 (§7)."""
    return x - theta * x + sigma * rng.standard_normal(x.shape)


# ---- the behaviour policy (Alg. 1: a_t = mu(s_t) + N_t) -------------------------------------------------
class Exploration:
    """`explore(obs, explore)`: clip(mu(s) + N_t, -1, 1) while collecting, mu(s) to evaluate.

    N_t is i.i.d. Gaussian (sigma) or the paper's Ornstein-Uhlenbeck process (§7), drawn from its own
    generator; `reset()` starts each episode's OU process at 0; its state is checkpointed with the nets.
    """

    def __init__(self, actor: nn.Module, act_dim: int, kind: str, sigma: float, theta: float, seed: int,
                 device: Any = "cpu"):
        self.actor, self.kind, self.sigma, self.theta, self.device = actor, kind, sigma, theta, device
        self.rng = np.random.default_rng([seed, 3])
        self.x = np.zeros(act_dim)

    def reset(self) -> None:
        self.x = np.zeros_like(self.x)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, explore: bool) -> np.ndarray:
        mu = self.actor(torch.as_tensor(obs, dtype=torch.float32, device=self.device)).cpu().numpy()
        if not explore:
            return mu
        if self.kind == "ou":
            self.x = ou_step(self.x, self.theta, self.sigma, self.rng)  # §7
        else:
            self.x = self.sigma * self.rng.standard_normal(self.x.shape)
        return np.clip(mu + self.x, -1.0, 1.0)  # Alg. 1

    def state_dict(self) -> dict[str, Any]:
        return {"rng": json.dumps(self.rng.bit_generator.state), "x": self.x.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.x = np.array(state["x"], dtype=np.float64)


# ---- one update (Alg. 1, the inner step) -------------------------------------------------------------------
def ddpg_update(nets: Nets, batch: tuple[torch.Tensor, ...], cfg: Any, step: int) -> dict[str, torch.Tensor]:
    """One DDPG update: critic on Eq. (4)-(5), actor along Eq. (6), then both targets by Polyak."""
    s, a, r, s2, d = batch
    with torch.no_grad():
        q_next = nets.critic_target(torch.cat([s2, nets.actor_target(s2)], -1))[0, :, 0]  # (B,) Q'(s', mu'(s'))
        y = ddpg_target(r, d, cfg.gamma, q_next)  # Eq. (5)
    q = nets.critic(torch.cat([s, a], -1))[0, :, 0]  # (B,)
    critic_loss = ((q - y) ** 2).mean()  # Eq. (4)
    nets.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    nets.critic_opt.step()
    actor_loss = -nets.critic(torch.cat([s, nets.actor(s)], -1), frozen=True)[0].mean()  # Eq. (6)
    nets.actor_opt.zero_grad(set_to_none=True)
    actor_loss.backward()
    nets.actor_opt.step()
    polyak_update(list(nets.actor_target.parameters()), list(nets.actor.parameters()), cfg.tau)
    polyak_update(list(nets.critic_target.parameters()), list(nets.critic.parameters()), cfg.tau)
    return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "q": q.detach().mean()}


# ---- measuring the critic against the truth (Fig. 3) ------------------------------------------------------
def late_mean(steps: list[int], values: list[float], after: float) -> float:
    """Mean of the values logged after env step `after` (all of them if none was).

    Early on, a critic that starts near 0 on an env with negative rewards (Pendulum) "over-estimates" by
    not having learned the scale yet, not by maximisation; the late evaluations show the bias of a trained critic.
    """
    late = [v for t, v in zip(steps, values) if t > after] or values
    return float(np.mean(late)) if late else float("nan")


def q1_vs_return(nets: Nets, cfg: Any, device: Any) -> Any:
    """`measure(step)` for the loop: Q_1(s, mu(s)) beside the true discounted return of mu (Fig. 3)."""
    def q1(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return nets.critic(torch.cat([s, a], -1))[0, :, 0]

    return lambda step: q_vs_return(nets.actor, q1, cfg.env_id, cfg.gamma, cfg.mc_episodes, cfg.mc_states,
                                    cfg.mc_horizon, device=device)


def train(cfg: Config, run: Run) -> dict[str, float]:
    env, _, _ = make_box_env(cfg.env_id, "DDPG")  # one-line errors for bad ids, missing extras, discrete actions
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    nets = make_nets(obs_dim, act_dim, cfg.hidden, 1, cfg.actor_lr, cfg.critic_lr, cfg.critic_weight_decay,
                     run.device)
    explore = Exploration(nets.actor, act_dim, cfg.noise, cfg.noise_sigma, cfg.ou_theta, run.seed, run.device)
    state = run.restore()
    final = offpolicy_loop(env, cfg, explore, lambda batch, step: ddpg_update(nets, batch, cfg, step),
                           {"nets": nets, "noise": explore}, seed=run.seed, run=run, tag="ddpg",
                           measure=q1_vs_return(nets, cfg, run.device) if cfg.mc_episodes else None,
                           episode_start=explore.reset, resume=state["loop"] if state else None,
                           hint="critic_lr", device=run.device)
    line_plot(run.plots_dir / "eval_return.png", {"DDPG": run.history("ddpg/eval_return")}, xlabel="env step",
              ylabel="return", title=f"DDPG on {cfg.env_id}", hline=-200.0 if cfg.env_id == "Pendulum-v1" else None)
    out = {"eval/return": final}
    steps, biases = run.history("ddpg/q_bias")
    if biases:
        plot_q_vs_return(run, ["ddpg"], "q_vs_return", f"DDPG critic vs true return ({cfg.env_id})")
        out.update({"ddpg/q_bias_mean": late_mean(steps, biases, cfg.bias_after * cfg.total_steps),
                    "ddpg/q_bias_final": biases[-1]})
    return out
