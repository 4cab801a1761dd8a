"""The RL plumbing every RL paper scores and resumes through (`seminal.core.rl`), against hand-computed values.

`evaluate` is what every RL claim reads: its episodes must start from seeds seed, seed+1, ..., sum every reward
and end at termination or truncation. `make_env` seeds the env itself, not only its action space. `env_state`
and `set_env_state` put an env back exactly, its random generator included, without sharing arrays with the
checkpoint they came from.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from seminal.core.errors import SeminalError
from seminal.core.rl import env_state, evaluate, make_env, require_box, set_env_state


class Ledger(gymnasium.Env):
    """Episode k's reward at step t is 10 * (reset seed) + t; the episode terminates after `length` steps, or
    is truncated after `limit` steps, whichever comes first. Every reset seed is written down."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int, limit: int):
        self.length, self.limit, self.seeds, self.t, self.seed_ = length, limit, [], 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.t, self.seed_ = 0, seed
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = 10.0 * self.seed_ + self.t
        self.t += 1
        return np.zeros(1, np.float32), reward, self.t >= self.length, self.t >= self.limit, {}


def test_evaluate_sums_every_reward_from_consecutive_seeds_until_termination():
    env = Ledger(length=4, limit=100)
    returns = evaluate(lambda obs: 0, "unused", episodes=3, seed=7, env=env)
    assert env.seeds == [7, 8, 9]
    # episode of seed s: rewards 10 s + 0, 1, 2, 3 -> 40 s + 6
    assert returns == [40 * 7 + 6, 40 * 8 + 6, 40 * 9 + 6]


def test_evaluate_ends_an_episode_at_truncation_too():
    env = Ledger(length=100, limit=3)  # truncated after 3 steps: rewards 10 s + 0, 1, 2
    assert evaluate(lambda obs: 1, "unused", episodes=2, seed=0, env=env) == [3.0, 33.0]


def test_evaluate_on_cartpole_equals_a_hand_written_loop_over_the_same_starts():
    def policy(obs):  # push towards the side the pole leans to (it falls within ~60 steps)
        return int(obs[2] > 0)

    expected = []
    env = gymnasium.make("CartPole-v1")
    for k in range(3):
        obs, _ = env.reset(seed=10_000 + k)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            total, done = total + r, term or trunc
        expected.append(total)
    assert evaluate(policy, "CartPole-v1", episodes=3) == expected
    assert len(set(expected)) == 3  # distinct starts, distinct episodes: one start for all would give one value


def test_make_env_seeds_the_env_so_later_resets_are_reproducible():
    a, b = make_env("CartPole-v1", seed=3), make_env("CartPole-v1", seed=3)
    ref = gymnasium.make("CartPole-v1")
    ref.reset(seed=3)
    first, second, want = a.reset()[0], b.reset()[0], ref.reset()[0]  # the reset after the seeded one
    np.testing.assert_array_equal(first, want)
    np.testing.assert_array_equal(second, want)
    assert a.action_space.sample() == b.action_space.sample()


def test_require_box_refuses_unbounded_and_discrete_actions():
    class Fake:
        action_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)

    with pytest.raises(SeminalError, match="bounded"):
        require_box(Fake(), "Fake-v0", "SAC")
    Fake.action_space = spaces.Discrete(3)
    with pytest.raises(SeminalError, match="continuous"):
        require_box(Fake(), "Fake-v0", "SAC")
    Fake.action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    low, high = require_box(Fake(), "Fake-v0", "SAC")
    assert low.tolist() == [-2.0] and high.tolist() == [2.0]


def _roll(env, actions):
    return [env.step(a)[0].copy() for a in actions]


def test_env_state_round_trip_continues_the_episode_and_the_generator_exactly():
    env = gymnasium.make("CartPole-v1")
    env.reset(seed=5)
    _roll(env, [0, 1, 1])
    saved = env_state(env)
    actions = [1, 0, 0, 1]
    after, next_start = _roll(env, actions), env.reset()[0]  # the unseeded reset draws from the env's generator
    other = gymnasium.make("CartPole-v1")
    other.reset(seed=99)  # a different episode and generator, put back to the saved one
    _roll(other, [1, 1])
    assert set_env_state(other, saved)
    np.testing.assert_array_equal(np.array(_roll(other, actions)), np.array(after))
    np.testing.assert_array_equal(other.reset()[0], next_start)


def test_a_restored_env_shares_no_array_with_the_checkpoint():
    env = gymnasium.make("CartPole-v1")
    env.reset(seed=1)
    saved = env_state(env)
    other = gymnasium.make("CartPole-v1")
    other.reset(seed=2)
    set_env_state(other, saved)
    before = other.unwrapped.state.copy()
    saved[0][-1]["state"][:] = 123.0  # the checkpoint's copy changes (a later save into the same dict, say)
    np.testing.assert_array_equal(other.unwrapped.state, before)
