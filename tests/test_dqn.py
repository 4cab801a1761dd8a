"""DQN: one whole update step (DQN and Double DQN) against autograd on a fixed batch, the target-network copy
every C updates, epsilon's schedule in the loop, TD targets and Huber by hand, exact resume; errors; smoke run."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seminal.core.errors import Interrupted, SeminalError
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


def test_smoke_run_double_dqn(tmp_path):
    summary = execute("dqn", "quick", 0, [f"{k}={getattr(TINY, k)}" for k in
                      ("total_steps", "learning_starts", "buffer_size", "batch_size", "eval_every",
                       "eval_episodes", "checkpoint_every", "target_update")] + ["double=true"],
                      tmp_path, progress=False)
    assert np.isfinite(summary["metrics"]["eval/return"]) and (tmp_path / "dqn").exists()
    assert [c["metric"] for c in summary["claims"]] == ["eval/return"]


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


# ---- one whole update step against an independent computation ----------------------------------------
def _fixed_batch():
    """Two different nets (theta, theta^-) and a batch where the choices matter: online and target argmax
    differ on some non-terminal s', terminal rows have a non-zero bootstrap, some |delta| > 1 (clipped)."""
    torch.manual_seed(0)
    q, q_target = dqn.QMLP(3, 4, (8,)), dqn.QMLP(3, 4, (8,))
    g = torch.Generator().manual_seed(1)
    s, s_next = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    a = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    r = torch.tensor([5.0, -3.0, 0.2, 0.1, 2.0, -0.5, 0.0, 1.0])
    terminated = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    with torch.no_grad():
        differ = q(s_next).argmax(1) != q_target(s_next).argmax(1)
    assert (differ & (terminated == 0)).any(), "precondition: Double DQN must pick differently on some row"
    return q, q_target, (s, a, r, s_next, terminated)


@pytest.mark.parametrize("double", [False, True], ids=["dqn", "double"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_dqn_update_equals_autograd_step_on_huber_td_loss(double, weighted):
    q, q_target, batch = _fixed_batch()
    s, a, r, s_next, terminated = batch
    gamma, lr = 0.9, 0.1
    cfg = dataclasses.replace(dqn.PRESETS["quick"], gamma=gamma, huber_delta=1.0, double=double)
    weights = torch.tensor([1.0, 0.5, 0.25, 1.0, 0.8, 0.3, 0.6, 0.9]) if weighted else None
    target_before = [p.detach().clone() for p in q_target.parameters()]

    # The oracle: Eq. (1) (or Double DQN's Eq. 4) written out here, torch's Huber loss, autograd, one SGD step.
    ref = copy.deepcopy(q)
    with torch.no_grad():
        q_next_target = q_target(s_next)  # theta^- evaluates ...
        a_next = ref(s_next).argmax(1) if double else q_next_target.argmax(1)  # ... theta picks (Double DQN)
        y = r + gamma * (1 - terminated) * q_next_target[torch.arange(8), a_next]
    q_sa = ref(s)[torch.arange(8), a]
    assert ((y - q_sa).abs() > 1).any() and ((y - q_sa).abs() < 1).any(), "precondition: both Huber regimes"
    per_sample = F.huber_loss(q_sa, y, reduction="none", delta=1.0)
    loss = (per_sample * (weights if weighted else 1.0)).mean()
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expected = [p.detach() - lr * g for p, g in zip(ref.parameters(), grads)]

    opt = torch.optim.SGD(q.parameters(), lr=lr)
    got_loss, abs_td = dqn.dqn_update(q, q_target, opt, batch, cfg, weights)
    assert torch.isclose(got_loss, loss.detach())
    torch.testing.assert_close(abs_td, (y - q_sa).detach().abs())  # |delta| before the step (PER's priorities)
    for p, e in zip(q.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)
    for p, before in zip(q_target.parameters(), target_before):  # the step never touches theta^-
        assert torch.equal(p.detach(), before)


def _tiny_memory(n: int = 64) -> dqn.Replay:
    rng = np.random.default_rng(0)
    mem = dqn.Replay(n, (3,), np.float32)
    for i in range(n):
        mem.add(rng.standard_normal(3), i % 4, float(rng.standard_normal()), rng.standard_normal(3), i % 9 == 0)
    return mem


def test_target_network_copied_every_c_updates_and_only_then():
    torch.manual_seed(0)
    q = dqn.QMLP(3, 4, (8,))
    q_target = copy.deepcopy(q)
    cfg = dataclasses.replace(dqn.PRESETS["quick"], batch_size=8, gradient_steps=1, target_update=3)
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    mem, rng = _tiny_memory(), np.random.default_rng(0)
    last_copy = [p.detach().clone() for p in q.parameters()]
    updates = 0
    for _ in range(7):
        updates, _ = dqn.replay_updates(q, q_target, opt, mem, dqn.UniformSampler(), rng, cfg, 0.5, updates)
        online = [p.detach().clone() for p in q.parameters()]
        target = [p.detach() for p in q_target.parameters()]
        if updates % 3 == 0:
            assert all(torch.equal(t, o) for t, o in zip(target, online)), f"no copy after update {updates}"
            last_copy = online
        else:
            assert all(torch.equal(t, c) for t, c in zip(target, last_copy)), f"theta^- moved at update {updates}"
            assert not all(torch.equal(t, o) for t, o in zip(target, online))
    assert updates == 7
    # several gradient steps in one phase: the copy happens at the C-th update, not at the phase's end
    cfg4 = dataclasses.replace(cfg, gradient_steps=4)
    q_target.load_state_dict(q.state_dict())
    updates, _ = dqn.replay_updates(q, q_target, opt, mem, dqn.UniformSampler(), rng, cfg4, 0.5, 7)  # 8..11
    assert updates == 11 and not all(torch.equal(t, o) for t, o in zip(q_target.parameters(), q.parameters()))


def test_loop_anneals_epsilon_as_scheduled(tmp_path):
    _, run = _learn(TINY, tmp_path, seed=2)
    steps, eps = run.history("train/epsilon")  # logged at each episode's end, step = env steps done
    assert len(steps) > 10
    expected = [dqn.epsilon(t - 1, TINY.eps_start, TINY.eps_end, TINY.exploration_steps) for t in steps]
    np.testing.assert_allclose(eps, expected, rtol=1e-12)
    assert eps[0] > 0.9 and eps[-1] < eps[0]


def test_time_limit_truncation_is_stored_as_non_terminal(tmp_path, monkeypatch):
    """A time-limit cut is not a terminal state: the stored transition keeps terminated=False (so its target
    bootstraps from s'), while a real CartPole failure is stored as terminal; s' is the env's real next state."""
    import gymnasium

    monkeypatch.setattr(dqn, "make_train_env",
                        lambda cfg, seed=None: gymnasium.wrappers.TimeLimit(dqn.make_env(cfg.env_id, seed=seed), 12))
    stored = []
    add = dqn.Replay.add
    monkeypatch.setattr(dqn.Replay, "add", lambda self, *t: stored.append(t) or add(self, *t))
    _learn(dataclasses.replace(TINY, total_steps=400, learning_starts=400), tmp_path)
    ends = [i for i in range(len(stored) - 1) if not np.array_equal(stored[i][3], stored[i + 1][0])]
    assert len(ends) > 10  # episode boundaries: s' of one transition is not s of the next
    for i in ends:
        pole_fell = abs(stored[i][3][2]) > 0.2095 or abs(stored[i][3][0]) > 2.4  # CartPole's termination test
        assert bool(stored[i][4]) == pole_fell, (i, stored[i])
    assert any(not stored[i][4] for i in ends) and any(stored[i][4] for i in ends)  # both kinds occurred
    assert not any(stored[i][4] for i in range(len(stored)) if i not in ends)


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_actions_are_greedy_with_probability_one_minus_epsilon(eps, tmp_path, monkeypatch):
    """With learning off (the net stays at its seeded init), epsilon 0 acts greedily on every step, as the
    argmax of an independently built net of the same seed; epsilon 1 acts at random (about half agree)."""
    stored = []
    add = dqn.Replay.add
    monkeypatch.setattr(dqn.Replay, "add", lambda self, *t: stored.append(t) or add(self, *t))
    cfg = dataclasses.replace(TINY, total_steps=300, learning_starts=10_000, eps_start=eps, eps_end=eps,
                              eval_every=300, eval_episodes=1)
    _learn(cfg, tmp_path, seed=3)
    torch.manual_seed(3)
    q = dqn.make_qnet(cfg, (4,), 2)
    with torch.no_grad():
        greedy = q(torch.as_tensor(np.stack([t[0] for t in stored]), dtype=torch.float32)).argmax(1).numpy()
    agree = np.mean(greedy == np.array([t[1] for t in stored]))
    if eps == 0.0:
        assert agree == 1.0
    else:
        assert 0.35 < agree < 0.65, agree


# ---- exact resume -------------------------------------------------------------------------------------
RESUME = ["total_steps=600", "learning_starts=100", "buffer_size=600", "batch_size=32", "eval_every=300",
          "eval_episodes=2", "checkpoint_every=250", "target_update=20", "hidden=16,16", "exploration_steps=500"]


def _histories(run_dir, keys) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    """Stopped mid-episode (a Ctrl-C at the first checkpoint) and resumed: the env's state, the episode's
    running return, replay, nets, optimizer and RNGs all come back, so every logged number is the same.
    Once at a `checkpoint_every` checkpoint (step 250), once where `run.due()` asked for one (step 1)."""
    monkeypatch.setenv("SEMINAL_CHECKPOINT_SECONDS", "1e9")
    whole = execute("dqn", "quick", 1, RESUME, tmp_path / "whole", progress=False)
    keys = ("train/episode_return", "train/loss", "eval/return")
    for seconds, at_step in ((None, 250), (1e-9, 1)):  # 1e-9 s: run.due() is True at once
        with pytest.raises(Interrupted) as stop:
            execute("dqn", "quick", 1, RESUME, tmp_path / f"cut{at_step}", progress=False, stop_after_checkpoints=1,
                    checkpoint_seconds=seconds)
        run_dir = Path(stop.value.run_dir)
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)["state"]
        assert ckpt["step"] == at_step and ckpt["env"] is not None and ckpt["ep_len"] > 0  # mid-episode
        resumed = execute("dqn", resume_dir=run_dir, progress=False)
        assert resumed["resumed"] and resumed["metrics"] == whole["metrics"]
        assert _histories(run_dir, keys) == _histories(Path(whole["run_dir"]), keys)


def test_huber_by_hand_for_a_threshold_other_than_one():
    """delta = 2: 0.5 x^2 inside |x| <= 2, delta (|x| - delta / 2) = 2 |x| - 2 outside; continuous at |x| = 2."""
    x = torch.tensor([0.5, -1.5, 2.0, 3.0, -5.0])
    want = torch.tensor([0.125, 1.125, 2.0, 4.0, 8.0])
    torch.testing.assert_close(dqn.huber(x, 2.0), want)
    torch.testing.assert_close(dqn.huber(x, 0.5), torch.tensor([0.125, 0.625, 0.875, 1.375, 2.375]))
