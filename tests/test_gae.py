"""GAE and n-step returns against hand-computed values, a naive oracle, and a real truncating rollout."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from seminal.papers.rl._onpolicy import ActorCritic, Episodes, NumpyActor, collect, make_vec_env
from seminal.papers.rl.a2c import nstep_returns
from seminal.papers.rl.gae import gae

# Two envs, two steps, gamma = lambda = 0.5.
# env 0: one episode that runs on past the rollout: bootstrap V(s_2) = 4 at the end.
# env 1: truncated at t=0 (true next state has V = 2; the reset state has V = 10 and must NOT be used),
#        then terminated at t=1 (no bootstrap: the 7 must be ignored).
R = np.array([[1.0, 1.0], [2.0, 1.0]])
V = np.array([[1.0, 0.0], [1.0, 10.0]])
NEXT_V = np.array([[1.0, 2.0], [4.0, 7.0]])
TERM = np.array([[0, 0], [0, 1]], dtype=bool)
DONE = np.array([[0, 1], [0, 1]], dtype=bool)


def test_gae_hand_computed():
    adv = gae(R, V, NEXT_V, TERM, DONE, gamma=0.5, lam=0.5)
    # env 0: delta_0 = 1 + .5*1 - 1 = .5, delta_1 = 2 + .5*4 - 1 = 3; A_1 = 3, A_0 = .5 + .25*3 = 1.25
    # env 1: delta_0 = 1 + .5*2 - 0 = 2 (truncation bootstraps), delta_1 = 1 - 10 = -9 (terminal); A_0 = 2
    np.testing.assert_allclose(adv, [[1.25, 2.0], [3.0, -9.0]])


def test_gae_hand_computed_gamma_differs_from_lambda():
    # one env, three steps, no episode end, gamma = 0.5, lambda = 0.8 (gamma * lambda = 0.4)
    r, v, nv = np.array([[1.0], [0.0], [2.0]]), np.array([[0.0], [1.0], [0.0]]), np.array([[1.0], [0.0], [3.0]])
    no = np.zeros((3, 1), bool)
    # delta = (1 + .5 - 0, 0 + 0 - 1, 2 + 1.5 - 0) = (1.5, -1, 3.5); A_2 = 3.5, A_1 = -1 + .4*3.5 = .4, A_0 = 1.66
    np.testing.assert_allclose(gae(r, v, nv, no, no, gamma=0.5, lam=0.8), [[1.66], [0.4], [3.5]])


def test_nstep_returns_hand_computed():
    ret = nstep_returns(R, NEXT_V, TERM, DONE, gamma=0.5)
    # env 0: R_1 = 2 + .5*4 = 4, R_0 = 1 + .5*4 = 3;  env 1: R_0 = 1 + .5*2 = 2, R_1 = 1 + 0 = 1
    np.testing.assert_allclose(ret, [[3.0, 2.0], [4.0, 1.0]])


def naive_gae(r, v, nv, term, done, gamma, lam):
    """Eq. (16) as written: A_t = sum_l (gamma lambda)^l delta_{t+l}, stopping at the episode's end."""
    T, N = r.shape
    delta = r + gamma * (1 - term) * nv - v
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            for l_ in range(T - t):
                adv[t, n] += (gamma * lam) ** l_ * delta[t + l_, n]
                if done[t + l_, n]:
                    break
    return adv


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.95, 1.0])
def test_gae_matches_the_explicit_sum(lam):
    rng = np.random.default_rng(0)
    T, N = 9, 4
    r, v, nv = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=(T, N))
    term = rng.random((T, N)) < 0.15
    done = term | (rng.random((T, N)) < 0.15)
    np.testing.assert_allclose(gae(r, v, nv, term, done, 0.9, lam), naive_gae(r, v, nv, term, done, 0.9, lam),
                               atol=1e-12)
    if lam == 1.0:  # the n-step return is GAE(lambda = 1) plus the baseline, when V(s_{t+1}) is consistent
        nv[:-1] = np.where(done[:-1], nv[:-1], v[1:])
        np.testing.assert_allclose(nstep_returns(r, nv, term, done, 0.9), gae(r, v, nv, term, done, 0.9, 1.0) + v,
                                   atol=1e-12)
    if lam == 0.0:  # GAE(0) is the TD error
        np.testing.assert_allclose(gae(r, v, nv, term, done, 0.9, 0.0), r + 0.9 * (1 - term) * nv - v, atol=1e-12)


class Counter(gymnasium.Env):
    """obs = [steps since reset]; reward 1; truncated after 3 steps, never terminated: the obs at rollout step t is
    t mod 3, the true next state (t mod 3) + 1, every episode returns 3 (also used by tests/test_onpolicy.py)."""

    observation_space = gymnasium.spaces.Box(-100, 100, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, False, self.t >= 3, {}


def test_collect_bootstraps_from_the_final_observation_on_truncation():
    envs = make_vec_env(Counter, 2, seed=0, algorithm="PPO")
    model = ActorCritic(1, envs.single_action_space, (8,), seed=0)
    with torch.no_grad():
        model.v_head.bias.fill_(0.3)
        model.v_body[0].weight.fill_(0.5)  # V depends on the observation
    actor = NumpyActor(model, envs.single_action_space)
    obs = np.asarray(envs.reset(seed=0)[0], np.float32)
    buf, _ = collect(envs, actor, obs, 5, np.random.default_rng(0), Episodes(2), 0)
    v_final, v_reset = actor.value(np.array([[3.0]], np.float32))[0], actor.value(np.array([[0.0]], np.float32))[0]
    assert abs(v_final - v_reset) > 1e-3
    t = 2  # the third step truncates
    assert buf["dones"][t].all() and not buf["terminated"].any()
    np.testing.assert_allclose(buf["next_values"][t], v_final, rtol=1e-5)
    np.testing.assert_allclose(buf["obs"][t + 1], 0.0)  # the vector env has already reset
    np.testing.assert_allclose(buf["next_values"][1], actor.value(np.array([[2.0]], np.float32))[0], rtol=1e-5)


class EndsBothWays(Counter):
    """Terminated and truncated in the same step (a pole that falls on the time limit's last step)."""

    def step(self, action):
        obs, r, _, trunc, info = super().step(action)
        return obs, r, trunc, trunc, info


def test_collect_does_not_bootstrap_when_terminated_at_the_time_limit():
    envs = make_vec_env(EndsBothWays, 2, seed=0, algorithm="PPO")
    model = ActorCritic(1, envs.single_action_space, (8,), seed=0)
    with torch.no_grad():
        model.v_head.bias.fill_(5.0)
    actor = NumpyActor(model, envs.single_action_space)
    obs = np.asarray(envs.reset(seed=0)[0], np.float32)
    buf, _ = collect(envs, actor, obs, 4, np.random.default_rng(0), Episodes(2), 0)
    assert buf["terminated"][2].all() and buf["dones"][2].all()
    np.testing.assert_array_equal(buf["next_values"][2], 0.0)


def test_sweep_needs_both_ends_and_a_middle():
    from seminal.core.config import apply_overrides
    from seminal.core.errors import SeminalError
    from seminal.papers.rl import gae as gae_paper

    with pytest.raises(SeminalError, match="in between"):
        apply_overrides(gae_paper.PRESETS["quick"], ["lambdas=0,1"])
    assert apply_overrides(gae_paper.PRESETS["quick"], ["lambdas=0,0.5,1"]).lambdas == (0.0, 0.5, 1.0)
