"""DDPG (Lillicrap et al. 2016): targets, Polyak averaging, action scaling, buffer, smoke run and resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.runner import execute
from seminal.papers.rl import ddpg
from seminal.papers.rl._offpolicy import EnsembleMLP, ReplayBuffer, make_box_env, scale_action

TINY = ["total_steps=400", "start_steps=200", "batch_size=32", "hidden=(16,16)", "eval_every=200",
        "eval_episodes=1", "mc_episodes=1", "mc_states=20", "mc_horizon=20", "checkpoint_every=300"]


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


def test_scale_action_is_exact_at_the_bounds():
    low, high = np.array([-2.0, 0.1, -0.3]), np.array([2.0, 0.7, 1.9])
    assert np.array_equal(scale_action(-np.ones(3), low, high), low.astype(np.float32))
    assert np.array_equal(scale_action(np.ones(3), low, high), high.astype(np.float32))
    assert np.allclose(scale_action(np.zeros(3), low, high), (low + high) / 2)
    assert np.array_equal(scale_action(5 * np.ones(3), low, high), high.astype(np.float32))  # clipped


def test_discounted_returns_match_direct_sums():
    r = np.array([1.0, -2.0, 3.0, 0.5])
    g = ddpg.discounted_returns(r, 0.9)
    for t in range(4):
        assert g[t] == pytest.approx(sum(0.9**k * r[t + k] for k in range(4 - t)))


def test_ou_noise_has_the_stationary_variance():
    # x <- (1 - theta) x + sigma eps: stationary variance sigma^2 / (1 - (1 - theta)^2)
    rng = np.random.default_rng(0)
    x, xs = np.zeros(2000), []
    for _ in range(300):
        x = ddpg.ou_step(x, 0.15, 0.2, rng)
        xs.append(x.copy())
    var = np.var(np.stack(xs[100:]))
    assert var == pytest.approx(0.2**2 / (1 - 0.85**2), rel=0.05)


def test_replay_buffer_returns_what_was_stored_and_wraps():
    buf = ReplayBuffer(3, obs_dim=2, act_dim=1)
    for k in range(5):  # the first two are overwritten
        buf.add(np.array([k, k + 0.5]), np.array([-k / 10]), float(k), np.array([k + 1, k + 1.5]), k == 4)
    s, a, r, s2, d = buf.sample(np.random.default_rng(0), 64)
    assert buf.size == 3 and set(r.tolist()) == {2.0, 3.0, 4.0}
    assert torch.allclose(s[:, 0], r) and torch.allclose(a[:, 0], -r / 10) and torch.allclose(s2[:, 1], r + 1.5)
    assert torch.equal(d, (r == 4).float())


def test_ensemble_equals_separate_networks_and_frozen_blocks_weight_grads():
    net = EnsembleMLP(2, (5, 8, 1))
    x = torch.randn(7, 5, requires_grad=True)
    out = net(x)  # (2, 7, 1)
    for k in range(2):
        h = torch.relu(x @ net.weights[0][k] + net.biases[0][k])
        assert torch.allclose(out[k], h @ net.weights[1][k] + net.biases[1][k], atol=1e-6)
    net(x, frozen=True).sum().backward()
    assert x.grad is not None and all(w.grad is None for w in net.weights)


def test_errors_for_wrong_envs():
    with pytest.raises(SeminalError, match="unknown env id"):
        make_box_env("NoSuchEnv-v9", "DDPG")
    with pytest.raises(SeminalError, match="continuous"):
        make_box_env("CartPole-v1", "DDPG")
    with pytest.raises(SeminalError, match="mujoco"):
        execute("ddpg", "halfcheetah", 0, ["total_steps=10"], "/tmp/unused-ddpg-test")


def test_smoke_run_same_seed_same_numbers_and_resume(tmp_path):
    a = execute("ddpg", "quick", 0, TINY, tmp_path / "a", progress=False)
    b = execute("ddpg", "quick", 0, TINY, tmp_path / "b", progress=False)
    assert np.isfinite(a["metrics"]["eval/return"]) and a["metrics"] == b["metrics"]
    from seminal.core.errors import Interrupted

    with pytest.raises(Interrupted):
        execute("ddpg", "quick", 0, TINY, tmp_path / "c", progress=False, stop_after_checkpoints=1)
    run_dir = next((tmp_path / "c" / "ddpg").iterdir())
    resumed = execute("ddpg", "quick", 0, None, resume_dir=run_dir, progress=False)
    assert resumed["resumed"] and np.isfinite(resumed["metrics"]["eval/return"])


def test_presets_are_consistent():
    for cfg in ddpg.PRESETS.values():
        assert dataclasses.is_dataclass(cfg) and cfg.start_steps < cfg.total_steps
