"""DDPG (Lillicrap et al. 2016): one whole update against an independent computation, Polyak, noise, errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call

from seminal.core.errors import SeminalError
from seminal.core.runner import execute
from seminal.papers.rl import ddpg
from seminal.papers.rl._offpolicy import make_box_env, make_nets

TINY = ["total_steps=400", "start_steps=200", "batch_size=32", "hidden=(16,16)", "eval_every=200",
        "eval_episodes=1", "mc_episodes=1", "mc_states=20", "mc_horizon=20", "checkpoint_every=300"]


# ---- an independent DDPG step: plain matmuls, autograd for the gradients, SGD written out ---------------------
def q_member(w, b, k, s, a):
    """Member k of the critic ensemble, written as separate matmuls: (B,)."""
    h = torch.cat([s, a], -1)
    for i in range(len(w)):
        h = h @ w[i][k] + b[i][k, 0]
        if i < len(w) - 1:
            h = torch.relu(h)
    return h[:, 0]


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def critic_lists(params):
    n = len(params) // 2
    return [params[f"weights.{i}"] for i in range(n)], [params[f"biases.{i}"] for i in range(n)]


def make_case(critics, seed=0, act_dim=2):
    """Nets (8x8) whose targets differ from the online nets, SGD optimizers, and a batch with terminals."""
    torch.manual_seed(seed)
    nets = make_nets(3, act_dim, (8, 8), critics, 1e-3, 1e-3)
    with torch.no_grad():
        for p in (*nets.actor_target.parameters(), *nets.critic_target.parameters()):
            p.add_(0.3 * torch.randn_like(p))  # a target net that is not the online net
    nets.actor_opt = torch.optim.SGD(nets.actor.parameters(), lr=0.05)
    nets.critic_opt = torch.optim.SGD(nets.critic.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    B = 6
    batch = (torch.randn(B, 3, generator=g), torch.rand(B, act_dim, generator=g) * 2 - 1,
             torch.randn(B, generator=g), torch.randn(B, 3, generator=g), torch.tensor([0.0, 1, 0, 0, 1, 0]))
    return nets, batch


def expected_ddpg_step(nets, batch, gamma, tau, lr_actor=0.05, lr_critic=0.1):
    """The parameters after one DDPG step, computed independently of `ddpg_update`."""
    s, a, r, s2, d = batch
    actor, critic = snapshot(nets.actor), snapshot(nets.critic)
    actor_t, critic_t = snapshot(nets.actor_target), snapshot(nets.critic_target)
    wt, bt = critic_lists(critic_t)
    mu_t = functional_call(nets.actor_target, actor_t, (s2,))
    y = r + gamma * (1 - d) * q_member(wt, bt, 0, s2, mu_t)  # Eq. (5): target actor and target critic
    theta = {n: p.clone().requires_grad_() for n, p in critic.items()}
    w, b = critic_lists(theta)
    loss = ((q_member(w, b, 0, s, a) - y) ** 2).mean()  # Eq. (4)
    grads = torch.autograd.grad(loss, list(theta.values()))
    critic_new = {n: p.detach() - lr_critic * g for (n, p), g in zip(theta.items(), grads)}
    phi = {n: p.clone().requires_grad_() for n, p in actor.items()}
    w, b = critic_lists(critic_new)  # the actor follows the critic after its step
    j = -q_member(w, b, 0, s, functional_call(nets.actor, phi, (s,))).mean()  # Eq. (6)
    grads = torch.autograd.grad(j, list(phi.values()))
    actor_new = {n: p.detach() - lr_actor * g for (n, p), g in zip(phi.items(), grads)}
    polyak = lambda t, o: {n: tau * o[n] + (1 - tau) * t[n] for n in t}  # noqa: E731 - theta' <- tau theta + ...
    return {"actor": actor_new, "critic": critic_new, "actor_target": polyak(actor_t, actor_new),
            "critic_target": polyak(critic_t, critic_new)}, loss.detach()


def assert_nets_equal(nets, want, names=("actor", "critic", "actor_target", "critic_target")):
    for name in names:
        got = dict(getattr(nets, name).named_parameters())
        for n, p in want[name].items():
            assert torch.allclose(got[n], p, atol=1e-6, rtol=1e-5), f"{name}.{n}"


def test_one_ddpg_update_matches_an_independent_computation():
    cfg = dataclasses.replace(ddpg.PRESETS["quick"], gamma=0.9, tau=0.2)
    nets, batch = make_case(critics=1)
    want, loss = expected_ddpg_step(nets, batch, cfg.gamma, cfg.tau)
    out = ddpg.ddpg_update(nets, batch, cfg, step=0)
    assert torch.allclose(out["critic_loss"], loss, rtol=1e-5)
    assert_nets_equal(nets, want)


def test_polyak_update_matches_hand_computation():
    target = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0]])]
    source = [torch.tensor([3.0, -2.0]), torch.tensor([[10.0]])]
    ddpg.polyak_update(target, source, tau=0.25)
    # theta' <- tau theta + (1 - tau) theta'
    assert torch.allclose(target[0], torch.tensor([0.25 * 3 + 0.75 * 1, 0.25 * -2 + 0.75 * 2]))
    assert torch.allclose(target[1], torch.tensor([[2.5]]))
    assert torch.equal(source[0], torch.tensor([3.0, -2.0]))  # the source is untouched


def test_ddpg_target_bootstraps_except_at_terminal_states():
    y = ddpg.ddpg_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), 0.9, torch.tensor([10.0, 10.0]))
    assert torch.allclose(y, torch.tensor([1.0 + 0.9 * 10.0, 1.0]))


def test_ou_noise_has_the_stationary_variance():
    # x <- (1 - theta) x + sigma eps: stationary variance sigma^2 / (1 - (1 - theta)^2)
    rng = np.random.default_rng(0)
    x, xs = np.zeros(2000), []
    for _ in range(300):
        x = ddpg.ou_step(x, 0.15, 0.2, rng)
        xs.append(x.copy())
    var = np.var(np.stack(xs[100:]))
    assert var == pytest.approx(0.2**2 / (1 - 0.85**2), rel=0.05)


@pytest.mark.parametrize("kind", ["gaussian", "ou"])
def test_exploration_adds_noise_of_the_set_scale_and_evaluates_greedily(kind):
    torch.manual_seed(0)
    actor = make_nets(3, 1, (8,), 1, 1e-3, 1e-3).actor
    obs = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    mu = actor(torch.as_tensor(obs)).detach().numpy()
    explore = ddpg.Exploration(actor, 1, kind, 0.1, 0.15, seed=0)
    assert np.array_equal(explore(obs, False), mu)
    steps = np.array([explore(obs, True)[0] for _ in range(4000)]) - mu[0]
    # the OU process's stationary std is sigma / sqrt(1 - (1 - theta)^2); Gaussian: sigma
    std = 0.1 / np.sqrt(1 - 0.85**2) if kind == "ou" else 0.1
    assert abs(steps[500:].mean()) < 0.03 and steps[500:].std() == pytest.approx(std, rel=0.15)
    explore.reset()
    assert np.array_equal(explore.x, np.zeros(1))


def test_the_mujoco_preset_fails_fast_without_the_extra_or_builds_its_env():
    env_id = ddpg.PRESETS["halfcheetah"].env_id
    if importlib.util.find_spec("mujoco") is None:
        with pytest.raises(SeminalError, match="mujoco"):
            execute("ddpg", "halfcheetah", 0, None, "/tmp/unused-ddpg-test")  # before any training
    else:
        env, low, high = make_box_env(env_id, "DDPG")
        assert env.action_space.shape == (6,) and np.all(low < high)


def test_smoke_run_same_seed_same_numbers(tmp_path):
    a = execute("ddpg", "quick", 0, TINY, tmp_path / "a", progress=False)
    b = execute("ddpg", "quick", 0, TINY, tmp_path / "b", progress=False)
    assert np.isfinite(a["metrics"]["eval/return"]) and a["metrics"] == b["metrics"]
    assert {"ddpg/q_bias_mean", "ddpg/q_bias_final"} <= set(a["metrics"])


def test_presets_are_consistent():
    for cfg in ddpg.PRESETS.values():
        assert dataclasses.is_dataclass(cfg) and cfg.start_steps < cfg.total_steps


def test_late_mean_averages_the_measurements_after_the_cut_by_hand():
    # the late half of a curve: the bias of a trained critic, not the early transient (Fig. 3 comparison)
    assert ddpg.late_mean([1000, 2000, 3000, 4000], [10.0, 20.0, 30.0, 50.0], after=2000) == pytest.approx(40.0)
    assert ddpg.late_mean([1000, 2000], [10.0, 20.0], after=5000) == pytest.approx(15.0)  # none after: all


@pytest.mark.parametrize("kind", ["gaussian", "ou"])
def test_exploration_clips_mu_plus_noise_to_the_unit_box(kind):
    """Alg. 1's a = mu(s) + N_t, clipped to [-1, 1]: with mu(s) near +-1 about half the draws cross the bound.
    Each output equals clip(mu + x) with x the noise the call drew (kept in `explore.x`)."""
    torch.manual_seed(0)
    actor = make_nets(3, 2, (8,), 1, 1e-3, 1e-3).actor
    last = [m for m in actor if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([3.0, -3.0]))  # mu(s) = (tanh 3, -tanh 3) = (0.995, -0.995) everywhere
    obs = np.zeros(3, dtype=np.float32)
    mu = np.tanh(np.array([3.0, -3.0]))
    explore = ddpg.Exploration(actor, 2, kind, 0.3, 0.15, seed=0)
    outs = []
    for _ in range(300):
        out = explore(obs, True)
        assert np.all(np.abs(out) <= 1.0)
        np.testing.assert_allclose(out, np.clip(mu + explore.x, -1.0, 1.0), atol=1e-6)
        outs.append(out)
    outs = np.array(outs)
    assert 0.2 < (outs[:, 0] == 1.0).mean() < 0.8 and 0.2 < (outs[:, 1] == -1.0).mean() < 0.8
    assert np.abs(explore.x).max() > 0.1  # the noise is there, at its scale


def test_the_reported_bias_is_the_mean_after_the_cut_of_the_run_actually_logged(tmp_path):
    """`ddpg/q_bias_mean` (the over-estimation number TD3's claims compare) from the run's own log: the critic's
    bias measured at steps 200 and 400 of a 400-step run; bias_after = 0.5 keeps only the one after step 200."""
    s = execute("ddpg", "quick", 0, TINY, tmp_path, progress=False)
    rows = [json.loads(line) for line in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["ddpg/q_bias"]) for r in rows if "ddpg/q_bias" in r]
    assert [t for t, _ in logged] == [200, 400] and logged[0][1] != logged[1][1]
    assert s["metrics"]["ddpg/q_bias_mean"] == logged[1][1] and s["metrics"]["ddpg/q_bias_final"] == logged[1][1]
