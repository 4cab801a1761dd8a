"""Domain randomization: the wrapper really changes the physics, resamples it per episode within its
ranges, is reproducible, and is the identity at nominal; plus a smoke run of `train`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from seminal.core.rl import make_env
from seminal.papers.robotics import domain_randomization as dr

CARTPOLE_NOMINAL = {"length": 0.5, "masspole": 0.1, "masscart": 1.0, "force_mag": 10.0, "gravity": 9.8}


def cartpole_step_by_hand(state, action, length, masspole, masscart, force_mag, gravity, tau=0.02):
    """Barto, Sutton & Anderson (1983) cart-pole equations (Florian 2005 form), explicit Euler, by hand."""
    x, x_dot, th, th_dot = state
    f = force_mag if action == 1 else -force_mag
    m = masspole + masscart
    tmp = (f + masspole * length * th_dot**2 * math.sin(th)) / m
    th_acc = (gravity * math.sin(th) - math.cos(th) * tmp) / (
        length * (4 / 3 - masspole * math.cos(th) ** 2 / m))
    x_acc = tmp - masspole * length * th_acc * math.cos(th) / m
    return np.array([x + tau * x_dot, x_dot + tau * x_acc, th + tau * th_dot, th_dot + tau * th_acc])


def fixed(env_id: str, **scales) -> dr.DynamicsRandomization:
    return dr.DynamicsRandomization(make_env(env_id), {k: (s, s) for k, s in scales.items()})


@pytest.mark.parametrize("scales", [{"length": 2.0}, {"masspole": 3.0, "masscart": 0.4},
                                    {"force_mag": 0.5, "gravity": 1.7}, {"length": 0.3, "masspole": 2.5}])
def test_cartpole_step_matches_hand_equations_with_new_physics(scales):
    # Fails if the derived terms (total_mass, polemass_length) are left at their nominal values.
    env = fixed("CartPole-v1", **scales)
    env.reset(seed=3)
    params = {k: CARTPOLE_NOMINAL[k] * scales.get(k, 1.0) for k in CARTPOLE_NOMINAL}
    base = env.unwrapped
    assert base.total_mass == pytest.approx(params["masspole"] + params["masscart"])
    assert base.polemass_length == pytest.approx(params["masspole"] * params["length"])
    state = np.array([0.1, -0.3, 0.08, 0.5])
    base.state = state.copy()
    obs, *_ = env.step(1)
    np.testing.assert_allclose(obs, cartpole_step_by_hand(state, 1, **params), rtol=1e-5, atol=1e-6)


def test_longer_pole_falls_slower():
    angles = {}
    for scale in (0.5, 1.0, 2.0):
        env = fixed("CartPole-v1", length=scale)
        env.reset(seed=0)
        env.unwrapped.state = np.array([0.0, 0.0, 0.05, 0.0])
        for _ in range(10):
            obs, *_ = env.step(0 if env.unwrapped.state[2] < 0 else 1)  # push under the pole: it still falls
        angles[scale] = abs(obs[2])
    assert angles[2.0] < angles[1.0] < angles[0.5]


def pendulum_by_hand(th, thdot, torque, m, l, g, dt=0.05):
    new_thdot = thdot + (3 * g / (2 * l) * math.sin(th) + 3.0 / (m * l**2) * torque) * dt
    new_th = th + new_thdot * dt
    return [math.cos(new_th), math.sin(new_th), new_thdot]


@pytest.mark.parametrize("torque_scale, u, torque", [
    (0.25, 1.5, 0.375),  # gain 0.25: 1.5 N m asked (nominal units), 0.375 applied, inside the new limit 0.5
    (2.0, 1.5, 3.0),     # gain 2: 3 N m, beyond the nominal limit of 2 that the action space is fixed at
    (2.0, 2.0, 4.0),     # the largest action gives the new limit
])
def test_pendulum_step_matches_hand_equations(torque_scale, u, torque):
    # Fails if the torque's scale only moves the env's clip (the action space stays [-2, 2]: no effect above 1).
    env = fixed("Pendulum-v1", m=2.0, l=0.7, g=0.3, max_torque=torque_scale)  # x nominal (1, 1, 10, 2)
    env.reset(seed=1)
    th, thdot = 0.4, -1.0
    env.unwrapped.state = np.array([th, thdot])
    obs, *_ = env.step(np.array([u], dtype=np.float32))
    np.testing.assert_allclose(obs, pendulum_by_hand(th, thdot, torque, m=2.0, l=0.7, g=3.0), rtol=1e-5)


def test_resampled_every_episode_within_ranges_and_held_within_episode():
    lo, hi = 0.5, 3.0
    env = dr.DynamicsRandomization(make_env("CartPole-v1"), {k: (lo, hi) for k in CARTPOLE_NOMINAL})
    env.reset(seed=0)
    seen = []
    for _ in range(40):
        _, info = env.reset()
        physics = dr.get_physics(env, list(CARTPOLE_NOMINAL))
        assert physics == pytest.approx(info["physics"])
        for k, v in physics.items():
            assert lo * CARTPOLE_NOMINAL[k] <= v <= hi * CARTPOLE_NOMINAL[k]
        for _ in range(5):
            env.step(env.action_space.sample())
        assert dr.get_physics(env, list(CARTPOLE_NOMINAL)) == physics  # fixed for the whole episode
        seen.append([physics[k] / CARTPOLE_NOMINAL[k] for k in CARTPOLE_NOMINAL])
    seen = np.log(np.array(seen))
    assert len({tuple(r) for r in seen}) == 40  # a new draw each episode
    # log-uniform over [log lo, log hi]: both halves of the range are visited
    assert (seen < math.log(math.sqrt(lo * hi))).any(axis=0).all()
    assert (seen > math.log(math.sqrt(lo * hi))).any(axis=0).all()


def test_same_seed_same_physics_and_trajectory():
    def rollout(seed):
        env = dr.DynamicsRandomization(make_env("CartPole-v1"), {"length": (0.3, 3.0), "gravity": (0.5, 2.0)},
                                       obs_noise=(0.0, 0.05), delay=(0, 2))
        obs, info = env.reset(seed=seed)
        traj = [obs]
        for t in range(30):
            obs, _, terminated, truncated, _ = env.step(t % 2)
            traj.append(obs)
            if terminated or truncated:
                break
        return info["physics"], env.sigma, env.latency, np.array(traj)

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert a[:3] == b[:3]
    np.testing.assert_array_equal(a[3], b[3])
    assert a[0] != c[0]


def test_nominal_wrapper_is_the_unwrapped_env():
    env_w = dr.DynamicsRandomization(make_env("CartPole-v1"), {k: (1.0, 1.0) for k in CARTPOLE_NOMINAL})
    env_u = make_env("CartPole-v1")
    rng = np.random.default_rng(0)
    for seed in range(3):
        ow, _ = env_w.reset(seed=seed)
        ou, _ = env_u.reset(seed=seed)
        np.testing.assert_array_equal(ow, ou)
        done = False
        while not done:
            a = int(rng.integers(2))
            ow, rw, tw, trw, _ = env_w.step(a)
            ou, ru, tu, tru, _ = env_u.step(a)
            np.testing.assert_array_equal(ow, ou)
            assert (rw, tw, trw) == (ru, tu, tru)
            done = tu or tru


def test_action_delay_applies_old_actions():
    delayed = dr.DynamicsRandomization(make_env("CartPole-v1"), delay=(2, 2))
    plain = make_env("CartPole-v1")
    actions = [1, 0, 0, 1, 1, 0, 1, 0]
    applied = [actions[0], actions[0]] + actions[:-2]  # a_{t-2}, and a_0 until then
    delayed.reset(seed=4)
    plain.reset(seed=4)
    for a, a_applied in zip(actions, applied):
        od, *_ = delayed.step(a)
        op, *_ = plain.step(a_applied)
        np.testing.assert_array_equal(od, op)


def test_observation_noise_has_the_drawn_std():
    env = dr.DynamicsRandomization(make_env("CartPole-v1"), obs_noise=(0.03, 0.03))
    env.reset(seed=0)
    errors = []
    for t in range(400):
        obs, _, term, trunc, _ = env.step(t % 2)
        errors.append(obs - env.unwrapped.state)
        if term or trunc:
            env.reset()
    assert np.std(errors) == pytest.approx(0.03, rel=0.1)
    assert abs(np.mean(errors)) < 0.005


def test_heldout_grid_marks_inside_and_outside():
    cfg = dr.PRESETS["quick"]
    settings = dr.heldout_settings(cfg)
    inside = {(a, v) for a, v, ins, _ in settings if ins}
    assert ("length", 0.5) in inside and ("length", 4.0) not in inside and ("delay", 2) not in inside
    assert all(v != 1.0 for a, v, *_ in settings if a in cfg.randomize)  # no held-out setting is nominal


def test_train_smoke(tmp_path, monkeypatch):
    from seminal.core.run import Run

    cfg = dataclasses.replace(dr.PRESETS["quick"], total_steps=256, eval_episodes=1,
                              eval_scales_inside=(0.5,), eval_scales_outside=(), eval_obs_noise=(),
                              eval_delays=(1,), randomize=("length",))
    with Run(tmp_path / "run", "domain-randomization", 0, cfg, progress=False, tensorboard=False) as run:
        metrics = dr.train(cfg, run)
    for key in ("heldout/return_gap", "heldout/drop_gap", "nominal/return_at_nominal",
                "randomized/heldout_return"):
        assert math.isfinite(metrics[key])
    assert (tmp_path / "run" / "plots" / "return_vs_shift.png").exists()


def test_sampling_is_log_uniform_over_the_range():
    # log s ~ U[log lo, log hi]: its quartiles sit at a quarter, half and three quarters of the log range.
    # A uniform draw of s itself would put the geometric midpoint at the 33rd percentile of [0.5, 2].
    rng = np.random.default_rng(0)
    lo, hi = 0.5, 2.0
    s = np.array([dr.sample_physics(rng, {"x": 3.0}, {"x": (lo, hi)})["x"] / 3.0 for _ in range(20_000)])
    assert s.min() >= lo and s.max() <= hi
    q = np.quantile(np.log(s), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(q, math.log(lo) + np.array([0.25, 0.5, 0.75]) * math.log(hi / lo), atol=0.02)


def test_training_never_reaches_the_outside_settings():
    # Every held-out setting marked "outside" lies beyond everything the training envs draw, for every axis.
    cfg = dr.PRESETS["quick"]
    env = dr.training_env(cfg, randomized=True)()
    env.reset(seed=0)
    scales, sigmas, delays = {k: [] for k in cfg.randomize}, [], []
    for _ in range(3000):
        env.reset()
        for k in cfg.randomize:
            scales[k].append(env.physics[k] / env.nominal[k])
        sigmas.append(env.sigma)
        delays.append(env.latency)
    assert set(delays) == set(range(cfg.delay_max + 1))  # the latency really is randomized at reset
    for axis, value, inside, _ in dr.heldout_settings(cfg):
        seen = scales.get(axis) or (sigmas if axis == "obs_noise" else delays)
        reached = min(seen) <= value <= max(seen)
        if not inside:
            assert not reached and (value < min(seen) / 1.5 or value > max(seen) * 1.5 or axis == "delay"), axis
    nominal = dr.training_env(cfg, randomized=False)()
    assert not isinstance(nominal, dr.DynamicsRandomization)  # the nominal arm trains on the plain env


def test_config_rejects_an_outside_setting_inside_the_range():
    from seminal.core.config import check_ranges
    from seminal.core.errors import SeminalError

    with pytest.raises(SeminalError, match="eval_scales_outside"):
        check_ranges(dataclasses.replace(dr.PRESETS["quick"], eval_scales_outside=(0.25, 1.5)))
    with pytest.raises(SeminalError, match="scale_low"):
        check_ranges(dataclasses.replace(dr.PRESETS["quick"], scale_low=-1.0))


def test_evaluation_grid_sets_each_held_out_system(monkeypatch):
    # evaluate_grid must build each held-out system (physics, noise, latency) on the env it scores.
    seen = []

    def fake_evaluate(act, env_id, episodes, seed, env=None):
        if env is not None:
            env.reset(seed=seed)
            seen.append((dict(env.physics), env.sigma, env.latency))
        return [0.0]

    monkeypatch.setattr(dr, "evaluate", fake_evaluate)
    cfg = dr.PRESETS["quick"]
    dr.evaluate_grid(lambda obs: 0, cfg)
    settings = dr.heldout_settings(cfg)
    assert len(seen) == len(settings)
    for (axis, value, _, _), (physics, sigma, latency) in zip(settings, seen):
        if axis in cfg.randomize:
            assert physics[axis] == pytest.approx(CARTPOLE_NOMINAL[axis] * value)
        elif axis == "obs_noise":
            assert sigma == value
        else:
            assert latency == value


def test_train_scores_each_policy_and_reports_the_gaps(tmp_path, monkeypatch):
    # PPO and the grid evaluation stubbed: each "policy" knows which world trained it, the grid returns fixed
    # returns per policy, so every reported number can be computed by hand.
    from seminal.core.run import Run
    from seminal.papers.rl import ppo

    class FakePolicy:
        seconds = 1.0

        def __init__(self, randomized):
            self.randomized = randomized

    def fake_train_policy(env_factory, *args, **kwargs):
        return FakePolicy(isinstance(env_factory(), dr.DynamicsRandomization))

    grids = {False: (500.0, [("length", 0.5, True, 480.0), ("length", 4.0, False, 100.0), ("delay", 2, False, 200.0)]),
             True: (490.0, [("length", 0.5, True, 470.0), ("length", 4.0, False, 400.0), ("delay", 2, False, 300.0)])}
    monkeypatch.setattr(ppo, "train_policy", fake_train_policy)
    monkeypatch.setattr(dr, "evaluate_grid", lambda policy, cfg: {"nominal": grids[policy.randomized][0],
                                                                   "grid": list(grids[policy.randomized][1])})
    cfg = dataclasses.replace(dr.PRESETS["quick"], randomize=("length",))
    with Run(tmp_path / "run", "domain-randomization", 0, cfg, progress=False, tensorboard=False) as run:
        m = dr.train(cfg, run)
    expected = {"nominal/return_at_nominal": 500.0, "nominal/inside_return": 480.0, "nominal/outside_return": 150.0,
                "nominal/heldout_return": 260.0, "nominal/drop": 240.0,
                "randomized/return_at_nominal": 490.0, "randomized/inside_return": 470.0,
                "randomized/outside_return": 350.0, "randomized/heldout_return": 390.0, "randomized/drop": 100.0,
                "heldout/return_gap": 130.0, "heldout/inside_gap": -10.0, "heldout/outside_gap": 200.0,
                "heldout/drop_gap": 140.0}
    assert {k: m[k] for k in expected} == pytest.approx(expected)


def test_cartpole_trains_with_ppos_quick_preset(monkeypatch, tmp_path):
    """The learner is paper 11's PPO with its quick preset on CartPole (the quick experiment; the MuJoCo tasks get
    its full preset)."""
    from seminal.core.errors import Interrupted
    from seminal.core.runner import execute
    from seminal.papers.rl import ppo

    seen = []

    def spy(env, cfg, **kw):
        seen.append(cfg)
        raise Interrupted(str(tmp_path), "domain-randomization")

    monkeypatch.setattr(ppo, "train_policy", spy)
    with pytest.raises(Interrupted):
        execute("domain-randomization", "quick", 0, [], tmp_path, progress=False)
    assert dr.PRESETS["quick"].env_id == "CartPole-v1" and seen[0] == ppo.PRESETS["quick"]
