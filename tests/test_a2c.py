"""A2C: the NumPy actor equals the torch network, the loss's gradients, bad input, resume, smoke run."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
import torch

from seminal.core.errors import Interrupted, SeminalError
from seminal.core.runner import execute
from seminal.papers.rl import a2c
from seminal.papers.rl._onpolicy import ActorCritic, NumpyActor
from seminal.papers.rl.a2c import a2c_loss

TINY = ["total_steps=1200", "n_envs=4", "eval_every=600", "eval_episodes=2", "checkpoint_every=20"]


@pytest.mark.parametrize("space", [gymnasium.spaces.Discrete(3), gymnasium.spaces.Box(-1, 1, (2,))])
@pytest.mark.parametrize("shared", [False, True])
def test_numpy_actor_equals_the_torch_network(space, shared):
    model = ActorCritic(5, space, hidden=(16, 8), shared=shared, seed=0)
    with torch.no_grad():
        model.pi_head.weight.mul_(100.0)  # a non-uniform policy
        if model.log_std is not None:
            model.log_std.fill_(-0.7)
    actor = NumpyActor(model, space)
    obs = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    a, logp, v = actor.act(obs, np.random.default_rng(1))
    t_obs = torch.as_tensor(obs)
    with torch.no_grad():
        lp, ent = model.log_prob_entropy(t_obs, torch.as_tensor(a))
        d = model.dist(t_obs)  # torch.distributions: the reference for the written-out hot path
        ref_lp = d.log_prob(torch.as_tensor(a)) if model.discrete else d.log_prob(torch.as_tensor(a)).sum(-1)
        ref_ent = d.entropy() if model.discrete else d.entropy().sum(-1)
        np.testing.assert_allclose(v, model.value(t_obs).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lp.numpy(), ref_lp.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ent.numpy(), ref_ent.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logp, ref_lp.numpy(), rtol=1e-4, atol=1e-5)
    if model.discrete:  # sampled actions follow pi: frequencies over many draws match the probabilities
        one = np.repeat(obs[:1], 20000, axis=0)
        draws = actor.act(one, np.random.default_rng(2))[0]
        probs = model.dist(t_obs[:1]).probs[0].detach().numpy()
        np.testing.assert_allclose(np.bincount(draws, minlength=3) / 20000, probs, atol=0.015)


def test_a2c_loss_gradients():
    logp = torch.tensor([-0.5, -1.0], requires_grad=True)
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    returns = torch.tensor([3.0, 1.0])
    loss, _ = a2c_loss(logp, torch.zeros(2), values, returns, ent_coef=0.0, vf_coef=1.0)
    loss.backward()
    # policy term: -(1/B) sum A_t log pi, A = R - V held fixed -> d/dlogp = -A/B
    np.testing.assert_allclose(logp.grad.numpy(), [-(3 - 1) / 2, -(1 - 2) / 2])
    # value term: (1/2B) sum (R - V)^2 -> d/dV = -(R - V)/B; the policy term adds nothing to V's gradient
    np.testing.assert_allclose(values.grad.numpy(), [-(3 - 1) / 2, -(1 - 2) / 2])


@pytest.mark.parametrize("env_id, match", [("Pendulum-v1", "discrete actions"), ("CartPole-v9", "unknown env id")])
def test_a2c_rejects_envs_it_cannot_handle(tmp_path, env_id, match):
    with pytest.raises(SeminalError, match=match):
        execute("a2c", "quick", 0, [f"env_id={env_id}"], tmp_path, progress=False)


def test_smoke_deterministic_and_resume(tmp_path):
    a = execute("a2c", "quick", 0, TINY, tmp_path / "a", progress=False)
    b = execute("a2c", "quick", 0, TINY, tmp_path / "b", progress=False)
    assert a["metrics"] == {**b["metrics"], "train/steps_per_s": a["metrics"]["train/steps_per_s"],
                            "train/seconds": a["metrics"]["train/seconds"]}
    with pytest.raises(Interrupted):
        execute("a2c", "quick", 0, TINY, tmp_path / "c", progress=False, stop_after_checkpoints=1)
    run_dir = next((tmp_path / "c").glob("a2c/*"))
    resumed = execute("a2c", "quick", 0, None, resume_dir=run_dir, progress=False)
    assert resumed["resumed"] and np.isfinite(resumed["metrics"]["eval/return"])
    assert dataclasses.asdict(a2c.PRESETS["quick"])["n_steps"] == 5  # t_max = 5, the paper's
