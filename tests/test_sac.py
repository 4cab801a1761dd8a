"""SAC (Haarnoja et al. 2018): tanh-squashed log-density, soft target, temperature, reuse and smoke runs."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.rl import make_env
from seminal.core.run import seed_everything
from seminal.core.runner import execute
from seminal.papers.rl import sac

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


def test_sac_refuses_discrete_and_unknown_envs_and_names_the_mujoco_extra():
    with pytest.raises(SeminalError, match="continuous"):
        execute("sac", "quick", 0, ["env_id=CartPole-v1"], "/tmp/unused-sac-test")
    with pytest.raises(SeminalError, match="unknown env id"):
        execute("sac", "quick", 0, ["env_id=Pendulum-v0-nope"], "/tmp/unused-sac-test")
    with pytest.raises(SeminalError, match=r"seminal\[mujoco\]"):
        execute("sac", "halfcheetah", 0, None, "/tmp/unused-sac-test")


def test_train_sac_reusable_same_seed_same_policy():
    cfg = dataclasses.replace(sac.PRESETS["quick"], total_steps=250, start_steps=100, batch_size=32,
                              hidden=(16, 16))
    outs = []
    for _ in range(2):
        seed_everything(3)
        policy = sac.train_sac(lambda: make_env("Pendulum-v1"), cfg, seed=3)
        outs.append(policy(np.array([0.5, -0.5, 1.0], dtype=np.float32)))
    assert outs[0].shape == (1,) and -2.0 <= outs[0][0] <= 2.0 and np.array_equal(outs[0], outs[1])


def test_smoke_run_logs_alpha_and_resumes(tmp_path):
    from seminal.core.errors import Interrupted

    with pytest.raises(Interrupted):
        execute("sac", "quick", 0, TINY, tmp_path, progress=False, stop_after_checkpoints=1)
    run_dir = next((tmp_path / "sac").iterdir())
    s = execute("sac", "quick", 0, None, resume_dir=run_dir, progress=False)
    assert s["resumed"] and math.isfinite(s["metrics"]["eval/return"])
    assert (run_dir / "plots" / "alpha.png").exists()


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
