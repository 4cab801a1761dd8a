"""SAC (Haarnoja et al. 2018): tanh-squashed log-density, soft target, temperature, reuse and smoke runs."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math

import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.rl import make_env
from seminal.core.run import seed_everything
from seminal.core.runner import execute
from seminal.papers.rl import sac
from seminal.papers.rl._offpolicy import make_box_env

TINY = ["total_steps=300", "start_steps=150", "batch_size=32", "hidden=(16,16)", "eval_every=150",
        "eval_episodes=1", "checkpoint_every=200"]


def test_squashed_log_prob_is_the_change_of_variables():
    # log pi(a) = log N(u) - log |d tanh(u)/du|, with the derivative by central finite differences
    torch.manual_seed(0)
    mean, log_std, eps = (torch.randn(50, 3, dtype=torch.float64) for _ in range(3))
    log_std = 0.5 * log_std - 0.5  # |u| stays below ~6, where finite differences of tanh are accurate
    a, log_pi = sac.squashed_gaussian(mean, log_std, eps)
    u = mean + log_std.exp() * eps
    h = 1e-6
    jac = (torch.tanh(u + h) - torch.tanh(u - h)) / (2 * h)
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = (normal.log_prob(u) - jac.log()).sum(-1)
    assert torch.allclose(a, torch.tanh(u)) and torch.allclose(log_pi, expected, atol=1e-5)


def test_squashed_density_integrates_to_one_and_is_stable_far_out():
    a = torch.linspace(-1 + 1e-7, 1 - 1e-7, 400_001, dtype=torch.float64)
    mean, log_std = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    eps = (torch.atanh(a) - mean) / log_std.exp()
    _, log_pi = sac.squashed_gaussian(mean.expand(len(a), 1), log_std.expand(len(a), 1), eps[:, None])
    assert torch.trapezoid(log_pi.exp(), a).item() == pytest.approx(1.0, abs=1e-3)
    _, far = sac.squashed_gaussian(torch.tensor([[30.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]]))
    assert torch.isfinite(far).all()  # tanh(30) == 1 in float32, yet the log-density stays finite


def test_soft_q_target_by_hand():
    y = sac.soft_q_target(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), 0.9,
                          torch.tensor([[3.0, 5.0], [4.0, 1.0]]), 0.5, torch.tensor([-2.0, 7.0]))
    assert torch.allclose(y, torch.tensor([1.0 + 0.9 * (3.0 - 0.5 * -2.0), 2.0]))


@pytest.mark.parametrize("log_pi, rises", [(2.0, True), (-3.0, False)])
def test_temperature_rises_when_entropy_is_below_target(log_pi, rises):
    # target entropy -1: log pi = 2 means entropy -2 < -1 (alpha must rise); log pi = -3 means entropy 3
    log_alpha = torch.zeros((), requires_grad=True)
    sac.temperature_loss(log_alpha, torch.full((8,), log_pi), target_entropy=-1.0).backward()
    torch.optim.SGD([log_alpha], lr=0.1).step()
    assert (log_alpha.item() > 0) == rises


def test_squashed_log_prob_equals_torch_tanh_transformed_normal():
    torch.manual_seed(1)
    mean, log_std, eps = (torch.randn(64, 3, dtype=torch.float64) for _ in range(3))
    a, log_pi = sac.squashed_gaussian(mean, log_std.clamp(-2, 1), eps)
    dist = torch.distributions.Independent(torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.clamp(-2, 1).exp()), [torch.distributions.TanhTransform()]), 1)
    assert torch.allclose(log_pi, dist.log_prob(a), atol=1e-8)


# ---- one whole SAC step against an independent computation (float64, SGD written out) -----------------------
def _member(params, k, x):
    n = len(params) // 2
    for i in range(n):
        x = x @ params[f"weights.{i}"][k] + params[f"biases.{i}"][k, 0]
        if i < n - 1:
            x = torch.relu(x)
    return x[:, 0]


def _policy(actor, params, s, eps):
    """a = tanh(mean + std eps) and log pi(a|s) from torch.distributions (not `squashed_gaussian`)."""
    mean, log_std = torch.func.functional_call(actor, params, (s,))
    normal = torch.distributions.Normal(mean, log_std.exp())
    a = torch.tanh(mean + log_std.exp() * eps)
    dist = torch.distributions.Independent(
        torch.distributions.TransformedDistribution(normal, [torch.distributions.TanhTransform()]), 1)
    return a, dist.log_prob(a)


def _sac_case(auto_alpha=True):
    cfg = dataclasses.replace(sac.PRESETS["quick"], hidden=(8, 8), gamma=0.9, tau=0.2, alpha=0.3,
                              auto_alpha=auto_alpha)
    torch.manual_seed(0)
    agent = sac.make_agent(3, 2, cfg)
    agent.actor.double(), agent.critic.double(), agent.critic_target.double()
    with torch.no_grad():
        for p in agent.critic_target.parameters():
            p.add_(0.3 * torch.randn_like(p))  # target critics that are not the online critics
    agent.log_alpha = torch.tensor(math.log(cfg.alpha), dtype=torch.float64, requires_grad=auto_alpha)
    agent.actor_opt = torch.optim.SGD([*agent.actor.parameters()] + ([agent.log_alpha] if auto_alpha else []),
                                      lr=0.05)
    agent.critic_opt = torch.optim.SGD(agent.critic.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    B = 6
    batch = tuple(x.double() for x in (torch.randn(B, 3, generator=g), torch.rand(B, 2, generator=g) * 2 - 1,
                                        torch.randn(B, generator=g), torch.randn(B, 3, generator=g),
                                        torch.tensor([0.0, 1, 0, 0, 1, 0])))
    return cfg, agent, batch


def _expected_sac_step(cfg, agent, batch, target_entropy, seed):
    s, a, r, s2, d = batch
    snap = lambda m: {n: p.detach().clone() for n, p in m.named_parameters()}  # noqa: E731
    actor, critic, critic_t = snap(agent.actor), snap(agent.critic), snap(agent.critic_target)
    log_alpha = agent.log_alpha.detach().clone()
    alpha = log_alpha.exp()
    torch.manual_seed(seed)
    eps, eps2 = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)  # s, then s'
    a2, log_pi2 = _policy(agent.actor, actor, s2, eps2)
    q_t = torch.stack([_member(critic_t, k, torch.cat([s2, a2], -1)) for k in range(2)])
    y = r + cfg.gamma * (1 - d) * (q_t.min(0).values - alpha * log_pi2)  # the *target* critics, log pi of a'
    theta = {n: p.clone().requires_grad_() for n, p in critic.items()}
    loss = 0.5 * sum(((_member(theta, k, torch.cat([s, a], -1)) - y) ** 2).mean() for k in range(2))
    grads = torch.autograd.grad(loss, list(theta.values()))
    critic_new = {n: p.detach() - 0.1 * g for (n, p), g in zip(theta.items(), grads)}
    phi = {n: p.clone().requires_grad_() for n, p in actor.items()}
    a_pi, log_pi = _policy(agent.actor, phi, s, eps)
    q_pi = torch.stack([_member(critic_new, k, torch.cat([s, a_pi], -1)) for k in range(2)]).min(0).values
    j_pi = (alpha * log_pi - q_pi).mean()  # alpha a constant here
    grads = torch.autograd.grad(j_pi, list(phi.values()))
    actor_new = {n: p.detach() - 0.05 * g for (n, p), g in zip(phi.items(), grads)}
    # J(alpha) = -log alpha (log pi + H): d/dlog alpha = -(log pi + H), log pi a constant here
    log_alpha_new = log_alpha + 0.05 * (log_pi.detach() + target_entropy).mean() if cfg.auto_alpha else log_alpha
    target_new = {n: cfg.tau * critic_new[n] + (1 - cfg.tau) * critic_t[n] for n in critic_t}
    return {"actor": actor_new, "critic": critic_new, "critic_target": target_new}, log_alpha_new, loss.detach()


@pytest.mark.parametrize("auto_alpha", [True, False])
def test_one_sac_update_matches_an_independent_computation(auto_alpha):
    cfg, agent, batch = _sac_case(auto_alpha)
    want, log_alpha, loss = _expected_sac_step(cfg, agent, batch, -2.0, seed=5)
    torch.manual_seed(5)
    out = sac.sac_update(agent, batch, cfg, -2.0)
    assert torch.allclose(out["critic_loss"], loss, rtol=1e-9)
    for name, params in want.items():
        got = dict(getattr(agent, name).named_parameters())
        for n, p in params.items():
            assert torch.allclose(got[n], p, atol=1e-9), f"{name}.{n}"
    assert torch.allclose(agent.log_alpha.detach(), log_alpha, atol=1e-12)
    assert auto_alpha or agent.log_alpha.item() == pytest.approx(math.log(0.3))


def test_sac_refuses_discrete_and_unknown_envs():
    with pytest.raises(SeminalError, match="continuous"):
        execute("sac", "quick", 0, ["env_id=CartPole-v1"], "/tmp/unused-sac-test")
    with pytest.raises(SeminalError, match="unknown env id"):
        execute("sac", "quick", 0, ["env_id=Pendulum-v0-nope"], "/tmp/unused-sac-test")


def test_the_mujoco_preset_fails_fast_without_the_extra_or_builds_its_env():
    env_id = sac.PRESETS["halfcheetah"].env_id
    if importlib.util.find_spec("mujoco") is None:
        with pytest.raises(SeminalError, match=r"seminal\[mujoco\]"):
            execute("sac", "halfcheetah", 0, None, "/tmp/unused-sac-test")  # before any training
    else:  # the extra is installed: the env builds (no million-step run here)
        env, low, high = make_box_env(env_id, "SAC")
        assert env.action_space.shape == (6,) and np.all(low < high)


def test_train_sac_reusable_same_seed_same_policy():
    cfg = dataclasses.replace(sac.PRESETS["quick"], total_steps=250, start_steps=100, batch_size=32,
                              hidden=(16, 16))
    outs = []
    for _ in range(2):
        seed_everything(3)
        policy = sac.train_sac(lambda: make_env("Pendulum-v1"), cfg, seed=3)
        outs.append(policy(np.array([0.5, -0.5, 1.0], dtype=np.float32)))
    assert outs[0].shape == (1,) and -2.0 <= outs[0][0] <= 2.0 and np.array_equal(outs[0], outs[1])


def test_smoke_run_logs_alpha(tmp_path):  # exact resume: tests/test_offpolicy.py
    s = execute("sac", "quick", 0, TINY, tmp_path, progress=False)
    run_dir = next((tmp_path / "sac").iterdir())
    assert math.isfinite(s["metrics"]["eval/return"]) and (run_dir / "plots" / "alpha.png").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_matches_the_eager_update():
    """The captured update (3 eager warm-ups, capture, replays on new batches) tracks the eager one.

    The policy is made deterministic (log sigma held below its clamp, whose gradient is then zero) and alpha
    negligible, so the two agents' random draws do not matter and both must follow the same trajectory.
    """
    from seminal.papers.rl._offpolicy import CudaGraphed

    cfg = dataclasses.replace(sac.PRESETS["quick"], auto_alpha=False, alpha=1e-9)
    eager_cfg = dataclasses.replace(cfg, cuda_graph=False)
    torch.manual_seed(0)
    eager, graphed = sac.make_agent(3, 1, eager_cfg, "cuda"), sac.make_agent(3, 1, cfg, "cuda")
    for name in ("actor", "critic", "critic_target"):
        getattr(graphed, name).load_state_dict(getattr(eager, name).state_dict())
    for agent in (eager, graphed):
        with torch.no_grad():
            agent.actor.head.weight[1:] = 0.0
            agent.actor.head.bias[1:] = -30.0  # log sigma clamped to -20: sigma ~ 2e-9
    update = CudaGraphed(lambda *b: sac.sac_update(graphed, b, cfg, -1.0))
    g = torch.Generator(device="cuda").manual_seed(1)
    for i in range(8):  # 3 warm-ups, 1 capture + replay, 4 replays
        s, a, r, s2, u = (torch.rand(256, n, device="cuda", generator=g) for n in (3, 1, 1, 3, 1))
        batch = (s * 4 - 2, a * 2 - 1, r[:, 0] - 1, s2 * 4 - 2, (u[:, 0] < 0.1).float())
        want = sac.sac_update(eager, batch, eager_cfg, -1.0)
        got = update(*batch)
        for k in ("critic_loss", "actor_loss"):
            assert torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-5), (i, k, got[k], want[k])
    assert update.graph is not None
    for name in ("actor", "critic", "critic_target"):
        for p, q in zip(getattr(eager, name).parameters(), getattr(graphed, name).parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name


def test_optimizer_state_from_a_graph_run_loads_on_a_cpu():
    """A checkpoint written by a capturable (CUDA-graph) Adam resumes in a CPU optimizer, and steps the same."""
    from seminal.papers.rl._offpolicy import load_optimizer

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    saved = torch.optim.Adam([w], lr=0.1)
    for _ in range(3):
        saved.zero_grad()
        (w**2).sum().backward()
        saved.step()
    state = copy.deepcopy(saved.state_dict())  # as a checkpoint would hold it: no shared tensors
    state["param_groups"][0]["capturable"] = True  # as written on a GPU with cuda_graph=True
    w2 = torch.nn.Parameter(w.detach().clone())
    resumed = torch.optim.Adam([w2], lr=0.1)
    load_optimizer(resumed, state)
    assert resumed.param_groups[0]["capturable"] is False
    for opt, p in ((saved, w), (resumed, w2)):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()  # a CPU Adam left capturable=True would refuse this step
    assert torch.equal(w, w2)


def test_actor_clamps_log_std_to_the_authors_range():
    """log sigma is clamped to [-20, 2] (the authors' code); the mean is not."""
    actor = sac.SquashedGaussianActor(3, 2, (8,))
    with torch.no_grad():
        actor.head.weight.zero_()
        actor.head.bias.copy_(torch.tensor([0.1, -7.0, 5.0, -40.0]))  # (mean_1, mean_2, log_std_1, log_std_2)
    mean, log_std = actor(torch.randn(4, 3))
    assert torch.allclose(mean, torch.tensor([0.1, -7.0]).expand(4, 2))
    assert torch.equal(log_std, torch.tensor([2.0, -20.0]).expand(4, 2))


def test_deterministic_policy_is_tanh_of_the_mean_in_env_units():
    """policy(obs) = low + (tanh(mean) + 1) / 2 (high - low); a sample lies in [low, high]."""
    actor = sac.SquashedGaussianActor(3, 2, (8,))
    with torch.no_grad():
        actor.head.weight.zero_()
        actor.head.bias.copy_(torch.tensor([0.3, -1.5, -1.0, -1.0]))
    low, high = np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32)
    policy = sac.SquashedGaussianPolicy(actor, low, high)
    want = low + (np.tanh([0.3, -1.5]) + 1) / 2 * (high - low)
    np.testing.assert_allclose(policy(np.zeros(3, dtype=np.float32)), want, rtol=1e-6, atol=1e-6)
    torch.manual_seed(0)
    draws = np.array([policy(np.zeros(3, dtype=np.float32), deterministic=False) for _ in range(200)])
    assert np.all(draws >= low) and np.all(draws <= high) and draws.std(0).min() > 0.01


def test_default_target_entropy_is_minus_the_action_dimension(monkeypatch):
    """v2 §5: H_target = -dim(A) unless set (Pendulum: dim(A) = 1), passed to every update."""
    seen = []
    real = sac.sac_update

    def recording(agent, batch, cfg, target_entropy):
        seen.append(target_entropy)
        return real(agent, batch, cfg, target_entropy)

    monkeypatch.setattr(sac, "sac_update", recording)
    cfg = dataclasses.replace(sac.PRESETS["quick"], total_steps=30, start_steps=25, batch_size=8, hidden=(8, 8))
    sac.train_sac(lambda: make_env("Pendulum-v1"), cfg, seed=0)
    assert seen == [-1.0] * 5
    seen.clear()
    sac.train_sac(lambda: make_env("Pendulum-v1"), dataclasses.replace(cfg, target_entropy=-0.25), seed=0)
    assert seen == [-0.25] * 5


def test_train_sac_collects_with_samples_and_evaluates_with_tanh_of_the_mean(monkeypatch):
    """The loop's `act(obs, explore)`: a sample of pi while collecting, the deterministic tanh(mean) otherwise."""
    captured = {}

    def fake_loop(env, cfg, act, update, stateful, **kwargs):
        captured.update(act=act, agent=stateful["agent"])
        env.close()

    monkeypatch.setattr(sac, "offpolicy_loop", fake_loop)
    cfg = dataclasses.replace(sac.PRESETS["quick"], hidden=(8, 8))
    sac.train_sac(lambda: make_env("Pendulum-v1"), cfg, seed=0)
    act, agent = captured["act"], captured["agent"]
    with torch.no_grad():
        agent.actor.head.weight.zero_()
        agent.actor.head.bias.copy_(torch.tensor([0.4, -1.0]))  # mean 0.4, log sigma -1
    obs = np.zeros(3, dtype=np.float32)
    np.testing.assert_allclose(act(obs, False), [np.tanh(0.4)], rtol=1e-6)
    torch.manual_seed(0)
    draws = np.array([act(obs, True)[0] for _ in range(2000)])
    u = np.arctanh(draws)  # pre-tanh samples: N(0.4, e^-2)
    assert u.mean() == pytest.approx(0.4, abs=0.02) and u.std() == pytest.approx(np.exp(-1.0), rel=0.05)
