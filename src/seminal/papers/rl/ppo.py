"""Proximal policy optimization algorithms — Schulman, Wolski, Dhariwal, Radford & Klimov, 2017
(arXiv:1707.06347).

TRPO keeps each policy update inside a KL trust region with a second-order solve. PPO gets most of that
with first-order SGD: it maximises a surrogate in which the probability ratio r_t = pi(a|s) / pi_old(a|s)
is clipped to [1 - eps, 1 + eps], taking the minimum of the clipped and unclipped terms (Eq. 7). Once an
action's ratio has moved past the clip in the direction its advantage favours, its gradient is zero, so
the same batch can be reused for K epochs of minibatch updates without the policy running away.

Equation map:
  r_t(theta) = pi_theta(a_t|s_t) / pi_old(a_t|s_t)                       -> `train_policy`, `ratio`
  Eq. (7)  L^CLIP = E[min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t)]          -> `clipped_surrogate`
  Eq. (9)  L = E[L^CLIP - c1 (V(s_t) - V_targ)^2 + c2 H(pi(.|s_t))]       -> `ppo_loss`
  Eq. (11-12)  A_t = GAE(gamma, lambda), truncated at the rollout's end   -> `seminal.papers.rl.gae.gae`
  Algorithm 1: N actors x T steps, then K epochs of minibatches of size M -> `train_policy`
  §6.1 Table 1 "no clipping or penalty": L = E[r_t A_t]                  -> `clip=None`, the ablation
  §6.1 Table 1's measure: mean return of the last 100 training episodes  -> `last_episodes`
  §3 the unclipped update moves far from pi_old: mean KL per update      -> `train`, `ablation/kl_ratio`

Reusable entry point (domain randomization and the SB3 benchmark call it):

    policy = train_policy(env, cfg=None, *, total_steps=None, seed=0, overrides=None, run=None,
                          prefix="ppo", resume=None, outer=None) -> Policy

`env` is an env id ("CartPole-v1") or a zero-argument factory returning a gymnasium env (Discrete or Box
actions, flat Box observations). `cfg` defaults to PRESETS["quick"]; `overrides` are `key=value` strings
as on the command line; `total_steps` overrides cfg.total_steps. With a `run`, metrics are logged under
`prefix/...` and, when `outer` (a dict) is given, checkpoints `{**outer, "loop": ...}` every few updates;
pass the restored `state["loop"]` back as `resume`. The returned `Policy` (`rl._onpolicy.Policy`) is callable
obs -> greedy action, with its curve, evaluations and `solved_at` (first eval >= cfg.solved_return).

The rollouts, the actor-critic network and the loop are the on-policy plumbing (`rl._onpolicy`); PPO is its
`update`: K epochs of minibatch steps on Eq. (9).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Range, Sizes, apply_overrides
from seminal.core.plots import line_plot
from seminal.core.rl import evaluate
from seminal.core.run import Run
from seminal.papers.rl._onpolicy import (
    ActorCritic,
    EnvSource,
    Policy,
    flat,
    make_vec_env,
    one_thread,
    onpolicy_loop,
)
from seminal.papers.rl.gae import gae


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (Discrete or Box actions, flat observations)."""
    total_steps: PosInt = 100_000
    """Environment steps in total, over all actors."""
    n_envs: PosInt = 8
    """N: parallel actors (synchronous vector env)."""
    n_steps: PosInt = 64
    """T: steps per actor per rollout; a batch is N*T samples."""
    epochs: PosInt = 10
    """K: passes over each batch."""
    minibatch: PosInt = 256
    """M: minibatch size."""
    lr: PosFloat = 1e-3
    """Adam step size alpha, annealed linearly to 0 when anneal_lr (the paper's alpha x annealing)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over training (the paper does, §6)."""
    gamma: Prob = 0.98
    """Discount gamma."""
    lam: Prob = 0.8
    """GAE lambda (Eq. 11)."""
    clip: Annotated[float | None, Range(gt=0)] = 0.2
    """epsilon of Eq. (7); none: no clipping, the surrogate r_t A_t (Table 1's first row)."""
    vf_coef: NonNegFloat = 0.5
    """c1: weight of the value loss (Eq. 9)."""
    ent_coef: NonNegFloat = 0.0
    """c2: weight of the entropy bonus (Eq. 9)."""
    max_grad_norm: NonNegFloat = 0.5
    """Clip the global gradient norm to this (0: off)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch to mean 0, std 1."""
    hidden: Sizes = (64, 64)
    """Hidden sizes of the tanh MLPs."""
    shared: bool = False
    """Share actor and critic hidden layers (the paper does not, for MuJoCo)."""
    vec_mode: Literal["sync", "async"] = "sync"
    """Vector env: sync (one process) or async (one process per env; for slow envs on many cores)."""
    eval_every: NonNegInt = 20_000
    """Greedy evaluation every this many env steps (0: only at the end)."""
    eval_episodes: NonNegInt = 10
    """Episodes per evaluation (the same start seeds every time)."""
    solved_return: float = 475.0
    """Greedy return that counts as solved (for `solved_at`)."""
    ablation: bool = True
    """Also train the same PPO without clipping (Table 1's comparison) and report both."""
    checkpoint_every: PosInt = 20
    """Checkpoint every this many updates."""


PRESETS = {
    "quick": Config(),
    # SB3 zoo's LunarLander settings (16 envs x 1024 steps, 4 epochs of 64, gamma .999, lambda .98, c2 .01).
    "full": Config(env_id="LunarLander-v3", total_steps=1_000_000, n_envs=16, n_steps=1024, epochs=4, minibatch=64,
                   lr=3e-4, anneal_lr=False, gamma=0.999, lam=0.98, ent_coef=0.01, eval_every=50_000,
                   solved_return=200.0, checkpoint_every=5),
}

_TABLE1 = "Table 1: no clipping -0.39 vs clip eps=0.2 0.82 (normalised score, last 100 episodes, 7 MuJoCo tasks)"
_LAST100 = Claim("Clipping beats no clipping on Table 1's measure: mean return of the last 100 training episodes",
                 "ablation/last100_gap", ">", 0.0, _TABLE1, "Schulman et al. 2017, §6.1 Table 1", bar="sanity",
                 paired=("ppo/last100_return", "noclip/last100_return"))
# On CartPole both arms saturate Table 1's measure at 500 (see notes), so the quick preset checks the mechanism
# of §3 instead: without clipping each update moves the policy much further from pi_old.
_KL = Claim("Clipping keeps each update near pi_old: mean KL(pi_old || pi_new) per update, no clip / clip > 1",
            "ablation/kl_ratio", ">", 1.0, "maximising L^CPI without a constraint gives an excessively large policy "
            "update (§3); Table 1: no clipping -0.39 vs clip 0.82", "Schulman et al. 2017, §3 and §6.1",
            bar="sanity", paired=("noclip/mean_kl", "ppo/mean_kl"))
CLAIMS = {
    "quick": [
        Claim("PPO solves CartPole-v1 (greedy return >= 475) within 100k env steps", "eval/return", ">=", 475.0,
              "475 = CartPole-v1 reward_threshold; SB3 zoo PPO 500 at 100k steps", "gymnasium; rl-baselines3-zoo",
              bar="peer"),
        _KL,
    ],
    "full": [
        Claim("PPO solves LunarLander-v3 (greedy return >= 200) in 1M steps", "eval/return", ">=", 200.0,
              "SB3 zoo PPO 242 +- 31 at 1M steps (LunarLander-v2)", "rl-baselines3-zoo benchmark", bar="peer"),
        _LAST100,
    ],
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip: float | None) -> torch.Tensor:
    """L^CLIP (Eq. 7), a mean over the batch (to be maximised); clip=None gives E[r_t A_t]."""
    if clip is None:
        return (ratio * advantages).mean()  # Table 1, "no clipping or penalty"
    return torch.min(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages).mean()  # Eq. (7)


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, values: torch.Tensor,
             targets: torch.Tensor, entropy: torch.Tensor, clip: float | None, vf_coef: float, ent_coef: float,
             diagnostics: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-(L^CLIP - c1 L^VF + c2 H), Eq. (9), to be minimised; plus diagnostics (skipped in the hot loop)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()  # r_t(theta)
    l_clip = clipped_surrogate(ratio, advantages, clip)
    l_vf = 0.5 * (values - targets).pow(2).mean()
    ent = entropy.mean()
    if not diagnostics:
        return -(l_clip - vf_coef * l_vf + ent_coef * ent), {}
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()  # an unbiased, positive estimate of KL(old || new)
        clip_frac = ((ratio - 1.0).abs() > (clip or math.inf)).float().mean()
    return -(l_clip - vf_coef * l_vf + ent_coef * ent), {"l_clip": l_clip, "v_loss": l_vf, "entropy": ent,
                                                          "approx_kl": approx_kl, "clip_frac": clip_frac}


def make_update(model: ActorCritic, opt: torch.optim.Optimizer, cfg: Config, device: torch.device | str = "cpu"):
    """PPO's update as `onpolicy_loop` calls it: `update(rollout, progress, rng) -> metrics` (Algorithm 1)."""
    dtype = next(model.parameters()).dtype

    def update(rollout: dict[str, np.ndarray], progress: float, rng: np.random.Generator) -> dict[str, float]:
        """K epochs of minibatch Adam steps on -(Eq. 9) over this N x T batch (Algorithm 1)."""
        if cfg.anneal_lr:
            opt.param_groups[0]["lr"] = cfg.lr * (1.0 - progress)  # §6: alpha annealed linearly
        adv = gae(rollout["rewards"], rollout["values"], rollout["next_values"], rollout["terminated"],
                  rollout["dones"], cfg.gamma, cfg.lam)  # Eq. (11)
        targets = adv + rollout["values"]  # the lambda-return: V's regression target
        obs, old_logp, b_adv, b_tgt = (flat(x, device, dtype) for x in (rollout["obs"], rollout["logp"], adv, targets))
        actions = flat(rollout["actions"], device, torch.long if model.discrete else dtype)
        batch, parts = len(obs), {}
        for epoch in range(cfg.epochs):
            order = torch.as_tensor(rng.permutation(batch), device=device)
            for start in range(0, batch, cfg.minibatch):
                mb = order[start:start + cfg.minibatch]
                mb_adv = b_adv[mb]
                if cfg.norm_adv and len(mb) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                logp, entropy = model.log_prob_entropy(obs[mb], actions[mb])
                last = epoch == cfg.epochs - 1 and start + cfg.minibatch >= batch  # log the update's last step
                loss, step_parts = ppo_loss(logp, old_logp[mb], mb_adv, model.value(obs[mb]), b_tgt[mb], entropy,
                                            cfg.clip, cfg.vf_coef, cfg.ent_coef, diagnostics=last)
                parts = step_parts or parts
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}

    return update


def train_policy(env: EnvSource, cfg: Config | None = None, *, total_steps: int | None = None, seed: int = 0,
                 overrides: list[str] | None = None, run: Run | None = None, prefix: str = "ppo",
                 resume: dict | None = None, outer: dict | None = None,
                 evaluator: Callable[..., list[float]] = evaluate) -> Policy:
    """Algorithm 1: PPO, actor-critic style, on N synchronous copies of `env`. See the module docstring.
    `evaluator` replaces the greedy evaluation (`seminal.core.rl.evaluate`'s signature), e.g. a timed one."""
    cfg = apply_overrides(cfg or PRESETS["quick"], overrides)
    if total_steps is not None:
        cfg = replace(cfg, total_steps=total_steps)
    device = run.device if run is not None else torch.device("cpu")
    with one_thread(device):
        envs = make_vec_env(env, cfg.n_envs, seed, "PPO", mode=cfg.vec_mode)
        model = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space, cfg.hidden, cfg.shared,
                            seed=seed).to(device)
        try:  # one fused kernel per step where the build has it (CPU and CUDA in recent torch)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5, foreach=True)

        update = make_update(model, opt, cfg, device)
        return onpolicy_loop(envs, env, model, update, {"opt": opt}, cfg, seed=seed, run=run, prefix=prefix,
                             resume=resume, outer=outer, solved_return=cfg.solved_return, evaluator=evaluator)


def max_drop(evals: list[tuple[int, float]]) -> float:
    """The largest fall of the greedy return below its best so far: 0 for a curve that never drops."""
    best, drop = -math.inf, 0.0
    for _, r in evals:
        best = max(best, r)
        drop = max(drop, best - r)
    return drop


def last_episodes(curve: list, n: int = 100) -> float:
    """Mean undiscounted return of the last n training episodes (Table 1's measure, before normalising)."""
    returns = curve[1][-n:]
    return float(np.mean(returns)) if len(returns) else math.nan


def train(cfg: Config, run: Run) -> dict[str, float]:
    state = run.restore() or {"results": {}}
    variants = {"ppo": cfg} | ({"noclip": replace(cfg, clip=None)} if cfg.ablation else {})
    for name, vcfg in variants.items():
        if name in state["results"]:
            continue
        resume = state.get("loop") if state.get("variant") == name else None
        outer = {"results": state["results"], "variant": name}
        policy = train_policy(cfg.env_id, vcfg, seed=run.seed, run=run, prefix=name, resume=resume, outer=outer)
        steps_kl = dict(zip(*run.history(f"{name}/approx_kl")))  # one value per update (a resumed run logs twice)
        state = {"results": {**state["results"], name: {
            "evals": policy.evals, "eval": policy.eval_return, "seconds": policy.seconds,
            "mean_kl": float(np.mean(list(steps_kl.values()))) if steps_kl else math.nan,
            "curve": [policy.curve[0], policy.curve[1]], "solved_at": policy.solved_at or -1}}}
        run.checkpoint(state)
    res = state["results"]
    main = res["ppo"]
    metrics = {"eval/return": main["eval"], "train/seconds": main["seconds"],
               "train/steps_per_s": cfg.total_steps / main["seconds"], "train/solved_at": main["solved_at"],
               "ppo/max_drop": max_drop(main["evals"]), "ppo/last100_return": last_episodes(main["curve"]),
               "ppo/mean_kl": main["mean_kl"]}
    curves = {"clip 0.2 (greedy eval)": ([s for s, _ in main["evals"]], [r for _, r in main["evals"]])}
    if "noclip" in res:
        nc = res["noclip"]
        metrics.update({"noclip/eval_return": nc["eval"], "noclip/max_drop": max_drop(nc["evals"]),
                        "noclip/last100_return": last_episodes(nc["curve"]), "noclip/mean_kl": nc["mean_kl"],
                        "ablation/kl_ratio": nc["mean_kl"] / main["mean_kl"],
                        "ablation/last100_gap": last_episodes(main["curve"]) - last_episodes(nc["curve"]),
                        "ablation/drop_gap": max_drop(nc["evals"]) - max_drop(main["evals"]),
                        "ablation/final_gap": main["eval"] - nc["eval"],
                        "ablation/mean_eval_gap": float(np.mean([r for _, r in main["evals"]])
                                                        - np.mean([r for _, r in nc["evals"]]))})
        curves["no clipping (greedy eval)"] = ([s for s, _ in nc["evals"]], [r for _, r in nc["evals"]])
    else:  # ablation off: the ablation claim has nothing to check
        metrics["ablation/drop_gap"] = metrics["ablation/last100_gap"] = metrics["ablation/kl_ratio"] = math.nan
    run.log(metrics, step=cfg.total_steps)
    line_plot(run.plots_dir / "learning_curve.png", curves, xlabel="env steps", ylabel="greedy return",
              title=f"PPO on {cfg.env_id}: clipped vs unclipped surrogate", hline=cfg.solved_return)
    line_plot(run.plots_dir / "training_episodes.png", {"clip 0.2": tuple(main["curve"])}, xlabel="env steps",
              ylabel="training episode return", title=f"PPO on {cfg.env_id}")
    return metrics
