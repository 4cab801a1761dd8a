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


# ---- one whole update against an independent computation ------------------------------------------------
def naive_returns(ro, gamma):
    """Discounted return from each (t, n) by its definition: to the episode's or the rollout's end, then
    gamma^k V of the state reached (0 where the episode terminated)."""
    T, N = ro["rewards"].shape
    R = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, k = 0.0, t
            while True:
                total += gamma ** (k - t) * ro["rewards"][k, n]
                if ro["dones"][k, n] or k == T - 1:
                    total += gamma ** (k - t + 1) * (0.0 if ro["terminated"][k, n] else ro["next_values"][k, n])
                    break
                k += 1
            R[t, n] = total
    return R


def explicit_fisher(model, obs, params):
    """F = E_s sum_a pi(a|s) grad log pi(a|s) grad log pi(a|s)^T, from per-(s, a) autograd gradients."""
    n = sum(p.numel() for p in params)
    F = torch.zeros(n, n, dtype=torch.float64)
    probs = model.dist(obs).probs.detach()
    for i in range(len(obs)):
        for a in range(probs.shape[1]):
            logp = model.dist(obs[i:i + 1]).log_prob(torch.tensor([a]))[0]
            g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(logp, params)])
            F += probs[i, a] * torch.outer(g, g) / len(obs)
    return F


def rollout_for(model, T=4, N=3, seed=5):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, N, 3))
    with torch.no_grad():
        d = model.dist(torch.as_tensor(obs.reshape(-1, 3)))
        actions = torch.as_tensor(rng.integers(3, size=T * N))
        logp = d.log_prob(actions).numpy().reshape(T, N)  # collected by this very policy: pi_old = pi_theta
    ro = {"obs": obs, "actions": actions.numpy().reshape(T, N), "logp": logp,
          "rewards": rng.normal(1.0, 1.0, size=(T, N)), "values": rng.normal(size=(T, N)),
          "next_values": rng.normal(2.0, 1.0, size=(T, N)),
          "terminated": np.zeros((T, N), bool), "dones": np.zeros((T, N), bool)}
    ro["terminated"][1, 0] = ro["dones"][1, 0] = True  # terminated: its next value must not count
    ro["dones"][2, 1] = True  # truncated: bootstraps from V of the final observation
    return ro


@pytest.mark.parametrize("max_kl, damping, backtracked", [(0.01, 0.1, False), (0.01, 0.001, True)])
def test_one_update_is_the_line_searched_natural_gradient_step(max_kl, damping, backtracked):
    """trpo.make_update (the closure `train` runs) against the paper's step built from the explicit Fisher:
    s = (F + damping I)^-1 g, beta = sqrt(2 delta / s^T F s), then the first 0.5^k beta s whose exact KL is
    <= delta and whose exact surrogate improves (App. C); V by one Adam step on the single-path returns."""
    model, _ = tiny_policy()
    cfg = dataclasses.replace(trpo.PRESETS["quick"], gamma=0.9, max_kl=max_kl, cg_damping=damping, cg_iters=60,
                              backtracks=12, vf_epochs=1, vf_minibatch=1000, vf_lr=0.01)
    ro = rollout_for(model)
    params = model.policy_parameters()
    theta_old = torch.cat([p.detach().reshape(-1) for p in params])
    v_old = [p.detach().clone() for p in [*model.v_body.parameters(), *model.v_head.parameters()]]
    obs = torch.as_tensor(ro["obs"].reshape(-1, 3))
    actions = torch.as_tensor(ro["actions"].reshape(-1))
    old_logp = torch.as_tensor(ro["logp"].reshape(-1))

    # the expected step, independently
    R = naive_returns(ro, cfg.gamma).reshape(-1)
    A = R - ro["values"].reshape(-1)  # single path: discounted return minus the baseline
    A = torch.as_tensor((A - A.mean()) / (A.std(ddof=1) + 1e-8))
    surr = (torch.exp(model.dist(obs).log_prob(actions) - old_logp) * A).mean()
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(surr, params)])
    Fd = explicit_fisher(model, obs, params) + cfg.cg_damping * torch.eye(len(g), dtype=torch.float64)
    s = torch.linalg.solve(Fd, g)
    full = torch.sqrt(2 * max_kl / (s @ Fd @ s)) * s
    probe = ActorCritic(3, gymnasium.spaces.Discrete(3), hidden=(4,), seed=1).double()
    probe.load_state_dict(model.state_dict())
    p_params = probe.policy_parameters()
    old = torch.distributions.Categorical(logits=model.dist(obs).logits.detach())
    expected, accepted = theta_old, None
    with torch.no_grad():
        for k in range(cfg.backtracks):
            torch.nn.utils.vector_to_parameters(theta_old + 0.5**k * full, p_params)
            new = probe.dist(obs)
            kl = torch.distributions.kl_divergence(old, new).mean().item()
            gain = ((torch.exp(new.log_prob(actions) - old_logp) * A).mean() - surr).item()
            if k == 0:
                assert gain > 0 and (kl > max_kl) == backtracked  # the fixture needs (or not) the KL check
            if kl <= max_kl and gain > 0:
                expected, accepted = theta_old + 0.5**k * full, k
                break
    assert accepted is not None and (accepted > 0) == backtracked

    update = trpo.make_update(model, trpo.value_optimizer(model, cfg), cfg)
    info = update(ro, 0.0, np.random.default_rng(0))
    step = torch.cat([p.detach().reshape(-1) for p in params]) - theta_old
    want = expected - theta_old  # CG's residual tolerance leaves ~1e-4 relative error; a plain-gradient step is far
    assert (step - want).norm() <= 1e-3 * want.norm()
    assert (step @ s) / (step.norm() * s.norm()) > 1 - 1e-6  # parallel to (F + damping I)^-1 g
    assert info["step_frac"] == 0.5**accepted and info["kl"] <= max_kl

    # V: one Adam step (first step: each parameter moves by lr * sign of its gradient) on 0.5 (V - R)^2
    vref = ActorCritic(3, gymnasium.spaces.Discrete(3), hidden=(4,), seed=1).double()
    vparams = [*vref.v_body.parameters(), *vref.v_head.parameters()]
    for p, p0 in zip(vparams, v_old):
        p.data.copy_(p0)
    loss = 0.5 * (vref.value(obs) - torch.as_tensor(R)).pow(2).mean()
    opt = torch.optim.Adam(vparams, lr=cfg.vf_lr)
    loss.backward()
    opt.step()
    for p, p_ref in zip([*model.v_body.parameters(), *model.v_head.parameters()], vparams):
        torch.testing.assert_close(p.detach(), p_ref.detach(), rtol=1e-6, atol=1e-9)


def test_line_search_keeps_the_old_policy_when_the_surrogate_falls(monkeypatch):
    # Hand the line search a descent direction (-g, as a wrong solve would): every candidate is inside the trust
    # region for small enough k but lowers the exact surrogate, so the old policy must be kept.
    model, obs = tiny_policy()
    actions = torch.tensor([0, 1, 2, 0, 1])
    old_logp = model.dist(obs).log_prob(actions).detach()
    adv = torch.tensor([1.0, -0.5, 2.0, -1.0, 0.3], dtype=torch.float64)
    monkeypatch.setattr(trpo, "conjugate_gradient", lambda Avp, b, iters=10: -b)
    theta = torch.cat([p.detach().reshape(-1).clone() for p in model.policy_parameters()])
    info = trpo_step(model, obs, actions, old_logp, adv, max_kl=0.01, damping=0.1, cg_iters=10, backtracks=15)
    assert info["step_frac"] == 0.0
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in model.policy_parameters()]), theta)


# ---- Gaussian policies (Box actions): sums over action dimensions, and the Fisher of mean and log std ---------
def tiny_gaussian_policy():
    model = ActorCritic(3, gymnasium.spaces.Box(-1, 1, (2,)), hidden=(4,), seed=1).double()
    with torch.no_grad():
        model.pi_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
        model.log_std.copy_(torch.tensor([-0.3, 0.2]))
    obs = torch.tensor(np.random.default_rng(3).normal(size=(5, 3)))
    return model, obs


def test_gaussian_log_prob_and_kl_sum_over_action_dimensions():
    model, obs = tiny_gaussian_policy()
    d = model.dist(obs)
    mu, sd = d.loc.detach().numpy(), d.scale.detach().numpy()
    a = torch.tensor(np.random.default_rng(6).normal(size=(5, 2)))
    z = (a.numpy() - mu) / sd
    want = (-0.5 * z**2 - np.log(sd) - 0.5 * np.log(2 * np.pi)).sum(-1)  # log N(a; mu, diag sd^2)
    np.testing.assert_allclose(trpo.log_prob(d, a).detach().numpy(), want, rtol=1e-10)
    mu2, sd2 = mu + 0.3, sd * np.array([1.5, 0.7])
    other = torch.distributions.Normal(torch.tensor(mu2), torch.tensor(sd2))
    kl = (np.log(sd2 / sd) + (sd**2 + (mu - mu2) ** 2) / (2 * sd2**2) - 0.5).sum(-1).mean()  # closed form
    assert mean_kl(trpo.detach(d), other).item() == pytest.approx(kl, rel=1e-10)


def test_fisher_vector_product_of_a_gaussian_policy_matches_the_explicit_fisher():
    """For N(mu_theta(s), diag sigma^2) with a state-independent log sigma the Fisher is block-diagonal:
    E_s[J_mu^T diag(1/sigma^2) J_mu] for the mean's parameters and 2 I for log sigma (Appendix C's F)."""
    model, obs = tiny_gaussian_policy()
    params = model.policy_parameters()
    n = sum(p.numel() for p in params)
    sigma2 = model.log_std.detach().exp() ** 2
    F = torch.zeros(n, n, dtype=torch.float64)
    for i in range(len(obs)):
        mu = model.dist(obs[i:i + 1]).loc[0]
        for j in range(2):
            gs = torch.autograd.grad(mu[j], params, retain_graph=True, allow_unused=True)
            g = torch.cat([(torch.zeros_like(p) if x is None else x).reshape(-1) for p, x in zip(params, gs)])
            F += torch.outer(g, g) / sigma2[j] / len(obs)
    F[-2:, -2:] += 2.0 * torch.eye(2, dtype=torch.float64)  # log_std is the last parameter
    v = torch.tensor(np.random.default_rng(4).normal(size=n))
    Fv = fisher_vector_product(lambda: model.dist(obs), params, v, damping=0.05)
    np.testing.assert_allclose(Fv.numpy(), (F @ v + 0.05 * v).numpy(), rtol=1e-6, atol=1e-10)


def test_value_regression_targets_are_the_discounted_returns(monkeypatch):
    """V's step with SGD (Adam's first step is lr * sign(grad), blind to the target's size): one full-batch step on
    0.5 mean (V(s) - R)^2 with R the discounted returns by definition, whatever the policy step did."""
    model, _ = tiny_policy()
    ro = rollout_for(model)
    monkeypatch.setattr(trpo, "trpo_step", lambda *a, **k: {"kl": 0.0, "improvement": 0.0, "step_frac": 0.0})
    cfg = dataclasses.replace(trpo.PRESETS["quick"], gamma=0.9, vf_epochs=1, vf_minibatch=1000)
    vparams = [*model.v_body.parameters(), *model.v_head.parameters()]
    probe = ActorCritic(3, gymnasium.spaces.Discrete(3), hidden=(4,), seed=1).double()
    probe.load_state_dict(model.state_dict())
    trpo.make_update(model, torch.optim.SGD(vparams, lr=0.1), cfg)(ro, 0.0, np.random.default_rng(0))
    R = torch.as_tensor(naive_returns(ro, cfg.gamma).reshape(-1))
    obs = torch.as_tensor(ro["obs"].reshape(-1, 3))
    loss = 0.5 * (probe.value(obs) - R).pow(2).mean()
    pparams = [*probe.v_body.parameters(), *probe.v_head.parameters()]
    grads = torch.autograd.grad(loss, pparams)
    for p, p0, g in zip(vparams, pparams, grads):
        torch.testing.assert_close(p.detach(), p0.detach() - 0.1 * g, rtol=1e-7, atol=1e-10)
