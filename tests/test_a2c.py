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
        for name, p in model.named_parameters():  # biases start at zero; a trained net's are not
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
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


# ---- one whole update against an independent computation ------------------------------------------------
def naive_nstep_returns(rollout, gamma):
    """R_t by its definition, one actor and one t at a time: rewards summed forward to the episode's or the
    rollout's end, then gamma^k V of the state reached (0 where the episode terminated)."""
    T, N = rollout["rewards"].shape
    R = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, k = 0.0, t
            while True:
                total += gamma ** (k - t) * rollout["rewards"][k, n]
                if rollout["dones"][k, n] or k == T - 1:
                    boot = 0.0 if rollout["terminated"][k, n] else rollout["next_values"][k, n]
                    total += gamma ** (k - t + 1) * boot
                    break
                k += 1
            R[t, n] = total
    return R


def fixed_rollout(T=5, N=3, obs_dim=3, n_actions=2, seed=0):
    """A (T, N) rollout with an episode that terminates (env 0, t=1: its next value must be ignored), one that
    is truncated (env 1, t=2: bootstraps from V of its final observation) and one that runs on (env 2)."""
    rng = np.random.default_rng(seed)
    ro = {"obs": rng.normal(size=(T, N, obs_dim)).astype(np.float32),
          "actions": rng.integers(n_actions, size=(T, N)),
          "rewards": rng.normal(1.0, 0.5, size=(T, N)).astype(np.float32),
          "values": rng.normal(size=(T, N)).astype(np.float32),
          "next_values": rng.normal(3.0, 1.0, size=(T, N)).astype(np.float32),
          "logp": rng.normal(-0.7, 0.1, size=(T, N)).astype(np.float32),
          "terminated": np.zeros((T, N), bool), "dones": np.zeros((T, N), bool)}
    ro["terminated"][1, 0] = ro["dones"][1, 0] = True
    ro["dones"][2, 1] = True
    return ro


@pytest.mark.parametrize("anneal", [False, True])
def test_one_update_equals_an_independent_autograd_step(anneal):
    """a2c.make_update, the closure `train` runs, against the loss written from the paper: n-step returns by
    their definition, A = R - V with no gradient into V through the policy term, +beta H, c (R - V)^2."""
    cfg = dataclasses.replace(a2c.PRESETS["quick"], gamma=0.9, lr=0.05, ent_coef=0.3, vf_coef=0.7, anneal_lr=anneal,
                              max_grad_norm=0.0)
    model = ActorCritic(3, gymnasium.spaces.Discrete(2), hidden=(4,), seed=0)
    with torch.no_grad():
        model.pi_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))  # a non-uniform policy
    ref = ActorCritic(3, gymnasium.spaces.Discrete(2), hidden=(4,), seed=0)
    ref.load_state_dict(model.state_dict())
    ro = fixed_rollout()
    update = a2c.make_update(model, torch.optim.SGD(model.parameters(), lr=cfg.lr), cfg)
    update(ro, 0.5, np.random.default_rng(0))

    obs = torch.as_tensor(ro["obs"].reshape(-1, 3))
    actions = torch.as_tensor(ro["actions"].reshape(-1))
    R = torch.as_tensor(naive_nstep_returns(ro, cfg.gamma).reshape(-1), dtype=torch.float32)
    d = torch.distributions.Categorical(logits=ref.pi_head(ref.pi_body(obs)))
    V = ref.v_head(ref.v_body(obs)).squeeze(-1)
    A = R - V.detach()
    loss = (-(d.log_prob(actions) * A).mean() - cfg.ent_coef * d.entropy().mean()
            + cfg.vf_coef * 0.5 * ((R - V) ** 2).mean())
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    lr = cfg.lr * (0.5 if anneal else 1.0)
    for (name, p), p0, g in zip(model.named_parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p.detach(), p0.detach() - lr * g, rtol=1e-5, atol=1e-6, msg=name)
    moved = [n for (n, p), p0 in zip(model.named_parameters(), ref.parameters()) if not torch.equal(p, p0)]
    assert moved and any(n.startswith("v_") for n in moved) and any(n.startswith("pi_") for n in moved)


def test_nstep_returns_by_definition():
    ro = fixed_rollout(T=6, N=4, seed=3)
    ro["terminated"][4, 2] = ro["dones"][4, 2] = True
    ro["dones"][0, 3] = True
    got = a2c.nstep_returns(ro["rewards"], ro["next_values"], ro["terminated"], ro["dones"], 0.95)
    np.testing.assert_allclose(got, naive_nstep_returns(ro, 0.95), rtol=1e-6)


def test_one_update_clips_the_global_gradient_norm():
    """With max_grad_norm binding, the step is the hand-written loss's gradient rescaled as one vector to that norm
    (every parameter by the same factor max_norm / ||g||), not clipped element by element."""
    cfg = dataclasses.replace(a2c.PRESETS["quick"], gamma=0.9, lr=0.05, ent_coef=0.3, vf_coef=0.7, anneal_lr=False,
                              max_grad_norm=0.1)
    model = ActorCritic(3, gymnasium.spaces.Discrete(2), hidden=(4,), seed=0)
    with torch.no_grad():
        model.pi_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    ref = ActorCritic(3, gymnasium.spaces.Discrete(2), hidden=(4,), seed=0)
    ref.load_state_dict(model.state_dict())
    ro = fixed_rollout()
    a2c.make_update(model, torch.optim.SGD(model.parameters(), lr=cfg.lr), cfg)(ro, 0.0, np.random.default_rng(0))

    obs = torch.as_tensor(ro["obs"].reshape(-1, 3))
    actions = torch.as_tensor(ro["actions"].reshape(-1))
    R = torch.as_tensor(naive_nstep_returns(ro, cfg.gamma).reshape(-1), dtype=torch.float32)
    d = torch.distributions.Categorical(logits=ref.pi_head(ref.pi_body(obs)))
    V = ref.v_head(ref.v_body(obs)).squeeze(-1)
    loss = (-(d.log_prob(actions) * (R - V.detach())).mean() - cfg.ent_coef * d.entropy().mean()
            + cfg.vf_coef * 0.5 * ((R - V) ** 2).mean())
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 3 * cfg.max_grad_norm  # the clip binds
    assert max(g.abs().max() for g in grads) > cfg.max_grad_norm  # and element-wise clipping would differ
    scale = cfg.max_grad_norm / (norm + 1e-6)
    for (name, p), p0, g in zip(model.named_parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p.detach(), p0.detach() - cfg.lr * scale * g, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name,cls", [("rmsprop", torch.optim.RMSprop), ("adam", torch.optim.Adam)])
def test_the_optimizer_is_the_one_the_config_names(name, cls, monkeypatch, tmp_path):
    """The quick preset's RMSProp (the paper's, shared statistics, decay 0.99) or Adam, both at the config's lr."""
    seen = {}

    def spy(envs, env_id, model, update, extra, cfg, *args, **kwargs):
        seen["opt"] = extra["opt"]
        raise Interrupted(str(tmp_path), "a2c")

    monkeypatch.setattr(a2c, "onpolicy_loop", spy)
    with pytest.raises(Interrupted):
        execute("a2c", "quick", 0, [f"optimizer={name}", "lr=0.003", "n_envs=2"], tmp_path, progress=False)
    opt = seen["opt"]
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.003
    assert a2c.PRESETS["quick"].optimizer == "rmsprop"
    if name == "rmsprop":
        assert opt.param_groups[0]["alpha"] == 0.99
