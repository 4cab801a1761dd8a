"""TRPO: conjugate gradient vs a direct solve, the Fisher-vector product vs an explicit Fisher matrix, the
line search's two conditions, bad input, and a smoke run."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.run import Run
from seminal.papers.rl import trpo
from seminal.papers.rl._onpolicy import ActorCritic
from seminal.papers.rl.trpo import conjugate_gradient, fisher_vector_product, mean_kl, trpo_step


def test_conjugate_gradient_solves_an_spd_system():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(6, 6))
    A = M @ M.T + 0.5 * np.eye(6)  # symmetric positive definite
    b = rng.normal(size=6)
    At, bt = torch.tensor(A), torch.tensor(b)
    x = conjugate_gradient(lambda v: At @ v, bt, iters=6)  # exact in n steps for an n x n SPD matrix
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A, b), rtol=1e-6, atol=1e-8)


def tiny_policy():
    model = ActorCritic(3, gymnasium.spaces.Discrete(3), hidden=(4,), seed=1).double()
    with torch.no_grad():  # move off the near-uniform init so that the Fisher is not degenerate
        model.pi_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    obs = torch.tensor(np.random.default_rng(3).normal(size=(5, 3)))
    return model, obs


def test_fisher_vector_product_matches_the_explicit_fisher():
    model, obs = tiny_policy()
    params = model.policy_parameters()
    n = sum(p.numel() for p in params)
    # Explicit Fisher: F = E_s E_{a ~ pi(.|s)} [grad log pi(a|s) grad log pi(a|s)^T], per (s, a) by autograd.
    F = torch.zeros(n, n, dtype=torch.float64)
    probs = model.dist(obs).probs.detach()
    for i in range(len(obs)):
        for a in range(3):
            logp = model.dist(obs[i:i + 1]).log_prob(torch.tensor([a]))[0]
            g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(logp, params)])
            F += probs[i, a] * torch.outer(g, g) / len(obs)
    v = torch.tensor(np.random.default_rng(4).normal(size=n))
    Fv = fisher_vector_product(lambda: model.dist(obs), params, v, damping=0.0)
    np.testing.assert_allclose(Fv.numpy(), (F @ v).numpy(), rtol=1e-6, atol=1e-10)
    Fv_damped = fisher_vector_product(lambda: model.dist(obs), params, v, damping=0.1)
    np.testing.assert_allclose(Fv_damped.numpy(), (F @ v + 0.1 * v).numpy(), rtol=1e-6, atol=1e-10)


def test_trpo_step_improves_the_surrogate_within_the_kl_bound():
    model, obs = tiny_policy()
    old = model.dist(obs)
    actions = torch.tensor([0, 1, 2, 0, 1])
    old_logp = old.log_prob(actions).detach()
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0, 0.3], dtype=torch.float64)
    old_detached = trpo.detach(old)
    before = trpo.surrogate(model.dist(obs), actions, old_logp, adv).item()
    info = trpo_step(model, obs, actions, old_logp, adv, max_kl=0.01, damping=0.0, cg_iters=20, backtracks=15)
    new = model.dist(obs)
    kl = mean_kl(old_detached, new).item()
    assert info["step_frac"] > 0
    assert kl <= 0.01 + 1e-9  # the constraint, measured exactly after the step
    assert trpo.surrogate(new, actions, old_logp, adv).item() > before
    assert kl > 0.001  # the step went a good way towards the trust region's edge, not a vanishing one


@pytest.mark.parametrize("env_id, match", [("FrozenLake-v1", "flat vector"), ("CartPool-v1", "unknown env id")])
def test_trpo_rejects_envs_it_cannot_handle(tmp_path, env_id, match):
    cfg = dataclasses.replace(trpo.PRESETS["quick"], env_id=env_id)
    with pytest.raises(SeminalError, match=match):
        with Run(tmp_path, "trpo", 0, cfg, progress=False, tensorboard=False) as run:
            trpo.train(cfg, run)


def test_smoke_run_is_deterministic(tmp_path):
    cfg = dataclasses.replace(trpo.PRESETS["quick"], total_steps=2048, n_envs=4, n_steps=128, eval_every=1024,
                              eval_episodes=2)
    results, histories = [], []
    for name in ("a", "b"):
        with Run(tmp_path / name, "trpo", 0, cfg, progress=False, tensorboard=False) as run:
            results.append(trpo.train(cfg, run))
            histories.append(run.history("trpo/v_loss"))
    assert results[0]["eval/return"] == results[1]["eval/return"]
    assert histories[0] == histories[1] and len(histories[0][0]) == 4  # 2048 / (4 x 128) iterations
    assert np.isfinite(results[0]["eval/return"])
