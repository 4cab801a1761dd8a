"""GAE's two experiments: the batched Pendulum against gymnasium's, the area under the curve over env steps, the
bias/variance measurement against naive sums, and one whole TRPO update with GAE against an independent GAE."""

from __future__ import annotations

from dataclasses import replace

import gymnasium
import numpy as np
import pytest
import torch

from seminal.papers.rl import gae as paper
from seminal.papers.rl import trpo
from seminal.papers.rl._onpolicy import ActorCritic, Episodes, NumpyActor, collect, make_vec_env

SPACE = gymnasium.spaces.Box(-2.0, 2.0, (1,), np.float32)


def naive_gae_row0(r, v, nv, gamma, lam):
    """A_0 = sum_l (gamma lambda)^l delta_l over one episode of length T truncated at its end (Eq. 16 as written)."""
    return sum((gamma * lam) ** t * (r[t] + gamma * nv[t] - v[t]) for t in range(len(r)))


def test_batched_pendulum_equals_gymnasium_step_for_step():
    rng = np.random.default_rng(0)
    B, T = 4, 300
    envs = [gymnasium.make("Pendulum-v1", max_episode_steps=T + 1).unwrapped for _ in range(B)]
    theta, theta_dot = rng.uniform(-np.pi, np.pi, B), rng.uniform(-8, 8, B)  # speeds up to the clip
    for env, th, thd in zip(envs, theta, theta_dot):
        env.reset(seed=0)
        env.state = np.array([th, thd])
    for _ in range(T):
        u = rng.uniform(-3, 3, B).astype(np.float32)  # float32 as the policy's; beyond the torque limit: clipped
        theta, theta_dot, reward = paper.pendulum_step(theta, theta_dot, u)
        steps = [env.step(u[i:i + 1]) for i, env in enumerate(envs)]
        np.testing.assert_allclose(paper.pendulum_obs(theta, theta_dot), np.stack([s[0] for s in steps]), atol=1e-6)
        np.testing.assert_allclose(reward, [s[1] for s in steps], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.stack([theta, theta_dot], 1), np.stack([env.state for env in envs]), rtol=1e-9)


def test_auc_over_steps_hand_computed():
    # batch 1 (steps 0-1000): four episodes of -10 end at 1000; batch 2 (1000-2000): one episode of 0 ends at 2000.
    # Over env steps: (-10 * 1000 + 0 * 1000) / 2000 = -5 (over episodes it would be -8).
    assert paper.auc_over_steps([1000] * 4 + [2000], [-10.0] * 4 + [0.0]) == pytest.approx(-5.0)
    # unequal stretches: -4 held over 500 steps, 2 over the next 1000 -> (-2000 + 2000) / 1500 = 0
    assert paper.auc_over_steps([500, 1500], [-4.0, 2.0]) == pytest.approx(0.0)


def test_auc_over_steps_equals_a_per_step_average():
    rng = np.random.default_rng(1)
    ends = np.sort(rng.choice(np.arange(1, 400), size=12, replace=False))
    steps = np.repeat(ends, rng.integers(1, 5, len(ends)))
    returns = rng.normal(size=len(steps))
    curve = np.empty(ends[-1])  # the curve at every env step 1..last: the mean return of the next batch to end
    prev = 0
    for e in ends:
        curve[prev:e] = returns[steps == e].mean()
        prev = e
    assert paper.auc_over_steps(steps, returns) == pytest.approx(curve.mean())


def test_bias_variance_hand_computed_and_naive():
    adv = np.array([[1.0, 3.0], [2.0, 2.0]])
    ref = np.array([[0.0, 0.0], [4.0, 0.0]])
    # means: adv (2, 2), ref (0, 2) -> bias mean(|2|, |0|) = 1; variances (ddof 1): (2, 0) -> 1
    assert paper.bias_variance(adv, ref) == pytest.approx((1.0, 1.0))
    rng = np.random.default_rng(2)
    adv, ref = rng.normal(size=(5, 7)), rng.normal(1.0, 2.0, size=(5, 7))
    import statistics

    bias = np.mean([abs(statistics.fmean(a) - statistics.fmean(r)) for a, r in zip(adv, ref)])
    var = np.mean([statistics.variance(a) for a in adv])
    assert paper.bias_variance(adv, ref) == pytest.approx((bias, var))


def test_rank_correlation():
    assert paper.rank_correlation([0, 0.5, 1], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert paper.rank_correlation([0, 0.5, 0.9, 0.96, 0.99, 1], [1, 3, 2, 4, 5, 6]) == pytest.approx(1 - 12 / 210)


def _actor(seed=0, zero_critic=False):
    model = ActorCritic(3, SPACE, (16,), seed=seed)
    if zero_critic:
        with torch.no_grad():
            model.v_head.weight.zero_()
            model.v_head.bias.zero_()
    return NumpyActor(model, SPACE)


def test_advantage_samples_with_a_zero_critic_are_discounted_reward_sums():
    # V = 0: GAE(lambda)_0 = sum_l (gamma lambda)^l r_l, A_MC = sum_l gamma^l r_l; the same rollouts via the same seed.
    actor, gamma, K, M = _actor(zero_critic=True), 0.9, 3, 4
    rng = np.random.default_rng(3)
    theta0, theta_dot0 = rng.uniform(-np.pi, np.pi, K), rng.uniform(-1, 1, K)
    a0 = rng.uniform(-2, 2, (K, 1)).astype(np.float32)
    adv, ref, v0 = paper.advantage_samples(actor, theta0, theta_dot0, a0, M, np.random.default_rng(4), gamma,
                                           (0.0, 0.5, 1.0), value_scale=1.0)
    r = paper.continuation_rollouts(actor, np.repeat(theta0, M), np.repeat(theta_dot0, M), np.repeat(a0, M, axis=0),
                                    np.random.default_rng(4), 1.0)["rewards"]
    disc = gamma ** np.arange(paper.EPISODE)[:, None]
    np.testing.assert_allclose(ref, (disc * r).sum(0).reshape(K, M), rtol=1e-10)
    for lam in (0.0, 0.5, 1.0):
        np.testing.assert_allclose(adv[lam], ((gamma * lam) ** np.arange(paper.EPISODE)[:, None] * r).sum(0)
                                   .reshape(K, M), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(v0, 0.0)


def test_advantage_samples_with_a_real_critic_against_naive_sums():
    actor, gamma, K, M = _actor(seed=1), 0.95, 2, 3
    rng = np.random.default_rng(5)
    theta0, theta_dot0 = rng.uniform(-np.pi, np.pi, K), rng.uniform(-1, 1, K)
    a0 = rng.uniform(-2, 2, (K, 1)).astype(np.float32)
    adv, ref, _ = paper.advantage_samples(actor, theta0, theta_dot0, a0, M, np.random.default_rng(6), gamma,
                                          (0.0, 0.9), value_scale=0.5)
    ro = paper.continuation_rollouts(actor, np.repeat(theta0, M), np.repeat(theta_dot0, M), np.repeat(a0, M, axis=0),
                                     np.random.default_rng(6), 0.5)
    assert ro["dones"][-1].all() and not ro["dones"][:-1].any() and not ro["terminated"].any()  # truncated, once
    for b in range(K * M):
        r, v, nv = ro["rewards"][:, b], ro["values"][:, b], ro["next_values"][:, b]
        assert nv[-1] != 0.0  # the time limit bootstraps with V(s_T)
        for lam in (0.0, 0.9):
            assert adv[lam].reshape(-1)[b] == pytest.approx(naive_gae_row0(r, v, nv, gamma, lam), rel=1e-9)
        mc = sum(gamma**t * r[t] for t in range(len(r))) + gamma ** len(r) * nv[-1] - v[0]  # Monte Carlo advantage
        assert ref.reshape(-1)[b] == pytest.approx(mc, rel=1e-9)
    # the first step is deterministic given (s_0, a_0): lambda = 0 has no variance across continuations
    assert np.ptp(adv[0.0], axis=1).max() < 1e-6  # (float32 network: equal to rounding)


def test_mechanism_bias_is_zero_at_lambda_one_and_variance_zero_at_lambda_zero():
    cfg = replace(paper.PRESETS["quick"], mech_states=3, mech_rollouts=8, mech_fit_episodes=2, mech_vf_steps=5,
                  hidden=(16,))
    out = paper.mechanism(cfg, seed=0)
    assert out["mech/bias_lam=1"] == 0.0 and out["mech/var_lam=0"] < 1e-12
    assert out["mech/bias_lam=0"] > 0 and out["mech/var_lam=1"] > 0
    assert out == paper.mechanism(cfg, seed=0)  # deterministic in the seed


def test_one_trpo_update_on_a_whole_episode_batch_uses_gae(monkeypatch):
    """One whole update step of the sweep's learner (TRPO with this paper's estimator) on a real Pendulum-v1 batch
    of whole episodes: the advantages TRPO steps on are naive GAE(gamma, lambda), normalised, and V is regressed
    on the discounted returns bootstrapped at the time limit."""
    gamma, lam = 0.9, 0.7
    envs = make_vec_env("Pendulum-v1", 2, seed=0, algorithm="TRPO")
    model = ActorCritic(3, envs.single_action_space, (16,), seed=0)
    actor = NumpyActor(model, envs.single_action_space)
    obs = np.asarray(envs.reset(seed=0)[0], np.float32)
    ro, _ = collect(envs, actor, obs, paper.EPISODE, np.random.default_rng(0), Episodes(2), 0)
    assert ro["dones"][-1].all() and not ro["dones"][:-1].any() and not ro["terminated"].any()
    seen = {}

    def fake_step(model, obs, actions, old_logp, adv, *args):
        seen["adv"] = adv.numpy().copy()
        return {"kl": 0.0, "improvement": 0.0, "step_frac": 0.0}

    monkeypatch.setattr(trpo, "trpo_step", fake_step)
    cfg = replace(trpo.PRESETS["quick"], gamma=gamma, vf_epochs=1, vf_minibatch=10_000, vf_lr=0.1)
    opt = torch.optim.SGD([*model.v_body.parameters(), *model.v_head.parameters()], lr=0.1)
    x = torch.as_tensor(ro["obs"].reshape(-1, 3))
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    trpo.make_update(model, opt, cfg, advantages=paper.gae_advantages(lam))(ro, 0.0, np.random.default_rng(0))
    expected = np.stack([naive_gae_row_all(ro, n, gamma, lam) for n in range(2)], axis=1).reshape(-1)
    expected = (expected - expected.mean()) / (expected.std(ddof=1) + 1e-8)
    np.testing.assert_allclose(seen["adv"], expected, rtol=1e-4, atol=1e-4)
    # V's step: one SGD step on 0.5 mean (V - G)^2, G the discounted return to the time limit + gamma^k V(s_T)
    G = np.zeros((paper.EPISODE, 2))
    for n in range(2):
        run = ro["next_values"][-1, n]
        for t in range(paper.EPISODE - 1, -1, -1):
            run = ro["rewards"][t, n] + gamma * run
            G[t, n] = run
    probe = ActorCritic(3, envs.single_action_space, (16,), seed=0)
    probe.load_state_dict(before)
    loss = 0.5 * (probe.value(x) - torch.as_tensor(G.reshape(-1), dtype=torch.float32)).pow(2).mean()
    loss.backward()
    np.testing.assert_allclose(model.v_head.bias.detach(), before["v_head.bias"] - 0.1 * probe.v_head.bias.grad,
                               rtol=1e-5)


def naive_gae_row_all(ro, n, gamma, lam):
    r, v, nv = ro["rewards"][:, n], ro["values"][:, n], ro["next_values"][:, n]
    return np.array([naive_gae_row0(r[t:], v[t:], nv[t:], gamma, lam) for t in range(len(r))])


def test_continuation_rollouts_values_are_in_reward_units():
    # V(s_0) is known without stepping: the critic at the start states, divided by the scale the rewards were
    # multiplied by for learning (so that A = Q - V compares like with like).
    actor, B, scale = _actor(seed=2), 4, 0.25
    rng = np.random.default_rng(8)
    theta, theta_dot = rng.uniform(-np.pi, np.pi, B), rng.uniform(-1, 1, B)
    a0 = rng.uniform(-2, 2, (B, 1)).astype(np.float32)
    ro = paper.continuation_rollouts(actor, theta, theta_dot, a0, np.random.default_rng(9), scale)
    v0 = actor.value(paper.pendulum_obs(theta, theta_dot))
    assert np.abs(v0).min() > 1e-3  # a scale error shows
    np.testing.assert_allclose(ro["values"][0], v0 / scale, rtol=1e-6)
    np.testing.assert_allclose(ro["next_values"][:-1], ro["values"][1:])  # V(s_{t+1}) is the next row's V(s_t)
    # the first reward is that of a_0 from s_0, whatever the policy would have done
    np.testing.assert_allclose(ro["rewards"][0], paper.pendulum_step(theta, theta_dot, a0[:, 0])[2])


def test_mechanism_ratios_and_ranks_are_those_of_its_per_lambda_entries():
    cfg = replace(paper.PRESETS["quick"], mech_states=3, mech_rollouts=8, mech_fit_episodes=2, mech_vf_steps=5,
                  hidden=(16,))
    out = paper.mechanism(cfg, seed=1)
    assert out["mech/bias_ratio"] == pytest.approx(out["mech/bias_lam=0.96"] / out["mech/bias_lam=0"])
    assert out["mech/var_ratio"] == pytest.approx(out["mech/var_lam=0.96"] / out["mech/var_lam=1"])
    lams = list(cfg.lambdas)
    var = [out[f"mech/var_lam={lam:g}"] for lam in lams]
    bias = [out[f"mech/bias_lam={lam:g}"] for lam in lams]
    assert out["mech/var_rank"] == pytest.approx(paper.rank_correlation(lams, var))
    assert out["mech/bias_rank"] == pytest.approx(paper.rank_correlation(lams, bias))


def test_the_mechanisms_episodes_start_from_pendulums_reset_distribution(monkeypatch):
    """Both the imperfect V's fitting episodes and the K measured start states are drawn as Pendulum-v1 resets:
    theta ~ U(-pi, pi), theta_dot ~ U(-1, 1); the first draw of the mechanism's generator is the fit's thetas."""
    cfg = replace(paper.PRESETS["quick"], mech_states=40, mech_rollouts=2, mech_fit_episodes=30, mech_vf_steps=1,
                  hidden=(8,))
    calls = []
    real = paper.pendulum_obs

    def spy(theta, theta_dot):
        calls.append((np.array(theta), np.array(theta_dot)))
        return real(theta, theta_dot)

    monkeypatch.setattr(paper, "pendulum_obs", spy)
    paper.mechanism(cfg, seed=0)
    fit_theta, fit_dot = calls[0]
    np.testing.assert_array_equal(fit_theta, np.random.default_rng([0, 9]).uniform(-np.pi, np.pi, 30))
    starts = [c for c in calls if c[0].shape == (40,)][0]  # the K start states, before any step
    for theta, dot in ((fit_theta, fit_dot), starts):
        assert np.all(np.abs(theta) <= np.pi) and theta.min() < -1.5 and theta.max() > 1.5
        assert np.all(np.abs(dot) <= 1.0) and dot.min() < -0.3 and dot.max() > 0.3
