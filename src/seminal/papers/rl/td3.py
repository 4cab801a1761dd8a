"""Addressing function approximation error in actor-critic methods (TD3) — Fujimoto, van Hoof & Meger,
ICML 2018, arXiv:1802.09477.

The paper's finding: DDPG's critic over-estimates, because the actor climbs the critic's errors and the
bootstrapped target carries them forward. Three fixes, each a switch here so that the paper's ablation
(Table 3) can be run with `--set`:

  * clipped double-Q: two critics, the target takes the smaller of their two estimates (§4.2);
  * delayed policy updates: the actor and the targets move once every d critic updates (§5.2);
  * target policy smoothing: clipped Gaussian noise on the target action (§5.3).

The central claim is measured as in Fig. 1, which compares DDPG with DDPG plus clipped double-Q alone
("CDQ"): at every evaluation the critic's estimate Q_1(s, pi(s)) is logged beside the true discounted
return of pi from the same states (Monte Carlo rollouts). One run trains three agents on the same seed,
everything else identical: TD3 (all three changes), CDQ only, and DDPG-style (none).

Equation map (numbers as in the paper):
  Eq. (10)  y = r + gamma min_{i=1,2} Q_theta'_i(s', a')                  -> `clipped_double_q_target`
  Eq. (15)  a' = clip(pi_phi'(s') + clip(eps, -c, c), low, high), eps ~ N(0, sigma)  -> `smoothed_target_action`
  Alg. 1    critics regress both Q_i on y; every d steps: actor on Q_1, targets by Polyak  -> `td3_update`
  Alg. 1    a = pi(s) + eps, eps ~ N(0, 0.1)                              -> `ddpg.Exploration`
  Fig. 1    value estimate vs true value over training                    -> `ddpg.q1_vs_return`, `overest/...`

The loop (act, store, sample, update, evaluate, checkpoint) is `_offpolicy.offpolicy_loop`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Range, Sizes
from seminal.core.plots import line_plot
from seminal.core.run import Run
from seminal.papers.rl._offpolicy import Nets, make_box_env, make_nets, offpolicy_loop, plot_q_vs_return
from seminal.papers.rl.ddpg import Exploration, late_mean, polyak_update, q1_vs_return


@dataclass(frozen=True)
class Config:
    env_id: str = "Pendulum-v1"
    """Gymnasium id of a continuous-action (Box) env."""
    total_steps: PosInt = 20_000
    """Environment steps of each agent (one critic update per step after `start_steps`)."""
    start_steps: NonNegInt = 1_000
    """Initial steps with uniform random actions (the paper: 10^4 on MuJoCo)."""
    hidden: Sizes = (256, 256)
    """Hidden widths of actor and critics (the paper: 400, 300; its later code: 256, 256)."""
    actor_lr: PosFloat = 1e-3
    """Adam step size of the actor (the paper: 1e-3)."""
    critic_lr: PosFloat = 1e-3
    """Adam step size of the critics (the paper: 1e-3)."""
    gamma: Prob = 0.99
    """Discount gamma."""
    tau: Annotated[float, Range(gt=0, le=1)] = 0.005
    """Polyak rate tau of the target networks (the paper: 0.005)."""
    batch_size: PosInt = 256
    """Minibatch size N (the paper: 100; its later code: 256)."""
    buffer_size: PosInt = 1_000_000
    """Replay buffer capacity."""
    noise: Literal["gaussian", "ou"] = "gaussian"
    """Exploration noise: the paper's Gaussian, or DDPG's Ornstein-Uhlenbeck."""
    noise_sigma: NonNegFloat = 0.1
    """Exploration noise sigma in units of the [-1, 1] action range (the paper: 0.1)."""
    ou_theta: Annotated[float, Range(gt=0, le=1)] = 0.15
    """OU mean reversion (only with noise=ou)."""
    clipped_double_q: bool = True
    """Twin critics and the min of their targets, Eq. (10) (off: one critic, DDPG's target)."""
    policy_delay: PosInt = 2
    """d: critic updates per actor and target update (1: no delay, as DDPG)."""
    target_smoothing: bool = True
    """Clipped noise on the target action, Eq. (15)."""
    target_noise: NonNegFloat = 0.2
    """sigma of the target-smoothing noise, action units (the paper: 0.2)."""
    target_noise_clip: NonNegFloat = 0.5
    """c, the clip of the smoothing noise (the paper: 0.5)."""
    compare: bool = True
    """Also train a CDQ-only agent (clipped double-Q, no delay, no smoothing) and a DDPG-style agent (no change)
    in the same run, same seed, for the Fig. 1 claims."""
    eval_every: PosInt = 2_000
    """Environment steps between evaluations and Q-vs-return measurements."""
    eval_episodes: PosInt = 10
    """Deterministic episodes per evaluation; the final one gives `eval/return`."""
    mc_episodes: PosInt = 5
    """Monte Carlo rollouts per Q-vs-return measurement."""
    mc_states: PosInt = 200
    """States scored per rollout (Q(s, pi(s)) against the discounted return from s)..."""
    mc_horizon: NonNegInt = 500
    """...each followed for `mc_horizon` more steps, so gamma^horizon of the tail is missing."""
    bias_after: Prob = 0.5
    """Each agent's bias (`overest/..._bias`) averages the measurements after this fraction of `total_steps`."""
    checkpoint_every: PosInt = 5_000
    """Environment steps between checkpoints (nets, optimizers, replay buffer, env)."""


PRESETS = {
    # quick: three agents of 15k steps on one CPU core; 64x64 nets (a step costs Python overhead, not FLOPs,
    # there). At this size the DDPG-style critic only starts to over-estimate after about 10k steps (seed 100).
    "quick": Config(total_steps=15_000, hidden=(64, 64), batch_size=128, eval_every=2_000, mc_episodes=3,
                    mc_horizon=400, bias_after=0.6),
    # the earlier quick preset: 20k steps, 256x256 (about 550 s a seed on a CPU for the three agents)
    "pendulum": Config(),
    "full": Config(env_id="LunarLanderContinuous-v3", total_steps=300_000, start_steps=10_000,
                   eval_every=10_000, mc_states=1000, checkpoint_every=50_000),
    "hopper": Config(env_id="Hopper-v5", total_steps=1_000_000, start_steps=10_000, hidden=(400, 300),
                     batch_size=100, eval_every=5_000, mc_states=1000, checkpoint_every=50_000),
}

_OVEREST = [
    Claim("DDPG-style critic over-estimates the true return", "overest/ddpg_bias", ">", 0.0,
          "DDPG's estimate above the true value throughout training", "Fujimoto et al. 2018, Fig. 1",
          bar="sanity"),
    Claim("Clipped double-Q alone removes most of the over-estimation (paired seeds)",
          "overest/cdq_removed_fraction", ">=", 0.5, "CDQ's estimate near or below the true value",
          "Fujimoto et al. 2018, Fig. 1 and §4.2", bar="sanity",
          paired=("overest/cdq_bias", "overest/ddpg_bias")),
    Claim("TD3 (all three changes) removes most of the over-estimation (paired seeds)",
          "overest/removed_fraction", ">=", 0.5, "TD3's estimate near or below the true value",
          "Fujimoto et al. 2018, §4.2 and §5", bar="sanity", paired=("overest/td3_bias", "overest/ddpg_bias")),
]
_SOLVES = ("about -150 at 20k steps (SB3 zoo TD3); random policy about -1200",
           "rl-baselines3-zoo benchmark, Pendulum-v1")
CLAIMS = {
    "quick": [Claim("TD3 solves Pendulum-v1 within 15k steps", "eval/return", ">=", -200.0, *_SOLVES, bar="peer"),
              *_OVEREST],
    "pendulum": [Claim("TD3 solves Pendulum-v1 within 20k steps", "eval/return", ">=", -200.0, *_SOLVES, bar="peer"),
                 *_OVEREST],
    "full": list(_OVEREST),
    "hopper": [
        Claim("TD3 on Hopper at 1M steps", "eval/return", ">=", 3000.0, "3564 +- 115 (1M steps, Hopper-v1)",
              "Fujimoto et al. 2018, Table 1", bar="paper"),
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


def td3_update(nets: Nets, batch: tuple[torch.Tensor, ...], cfg: Any, step: int) -> dict[str, torch.Tensor]:
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


# ---- the three agents of one run ------------------------------------------------------------------------
def cdq_only(cfg: Config) -> Config:
    """Clipped double-Q alone: DDPG plus Eq. (10) (Fig. 1's "CDQ"), no delay, no target smoothing."""
    return dataclasses.replace(cfg, clipped_double_q=True, policy_delay=1, target_smoothing=False)


def ddpg_style(cfg: Config) -> Config:
    """The same agent with all three of TD3's changes switched off."""
    return dataclasses.replace(cfg, clipped_double_q=False, policy_delay=1, target_smoothing=False)


def arms(cfg: Config) -> list[tuple[str, Config]]:
    return [("td3", cfg)] + ([("cdq_only", cdq_only(cfg)), ("ddpg_style", ddpg_style(cfg))] if cfg.compare else [])


def train_arm(cfg: Config, run: Run, tag: str, resume: dict[str, Any] | None, outer: dict[str, Any]) -> float:
    """One agent through the off-policy loop; returns its final deterministic return."""
    env, _, _ = make_box_env(cfg.env_id, "TD3")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if resume is None:
        torch.manual_seed(run.seed)  # every agent from the same draws: paired, and independent of the others' budget
    nets = make_nets(obs_dim, act_dim, cfg.hidden, 2 if cfg.clipped_double_q else 1, cfg.actor_lr, cfg.critic_lr,
                     device=run.device)
    explore = Exploration(nets.actor, act_dim, cfg.noise, cfg.noise_sigma, cfg.ou_theta, run.seed, run.device)
    return offpolicy_loop(env, cfg, explore, lambda batch, step: td3_update(nets, batch, cfg, step),
                          {"nets": nets, "noise": explore}, seed=run.seed, run=run, tag=tag,
                          measure=q1_vs_return(nets, cfg, run.device), episode_start=explore.reset,
                          resume=resume, outer=outer, hint="critic_lr", device=run.device)


def train(cfg: Config, run: Run) -> dict[str, float]:
    state = run.restore() or {}
    done: dict[str, dict[str, float]] = state.get("done", {})  # the finished agents' results, by tag
    for tag, arm_cfg in arms(cfg):
        if tag in done:
            continue  # this agent had finished before the interruption
        resume = state["loop"] if state.get("tag") == tag else None
        final = train_arm(arm_cfg, run, tag, resume, outer={"tag": tag, "done": done})
        steps, biases = run.history(f"{tag}/q_bias")
        done[tag] = {"eval_return": final, "q_bias_mean": late_mean(steps, biases, cfg.bias_after * cfg.total_steps)}

    result = {"eval/return": done["td3"]["eval_return"], "overest/td3_bias": done["td3"]["q_bias_mean"]}
    if cfg.compare:
        ddpg_bias = done["ddpg_style"]["q_bias_mean"]
        result.update({"overest/ddpg_bias": ddpg_bias, "overest/cdq_bias": done["cdq_only"]["q_bias_mean"],
                       "cdq_only/eval_return": done["cdq_only"]["eval_return"],
                       "ddpg_style/eval_return": done["ddpg_style"]["eval_return"]})
        for key, arm in (("overest/removed_fraction", "td3"), ("overest/cdq_removed_fraction", "cdq_only")):
            bias = done[arm]["q_bias_mean"]  # the same seed's DDPG-style agent is the baseline: paired
            result[key] = (ddpg_bias - bias) / ddpg_bias if ddpg_bias > 0 else float("nan")
    tags = [t for t, _ in arms(cfg)]
    plot_q_vs_return(run, tags, "q_vs_return", f"Value estimate vs true return ({cfg.env_id}), as TD3 Fig. 1")
    line_plot(run.plots_dir / "q_bias.png", {t: run.history(f"{t}/q_bias") for t in tags}, xlabel="env step",
              ylabel="Q(s, pi(s)) - true return", title="Critic bias (positive: over-estimation)", hline=0.0)
    line_plot(run.plots_dir / "eval_return.png", {t: run.history(f"{t}/eval_return") for t in tags},
              xlabel="env step", ylabel="return", title=f"TD3 on {cfg.env_id}",
              hline=-200.0 if cfg.env_id == "Pendulum-v1" else None)
    return result
