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


def test_actions_reach_their_agents_in_order():
    """The layer against mpe2 driven directly with a dict of actions: the same observations and rewards, agent by
    agent, when every agent is given a different action."""
    import mpe2.simple_spread_v3 as spread

    env = MultiAgentEnv("simple_spread", seed=3)
    raw = spread.parallel_env(N=3, local_ratio=0.5, max_cycles=25, continuous_actions=False)
    obs = env.reset(0)
    raw_obs, _ = raw.reset(seed=episode_seed(3, 0))
    assert all(np.allclose(o, raw_obs[a]) for o, a in zip(obs, env.agents))
    for actions in ([1, 2, 3], [4, 0, 2], [3, 3, 1]):
        obs, rew, _, _ = env.step(actions)
        raw_obs, raw_rew, *_ = raw.step(dict(zip(raw.possible_agents, actions)))
        assert all(np.allclose(o, raw_obs[a]) for o, a in zip(obs, raw.possible_agents))
        assert np.allclose(rew, [raw_rew[a] for a in raw.possible_agents])


def test_per_agent_scale_of_a_team_divides_by_the_team_size():
    """simple_adversary (adversary_0, agent_0, agent_1): the good team's return per agent is its summed reward,
    counted by hand, over 2 agents (not over all 3)."""
    env = MultiAgentEnv("simple_adversary", seed=0)
    assert env.agents == ["adversary_0", "agent_0", "agent_1"]
    total = 0.0
    env.reset(0)
    done = False
    while not done:
        _, rew, done, _ = env.step([1, 2, 3])
        total += rew[1] + rew[2]
    assert rollout_return(env, lambda obs, state: [1, 2, 3], 1, 0, agents=[1, 2]) == pytest.approx(total)
    assert rollout_return(env, lambda obs, state: [1, 2, 3], 1, 0, scale="per_agent", agents=[1, 2]) == \
        pytest.approx(total / 2)
