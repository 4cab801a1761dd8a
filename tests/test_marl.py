"""The multi-agent env layer (papers/multi_agent/_marl.py): agent order, seeding by (seed, episode), truncation at
max_cycles, the global state, and reward scales."""

from __future__ import annotations

import numpy as np
import pytest

from seminal.core.errors import SeminalError
from seminal.papers.multi_agent._marl import MultiAgentEnv, episode_seed, rollout_return, scaled


def test_simple_spread_shapes_state_and_truncation():
    env = MultiAgentEnv("simple_spread", seed=1)
    assert env.n == 3 and env.obs_dims == [18, 18, 18] and env.act_dims == [5, 5, 5]
    obs = env.reset(0)
    assert np.array_equal(env.state(), np.concatenate(obs)) and env.state_dim == 54
    steps, done = 0, False
    while not done:
        obs, rew, done, terminal = env.step([0, 1, 2])
        steps += 1
        assert rew.shape == (3,) and not terminal
    assert steps == env.max_cycles == 25


def test_episodes_depend_on_seed_and_index_only():
    a, b = MultiAgentEnv("simple_spread", seed=4), MultiAgentEnv("simple_spread", seed=4)
    a.reset(0)
    a.step([1, 1, 1])
    first = [o.copy() for o in a.reset(7)]  # after other episodes and steps
    assert all(np.array_equal(x, y) for x, y in zip(first, b.reset(7)))
    assert not np.array_equal(first[0], MultiAgentEnv("simple_spread", seed=5).reset(7)[0])
    assert episode_seed(4, 7) != episode_seed(7, 4)


def test_reward_scales_and_team_subsets():
    env = MultiAgentEnv("simple_speaker_listener", seed=0)
    assert env.agents == ["speaker_0", "listener_0"]
    team = rollout_return(env, lambda obs, state: [0, 0], 2, 0)
    per_agent = rollout_return(env, lambda obs, state: [0, 0], 2, 0, scale="per_agent")
    listener = rollout_return(env, lambda obs, state: [0, 0], 2, 0, agents=[1])
    assert per_agent == pytest.approx(team / 2) and listener == pytest.approx(team / 2)  # a shared reward
    assert scaled(-9.0, 3, "per_agent") == -3.0 and scaled(-9.0, 3, "team_sum") == -9.0


def test_unknown_task_is_one_line():
    with pytest.raises(SeminalError, match="unknown multi-agent task 'nope'; choose one of: simple_spread"):
        MultiAgentEnv("nope")
