"""IMPALA: Scalable distributed deep-RL with importance weighted actor-learner architectures — Espeholt, Soyer,
Munos, Simonyan, Mnih, Ward, Doron, Firoiu, Harley, Dunning, Legg & Kavukcuoglu, ICML 2018 (arXiv:1802.01561).

Actors do not compute gradients. Each plays its environments with the last policy the learner sent it and ships
whole unrolls (x_t, a_t, r_t, mu(a_t|x_t)) to a central learner, which batches them and takes one gradient step.
Acting and learning are decoupled, so the actor's policy mu lags the learner's pi by several updates: the data is
off-policy. V-trace corrects for it with truncated importance weights: rho_bar (where V-trace's value converges,
between V^mu and V^pi), c_bar (how far the trace reaches, i.e. the speed of convergence) and, in the policy
gradient, a truncated weight rho_s (the reference code's own threshold, clip_pg_rho). With pi = mu and the bars
at least 1, V-trace is the on-policy n-step return.

Equation map (§4):
  Eq. (1)  v_s = V(x_s) + sum_{t=s}^{s+n-1} gamma^{t-s} (prod_{i=s}^{t-1} c_i) delta_t V,
           delta_t V = rho_t (r_t + gamma V(x_{t+1}) - V(x_t)), rho_t = min(rho_bar, pi/mu),
           c_i = lambda min(c_bar, pi/mu)                                          -> `vtrace`
  Remark 1 v_s - V(x_s) = delta_s V + gamma c_s (v_{s+1} - V(x_{s+1})), the backward recursion -> `vtrace`
  §4.2     policy gradient rho_s grad log pi(a_s|x_s) (r_s + gamma v_{s+1} - V(x_s)), rho_s = min(pg_rho_bar, pi/mu)
           baseline (v_s - V(x_s)) grad V(x_s); entropy bonus -grad sum_a pi log pi   -> `vtrace`, `impala_loss`
  §5.3     no correction (targets as if mu were pi) and 1-step importance sampling (no correction of V's
           target; the policy gradient's advantage times pi/mu)                      -> `targets`
  §3       actors with a stale policy, broadcast every k updates                     -> `train_arm` (policy_lag,
           broadcast_every), `seminal.papers.distributed_rl._actors` (local and Ray actors)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Prob, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.rl import evaluate
from seminal.core.run import Run
from seminal.papers.distributed_rl._actors import (
    PolicyNet,
    env_spaces,
    make_actors,
    numpy_logits,
    policy_weights,
    ray_session,
    stack,
)

Correction = Literal["vtrace", "none", "is"]


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (discrete actions, flat observations)."""
    mode: Literal["local", "ray"] = "ray"
    """local: actors are objects stepped in lockstep in this process (deterministic); ray: each a Ray actor
    (asynchronous)."""
    ray_address: str | None = None
    """Ray cluster to join (e.g. auto, or ray://host:10001); none: start a local Ray with n_actors CPUs."""
    n_actors: PosInt = 2
    """Actors (each one process in ray mode)."""
    envs_per_actor: PosInt = 8
    """Environments each actor steps together; one unroll covers all of them (one Ray call)."""
    unroll_length: PosInt = 20
    """n: steps per unroll (the paper's 20 on Atari, 100 on DMLab)."""
    batch_unrolls: PosInt = 4
    """Unrolls in each learner batch (the paper's batch size 32); each has envs_per_actor columns."""
    total_steps: PosInt = 200_000
    """Environment steps in total, over all actors."""
    gamma: Prob = 0.99
    """Discount gamma."""
    rho_bar: PosFloat = 1.0
    """rho_bar: truncation of the importance weight in delta_t V (Eq. 1); fixes where v_s converges."""
    c_bar: PosFloat = 1.0
    """c_bar: truncation of the trace weights c_i (Eq. 1); sets the speed of convergence."""
    pg_rho_bar: PosFloat = 1.0
    """Truncation of the policy gradient's weight rho_s (§4.2; the reference code's clip_pg_rho_threshold)."""
    lam: Prob = 1.0
    """lambda in c_i = lambda min(c_bar, pi/mu) (Remark 2; 1: plain V-trace)."""
    correction: Correction = "vtrace"
    """Off-policy correction: vtrace, none (targets as if on-policy) or is (1-step importance sampling, §5.3)."""
    broadcast_every: PosInt = 1
    """k: the learner sends its policy to the actors every k updates."""
    policy_lag: NonNegInt = 0
    """Extra staleness: what is broadcast after update u is the policy of update u - policy_lag."""
    baseline_cost: NonNegFloat = 0.5
    """Weight of the baseline (value) loss (the paper's 0.5)."""
    entropy_cost: NonNegFloat = 0.01
    """Weight of the entropy bonus (the paper's 0.01 on Atari)."""
    lr: PosFloat = 5e-4
    """Learning rate, annealed linearly to 0 when anneal_lr (the paper's 6e-4 on Atari)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over training, as the paper."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSProp (the paper's: decay 0.99, momentum 0) or Adam."""
    rms_eps: PosFloat = 0.01
    """RMSProp's epsilon (the paper's 0.01 on Atari, 0.1 on DMLab)."""
    max_grad_norm: NonNegFloat = 40.0
    """Clip the global gradient norm to this (the paper's 40; 0: off)."""
    hidden: Sizes = (64, 64)
    """Hidden sizes of the policy and value MLPs (tanh)."""
    eval_every: NonNegInt = 20_000
    """Evaluate the learner's greedy policy every this many env steps (0: only at the end)."""
    eval_episodes: PosInt = 10
    """Episodes per evaluation (seeds 10000, 10001, ...: the same starts for every arm)."""
    solved_return: float = 450.0
    """An evaluation at or above this counts as solved (solved_at: its env step)."""
    main: bool = True
    """Train the main arm (correction, policy_lag, total_steps, mode): the one the CartPole claim reads."""
    ablation: tuple[str, ...] = ()
    """§5.3 arms, each trained after the main one with ablation_lag and its correction (empty: none)."""
    ablation_lag: NonNegInt = 20
    """policy_lag of every ablation arm (updates)."""
    ablation_steps: PosInt = 200_000
    """total_steps of every ablation arm."""
    ablation_mode: Literal["local", "ray"] = "local"
    """mode of the ablation arms: local (the lag is exactly ablation_lag, so paired arms differ only in their
    correction) or ray (ablation_lag plus Ray's own, varying lag)."""
    checkpoint_every: PosInt = 200
    """Checkpoint every this many learner updates (and whenever run.due())."""

    @property
    def steps_per_update(self) -> int:
        return self.batch_unrolls * self.envs_per_actor * self.unroll_length

    def validate(self) -> None:
        bad = [a for a in self.ablation if a not in ("vtrace", "none", "is")]
        if bad or len(set(self.ablation)) != len(self.ablation):
            raise SeminalError(f"ablation arms must be distinct among vtrace, none, is, not {','.join(self.ablation)}")
        if not self.main and not self.ablation:
            raise SeminalError("nothing to train: set main=true or name ablation arms (e.g. ablation=vtrace,none,is)")
        if self.total_steps < self.steps_per_update or (self.ablation and self.ablation_steps < self.steps_per_update):
            raise SeminalError(f"total_steps and ablation_steps must cover one update ({self.steps_per_update} steps)")


PRESETS = {
    # The main arm alone, in ray mode: 2 actors x 8 CartPoles, unrolls of 20, 4 unrolls a batch, 200k env steps.
    "quick": Config(),
    # §5.3 on CartPole: the same learner with actors 20 updates stale, three corrections on the same seed, local mode.
    "ablation": Config(main=False, ablation=("vtrace", "none", "is")),
    # The paper's Atari settings where they apply (lr 6e-4, batch 32 unrolls of 20), 48 actors, on LunarLander.
    "full": Config(env_id="LunarLander-v3", n_actors=48, envs_per_actor=4, batch_unrolls=32, total_steps=50_000_000,
                   lr=6e-4, eval_every=1_000_000, ablation=("vtrace", "none", "is"), ablation_steps=10_000_000,
                   ablation_mode="ray", checkpoint_every=2000),
}

_RLLIB = ("RLlib's IMPALA CartPole learning test (rllib/tuned_examples/impala/cartpole_impala.py): stop at a mean "
          "training return of 450 within 2M env steps")
_TABLE2 = "Table 2 (§5.3): V-trace above no correction and 1-step IS on most DMLab tasks"
_LAG = [
    Claim("with actors 20 updates stale, V-trace's learning curve (mean greedy return over the run's evaluations) "
          "beats no correction's", "lag/vtrace_minus_none_auc", ">", 0.0, "V-trace > no-correction", _TABLE2,
          bar="sanity", paired=("lag/vtrace_auc", "lag/none_auc")),
    Claim("with actors 20 updates stale, V-trace's learning curve beats 1-step importance sampling's",
          "lag/vtrace_minus_is_auc", ">", 0.0, "V-trace > 1-step IS", _TABLE2, bar="sanity",
          paired=("lag/vtrace_auc", "lag/is_auc")),
]
CLAIMS = {
    "quick": [Claim("IMPALA (ray mode, V-trace) solves CartPole-v1: greedy return >= 450 after 200k env steps "
                    "(RLlib's bar: 450 within 2M)", "eval/return", ">=", 450.0, "450 within 2M env steps", _RLLIB,
                    bar="peer")],
    "ablation": _LAG,
    "full": [Claim("IMPALA solves LunarLander-v3 (greedy return >= 200)", "eval/return", ">=", 200.0, "200 = solved",
                   "gymnasium LunarLander-v3 reward_threshold", bar="peer"), *_LAG],
}


# ---- V-trace: the paper's math --------------------------------------------------------------------------------
def vtrace(behaviour_logp: torch.Tensor, target_logp: torch.Tensor, rewards: torch.Tensor, values: torch.Tensor,
           bootstrap: torch.Tensor, discounts: torch.Tensor, rho_bar: float = 1.0, c_bar: float = 1.0,
           pg_rho_bar: float = 1.0, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace targets v_s and policy-gradient advantages, (T, B) each, without gradient.

    behaviour_logp log mu(a_t|x_t), target_logp log pi(a_t|x_t), rewards r_t, values V(x_t), discounts gamma_t
    (gamma, or 0 where the episode ended at t): (T, B); bootstrap V(x_T): (B,).
    """
    with torch.no_grad():
        ratio = torch.exp(target_logp - behaviour_logp)  # pi(a_t|x_t) / mu(a_t|x_t)
        rho = torch.clamp(ratio, max=rho_bar)  # Eq. (1): rho_t = min(rho_bar, pi/mu)
        c = lam * torch.clamp(ratio, max=c_bar)  # Eq. (1): c_i = lambda min(c_bar, pi/mu)
        next_values = torch.cat([values[1:], bootstrap[None]])  # V(x_{t+1})
        delta = rho * (rewards + discounts * next_values - values)  # Eq. (1): delta_t V
        acc = torch.zeros_like(bootstrap)
        vs_minus_v = torch.empty_like(values)
        for t in range(len(values) - 1, -1, -1):
            acc = delta[t] + discounts[t] * c[t] * acc  # Remark 1: v_s - V(x_s) = delta_s + gamma c_s (v_{s+1} - V)
            vs_minus_v[t] = acc
        vs = values + vs_minus_v
        vs_next = torch.cat([vs[1:], bootstrap[None]])  # v_{s+1}; v_T = V(x_T)
        pg_rho = torch.clamp(ratio, max=pg_rho_bar)  # §4.2: rho_s = min(pg_rho_bar, pi/mu)
        pg_advantages = pg_rho * (rewards + discounts * vs_next - values)  # §4.2: rho_s (r_s + gamma v_{s+1} - V(x_s))
    return vs, pg_advantages


def targets(correction: Correction, behaviour_logp: torch.Tensor, target_logp: torch.Tensor, rewards: torch.Tensor,
            values: torch.Tensor, bootstrap: torch.Tensor, discounts: torch.Tensor, cfg: Config):
    """(v_s, advantages) under one of §5.3's corrections: V-trace; none (mu taken for pi: ratios 1, i.e. n-step
    returns and the plain advantage); 1-step IS (V's target uncorrected, the advantage times pi/mu, untruncated)."""
    if correction == "vtrace":
        return vtrace(behaviour_logp, target_logp, rewards, values, bootstrap, discounts, cfg.rho_bar, cfg.c_bar,
                      cfg.pg_rho_bar, cfg.lam)
    same = torch.zeros_like(target_logp)
    vs, adv = vtrace(same, same, rewards, values, bootstrap, discounts, 1.0, 1.0, 1.0, cfg.lam)  # no correction
    if correction == "is":
        adv = adv * torch.exp(target_logp - behaviour_logp).detach()  # §5.3: 1-step importance sampling
    return vs, adv


def impala_loss(logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor, vs: torch.Tensor,
                pg_advantages: torch.Tensor, baseline_cost: float, entropy_cost: float):
    """§4.2's three terms, averaged over the (T, B) batch: -log pi(a_s|x_s) A_s, baseline_cost 0.5 (v_s - V(x_s))^2,
    -entropy_cost H(pi(.|x_s)). Targets v_s and advantages A_s are constants (no gradient through them)."""
    logp_all = torch.log_softmax(logits, dim=-1)  # (T, B, A)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (T, B)
    pg_loss = -(logp * pg_advantages.detach()).mean()
    baseline_loss = 0.5 * (vs.detach() - values).pow(2).mean()
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    loss = pg_loss + baseline_cost * baseline_loss - entropy_cost * entropy
    return loss, {"pg_loss": pg_loss, "baseline_loss": baseline_loss, "entropy": entropy}


def learner_step(net: PolicyNet, opt: torch.optim.Optimizer, batch: dict[str, np.ndarray], cfg: Config,
                 correction: Correction) -> dict[str, float]:
    """One learner update on a batch of unrolls (`_actors.stack`): the same function in local and ray mode."""
    obs = torch.as_tensor(batch["obs"])  # (T + 1, B, D)
    actions = torch.as_tensor(batch["actions"])  # (T, B)
    logits, values_all = net(obs)  # (T + 1, B, A), (T + 1, B)
    logits, values, bootstrap = logits[:-1], values_all[:-1], values_all[-1].detach()
    target_logp = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1).detach()
    truncated = torch.as_tensor(batch["truncated"], dtype=torch.float32)
    with torch.no_grad():  # a time limit is not a terminal state: fold gamma V(final x) into r, then cut the trace
        rewards = torch.as_tensor(batch["rewards"]) + cfg.gamma * truncated * net.v(torch.as_tensor(
            batch["final_obs"])).squeeze(-1)
    ended = torch.as_tensor(batch["terminated"] | batch["truncated"], dtype=torch.float32)
    discounts = cfg.gamma * (1.0 - ended)
    behaviour_logp = torch.as_tensor(batch["behaviour_logp"])
    vs, adv = targets(correction, behaviour_logp, target_logp, rewards, values.detach(), bootstrap, discounts, cfg)
    loss, parts = impala_loss(logits, values, actions, vs, adv, cfg.baseline_cost, cfg.entropy_cost)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.max_grad_norm:
        nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
    opt.step()
    ratio = torch.exp(target_logp - behaviour_logp)
    return {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}, "mean_ratio": ratio.mean().item(),
            "rho_clipped": (ratio > cfg.rho_bar).float().mean().item()}


def make_learner(obs_dim: int, n_actions: int, cfg: Config, seed: int) -> tuple[PolicyNet, torch.optim.Optimizer]:
    """The network (initial weights from the seed only: every arm of a seed starts equal) and its optimizer."""
    net = PolicyNet(obs_dim, n_actions, cfg.hidden, seed)
    if cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(net.parameters(), lr=cfg.lr, alpha=0.99, eps=cfg.rms_eps, momentum=0.0)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    return net, opt


def greedy_return(weights: list[np.ndarray], cfg: Config, evaluator: Callable[..., list[float]] = evaluate) -> float:
    """Mean undiscounted return of argmax_a pi(a|x) over eval_episodes episodes (fixed seeds); `evaluator` has
    `seminal.core.rl.evaluate`'s signature (a benchmark passes a timed one)."""
    act = lambda obs: int(numpy_logits(weights, np.asarray(obs, np.float32)[None])[0].argmax())  # noqa: E731
    return float(np.mean(evaluator(act, cfg.env_id, cfg.eval_episodes)))


# ---- the actor-learner loop -----------------------------------------------------------------------------------
def train_arm(arm: str, correction: Correction, policy_lag: int, total_steps: int, cfg: Config, run: Run,
              state: dict | None, save, mode: str | None = None,
              evaluator: Callable[..., list[float]] = evaluate) -> dict[str, Any]:
    """Actors act with the policy of update max(0, u - policy_lag), sent every broadcast_every updates (§3); the
    learner takes one V-trace step per batch of unrolls. Resumes from `state` (a checkpoint between updates)."""
    obs_dim, n_actions = env_spaces(cfg.env_id, "IMPALA")
    net, opt = make_learner(obs_dim, n_actions, cfg, run.seed)
    actors = make_actors(mode or cfg.mode, cfg.n_actors, cfg.env_id, cfg.envs_per_actor, run.seed)
    n_updates = total_steps // cfg.steps_per_update
    snapshots: deque = deque([policy_weights(net)], maxlen=policy_lag + 1)  # policies of updates u - lag ... u
    s = {"update": 0, "evals": [], "episodes": [], "lag": []}
    try:
        if state is None:
            actors.broadcast(snapshots[0], 0)
        else:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            snapshots.clear()
            snapshots.extend(state["snapshots"])
            actors.load(state["actors"])
            s = {k: [list(x) for x in state[k]] if k != "update" else int(state[k]) for k in s}
        bar = run.progress(total=n_updates, initial=s["update"], desc=f"impala {arm}", unit="update")
        while s["update"] < n_updates:
            u = s["update"]
            unrolls = actors.unrolls(cfg.batch_unrolls, cfg.unroll_length)
            if cfg.anneal_lr:
                opt.param_groups[0]["lr"] = cfg.lr * (1.0 - u / n_updates)
            info = learner_step(net, opt, stack(unrolls), cfg, correction)
            s["update"] = u = u + 1
            step = u * cfg.steps_per_update
            snapshots.append(policy_weights(net))
            if u % cfg.broadcast_every == 0:
                actors.broadcast(snapshots[0], max(0, u - policy_lag))  # §3: the (stale) policy goes to the actors
            s["episodes"] += [[step, r] for un in unrolls for r in un["episodes"]]
            s["lag"].append([step, float(np.mean([u - 1 - un["version"] for un in unrolls]))])
            bar.update()
            if u % 25 == 0 or u == n_updates:
                for key, value in info.items():
                    run.check_finite(value, step, what=key, hint="lr")
                recent = [r for _, r in s["episodes"][-20:]]
                run.log({f"{arm}/return": float(np.mean(recent)) if recent else 0.0, f"{arm}/policy_lag":
                         s["lag"][-1][1], **{f"{arm}/{k}": v for k, v in info.items()}}, step=step)
            if (cfg.eval_every and step // cfg.eval_every > (step - cfg.steps_per_update) // cfg.eval_every) \
                    or u == n_updates:
                s["evals"].append([step, greedy_return(policy_weights(net), cfg, evaluator)])
                run.log({f"{arm}/eval_return": s["evals"][-1][1]}, step=step)
                bar.set_postfix(eval=f"{s['evals'][-1][1]:.0f}", refresh=False)
            if u < n_updates and (u % cfg.checkpoint_every == 0 or run.due()):  # between learner updates
                save({**s, "net": net.state_dict(), "opt": opt.state_dict(), "snapshots": list(snapshots),
                      "actors": actors.state()})
        bar.close()
    finally:
        actors.close()
    evals = [r for _, r in s["evals"]]
    solved = next((st for st, r in s["evals"] if r >= cfg.solved_return), math.nan)
    return {"return": evals[-1], "auc": float(np.mean(evals)), "solved_at": solved, "evals": s["evals"],
            "episodes": s["episodes"], "lag": float(np.mean([x for _, x in s["lag"]]))}


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: intra-op threads only add synchronisation
    try:
        if "ray" not in (cfg.mode if cfg.main else "local", cfg.ablation_mode if cfg.ablation else "local"):
            return _train(cfg, run, {"startup_seconds": 0.0})
        with ray_session(cfg.n_actors, cfg.ray_address) as info:
            return _train(cfg, run, info)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: Config, run: Run, ray_info: dict[str, float]) -> dict[str, float]:
    """The main arm (cfg.correction, cfg.policy_lag), then §5.3's arms with ablation_lag; checkpoints between
    updates and after each arm."""
    arms = [("impala", cfg.correction, cfg.policy_lag, cfg.total_steps, cfg.mode)] if cfg.main else []
    arms += [(f"lag_{c}", c, cfg.ablation_lag, cfg.ablation_steps, cfg.ablation_mode) for c in cfg.ablation]
    state = run.restore() or {"done": {}, "arm": None}
    done = dict(state["done"])
    for name, correction, lag, steps, mode in arms:
        if name in done:
            continue

        def save(arm_state, name=name):
            run.checkpoint({"done": done, "arm": {"name": name, **arm_state}})

        resume = state["arm"] if state["arm"] is not None and state["arm"]["name"] == name else None
        done[name] = train_arm(name, correction, lag, steps, cfg, run, resume, save, mode)
        state["arm"] = None
        run.checkpoint({"done": done, "arm": None})
    metrics = {"train/ray_startup_seconds": ray_info["startup_seconds"], "train/seconds": run.elapsed}
    if cfg.main:
        main = done["impala"]
        last = [r for _, r in main["episodes"][-100:]]  # the actors' (stochastic, stale) episodes: RLlib's metric
        metrics |= {"eval/return": main["return"], "eval/auc": main["auc"], "eval/solved_at": main["solved_at"],
                    "train/return": float(np.mean(last)) if last else 0.0, "train/policy_lag": main["lag"]}
    for c in cfg.ablation:
        metrics[f"lag/{c}_auc"], metrics[f"lag/{c}_return"] = done[f"lag_{c}"]["auc"], done[f"lag_{c}"]["return"]
        metrics[f"lag/{c}_policy_lag"] = done[f"lag_{c}"]["lag"]
    for c in ("none", "is"):
        if {"vtrace", c} <= set(cfg.ablation):
            metrics[f"lag/vtrace_minus_{c}_auc"] = metrics["lag/vtrace_auc"] - metrics[f"lag/{c}_auc"]
    run.log(metrics, step=cfg.total_steps)
    line_plot(run.plots_dir / "learning_curve.png",
              {name: ([e[0] for e in d["evals"]], [e[1] for e in d["evals"]]) for name, d in done.items()},
              xlabel="env steps", ylabel="greedy return", title=f"IMPALA on {cfg.env_id}", hline=cfg.solved_return)
    return metrics
