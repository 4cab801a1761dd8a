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

Reusable entry point (domain randomization and the SB3 benchmark call it):

    policy = train_policy(env, cfg=None, *, total_steps=None, seed=0, overrides=None, run=None,
                          prefix="ppo", resume=None, outer=None) -> Policy

`env` is an env id ("CartPole-v1") or a zero-argument factory returning a gymnasium env (Discrete or Box
actions, flat Box observations). `cfg` defaults to PRESETS["quick"]; `overrides` are `key=value` strings
as on the command line; `total_steps` overrides cfg.total_steps. With a `run`, metrics are logged under
`prefix/...` and, when `outer` (a dict) is given, checkpoints `{**outer, "ppo": ...}` every few updates;
pass the restored `state["ppo"]` back as `resume`. The returned `Policy` is callable obs -> greedy action
(for `evaluate`), with `.model` (the torch ActorCritic), `.curve` (steps, training-episode returns),
`.evals` [(step, greedy return)], `.eval_return` (final greedy mean; nan without eval), `.seconds`,
`.steps` and `.solved_at` (first eval step with return >= cfg.solved_return, or None).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import apply_overrides
from seminal.core.plots import line_plot
from seminal.core.rl import evaluate
from seminal.core.run import Run
from seminal.papers.rl.a2c import (
    ActorCritic,
    EnvSource,
    Episodes,
    NumpyActor,
    collect,
    make_vec_env,
    one_thread,
    rng_state,
    set_rng_state,
)
from seminal.papers.rl.gae import gae


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (Discrete or Box actions, flat observations)."""
    total_steps: int = 100_000
    """Environment steps in total, over all actors."""
    n_envs: int = 8
    """N: parallel actors (synchronous vector env)."""
    n_steps: int = 64
    """T: steps per actor per rollout; a batch is N*T samples."""
    epochs: int = 10
    """K: passes over each batch."""
    minibatch: int = 256
    """M: minibatch size."""
    lr: float = 1e-3
    """Adam step size alpha, annealed linearly to 0 when anneal_lr (the paper's alpha x annealing)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over training (the paper does, §6)."""
    gamma: float = 0.98
    """Discount gamma."""
    lam: float = 0.8
    """GAE lambda (Eq. 11)."""
    clip: float | None = 0.2
    """epsilon of Eq. (7); none: no clipping, the surrogate r_t A_t (Table 1's first row)."""
    vf_coef: float = 0.5
    """c1: weight of the value loss (Eq. 9)."""
    ent_coef: float = 0.0
    """c2: weight of the entropy bonus (Eq. 9)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this (0: off)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch to mean 0, std 1."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden sizes of the tanh MLPs."""
    shared: bool = False
    """Share actor and critic hidden layers (the paper does not, for MuJoCo)."""
    vec_mode: Literal["sync", "async"] = "sync"
    """Vector env: sync (one process) or async (one process per env; for slow envs on many cores)."""
    eval_every: int = 10_000
    """Greedy evaluation every this many env steps (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation (the same start seeds every time)."""
    solved_return: float = 475.0
    """Greedy return that counts as solved (for `solved_at`)."""
    ablation: bool = True
    """Also train the same PPO without clipping (Table 1's comparison) and report both."""
    checkpoint_every: int = 20
    """Checkpoint every this many updates."""


PRESETS = {
    "quick": Config(),
    # SB3 zoo's LunarLander settings (16 envs x 1024 steps, 4 epochs of 64, gamma .999, lambda .98, c2 .01).
    "full": Config(env_id="LunarLander-v3", total_steps=1_000_000, n_envs=16, n_steps=1024, epochs=4, minibatch=64,
                   lr=3e-4, anneal_lr=False, gamma=0.999, lam=0.98, ent_coef=0.01, eval_every=50_000,
                   solved_return=200.0, checkpoint_every=5),
}

_TABLE1 = "Table 1: no clipping -0.39 vs clip eps=0.2 0.82 (normalised score)"
CLAIMS = {
    "quick": [
        Claim("PPO solves CartPole-v1 (greedy return >= 475) within 100k env steps", "eval/return", ">=", 475.0,
              "475 = CartPole-v1 reward_threshold; SB3 zoo PPO 500 at 100k steps", "gymnasium; rl-baselines3-zoo"),
        Claim("Without clipping PPO is less stable: larger drop from its best greedy return", "ablation/drop_gap",
              ">", 0.0, _TABLE1, "Schulman et al. 2017, §6.1 Table 1"),
    ],
    "full": [
        Claim("PPO solves LunarLander-v3 (greedy return >= 200) in 1M steps", "eval/return", ">=", 200.0,
              "SB3 zoo PPO 242 +- 31 at 1M steps (LunarLander-v2)", "rl-baselines3-zoo benchmark"),
        Claim("Without clipping PPO is less stable: larger drop from its best greedy return", "ablation/drop_gap",
              ">", 0.0, _TABLE1, "Schulman et al. 2017, §6.1 Table 1"),
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


class Policy:
    """A trained policy: callable obs -> greedy action, plus what training recorded."""

    def __init__(self, model: ActorCritic, actor: NumpyActor):
        self.model, self.actor = model, actor
        self.curve: tuple[list[int], list[float]] = ([], [])
        self.evals: list[tuple[int, float]] = []
        self.eval_return, self.seconds, self.steps, self.solved_at = math.nan, 0.0, 0, None

    def __call__(self, obs: np.ndarray) -> Any:
        return self.actor.greedy(obs)


def train_policy(env: EnvSource, cfg: Config | None = None, *, total_steps: int | None = None, seed: int = 0,
                 overrides: list[str] | None = None, run: Run | None = None, prefix: str = "ppo",
                 resume: dict | None = None, outer: dict | None = None) -> Policy:
    """Algorithm 1: PPO, actor-critic style, on N synchronous copies of `env`. See the module docstring."""
    with one_thread(run.device if run is not None else torch.device("cpu")):
        return _train_policy(env, cfg, total_steps, seed, overrides, run, prefix, resume, outer)


def _train_policy(env: EnvSource, cfg: Config | None, total_steps: int | None, seed: int, overrides: list[str] | None,
                  run: Run | None, prefix: str, resume: dict | None, outer: dict | None) -> Policy:
    cfg = apply_overrides(cfg or PRESETS["quick"], overrides)
    if total_steps is not None:
        cfg = replace(cfg, total_steps=total_steps)
    device = run.device if run is not None else torch.device("cpu")
    envs = make_vec_env(env, cfg.n_envs, seed, "PPO", mode=cfg.vec_mode)
    obs_dim = envs.single_observation_space.shape[0]
    model = ActorCritic(obs_dim, envs.single_action_space, cfg.hidden, cfg.shared, seed=seed).to(device)
    try:  # one fused kernel per step where the build has it (CPU and CUDA in recent torch)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5, foreach=True)
    rng = np.random.default_rng(seed)
    batch = cfg.n_envs * cfg.n_steps
    n_updates = max(1, cfg.total_steps // batch)
    policy, update = Policy(model, None), 0
    if resume is not None:  # envs restart from a reset: a resumed run is not bit-identical (see notes)
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        set_rng_state(rng, resume["rng"])
        update, policy.evals = resume["update"], [tuple(e) for e in resume["evals"]]
    actor = policy.actor = NumpyActor(model, envs.single_action_space)
    obs = np.asarray(envs.reset(seed=seed + 7919 * update)[0], dtype=np.float32)
    episodes = Episodes(cfg.n_envs)
    eval_env = env if isinstance(env, str) else None

    def greedy_return() -> float:
        return float(np.mean(evaluate(policy, eval_env or "", cfg.eval_episodes,
                                      env=None if eval_env else env())))

    t0 = time.perf_counter()
    while update < n_updates:
        if cfg.anneal_lr:
            opt.param_groups[0]["lr"] = cfg.lr * (1.0 - update / n_updates)
        buf, obs = collect(envs, actor, obs, cfg.n_steps, rng, episodes, update * batch)
        adv = gae(buf["rewards"], buf["values"], buf["next_values"], buf["terminated"], buf["dones"], cfg.gamma,
                  cfg.lam)  # Eq. (11)
        targets = adv + buf["values"]  # the lambda-return: V's regression target

        def flat(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(x.reshape(batch, *x.shape[2:]), dtype=dtype, device=device)

        b_obs, b_logp, b_adv, b_tgt = flat(buf["obs"]), flat(buf["logp"]), flat(adv), flat(targets)
        b_act = flat(buf["actions"], torch.long if model.discrete else torch.float32)
        parts: dict[str, torch.Tensor] = {}
        for epoch in range(cfg.epochs):
            order = torch.as_tensor(rng.permutation(batch), device=device)
            for start in range(0, batch, cfg.minibatch):
                mb = order[start:start + cfg.minibatch]
                mb_adv = b_adv[mb]
                if cfg.norm_adv and len(mb) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                logp, entropy = model.log_prob_entropy(b_obs[mb], b_act[mb])
                last = epoch == cfg.epochs - 1 and start + cfg.minibatch >= batch  # log the update's last step
                loss, step_parts = ppo_loss(logp, b_logp[mb], mb_adv, model.value(b_obs[mb]), b_tgt[mb], entropy,
                                            cfg.clip, cfg.vf_coef, cfg.ent_coef, diagnostics=last)
                parts = step_parts or parts
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
        actor.refresh()
        update += 1
        step = update * batch
        if run is not None:
            run.check_finite(loss.item(), step, hint="lr")
            recent = episodes.returns[-20:]
            run.log({f"{prefix}/return": float(np.mean(recent)) if recent else 0.0,
                     **{f"{prefix}/{k}": v.item() for k, v in parts.items()}}, step=step)
        if cfg.eval_every and step // cfg.eval_every > (step - batch) // cfg.eval_every and update < n_updates:
            policy.evals.append((step, greedy_return()))
            if run is not None:
                run.log({f"{prefix}/eval_return": policy.evals[-1][1]}, step=step)
        if run is not None and outer is not None and update % cfg.checkpoint_every == 0 and update < n_updates:
            run.checkpoint({**outer, "ppo": {"update": update, "model": model.state_dict(), "opt": opt.state_dict(),
                                             "rng": rng_state(rng), "evals": policy.evals}})
    policy.seconds, policy.steps = time.perf_counter() - t0, n_updates * batch
    envs.close()
    if cfg.eval_episodes:
        policy.evals.append((policy.steps, greedy_return()))
        policy.eval_return = policy.evals[-1][1]
        if run is not None:
            run.log({f"{prefix}/eval_return": policy.eval_return}, step=policy.steps)
    policy.solved_at = next((s for s, r in policy.evals if r >= cfg.solved_return), None)
    policy.curve = (episodes.steps, episodes.returns)
    return policy


def max_drop(evals: list[tuple[int, float]]) -> float:
    """The largest fall of the greedy return below its best so far: 0 for a curve that never drops."""
    best, drop = -math.inf, 0.0
    for _, r in evals:
        best = max(best, r)
        drop = max(drop, best - r)
    return drop


def train(cfg: Config, run: Run) -> dict[str, float]:
    state = run.restore() or {"results": {}}
    variants = {"ppo": cfg} | ({"noclip": replace(cfg, clip=None)} if cfg.ablation else {})
    for name, vcfg in variants.items():
        if name in state["results"]:
            continue
        resume = state.get("ppo") if state.get("variant") == name else None
        outer = {"results": state["results"], "variant": name}
        policy = train_policy(cfg.env_id, vcfg, seed=run.seed, run=run, prefix=name, resume=resume, outer=outer)
        state = {"results": {**state["results"], name: {
            "evals": policy.evals, "eval": policy.eval_return, "seconds": policy.seconds,
            "curve": [policy.curve[0], policy.curve[1]], "solved_at": policy.solved_at or -1}}}
        run.checkpoint(state)
    res = state["results"]
    main = res["ppo"]
    metrics = {"eval/return": main["eval"], "train/seconds": main["seconds"],
               "train/steps_per_s": cfg.total_steps / main["seconds"], "train/solved_at": main["solved_at"],
               "ppo/max_drop": max_drop(main["evals"])}
    curves = {"clip 0.2 (greedy eval)": ([s for s, _ in main["evals"]], [r for _, r in main["evals"]])}
    if "noclip" in res:
        nc = res["noclip"]
        metrics.update({"noclip/eval_return": nc["eval"], "noclip/max_drop": max_drop(nc["evals"]),
                        "ablation/drop_gap": max_drop(nc["evals"]) - max_drop(main["evals"]),
                        "ablation/final_gap": main["eval"] - nc["eval"],
                        "ablation/mean_eval_gap": float(np.mean([r for _, r in main["evals"]])
                                                        - np.mean([r for _, r in nc["evals"]]))})
        curves["no clipping (greedy eval)"] = ([s for s, _ in nc["evals"]], [r for _, r in nc["evals"]])
    else:  # ablation off: the ablation claim has nothing to check
        metrics["ablation/drop_gap"] = math.nan
    run.log(metrics, step=cfg.total_steps)
    line_plot(run.plots_dir / "learning_curve.png", curves, xlabel="env steps", ylabel="greedy return",
              title=f"PPO on {cfg.env_id}: clipped vs unclipped surrogate", hline=cfg.solved_return)
    line_plot(run.plots_dir / "training_episodes.png", {"clip 0.2": tuple(main["curve"])}, xlabel="env steps",
              ylabel="training episode return", title=f"PPO on {cfg.env_id}")
    return metrics
