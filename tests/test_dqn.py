"""DQN: TD targets, Huber loss and Double DQN against hand computation; errors; determinism; smoke run."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from seminal.core.errors import SeminalError
from seminal.core.run import Run, seed_everything
from seminal.core.runner import execute
from seminal.papers.rl import dqn

TINY = dataclasses.replace(dqn.PRESETS["quick"], total_steps=1200, learning_starts=200, buffer_size=1000,
                           batch_size=32, eval_every=600, eval_episodes=2, checkpoint_every=400, target_update=20)


def _learn(cfg: dqn.Config, tmp_path, seed: int = 0, **kw) -> tuple[dict, Run]:
    seed_everything(seed)
    with Run(tmp_path, "dqn", seed, cfg, progress=False, tensorboard=False) as run:
        return dqn.learn(cfg, run, **kw), run


def test_td_target_masks_terminal_and_bootstraps_truncated():
    reward = torch.tensor([1.0, 2.0, 0.5])
    terminated = torch.tensor([0.0, 1.0, 0.0])  # the third is a time-limit truncation: still bootstraps
    q_next = torch.tensor([[1.0, 3.0], [10.0, 20.0], [-2.0, -1.0]])
    y = dqn.td_target(reward, terminated, q_next, gamma=0.9)
    assert torch.allclose(y, torch.tensor([1.0 + 0.9 * 3.0, 2.0, 0.5 + 0.9 * -1.0]))


def test_double_dqn_target_uses_online_argmax_and_target_value():
    online, target = nn.Linear(2, 3, bias=False), nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        target.weight.copy_(torch.tensor([[5.0, 0.0], [0.0, 7.0], [9.0, 9.0]]))
    s_next = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    # online Q: [2, 1, 0] -> a*=0; [1, 3, 0] -> a*=1.  target Q: [10, 7, 27], [5, 21, 36]
    y = dqn.td_target(torch.zeros(2), torch.zeros(2), target(s_next), 0.5, q_next_online=online(s_next))
    assert torch.allclose(y, torch.tensor([0.5 * 10.0, 0.5 * 21.0]))
    y_plain = dqn.td_target(torch.zeros(2), torch.zeros(2), target(s_next), 0.5)
    assert torch.allclose(y_plain, torch.tensor([0.5 * 27.0, 0.5 * 36.0]))  # the max over theta^- instead


def test_huber_values_and_gradient_is_clipped_td_error():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    h = dqn.huber(x, 1.0)
    assert torch.allclose(h, torch.tensor([2.5, 0.125, 0.0, 0.125, 2.5]))
    h.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # error clipped to [-1, 1]


def test_td_loss_with_weights():
    q_sa, y = torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0])
    assert torch.isclose(dqn.td_loss(q_sa, y, 1.0), torch.tensor((0.125 + 2.5) / 2))
    w = torch.tensor([1.0, 0.2])
    assert torch.isclose(dqn.td_loss(q_sa, y, 1.0, w), torch.tensor((0.125 + 0.2 * 2.5) / 2))


def test_epsilon_schedule():
    assert dqn.epsilon(0, 1.0, 0.1, 100) == 1.0
    assert dqn.epsilon(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert dqn.epsilon(100, 1.0, 0.1, 100) == pytest.approx(0.1)
    assert dqn.epsilon(10_000, 1.0, 0.1, 100) == pytest.approx(0.1)


def test_numpy_greedy_matches_torch_argmax_after_updates():
    torch.manual_seed(0)
    net = dqn.QMLP(4, 3, (16, 16))
    act = net.numpy_greedy()
    opt = torch.optim.Adam(net.parameters(), lr=0.1, foreach=True)
    obs = torch.randn(200, 4)
    for _ in range(3):  # the views must follow in-place optimizer updates
        net(obs).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        expected = net(obs).argmax(dim=1).numpy()
        assert [act(o) for o in obs.numpy()] == list(expected)


def test_replay_state_roundtrip():
    mem = dqn.Replay(5, (2,), np.float32)
    for i in range(7):  # wraps around
        mem.add(np.full(2, i), i % 2, float(i), np.full(2, i + 1), i == 6)
    other = dqn.Replay(5, (2,), np.float32)
    other.load(mem.state())
    assert (other.pos, other.n) == (2, 5)
    for k in ("obs", "next_obs", "action", "reward", "terminated"):
        np.testing.assert_array_equal(getattr(other, k), getattr(mem, k))
    assert set(mem.obs[:, 0]) == {2.0, 3.0, 4.0, 5.0, 6.0}


def test_continuous_actions_are_refused(tmp_path):
    with pytest.raises(SeminalError, match="discrete"):
        _learn(dataclasses.replace(TINY, env_id="Pendulum-v1"), tmp_path)


def test_unknown_env_is_one_line_error(tmp_path):
    with pytest.raises(SeminalError, match="unknown env id"):
        _learn(dataclasses.replace(TINY, env_id="CartPoel-v1"), tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("ale_py") is not None, reason="ale-py is installed")
def test_atari_without_extra_names_it(tmp_path):
    with pytest.raises(SeminalError, match=r"seminal\[atari\]"):
        _learn(dqn.PRESETS["full"], tmp_path)


def test_same_seed_same_returns(tmp_path):
    a, run_a = _learn(TINY, tmp_path / "a", seed=3)
    b, run_b = _learn(TINY, tmp_path / "b", seed=3)
    assert run_a.history("train/episode_return") == run_b.history("train/episode_return")
    assert run_a.history("eval/return") == run_b.history("eval/return")
    assert a["eval/return"] == b["eval/return"]


def test_smoke_run_checkpoint_and_resume(tmp_path):
    summary = execute("dqn", "quick", 0, [f"{k}={getattr(TINY, k)}" for k in
                      ("total_steps", "learning_starts", "buffer_size", "batch_size", "eval_every",
                       "eval_episodes", "checkpoint_every", "target_update")] + ["double=true"],
                      tmp_path, progress=False, stop_after_checkpoints=None)
    assert np.isfinite(summary["metrics"]["eval/return"]) and summary["metrics"]["eval/return"] > 0
    from seminal.core.errors import Interrupted

    overrides = ["total_steps=1200", "learning_starts=200", "buffer_size=1000", "eval_every=600",
                 "eval_episodes=2", "checkpoint_every=400"]
    with pytest.raises(Interrupted) as stop:
        execute("dqn", "quick", 1, overrides, tmp_path / "r", progress=False, stop_after_checkpoints=2)
    resumed = execute("dqn", "quick", 1, None, resume_dir=stop.value.run_dir, progress=False)
    assert resumed["resumed"] and np.isfinite(resumed["metrics"]["eval/return"])


def test_nature_cnn_shapes_and_one_update_on_frames():
    """The full preset's network on a batch of 4x84x84 uint8 frame stacks (Atari itself is an extra)."""
    torch.manual_seed(0)
    net = dqn.NatureCNN(n_actions=6)
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    q = net(frames)
    assert q.shape == (5, 6)
    y = dqn.td_target(torch.ones(5), torch.zeros(5), net(frames).detach(), 0.99)
    loss = dqn.td_loss(q.gather(1, torch.zeros(5, 1, dtype=torch.long)).squeeze(1), y, 1.0)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
