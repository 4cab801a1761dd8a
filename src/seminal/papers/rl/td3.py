"""Addressing function approximation error in actor-critic methods (TD3) — Fujimoto, van Hoof & Meger,
ICML 2018, arXiv:1802.09477.

The paper's finding: DDPG's critic over-estimates, because the actor climbs the critic's errors and the
bootstrapped target carries them forward. Three fixes, each a switch here so that the paper's ablation
(Table 3) can be run with `--set`:

  * clipped double-Q: two critics, the target takes the smaller of their two estimates (§4.2);
  * delayed policy updates: the actor and the targets move once every d critic updates (§5.2);
  * target policy smoothing: clipped Gaussian noise on the target action (§5.3).

The central claim is measured as in Fig. 1: at every evaluation the critic's estimate Q(s, pi(s)) is
logged beside the true discounted return of pi from the same states (Monte Carlo rollouts), for TD3 and
for a DDPG-style agent (all three switches off, everything else identical) trained in the same run.

Equation map (numbers as in the paper):
  Eq. (10)  y = r + gamma min_{i=1,2} Q_theta'_i(s', a')                  -> `clipped_double_q_target`
  Eq. (15)  a' = clip(pi_phi'(s') + clip(eps, -c, c), low, high), eps ~ N(0, sigma)  -> `smoothed_target_action`
  Alg. 1    critics regress both Q_i on y; every d steps: actor on Q_1, targets by Polyak  -> `td3_update`
  Fig. 1    value estimate vs true value over training                    -> `ddpg.q_vs_mc`, `td3/q_bias`
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from seminal.core.claims import Claim
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.rl._offpolicy import make_box_env
from seminal.papers.rl.ddpg import Nets, make_nets, off_policy_loop, plot_q_vs_mc, polyak_update


@dataclass(frozen=True)
class Config:
    env_id: str = "Pendulum-v1"
    """Gymnasium id of a continuous-action (Box) env."""
    total_steps: int = 20_000
    """Environment steps of each agent (one critic update per step after `start_steps`)."""
    start_steps: int = 1_000
    """Initial steps with uniform random actions (the paper: 10^4 on MuJoCo)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of actor and critics (the paper: 400, 300; its later code: 256, 256)."""
    actor_lr: float = 1e-3
    """Adam step size of the actor (the paper: 1e-3)."""
    critic_lr: float = 1e-3
    """Adam step size of the critics (the paper: 1e-3)."""
    gamma: float = 0.99
    """Discount gamma."""
    tau: float = 0.005
    """Polyak rate tau of the target networks (the paper: 0.005)."""
    batch_size: int = 256
    """Minibatch size N (the paper: 100; its later code: 256)."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity."""
    noise: Literal["gaussian", "ou"] = "gaussian"
    """Exploration noise: the paper's Gaussian, or DDPG's Ornstein-Uhlenbeck."""
    noise_sigma: float = 0.1
    """Exploration noise sigma in units of the [-1, 1] action range (the paper: 0.1)."""
    ou_theta: float = 0.15
    """OU mean reversion (only with noise=ou)."""
    clipped_double_q: bool = True
    """Twin critics and the min of their targets, Eq. (10) (off: one critic, DDPG's target)."""
    policy_delay: int = 2
    """d: critic updates per actor and target update (1: no delay, as DDPG)."""
    target_smoothing: bool = True
    """Clipped noise on the target action, Eq. (15)."""
    target_noise: float = 0.2
    """sigma of the target-smoothing noise, action units (the paper: 0.2)."""
    target_noise_clip: float = 0.5
    """c, the clip of the smoothing noise (the paper: 0.5)."""
    compare_ddpg: bool = True
    """Also train a DDPG-style agent (all three switches off) in the same run, for the Fig. 1 claim."""
    eval_every: int = 2_000
    """Environment steps between evaluations and Q-vs-return measurements."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation; the final one gives `eval/return`."""
    mc_episodes: int = 5
    """Monte Carlo rollouts per Q-vs-return measurement."""
    mc_states: int = 200
    """States scored per rollout (Q(s, pi(s)) against the discounted return from s)..."""
    mc_horizon: int = 500
    """...each followed for `mc_horizon` more steps, so gamma^horizon of the tail is missing."""
    checkpoint_every: int = 5_000
    """Environment steps between checkpoints (nets, optimizers, replay buffer)."""


PRESETS = {
    "quick": Config(),
    "full": Config(env_id="LunarLanderContinuous-v3", total_steps=300_000, start_steps=10_000,
                   eval_every=10_000, mc_states=1000, checkpoint_every=50_000),
    "hopper": Config(env_id="Hopper-v5", total_steps=1_000_000, start_steps=10_000, hidden=(400, 300),
                     batch_size=100, eval_every=5_000, mc_states=1000, checkpoint_every=50_000),
}

_OVEREST = [
    Claim("DDPG-style critic over-estimates the true return", "overest/ddpg_bias", ">", 0.0,
          "DDPG's estimate above the true value throughout training", "Fujimoto et al. 2018, Fig. 1"),
    Claim("Clipped double-Q removes most of the over-estimation", "overest/removed_fraction", ">=", 0.5,
          "CDQ's estimate near or below the true value", "Fujimoto et al. 2018, Fig. 1 and §4.2"),
]
CLAIMS = {
    "quick": [
        Claim("TD3 solves Pendulum-v1 within 20k steps", "eval/return", ">=", -200.0,
              "about -150 at 20k steps (SB3 zoo TD3); random policy about -1200",
              "rl-baselines3-zoo benchmark, Pendulum-v1"),
        *_OVEREST,
    ],
    "full": list(_OVEREST),
    "hopper": [
        Claim("TD3 on Hopper at 1M steps", "eval/return", ">=", 3000.0, "3564 +- 115 (1M steps, Hopper-v1)",
              "Fujimoto et al. 2018, Table 1"),
        *_OVEREST,
    ],
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
def smoothed_target_action(mu_next: torch.Tensor, sigma: float, clip: float,
                           eps: torch.Tensor | None = None) -> torch.Tensor:
    """a' = clip(mu'(s') + clip(eps, -c, c), -1, 1), eps ~ N(0, sigma^2). Eq. (15), actions in [-1, 1]."""
    if eps is None:
        eps = torch.randn_like(mu_next) * sigma
    return (mu_next + eps.clamp(-clip, clip)).clamp(-1.0, 1.0)  # Eq. (15)


def clipped_double_q_target(reward: torch.Tensor, terminated: torch.Tensor, gamma: float,
                            q_next: torch.Tensor) -> torch.Tensor:
    """y = r + gamma (1 - terminated) min_i Q'_i(s', a'); q_next is (K, B), K = 1 or 2. Eq. (10)."""
    return reward + gamma * (1.0 - terminated) * q_next.min(dim=0).values  # Eq. (10)


def td3_update(nets: Nets, batch: tuple[torch.Tensor, ...], cfg: Config, step: int) -> dict[str, torch.Tensor]:
    """Critics every step; actor (on Q_1) and both targets every `policy_delay` steps (Alg. 1)."""
    s, a, r, s2, d = batch
    with torch.no_grad():
        mu_next = nets.actor_target(s2)
        if cfg.target_smoothing:
            mu_next = smoothed_target_action(mu_next, cfg.target_noise, cfg.target_noise_clip)  # §5.3
        q_next = nets.critic_target(torch.cat([s2, mu_next], -1))[..., 0]  # (K, B)
        y = clipped_double_q_target(r, d, cfg.gamma, q_next)  # Eq. (10); with K = 1 it is DDPG's target
    q = nets.critic(torch.cat([s, a], -1))[..., 0]  # (K, B)
    critic_loss = ((q - y) ** 2).mean(dim=1).sum()  # each critic regressed on the same y
    nets.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    nets.critic_opt.step()
    out = {"critic_loss": critic_loss.detach(), "q": q[0].detach().mean()}
    if step % cfg.policy_delay == 0:  # §5.2
        actor_loss = -nets.critic(torch.cat([s, nets.actor(s)], -1), frozen=True)[0].mean()  # Q_1 only
        nets.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        nets.actor_opt.step()
        polyak_update(list(nets.actor_target.parameters()), list(nets.actor.parameters()), cfg.tau)
        polyak_update(list(nets.critic_target.parameters()), list(nets.critic.parameters()), cfg.tau)
        out["actor_loss"] = actor_loss.detach()
    return out


def ddpg_style(cfg: Config) -> Config:
    """The same agent with all three of TD3's changes switched off."""
    return dataclasses.replace(cfg, clipped_double_q=False, policy_delay=1, target_smoothing=False)


def _nets(cfg: Config, run: Run) -> Nets:
    env, _, _ = make_box_env(cfg.env_id, "TD3")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return make_nets(obs_dim, act_dim, cfg.hidden, 2 if cfg.clipped_double_q else 1, cfg.actor_lr,
                     cfg.critic_lr, device=run.device)


def train(cfg: Config, run: Run) -> dict[str, float]:
    state = run.restore()
    metrics: dict[str, float] = {}
    phases = [("td3", cfg)] + ([("ddpg_style", ddpg_style(cfg))] if cfg.compare_ddpg else [])
    for tag, phase_cfg in phases:
        if state is not None and tag in state.get("done", {}):
            metrics.update(state["done"][tag])  # this phase had finished before the interruption
            continue
        loop = state["loop"] if state is not None and state.get("tag") == tag else None
        out = off_policy_loop(phase_cfg, run, _nets(phase_cfg, run), td3_update, tag, loop,
                              extra={"done": _done(metrics)})
        metrics.update({f"{tag}/eval_return": out["eval/return"], f"{tag}/q_bias_mean": out["q_bias_mean"]})

    result = {"eval/return": metrics["td3/eval_return"], "overest/td3_bias": metrics["td3/q_bias_mean"]}
    if cfg.compare_ddpg:
        ddpg_bias = metrics["ddpg_style/q_bias_mean"]
        result["overest/ddpg_bias"] = ddpg_bias
        result["overest/removed_fraction"] = (
            (ddpg_bias - result["overest/td3_bias"]) / ddpg_bias if ddpg_bias > 0 else float("nan"))
        result["ddpg_style/eval_return"] = metrics["ddpg_style/eval_return"]
    tags = [t for t, _ in phases]
    plot_q_vs_mc(run, tags, "q_vs_return", f"Value estimate vs true return ({cfg.env_id}), as TD3 Fig. 1")
    line_plot(run.plots_dir / "q_bias.png", {t: run.history(f"{t}/q_bias") for t in tags}, xlabel="env step",
              ylabel="Q(s, pi(s)) - true return", title="Critic bias (positive: over-estimation)", hline=0.0)
    line_plot(run.plots_dir / "eval_return.png", {t: run.history(f"{t}/eval_return") for t in tags},
              xlabel="env step", ylabel="return", title=f"TD3 on {cfg.env_id}",
              hline=-200.0 if cfg.env_id == "Pendulum-v1" else None)
    return result


def _done(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """Finished phases' metrics, by tag, kept in every later checkpoint."""
    done: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        tag = key.split("/")[0]
        done.setdefault(tag, {})[key] = float(value)
    return done

