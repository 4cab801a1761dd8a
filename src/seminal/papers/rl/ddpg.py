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
  §3, §7   N_t: Ornstein-Uhlenbeck, theta=0.15, sigma=0.2          -> `ou_step`
  Fig. 3   estimated Q vs observed (discounted) return             -> `q_vs_mc`, `discounted_returns`

`off_policy_loop` is the paper's Algorithm 1 (act with noise, store, sample, update); TD3 reuses it with
its own update rule.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.plots import line_plot
from seminal.core.rl import evaluate
from seminal.core.run import Run
from seminal.papers.rl._offpolicy import EnsembleMLP, ReplayBuffer, make_box_env, mlp, scale_action


@dataclass(frozen=True)
class Config:
    env_id: str = "Pendulum-v1"
    """Gymnasium id of a continuous-action (Box) env."""
    total_steps: int = 20_000
    """Environment steps (one gradient update per step after `start_steps`)."""
    start_steps: int = 1_000
    """Initial steps with uniform random actions, filling the buffer before learning starts."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of actor and critic (the paper: 400, 300)."""
    actor_lr: float = 1e-3
    """Adam step size of the actor (the paper: 1e-4)."""
    critic_lr: float = 1e-3
    """Adam step size of the critic (the paper: 1e-3)."""
    critic_weight_decay: float = 0.0
    """L2 weight decay of the critic (the paper: 1e-2)."""
    gamma: float = 0.99
    """Discount gamma (Eq. 5)."""
    tau: float = 0.005
    """Polyak rate tau of the target networks (the paper: 0.001)."""
    batch_size: int = 256
    """Minibatch N sampled from the replay buffer (the paper: 64)."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity R (the paper: 1e6)."""
    noise: Literal["gaussian", "ou"] = "gaussian"
    """Exploration noise N_t: i.i.d. Gaussian, or the paper's Ornstein-Uhlenbeck process."""
    noise_sigma: float = 0.1
    """Noise scale sigma, in units of the [-1, 1] action range (the paper's OU: 0.2)."""
    ou_theta: float = 0.15
    """OU mean reversion theta (the paper: 0.15)."""
    eval_every: int = 2_000
    """Environment steps between deterministic evaluations (and Q-vs-return measurements)."""
    eval_episodes: int = 10
    """Episodes per evaluation; the final one gives `eval/return`."""
    mc_episodes: int = 5
    """Rollouts per Q-vs-return measurement (Fig. 3)."""
    mc_states: int = 200
    """Compare Q and the discounted return at the first `mc_states` states of each rollout..."""
    mc_horizon: int = 500
    """...each continued `mc_horizon` steps past them, so the return is truncated at gamma^horizon."""
    checkpoint_every: int = 5_000
    """Environment steps between checkpoints (networks, optimizers and the replay buffer)."""


PRESETS = {
    "quick": Config(),
    "full": Config(env_id="LunarLanderContinuous-v3", total_steps=300_000, start_steps=10_000,
                   hidden=(400, 300), eval_every=10_000, mc_states=1000, checkpoint_every=50_000),
    "halfcheetah": Config(env_id="HalfCheetah-v5", total_steps=1_000_000, start_steps=10_000,
                          hidden=(400, 300), eval_every=5_000, mc_states=1000, checkpoint_every=50_000),
}

CLAIMS = {
    "quick": [
        Claim("DDPG solves Pendulum-v1 within 20k steps", "eval/return", ">=", -200.0,
              "about -150 at 20k steps (SB3 zoo DDPG); random policy about -1200",
              "rl-baselines3-zoo benchmark, Pendulum-v1"),
    ],
    "full": [],
    "halfcheetah": [
        Claim("DDPG on HalfCheetah at 1M steps", "eval/return", ">=", 8000.0,
              "8577 +- 795 ('our DDPG', 1M steps, HalfCheetah-v1)", "Fujimoto et al. 2018, Table 1"),
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


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_k gamma^k r_{t+k} for every t of one rollout (ending where `rewards` ends)."""
    out = np.zeros(len(rewards))
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


# ---- networks ----------------------------------------------------------------------------------------
@dataclass
class Nets:
    """Actor mu, critics Q (K members), their targets, and one Adam optimizer each for actor and critics."""

    actor: nn.Module
    critic: EnsembleMLP
    actor_target: nn.Module
    critic_target: EnsembleMLP
    actor_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).state_dict() for k in
                ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            getattr(self, k).load_state_dict(v)


def make_nets(obs_dim: int, act_dim: int, hidden: tuple[int, ...], critics: int, actor_lr: float,
              critic_lr: float, critic_weight_decay: float = 0.0, device: Any = "cpu") -> Nets:
    actor = mlp((obs_dim, *hidden, act_dim), nn.Tanh()).to(device)  # mu(s) in [-1, 1]^act_dim
    critic = EnsembleMLP(critics, (obs_dim + act_dim, *hidden, 1)).to(device)  # Q_k(s, a): (K, B, 1)
    fused = {"foreach": True}
    return Nets(actor, critic, copy.deepcopy(actor), copy.deepcopy(critic),
                torch.optim.Adam(actor.parameters(), lr=actor_lr, **fused),
                torch.optim.Adam(critic.parameters(), lr=critic_lr, weight_decay=critic_weight_decay, **fused))


def ddpg_update(nets: Nets, batch: tuple[torch.Tensor, ...], cfg: Config, step: int) -> dict[str, torch.Tensor]:
    """One DDPG update: critic on Eq. (4)-(5), actor along Eq. (6), then both targets by Polyak."""
    s, a, r, s2, d = batch
    with torch.no_grad():
        q_next = nets.critic_target(torch.cat([s2, nets.actor_target(s2)], -1))[0, :, 0]  # (B,)
        y = ddpg_target(r, d, cfg.gamma, q_next)  # Eq. (5)
    q = nets.critic(torch.cat([s, a], -1))[0, :, 0]
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


# ---- measuring the critic against the truth (Fig. 3) ------------------------------------------------
@torch.no_grad()
def q_vs_mc(nets: Nets, env_id: str, cfg: Any, seed: int, device: Any) -> tuple[float, float]:
    """Mean Q_1(s, mu(s)) and mean true discounted return G(s) of mu, over states of fresh rollouts.

    Each of `mc_episodes` deterministic rollouts runs `mc_states + mc_horizon` steps (or to termination);
    the first `mc_states` states are scored, each with at least `mc_horizon` steps of return behind it.
    """
    env, low, high = make_box_env(env_id, "q_vs_mc", max_episode_steps=cfg.mc_states + cfg.mc_horizon)
    qs, gs = [], []
    for k in range(cfg.mc_episodes):
        obs, _ = env.reset(seed=seed + k)
        states, rewards = [], []
        for _ in range(cfg.mc_states + cfg.mc_horizon):
            states.append(obs)
            u = nets.actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(scale_action(u, low, high))
            rewards.append(reward)
            if terminated or truncated:
                break
        n = min(cfg.mc_states, len(states))
        s = torch.as_tensor(np.array(states[:n]), dtype=torch.float32, device=device)
        qs.append(nets.critic(torch.cat([s, nets.actor(s)], -1))[0, :, 0].cpu().numpy())
        gs.append(discounted_returns(np.asarray(rewards, dtype=np.float64), cfg.gamma)[:n])
    env.close()
    return float(np.concatenate(qs).mean()), float(np.concatenate(gs).mean())


# ---- Algorithm 1: the interaction loop ---------------------------------------------------------------
Update = Callable[[Nets, tuple[torch.Tensor, ...], Any, int], dict[str, torch.Tensor]]


def off_policy_loop(cfg: Any, run: Run, nets: Nets, update: Update, tag: str,
                    state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, float]:
    """Act with noise, store, sample, `update` once a step; evaluate and measure Q vs return periodically.

    Metrics are logged as `<tag>/...`. Checkpoints hold the nets, the buffer, the loop's counters and
    `extra` (for a caller running several loops); `state` is the `loop` part of a restored checkpoint. The
    env restarts on resume, so a resumed run is close to, not bit-identical with, an uninterrupted one.
    """
    device = run.device
    env, low, high = make_box_env(cfg.env_id, tag.upper())
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    buffer = ReplayBuffer(min(cfg.buffer_size, cfg.total_steps), obs_dim, act_dim, device)
    rng = np.random.default_rng([run.seed, 1])
    first, episode = 0, 0
    if state is not None:
        nets.load_state_dict(state["nets"])
        buffer.load_state_dict(state["buffer"])
        rng.bit_generator.state = state["rng"]
        first, episode = state["step"], state["episode"]
    obs, _ = env.reset(seed=run.seed * 1_000_003 + episode)
    noise = np.zeros(act_dim)
    ret, last = 0.0, {}
    t0, t_steps = time.perf_counter(), first
    for step in range(first, cfg.total_steps):
        if step < cfg.start_steps:
            u = rng.uniform(-1.0, 1.0, act_dim)
        else:
            with torch.no_grad():
                mu = nets.actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            if cfg.noise == "ou":
                noise = ou_step(noise, cfg.ou_theta, cfg.noise_sigma, rng)  # §7
            else:
                noise = cfg.noise_sigma * rng.standard_normal(act_dim)
            u = np.clip(mu + noise, -1.0, 1.0)
        next_obs, reward, terminated, truncated, _ = env.step(scale_action(u, low, high))
        buffer.add(obs, u, reward, next_obs, terminated)
        obs, ret = next_obs, ret + float(reward)
        if terminated or truncated:
            run.log({f"{tag}/episode_return": ret}, step=step + 1)
            episode += 1
            obs, _ = env.reset(seed=run.seed * 1_000_003 + episode)
            noise, ret = np.zeros(act_dim), 0.0
        if step >= cfg.start_steps:
            last = update(nets, buffer.sample(rng, cfg.batch_size), cfg, step)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.total_steps:
            sps = (step + 1 - t_steps) / (time.perf_counter() - t0)
            returns = evaluate(lambda o: scale_action(_act(nets.actor, o, device), low, high), cfg.env_id,
                               episodes=cfg.eval_episodes)
            q, g = q_vs_mc(nets, cfg.env_id, cfg, seed=20_000, device=device)
            row = {f"{tag}/eval_return": float(np.mean(returns)), f"{tag}/q_estimate": q,
                   f"{tag}/mc_return": g, f"{tag}/q_bias": q - g, f"{tag}/steps_per_s": sps}
            row.update({f"{tag}/{k}": float(v) for k, v in last.items()})
            run.check_finite(row.get(f"{tag}/critic_loss", 0.0), step, "critic loss", hint="critic_lr")
            run.log(row, step=step + 1)
            t0, t_steps = time.perf_counter(), step + 1
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.total_steps:
            loop = {"nets": nets.state_dict(), "buffer": buffer.state_dict(), "rng": rng.bit_generator.state,
                    "step": step + 1, "episode": episode}
            run.checkpoint({"tag": tag, "loop": loop, **(extra or {})})
    env.close()
    steps, biases = run.history(f"{tag}/q_bias")
    # Mean bias over the second half of training: early on, a critic that starts near 0 on an env with
    # negative rewards (Pendulum) "over-estimates" by not having learned the scale yet, not by maximisation.
    late = [b for t, b in zip(steps, biases) if t > cfg.total_steps // 2] or biases
    return {"eval/return": float(np.mean(returns)), "q_bias_mean": float(np.mean(late)),
            "q_bias_final": biases[-1]}


def _act(actor: nn.Module, obs: np.ndarray, device: Any) -> np.ndarray:
    with torch.no_grad():
        return actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()


def plot_q_vs_mc(run: Run, tags: list[str], name: str, title: str) -> None:
    """The paper's Fig. 3 / TD3's Fig. 1: critic estimate and true discounted return over training."""
    series = {}
    for tag in tags:
        series[f"{tag}: Q(s, mu(s))"] = run.history(f"{tag}/q_estimate")
        series[f"{tag}: true return"] = run.history(f"{tag}/mc_return")
    line_plot(run.plots_dir / f"{name}.png", series, xlabel="env step", ylabel="discounted value", title=title)


def train(cfg: Config, run: Run) -> dict[str, float]:
    env, _, _ = make_box_env(cfg.env_id, "DDPG")  # early, one-line errors for bad ids and missing extras
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    nets = make_nets(obs_dim, act_dim, cfg.hidden, 1, cfg.actor_lr, cfg.critic_lr, cfg.critic_weight_decay,
                     run.device)
    restored = run.restore()
    out = off_policy_loop(cfg, run, nets, ddpg_update, "ddpg", restored["loop"] if restored else None)
    line_plot(run.plots_dir / "eval_return.png", {"DDPG": run.history("ddpg/eval_return")}, xlabel="env step",
              ylabel="return", title=f"DDPG on {cfg.env_id}", hline=-200.0 if cfg.env_id == "Pendulum-v1" else None)
    plot_q_vs_mc(run, ["ddpg"], "q_vs_return", f"DDPG critic vs true return ({cfg.env_id})")
    return {"eval/return": out["eval/return"], "ddpg/q_bias_mean": out["q_bias_mean"],
            "ddpg/q_bias_final": out["q_bias_final"]}
