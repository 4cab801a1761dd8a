"""The on-policy loop: Ctrl-C stops it within one update (checkpoint on `run.due()`), and a run resumed from
that checkpoint ends exactly where an uninterrupted one does; `collect` and the loop on an env whose every value
is known in advance (a counter that truncates every 3 steps)."""

from __future__ import annotations

import dataclasses
import os
import signal
import types

import numpy as np
import pytest
import torch
from test_gae import Counter  # obs = steps since reset, truncated after 3 steps

from seminal.core.errors import Interrupted
from seminal.core.run import Run
from seminal.papers.rl import a2c
from seminal.papers.rl._onpolicy import ActorCritic, Episodes, NumpyActor, collect, make_vec_env, onpolicy_loop


def test_ctrl_c_checkpoints_within_one_update_and_resumes_exactly(tmp_path):
    # checkpoint_every is far beyond the run: only `run.due()` can make the loop stop and save.
    cfg = dataclasses.replace(a2c.PRESETS["quick"], total_steps=800, n_envs=4, eval_every=0, eval_episodes=1,
                              checkpoint_every=10_000)
    with Run(tmp_path / "a", "a2c", 0, cfg, progress=False, tensorboard=False) as run:
        straight = a2c.train(cfg, run)
        straight_loss = run.history("a2c/loss")[1][-1]

    calls = []
    original = a2c.make_update

    def make_update(*args, **kwargs):
        update = original(*args, **kwargs)

        def wrapped(rollout, progress, rng):
            calls.append(progress)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the run
            return update(rollout, progress, rng)
        return wrapped

    mp = pytest.MonkeyPatch()
    mp.setattr(a2c, "make_update", make_update)
    try:
        with pytest.raises(Interrupted):
            with Run(tmp_path / "b", "a2c", 0, cfg, progress=False, tensorboard=False) as run:
                a2c.train(cfg, run)
    finally:
        mp.undo()
    assert len(calls) == 3  # stopped right after the update in which Ctrl-C came, not at checkpoint_every
    with Run(tmp_path / "b", "a2c", 0, cfg, progress=False, tensorboard=False) as run:
        resumed = a2c.train(cfg, run)
        assert run.history("a2c/loss")[1][-1] == straight_loss  # the last update's loss, bit for bit
    assert resumed["eval/return"] == straight["eval/return"] and np.isfinite(resumed["eval/return"])


def _counter_actor():
    envs = make_vec_env(Counter, 2, seed=0, algorithm="A2C")
    model = ActorCritic(1, envs.single_action_space, (8,), seed=0)
    with torch.no_grad():
        model.v_head.bias.fill_(0.3)
        model.v_body[0].weight.fill_(0.5)  # V depends on the observation
        model.pi_head.weight.fill_(1.0)  # and so does pi
    return envs, model, NumpyActor(model, envs.single_action_space)


def test_collect_on_a_counter_every_entry_known():
    """Every array `collect` returns, against values known from the env alone: V(s_t) and V of the true next state
    (the final observation at truncation, V(s_T) on the rollout's last row), log pi of the actions taken, the
    episode ends, and the training episodes' returns and the env step at which each ended."""
    envs, model, actor = _counter_actor()
    T, N, step0 = 7, 2, 100
    episodes = Episodes(N)
    obs = np.asarray(envs.reset(seed=0)[0], np.float32)
    buf, last = collect(envs, actor, obs, T, np.random.default_rng(0), episodes, step0)

    def V(x):
        with torch.no_grad():
            return model.value(torch.tensor([[float(x)]])).item()

    phase = np.arange(T) % 3
    np.testing.assert_allclose(buf["obs"][..., 0], np.repeat(phase[:, None], N, 1))
    np.testing.assert_allclose(buf["values"], [[V(p)] * N for p in phase], rtol=1e-5)
    np.testing.assert_allclose(buf["next_values"], [[V(p + 1)] * N for p in phase], rtol=1e-5)
    assert V(3) != V(0) and V(2) != V(1)  # the final observation and the rollout's last state are told apart
    np.testing.assert_array_equal(buf["dones"], np.repeat((phase == 2)[:, None], N, 1))
    assert not buf["terminated"].any()
    with torch.no_grad():
        logp = model.dist(torch.as_tensor(buf["obs"].reshape(-1, 1))).log_prob(
            torch.as_tensor(buf["actions"].reshape(-1)))
    np.testing.assert_allclose(buf["logp"].reshape(-1), logp.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last[:, 0], T % 3)
    # episodes end at t = 2 and 5, logged at the env steps done by then: step0 + (t + 1) N
    assert episodes.returns == [3.0] * 4
    assert episodes.steps == [step0 + 3 * N] * 2 + [step0 + 6 * N] * 2
    np.testing.assert_allclose(episodes.state()["ret"], [1.0, 1.0])  # one step into the third episode


def test_loop_carries_the_observation_across_rollouts_and_passes_progress():
    """`onpolicy_loop` with an update that only records: rollouts continue each other (the envs are never reset
    between updates), `progress` is updates done / updates in all (0, 1/n, ..., (n-1)/n: annealing ends at the
    last update, not before), and the curve has every episode at the env step where it ended."""
    envs = make_vec_env(Counter, 2, seed=0, algorithm="A2C")
    model = ActorCritic(1, envs.single_action_space, (8,), seed=0)
    cfg = types.SimpleNamespace(total_steps=20, n_envs=2, n_steps=2, eval_every=0, eval_episodes=0,
                                checkpoint_every=100)
    seen = []

    def update(rollout, progress, rng):
        seen.append((rollout["obs"][..., 0].copy(), progress))
        return {}

    policy = onpolicy_loop(envs, Counter, model, update, {}, cfg, seed=0)
    assert [p for _, p in seen] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    obs = np.concatenate([o for o, _ in seen])  # (10, 2): env steps 0..9 of both envs
    np.testing.assert_allclose(obs, np.repeat((np.arange(10) % 3)[:, None], 2, 1))
    assert policy.steps == 20
    assert policy.curve == ([6, 6, 12, 12, 18, 18], [3.0] * 6)
