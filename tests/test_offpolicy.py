"""rl/_offpolicy.py: the loop DDPG, TD3 and SAC share (exact resume, Ctrl-C, truncation), buffer, ensemble."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from seminal.core.errors import Interrupted, SeminalError
from seminal.core.rl import make_env
from seminal.core.run import Run
from seminal.core.runner import execute
from seminal.papers.rl._offpolicy import (
    EnsembleMLP,
    ReplayBuffer,
    discounted_returns,
    make_box_env,
    offpolicy_loop,
    q_vs_return,
    scale_action,
)

_TINY = ["total_steps=300", "start_steps=150", "batch_size=32", "hidden=16,16", "eval_every=150",
         "eval_episodes=1", "checkpoint_every=100"]
TINY = {"ddpg": _TINY + ["mc_episodes=1", "mc_states=20", "mc_horizon=20"],
        "td3": _TINY + ["mc_episodes=1", "mc_states=20", "mc_horizon=20"],
        "sac": _TINY}


@pytest.mark.parametrize("slug, stop", [("ddpg", 1), ("sac", 1), ("sac", 2), ("td3", 1), ("td3", 4)],
                         ids=["ddpg", "sac", "sac-after-warmup", "td3-first-agent", "td3-second-agent"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(slug, stop, tmp_path, monkeypatch):
    """Stopped mid-episode (step 100 of Pendulum's 200) and resumed: the same metrics, to the last bit.

    It needs the env's own state (angle, velocity, time-limit counter), the running return, the buffer and
    every generator (the loop's, the noise's, torch's) in the checkpoint; an env restarted on resume fails it.
    For TD3, stop 4 falls in the second of its three agents (checkpoints at 100 and 200 of each). SAC's stop 2
    (step 200) falls after the warm-up (150 steps): 50 updates in, with the optimizers' moments, alpha and the
    policy's noise mid-run.
    """
    monkeypatch.setenv("SEMINAL_CHECKPOINT_SECONDS", "1e9")  # checkpoints by step only
    whole = execute(slug, "quick", 1, TINY[slug], tmp_path / "whole", progress=False)
    with pytest.raises(Interrupted) as cut:
        execute(slug, "quick", 1, TINY[slug], tmp_path / "cut", progress=False, stop_after_checkpoints=stop)
    resumed = execute(slug, "quick", 1, None, resume_dir=cut.value.run_dir, progress=False)
    assert resumed["resumed"] and all(math.isfinite(v) for v in whole["metrics"].values())
    assert resumed["metrics"] == whole["metrics"]
    assert _logged(whole["run_dir"]) == _logged(cut.value.run_dir)  # training returns, losses, alpha: every row


def _logged(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.endswith("steps_per_s")} for row in rows]  # all but timings


def _cfg(**kw):
    base = dict(total_steps=60, start_steps=20, batch_size=4, buffer_size=1000, eval_every=1000, eval_episodes=1,
                checkpoint_every=1000)
    return SimpleNamespace(**{**base, **kw})


def test_loop_updates_once_a_step_after_warmup_and_stores_truncation_as_not_terminal():
    env = make_env("Pendulum-v1", max_episode_steps=25)  # truncated (never terminated) every 25 steps
    calls, acted, terminal = [], [], []

    def act(obs, explore):
        acted.append(explore)
        return np.zeros(1)

    def update(batch, step):
        calls.append(step)
        terminal.append(batch[4])
        return {}

    offpolicy_loop(env, _cfg(batch_size=16), act, update, {}, seed=0)
    assert calls == list(range(20, 60))  # one update per step from start_steps on, in order
    assert acted == [True] * 40  # uniform warm-up actions first, then act(obs, explore=True)
    # 640 draws from up to 60 rows: the two truncated transitions (steps 25 and 50) are drawn, as not terminal
    assert torch.equal(torch.cat(terminal), torch.zeros(640))  # time-limit ends bootstrap


def test_loop_checkpoints_at_once_when_ctrl_c_was_pressed(tmp_path):
    """`run.due()` (Ctrl-C, or checkpoint_seconds passed) checkpoints within a step, not at checkpoint_every."""
    env = make_env("Pendulum-v1")
    with Run(tmp_path, "test", 0, None, tensorboard=False) as run:
        run._stop_requested = True  # as the first Ctrl-C does
        with pytest.raises(Interrupted):
            offpolicy_loop(env, _cfg(checkpoint_every=10**6), lambda o, e: np.zeros(1), lambda b, s: {}, {},
                           seed=0, run=run)
        assert run.restore()["loop"]["step"] == 1


def test_scale_action_is_exact_at_the_bounds():
    low, high = np.array([-2.0, 0.1, -0.3]), np.array([2.0, 0.7, 1.9])
    assert np.array_equal(scale_action(-np.ones(3), low, high), low.astype(np.float32))
    assert np.array_equal(scale_action(np.ones(3), low, high), high.astype(np.float32))
    assert np.allclose(scale_action(np.zeros(3), low, high), (low + high) / 2)
    assert np.array_equal(scale_action(5 * np.ones(3), low, high), high.astype(np.float32))  # clipped


def test_discounted_returns_match_direct_sums():
    r = np.array([1.0, -2.0, 3.0, 0.5])
    g = discounted_returns(r, 0.9)
    for t in range(4):
        assert g[t] == pytest.approx(sum(0.9**k * r[t + k] for k in range(4 - t)))


def test_q_vs_return_scores_a_known_critic():
    """A critic that always says 5, a zero-torque policy: the estimate is 5, the return is recomputed here."""
    actor = lambda s: torch.zeros(len(s), 1)  # noqa: E731 - zero torque
    m = q_vs_return(actor, lambda s, a: torch.full((len(s),), 5.0), "Pendulum-v1", 0.9, 2, 10, 30)
    env = make_env("Pendulum-v1", max_episode_steps=40)
    gs = []
    for k in range(2):
        env.reset(seed=20_000 + k)
        rewards = [env.step(np.zeros(1, np.float32))[1] for _ in range(40)]
        gs.extend(discounted_returns(np.array(rewards), 0.9)[:10])
    assert m["q_estimate"] == 5.0 and m["mc_return"] == pytest.approx(np.mean(gs))
    assert m["q_bias"] == pytest.approx(5.0 - np.mean(gs))


def test_replay_buffer_returns_what_was_stored_and_wraps():
    buf = ReplayBuffer(3, obs_dim=2, act_dim=1)
    for k in range(5):  # the first two are overwritten
        buf.add(np.array([k, k + 0.5]), np.array([-k / 10]), float(k), np.array([k + 1, k + 1.5]), k == 4)
    s, a, r, s2, d = buf.sample(np.random.default_rng(0), 64)
    assert buf.size == 3 and set(r.tolist()) == {2.0, 3.0, 4.0}
    assert torch.allclose(s[:, 0], r) and torch.allclose(a[:, 0], -r / 10) and torch.allclose(s2[:, 1], r + 1.5)
    assert torch.equal(d, (r == 4).float())


def test_ensemble_equals_k_separate_mlps_forward_and_gradients():
    torch.manual_seed(0)
    net = EnsembleMLP(3, (5, 8, 7, 1))
    separate = []
    for k in range(3):  # nn.Linear holds (out, in): the transpose of the ensemble's (in, out)
        layers = [nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 1)]
        for lin, w, b in zip(layers[::2], net.weights, net.biases):
            lin.weight.data.copy_(w[k].T)
            lin.bias.data.copy_(b[k, 0])
        separate.append(nn.Sequential(*layers))
    x = torch.randn(11, 5)
    out = net(x)  # (3, 11, 1)
    (out**2).sum().backward()
    for k, mlp_k in enumerate(separate):
        ref = mlp_k(x)
        assert torch.allclose(out[k], ref, atol=1e-6)
        (ref**2).sum().backward()
        for lin, w, b in zip(mlp_k[::2], net.weights, net.biases):
            assert torch.allclose(w.grad[k], lin.weight.grad.T, atol=1e-5)
            assert torch.allclose(b.grad[k, 0], lin.bias.grad, atol=1e-5)
    xs = torch.randn(3, 4, 5)  # one batch per member
    assert all(torch.allclose(net(xs)[k], separate[k](xs[k]), atol=1e-6) for k in range(3))


def test_frozen_ensemble_passes_gradients_to_the_input_only():
    net = EnsembleMLP(2, (5, 8, 1))
    x = torch.randn(7, 5, requires_grad=True)
    net(x, frozen=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and all(w.grad is None for w in net.weights)


def test_errors_for_wrong_envs():
    with pytest.raises(SeminalError, match="unknown env id"):
        make_box_env("NoSuchEnv-v9", "DDPG")
    with pytest.raises(SeminalError, match="continuous"):
        make_box_env("CartPole-v1", "DDPG")


def test_replay_samples_only_the_rows_stored_so_far():
    """Before the buffer is full, a minibatch holds stored transitions only (no all-zero rows past `size`)."""
    buf = ReplayBuffer(100, obs_dim=2, act_dim=1)
    for k in range(1, 4):
        buf.add(np.array([k, -k]), np.array([k / 10]), float(k), np.array([k + 1, -k - 1]), False)
    s, a, r, s2, d = buf.sample(np.random.default_rng(0), 500)
    assert set(r.tolist()) == {1.0, 2.0, 3.0}
    assert torch.equal(s[:, 0], r) and torch.equal(s2[:, 0], r + 1) and torch.equal(s2[:, 1], -r - 1)


def test_loop_stores_the_actors_u_and_chains_each_next_state_to_the_next_row(monkeypatch):
    """Each stored row is (s_t, u_t, r_t, s_{t+1}, terminated_t) with u_t the action in [-1, 1] as `act` returned
    it (the env gets it scaled to [-2, 2]); within an episode, s' of row t is s of row t + 1; stepping the env
    by hand with the stored actions gives back the stored rewards and next states."""
    from seminal.papers.rl import _offpolicy

    made = []

    class Recorded(ReplayBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(_offpolicy, "ReplayBuffer", Recorded)
    env = make_env("Pendulum-v1", max_episode_steps=25)
    given = []

    def act(obs, explore):
        u = np.array([0.8 * np.tanh(3.0 * obs[0])], dtype=np.float32)  # a deterministic policy in (-0.8, 0.8)
        given.append(u)
        return u

    offpolicy_loop(env, _cfg(total_steps=60, start_steps=20), act, lambda b, s: {}, {}, seed=0)
    table = made[0].table.numpy()
    assert made[0].size == 60
    s, u, r, s2 = table[:, :3], table[:, 3], table[:, 4], table[:, 5:8]
    np.testing.assert_array_equal(u[20:], np.concatenate(given))  # u itself, not 2 u
    assert np.all(np.abs(u[:20]) <= 1.0) and np.abs(u[:20]).max() > 0.5  # uniform warm-up in [-1, 1]
    ends = {24, 49}  # time-limit ends: the next row starts a new episode
    for t in range(59):
        if t not in ends:
            np.testing.assert_array_equal(s2[t], s[t + 1])
    check = make_env("Pendulum-v1", max_episode_steps=25)
    # replayed by hand: the env steps with scale_action(u) give back the stored reward and next state
    np.testing.assert_allclose(s[0], check.reset(seed=0)[0], rtol=1e-6)  # seed 0, episode 0
    for t in range(25):
        obs2, rew, *_ = check.step(scale_action(u[t : t + 1], np.array([-2.0]), np.array([2.0])))
        assert rew == pytest.approx(r[t], rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(s2[t], obs2, rtol=1e-5, atol=1e-6)


def test_ensemble_init_is_each_layers_uniform_over_plus_minus_one_over_sqrt_fan_in():
    """nn.Linear's default init, per member: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn apart for
    each member (the critics of TD3's and SAC's pairs must not start equal)."""
    torch.manual_seed(0)
    ens = EnsembleMLP(2, (400, 300, 1))
    for w, b, fan_in in zip(ens.weights, ens.biases, (400, 300)):
        bound = 1 / math.sqrt(fan_in)
        for t in (w, b):
            assert t.abs().max() <= bound
            if t.numel() >= 100:  # the last layer's biases are 2 draws: no spread to check
                assert t.min() < -0.9 * bound and t.max() > 0.9 * bound
        sigma, n = bound / math.sqrt(3), w.numel()  # the uniform's std; 5 standard errors of the sample's mean, std
        assert abs(w.mean().item()) < 5 * sigma / math.sqrt(n)
        assert abs(w.std().item() - sigma) < 5 * 0.45 * sigma / math.sqrt(n)
        assert not torch.equal(w[0], w[1])
