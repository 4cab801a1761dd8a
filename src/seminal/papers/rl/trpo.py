"""Trust region policy optimization — Schulman, Levine, Moritz, Jordan & Abbeel, ICML 2015 (arXiv:1502.05477).

A policy-gradient step of fixed length in parameter space can change the policy a lot or hardly at all.
TRPO instead bounds the change in the *policy*: maximise the importance-sampled surrogate L(theta) subject
to the average KL divergence from the old policy staying under delta (Eq. 14). Linearise L (gradient g)
and take the KL's quadratic model (its Hessian is the Fisher information matrix F); the step direction is
s = F^-1 g, found by conjugate gradient with Fisher-vector products only (never forming F), scaled to land
on the KL boundary, then shrunk by a backtracking line search until the exact surrogate improves and the
exact KL is within delta (Appendix C). The value function that gives the advantages is fitted separately;
the advantages are the paper's "single path" estimates: the discounted return from each state (cut at the
rollout's end and bootstrapped there with V) minus the baseline V(s) (§5.1). The GAE paper (entry 9) runs
this same learner with its own estimator, passed in as `advantages`.

Equation map:
  Eq. (14)  max_theta L(theta) = E[pi_theta(a|s) / pi_old(a|s) A(s, a)]  s.t.  E[KL(pi_old || pi_theta)] <= delta
                                                                         -> `surrogate`, `mean_kl`
  App. C    Fisher-vector product F v = grad_theta (grad_theta KL . v)  -> `fisher_vector_product`
  App. C    s ~= F^-1 g by conjugate gradient (k iterations)            -> `conjugate_gradient`
  App. C    beta = sqrt(2 delta / s^T F s), full step beta s              -> `trpo_step`
  App. C    backtracking line search: exact L improves and KL <= delta    -> `trpo_step`
  §5.1      single path: A_t = sum_l gamma^l r_{t+l} (+ bootstrap) - V(s_t) -> `single_path_advantages`
  §8        V fitted by regression on the discounted returns             -> `train_policy`, value step

The rollouts, the actor-critic network and the loop are the on-policy plumbing (`rl._onpolicy`); TRPO is
its `update`: the natural-gradient step above, then the value regression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Categorical, Distribution, Normal, kl_divergence
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Prob, Sizes
from seminal.core.plots import line_plot
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
from seminal.papers.rl.a2c import nstep_returns


@dataclass(frozen=True)
class Config:
    env_id: str = "CartPole-v1"
    """Environment id (Discrete or Box actions, flat observations)."""
    total_steps: PosInt = 200_000
    """Environment steps in total (quick preset: 100k)."""
    n_envs: PosInt = 8
    """Parallel envs collecting each batch."""
    n_steps: PosInt = 128
    """Steps per env per iteration; a batch is n_envs * n_steps state-action pairs."""
    gamma: Prob = 0.99
    """Discount gamma."""
    max_kl: PosFloat = 0.01
    """delta: the trust region's radius, in mean KL (the paper's 0.01)."""
    cg_iters: PosInt = 10
    """Conjugate-gradient iterations (the paper's k = 10)."""
    cg_damping: PosFloat = 0.1
    """Added to F's diagonal in the Fisher-vector product, for a well-conditioned solve."""
    backtracks: PosInt = 10
    """Line-search halvings of the step before giving up (and keeping the old policy)."""
    vf_lr: PosFloat = 1e-3
    """Adam step size of the value function's regression."""
    vf_epochs: NonNegInt = 5
    """Passes of value regression over each batch."""
    vf_minibatch: PosInt = 128
    """Minibatch size of the value regression."""
    hidden: Sizes = (64, 64)
    """Hidden sizes of the (separate) tanh MLPs of policy and value function."""
    eval_every: NonNegInt = 20_000
    """Greedy evaluation every this many env steps (0: only at the end)."""
    eval_episodes: NonNegInt = 10
    """Episodes per evaluation."""
    checkpoint_every: PosInt = 20
    """Checkpoint every this many iterations."""


PRESETS = {
    "quick": Config(total_steps=100_000),  # 200k before; greedy 500 from 41k on tuning seed 100 (notes)
    "full": Config(env_id="LunarLander-v3", total_steps=1_000_000, n_envs=16, n_steps=256, gamma=0.999,
                   eval_every=100_000),
}

CLAIMS = {
    "quick": [Claim("TRPO solves CartPole-v1 (greedy return >= 475) within 100k env steps", "eval/return", ">=",
                    475.0, "475 = CartPole-v1 reward_threshold; SB3-contrib zoo TRPO 500 at 100k steps",
                    "gymnasium; rl-baselines3-zoo (sb3-contrib TRPO)", bar="peer")],
    "full": [Claim("TRPO solves LunarLander-v3 (greedy return >= 200)", "eval/return", ">=", 200.0,
                   "200 = solved; SB3-contrib zoo TRPO ~ 150-250 at 1M steps", "rl-baselines3-zoo benchmark",
                   bar="peer")],
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
def detach(d: Distribution) -> Distribution:
    """The old policy pi_old: the same distribution with no gradient path."""
    if isinstance(d, Categorical):
        return Categorical(logits=d.logits.detach())
    return Normal(d.loc.detach(), d.scale.detach())


def log_prob(d: Distribution, actions: torch.Tensor) -> torch.Tensor:
    lp = d.log_prob(actions)
    return lp if isinstance(d, Categorical) else lp.sum(-1)


def surrogate(d: Distribution, actions: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """L(theta) = E[pi_theta(a|s) / pi_old(a|s) A] (Eq. 14's objective, up to a constant)."""
    return ((log_prob(d, actions) - old_logp).exp() * adv).mean()  # Eq. (14)


def mean_kl(old: Distribution, new: Distribution) -> torch.Tensor:
    """E_s[KL(pi_old(.|s) || pi_theta(.|s))] (Eq. 12's average KL, the constraint of Eq. 14)."""
    kl = kl_divergence(old, new)
    return (kl if isinstance(old, Categorical) else kl.sum(-1)).mean()


def fisher_vector_product(dist_fn: Callable[[], Distribution], params: list[torch.Tensor], v: torch.Tensor,
                          damping: float = 0.0) -> torch.Tensor:
    """(F + damping I) v without forming F: F is the Hessian of the mean KL at theta_old (Appendix C)."""
    new = dist_fn()
    kl = mean_kl(detach(new), new)
    grads = torch.autograd.grad(kl, params, create_graph=True)
    grad_v = (torch.cat([g.reshape(-1) for g in grads]) * v).sum()
    hv = torch.autograd.grad(grad_v, params)
    return torch.cat([h.reshape(-1) for h in hv]) + damping * v


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x (Appendix C; Nocedal & Wright 5.2)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()  # residual b - A x with x = 0
    rr = r @ r
    for _ in range(iters):
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def trpo_step(model: ActorCritic, obs: torch.Tensor, actions: torch.Tensor, old_logp: torch.Tensor,
              adv: torch.Tensor, max_kl: float, damping: float, cg_iters: int, backtracks: int) -> dict[str, float]:
    """One policy update: CG direction, scaled to the KL boundary, backtracked until L improves and KL <= delta."""
    params = model.policy_parameters()
    old = detach(model.dist(obs))
    loss_old = surrogate(model.dist(obs), actions, old_logp, adv)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss_old, params)])
    s = conjugate_gradient(lambda v: fisher_vector_product(lambda: model.dist(obs), params, v, damping), g, cg_iters)
    sFs = s @ fisher_vector_product(lambda: model.dist(obs), params, s, damping)
    full_step = torch.sqrt(2.0 * max_kl / (sFs + 1e-12)) * s  # beta s: the quadratic KL model equals delta
    theta_old = parameters_to_vector(params).detach()
    with torch.no_grad():
        for k in range(backtracks):
            vector_to_parameters(theta_old + 0.5**k * full_step, params)
            new = model.dist(obs)
            improve = (surrogate(new, actions, old_logp, adv) - loss_old).item()
            kl = mean_kl(old, new).item()
            if kl <= max_kl and improve > 0:  # App. C: both the constraint and a real improvement
                return {"kl": kl, "improvement": improve, "step_frac": 0.5**k}
        vector_to_parameters(theta_old, params)  # no acceptable step: keep the old policy
    return {"kl": 0.0, "improvement": 0.0, "step_frac": 0.0}


def single_path_advantages(rollout: dict[str, np.ndarray], gamma: float) -> np.ndarray:
    """A_t = (discounted return from s_t, bootstrapped with V where the rollout is cut) - V(s_t). §5.1."""
    returns = nstep_returns(rollout["rewards"], rollout["next_values"], rollout["terminated"], rollout["dones"], gamma)
    return returns - rollout["values"]


Advantages = Callable[[dict[str, np.ndarray], float], np.ndarray]
"""An advantage estimator: (rollout of (T, N) arrays, gamma) -> A (T, N)."""


def make_update(model: ActorCritic, vf_opt: torch.optim.Optimizer, cfg: Config, device: torch.device | str = "cpu",
                advantages: Advantages = single_path_advantages):
    """TRPO's update as `onpolicy_loop` calls it: `update(rollout, progress, rng) -> metrics`."""
    dtype = next(model.parameters()).dtype

    def update(rollout: dict[str, np.ndarray], progress: float, rng: np.random.Generator) -> dict[str, float]:
        """The policy step of Eq. (14) on this batch, then V's regression on the discounted returns."""
        adv = advantages(rollout, cfg.gamma)
        targets = nstep_returns(rollout["rewards"], rollout["next_values"], rollout["terminated"],
                                rollout["dones"], cfg.gamma)  # V's regression targets
        obs, old_logp, b_tgt = (flat(x, device, dtype) for x in (rollout["obs"], rollout["logp"], targets))
        actions = flat(rollout["actions"], device, torch.long if model.discrete else dtype)
        b_adv = flat(adv, device, dtype)
        b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)  # normalised advantages (deviation 2)
        info = trpo_step(model, obs, actions, old_logp, b_adv, cfg.max_kl, cfg.cg_damping, cfg.cg_iters,
                         cfg.backtracks)
        v_loss = torch.zeros(())
        for _ in range(cfg.vf_epochs):  # V: separate regression
            order = torch.as_tensor(rng.permutation(len(obs)), device=device)
            for start in range(0, len(obs), cfg.vf_minibatch):
                mb = order[start:start + cfg.vf_minibatch]
                v_loss = 0.5 * (model.value(obs[mb]) - b_tgt[mb]).pow(2).mean()
                vf_opt.zero_grad(set_to_none=True)
                v_loss.backward()
                vf_opt.step()
        return {"v_loss": v_loss.item(), **info}

    return update


def value_optimizer(model: ActorCritic, cfg: Config) -> torch.optim.Optimizer:
    """Adam on V's parameters only: the policy moves by the trust-region step alone."""
    return torch.optim.Adam([*model.v_body.parameters(), *model.v_head.parameters()], lr=cfg.vf_lr)


def train_policy(env: EnvSource, cfg: Config, *, seed: int = 0, run: Run | None = None, prefix: str = "trpo",
                 resume: dict | None = None, outer: dict | None = None,
                 advantages: Advantages = single_path_advantages) -> Policy:
    """TRPO on N synchronous copies of `env` (an id or a factory); see `onpolicy_loop` for run/resume/outer."""
    device = run.device if run is not None else torch.device("cpu")
    with one_thread(device):
        envs = make_vec_env(env, cfg.n_envs, seed, "TRPO")
        model = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space, cfg.hidden,
                            shared=False, seed=seed).to(device)
        vf_opt = value_optimizer(model, cfg)
        update = make_update(model, vf_opt, cfg, device, advantages)
        return onpolicy_loop(envs, env, model, update, {"vf_opt": vf_opt}, cfg, seed=seed, run=run, prefix=prefix,
                             resume=resume, outer=outer, hint="vf_lr")


def train(cfg: Config, run: Run) -> dict[str, float]:
    state = run.restore()
    policy = train_policy(cfg.env_id, cfg, seed=run.seed, run=run, resume=state["loop"] if state else None, outer={})
    steps, rets = policy.curve
    line_plot(run.plots_dir / "learning_curve.png",
              {"training episodes": (steps, rets),
               "greedy evaluation": ([s for s, _ in policy.evals], [r for _, r in policy.evals])},
              xlabel="env steps", ylabel="return", title=f"TRPO on {cfg.env_id}")
    return {"eval/return": policy.eval_return, "train/steps_per_s": policy.steps / policy.seconds,
            "train/seconds": policy.seconds}
