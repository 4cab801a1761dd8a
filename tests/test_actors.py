"""The distributed plumbing (papers/distributed_rl/_actors.py): the NumPy acting path against torch, sampling,
autoreset and truncation in an unroll, an actor's state round trip, the local runner's turns, and the one-line error
when ray is missing."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.papers.distributed_rl import _actors


def test_numpy_policy_equals_the_torch_network():
    net = _actors.PolicyNet(4, 3, (7, 5), seed=2)
    with torch.no_grad():  # biases start at zero; a trained net's are not, and the actors must add them
        for p in net.pi.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    obs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    logits, _ = net(torch.as_tensor(obs))
    assert np.allclose(_actors.numpy_logits(_actors.policy_weights(net), obs), logits.detach().numpy(), atol=1e-6)


def test_sampling_stays_finite_for_large_logits():
    """softmax is shift-invariant; subtracting the row's max keeps exp() finite where the logits are large."""
    logits = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0]])
    a, logp = _actors.sample(logits, np.random.default_rng(0))
    z = np.array([[0.0, 1.0, -1.0], [-1.0, -2.0, 0.0]])
    want = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert np.all(np.isfinite(logp)) and np.allclose(logp, want[np.arange(2), a])


def test_sampling_follows_the_softmax_and_returns_its_log_probabilities():
    logits = np.tile(np.log(np.array([[0.2, 0.5, 0.3]])), (60_000, 1))
    a, logp = _actors.sample(logits, np.random.default_rng(1))
    freq = np.bincount(a, minlength=3) / len(a)
    assert np.allclose(freq, [0.2, 0.5, 0.3], atol=0.01)
    assert np.allclose(logp, np.log([0.2, 0.5, 0.3])[a])


def test_unroll_autoresets_and_keeps_the_truncated_observation():
    actor = _actors.Actor("CartPole-v1", 2, 0, 0)
    for env in actor.envs:
        env._max_episode_steps = 3  # TimeLimit: truncate after 3 steps (a random policy rarely falls that fast)
    actor.set_weights(_actors.policy_weights(_actors.PolicyNet(4, 2, (4,), seed=0)), 5)
    u = actor.unroll(7)
    assert u["obs"].shape == (8, 2, 4) and u["actions"].shape == (7, 2) and u["version"] == 5
    ended = u["terminated"] | u["truncated"]
    assert ended[2].all() and ended[5].all() and ended.sum() == 4
    assert u["truncated"].sum() >= 1 and not (u["terminated"] & u["truncated"]).any()
    for t, i in zip(*np.nonzero(u["truncated"])):
        assert np.abs(u["final_obs"][t, i]).sum() > 0 and not np.array_equal(u["final_obs"][t, i], u["obs"][t + 1, i])
        assert np.abs(u["obs"][t + 1, i]).max() <= 0.05  # a fresh episode starts near the upright state
    assert np.all(u["final_obs"][~u["truncated"]] == 0)
    assert u["episodes"] == [3.0, 3.0, 3.0, 3.0]


def test_actor_state_round_trip_continues_exactly():
    weights = _actors.policy_weights(_actors.PolicyNet(4, 2, (4,), seed=0))
    a, b = _actors.Actor("CartPole-v1", 3, 4, 1), _actors.Actor("CartPole-v1", 3, 99, 0)
    a.set_weights(weights, 0)
    a.unroll(30)
    b.load(a.state())
    ua, ub = a.unroll(40), b.unroll(40)
    for key in ("obs", "actions", "behaviour_logp", "rewards", "terminated", "final_obs"):
        assert np.array_equal(ua[key], ub[key]), key
    assert ua["episodes"] == ub["episodes"]


def test_local_actors_take_turns_and_broadcast_reaches_all():
    runner = _actors.LocalActors(3, "CartPole-v1", 1, 0)
    runner.broadcast(_actors.policy_weights(_actors.PolicyNet(4, 2, (4,), seed=0)), 2)
    assert [u["actor"] for u in runner.unrolls(4, 2)] == [0, 1, 2, 0]
    assert all(actor.version == 2 for actor in runner.actors)
    batch = _actors.stack(runner.unrolls(2, 5))
    assert batch["obs"].shape == (6, 2, 4) and batch["rewards"].shape == (5, 2)


def test_ray_mode_without_ray_is_a_one_line_error(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(SeminalError, match=r"pip install 'seminal\[distributed\]'"):
        _actors.RayActors(1, "CartPole-v1", 1, 0)
