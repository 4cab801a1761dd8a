"""Distributed PPO and SAC on Ray (papers/distributed_rl/ray_distributed.py): the PPO learner step on gathered rollouts
against paper 11's update on a batch built by hand, the rollouts and their advantages against a naive one-env-at-a-time
collection, every update using one fresh rollout per actor with the broadcast weights (a kill included), the replay
actor (FIFO, only filled rows sampled), the SAC learner step against paper 14's update, the acting actor's
transitions, the SAC broadcast every k updates, local-mode determinism, config errors, and in ray mode a SIGKILLed
rollout actor restarted with its lost rollout collected again and nothing counted twice."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import gymnasium
import numpy as np
import pytest
import torch

from seminal.core import runner
from seminal.core.config import apply_overrides
from seminal.core.errors import SeminalError
from seminal.core.run import Run
from seminal.papers.distributed_rl import ray_distributed as rd
from seminal.papers.rl import ppo, sac
from seminal.papers.rl.gae import gae

TINY = replace(rd.PRESETS["quick"], mode="local", ppo_envs_per_actor=2, ppo_rollout=16, ppo_steps=640,
               ppo_overrides=("hidden=8", "epochs=2", "minibatch=32"), ppo_eval_every=0, sac_steps=400, sac_chunk=20,
               sac_overrides=("hidden=8,8", "start_steps=100", "batch_size=16"), sac_broadcast_every=7,
               sac_batches_per_call=3, sac_eval_every=200, eval_episodes=1, checkpoint_every=5)
OVERRIDES = ["mode=local", "ppo_envs_per_actor=2", "ppo_rollout=16", "ppo_steps=640", "ppo_overrides=hidden=8",
             "ppo_eval_every=0", "sac_steps=400", "sac_chunk=20", "sac_overrides=start_steps=100", "sac_eval_every=200",
             "eval_episodes=1", "checkpoint_every=5"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **kw: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(seed=3, hidden=(8,)):
    probe = gymnasium.make("CartPole-v1")
    model = ppo.ActorCritic(4, probe.action_space, hidden, seed=seed)
    for p in model.parameters():  # off the near-uniform start, so that actions and values differ
        p.data += 0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
    return model


def _rollouts(model, T=30, n_envs=2, seed=5):
    actors = [rd.RolloutActor("CartPole-v1", n_envs, (8,), False, seed, i) for i in range(2)]
    return [a.rollout(T, rd.numpy_weights(model), 0) for a in actors]


def test_ppo_learner_step_equals_paper_11_update_on_the_batch_concatenated_by_hand():
    model = _model()
    rollouts = _rollouts(model)
    pcfg = replace(ppo.Config(), hidden=(8,), epochs=2, minibatch=40)
    nets = [copy.deepcopy(model) for _ in range(2)]
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2, eps=1e-5) for n in nets]
    rd.ppo_learner_step(ppo.make_update(nets[0], opts[0], pcfg), rollouts, 0.25, np.random.default_rng(0))
    keys = ("obs", "actions", "logp", "values", "rewards", "terminated", "dones", "next_values")
    by_hand = {k: np.stack([r[k][:, j] for r in rollouts for j in range(2)], axis=1) for k in keys}  # env columns
    assert by_hand["obs"].shape == (30, 4, 4)
    ppo.make_update(nets[1], opts[1], pcfg)(by_hand, 0.25, np.random.default_rng(0))
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), model.parameters()))


def test_rollouts_and_advantages_match_a_naive_collection_one_env_at_a_time():
    model, T, gamma, lam = _model(), 40, 0.9, 0.7
    rollouts = _rollouts(model, T=T)
    batch = rd.concat_rollouts(rollouts)
    adv = gae(batch["rewards"], batch["values"], batch["next_values"], batch["terminated"], batch["dones"], gamma, lam)
    ends = 0
    for i in range(2):
        for j in range(2):
            col = 2 * i + j
            env = gymnasium.make("CartPole-v1")
            obs, _ = env.reset(seed=5 * 10_007 + i * 101 + j)  # the actor's env j, seeded as documented
            seen, rewards, terms, next_v = [], [], [], []
            for t in range(T):
                seen.append(obs)
                obs, r, term, trunc, _ = env.step(int(batch["actions"][t, col]))
                assert not trunc
                rewards.append(r)
                terms.append(term)
                with torch.no_grad():
                    next_v.append(0.0 if term else float(model.value(torch.as_tensor(obs, dtype=torch.float32)[None])))
                if term:
                    obs, _ = env.reset()
                    ends += 1
            seen = np.array(seen, np.float32)
            np.testing.assert_array_equal(batch["obs"][:, col], seen)
            np.testing.assert_array_equal(batch["rewards"][:, col], rewards)
            np.testing.assert_array_equal(batch["terminated"][:, col], terms)
            with torch.no_grad():
                values = model.value(torch.as_tensor(seen)).numpy()
            np.testing.assert_allclose(batch["values"][:, col], values, atol=1e-5)
            want, acc = np.zeros(T), 0.0  # A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}, one env at a time
            for t in range(T - 1, -1, -1):
                delta = rewards[t] + gamma * next_v[t] - values[t]
                acc = delta + gamma * lam * (0.0 if terms[t] else 1.0) * acc
                want[t] = acc
            np.testing.assert_allclose(adv[:, col], want, atol=1e-4)
    assert ends >= 2  # episodes ended inside the rollouts


def _spy(monkeypatch):
    """Record, for every PPO update, the rollouts it got and whether their log-probs are the learner's policy's."""
    models, calls = [], []
    real_make, real_step = ppo.make_update, rd.ppo_learner_step

    def make_update(model, opt, cfg, device="cpu"):
        models.append(model)
        return real_make(model, opt, cfg, device)

    def step(update, rollouts, progress, rng):
        batch = rd.concat_rollouts(rollouts)
        with torch.no_grad():
            logp, _ = models[-1].log_prob_entropy(torch.as_tensor(batch["obs"]).flatten(0, 1),
                                                  torch.as_tensor(batch["actions"]).flatten())
        fresh = bool(torch.allclose(logp, torch.as_tensor(batch["logp"]).flatten(), atol=1e-5))
        calls.append({"actors": [r["actor"] for r in rollouts], "versions": [r["version"] for r in rollouts],
                      "pids": [r["pid"] for r in rollouts], "steps": sum(r["steps"] for r in rollouts),
                      "fresh": fresh, "shape": batch["obs"].shape})
        return real_step(update, rollouts, progress, rng)

    monkeypatch.setattr(ppo, "make_update", make_update)
    monkeypatch.setattr(rd, "ppo_learner_step", step)
    return calls


def _check_ppo_run(calls, out, cfg):
    n = cfg.ppo_steps // (cfg.ppo_actors * cfg.ppo_envs_per_actor * cfg.ppo_rollout)
    assert len(calls) == out["updates"] == n
    for u, c in enumerate(calls):
        assert c["actors"] == list(range(cfg.ppo_actors)), f"update {u}: one rollout per actor"
        assert c["versions"] == [u] * cfg.ppo_actors, f"update {u}: rollouts of this update's weights"
        assert c["fresh"], f"update {u}: acted with the learner's current policy"
        assert c["shape"] == (cfg.ppo_rollout, cfg.ppo_actors * cfg.ppo_envs_per_actor, 4)
    assert out["env_steps"] == sum(c["steps"] for c in calls) == n * cfg.ppo_actors * cfg.ppo_envs_per_actor * \
        cfg.ppo_rollout  # counted once each, lost rollouts not at all
    assert out["recollected"] >= 1 and out["restarts"] >= 1


def test_ppo_updates_use_one_fresh_rollout_per_actor_and_a_killed_actor_is_recollected(tmp_path, monkeypatch):
    calls = _spy(monkeypatch)
    with Run(tmp_path, "ray-distributed", 4, TINY, progress=False, tensorboard=False) as run:
        out = rd.train_ppo_arm(TINY, run, None, lambda s: None)
    _check_ppo_run(calls, out, TINY)
    assert out["recollected"] == out["restarts"] == 1


def test_replay_actor_is_fifo_and_samples_only_rows_that_were_added():
    replay = rd.ReplayActor(5, 2, 1, seed=0)

    def rows(ids):
        ids = np.asarray(ids, np.float32)
        return {"obs": np.stack([ids, -ids], 1), "action": ids[:, None] / 10, "reward": ids,
                "next_obs": np.stack([ids + 0.5, ids], 1), "terminated": (ids % 2 == 0).astype(np.float32)}

    assert replay.add(rows([1, 2, 3])) == 3
    seen = set()
    for b in replay.sample(64, 4):  # 3 of 5 rows filled: nothing from the empty slots
        for k, v in rows(b["reward"]).items():
            np.testing.assert_array_equal(b[k], v)  # each sampled row is one whole transition that was added
        seen |= set(b["reward"].tolist())
    assert seen == {1.0, 2.0, 3.0}
    assert replay.add(rows([4, 5, 6, 7])) == 7
    seen = set()
    for b in replay.sample(64, 4):
        seen |= set(b["reward"].tolist())
    assert seen == {3.0, 4.0, 5.0, 6.0, 7.0}  # the two oldest were overwritten
    assert replay.size == 5 and replay.count() == 7


def test_sac_learner_step_equals_paper_14_update_on_the_same_batch():
    scfg = replace(sac.Config(), hidden=(16, 16), batch_size=32)
    torch.manual_seed(0)
    agents = [sac.make_agent(3, 1, scfg)]
    agents.append(copy.deepcopy(agents[0]))
    replay = rd.ReplayActor(100, 3, 1, seed=0)
    rng = np.random.default_rng(1)
    replay.add({"obs": rng.normal(size=(60, 3)), "action": rng.uniform(-1, 1, (60, 1)), "reward": rng.normal(size=60),
                "next_obs": rng.normal(size=(60, 3)), "terminated": (rng.random(60) < 0.3).astype(np.float32)})
    batch = replay.sample(32)[0]
    torch.manual_seed(7)
    rd.sac_learner_step(agents[0], batch, scfg, -1.0)
    tensors = tuple(torch.tensor(batch[k], dtype=torch.float32) for k in ("obs", "action", "reward", "next_obs",
                                                                            "terminated"))
    torch.manual_seed(7)
    sac.sac_update(agents[1], tensors, scfg, -1.0)
    for part in ("actor", "critic", "critic_target"):
        a, b = (getattr(x, part).parameters() for x in agents)
        assert all(torch.equal(p, q) for p, q in zip(a, b)), part
    assert torch.equal(agents[0].log_alpha, agents[1].log_alpha)


def test_acting_actor_stores_true_transitions_and_a_time_limit_is_not_terminal():
    replay = rd.ReplayActor(300, 3, 1, seed=0)
    actor = rd.ActingActor("Pendulum-v1", (8,), 2, replay, 1)
    weights = rd.numpy_weights(sac.SquashedGaussianActor(3, 1, (8,)))
    out = actor.act(150, weights, 0, True)
    out2 = actor.act(60, weights, 0, False)
    assert out["steps"] + out2["steps"] == replay.count() == 210 and len(out["episodes"] + out2["episodes"]) == 1
    d = {k: v[:210] for k, v in replay.data.items()}
    assert not d["terminated"].any()  # Pendulum only truncates (200 steps): every target still bootstraps
    env = gymnasium.make("Pendulum-v1")
    obs, _ = env.reset(seed=2 * 10_007 + 1 * 101)
    for t in range(210):
        np.testing.assert_allclose(d["obs"][t], obs, atol=1e-6)
        assert np.all(np.abs(d["action"][t]) <= 1)
        nxt, r, _, trunc, _ = env.step(rd.scale_action(d["action"][t], env.action_space.low, env.action_space.high))
        np.testing.assert_allclose(d["reward"][t], r, rtol=1e-5)
        np.testing.assert_allclose(d["next_obs"][t], nxt, atol=1e-6)  # at t = 199 the observation it was cut at
        obs = env.reset()[0] if trunc else nxt
        assert trunc == (t == 199)


def test_sac_actors_get_the_weights_of_every_kth_update(tmp_path, monkeypatch):
    calls = []
    real = rd.ActingActor.act

    def act(self, n, weights, version, uniform):
        calls.append((version, uniform, {k: np.array(v) for k, v in weights.items()}))
        return real(self, n, weights, version, uniform)

    monkeypatch.setattr(rd.ActingActor, "act", act)
    cfg = TINY  # actor 0 killed at step 200, its chunk lost
    with Run(tmp_path, "ray-distributed", 4, cfg, progress=False, tensorboard=False) as run:
        out = rd.train_sac_arm(cfg, run, None, lambda s: None)
    k, versions = cfg.sac_broadcast_every, [v for v, _, _ in calls]
    assert out["recollected"] == out["restarts"] == 1 and len(calls) == cfg.sac_steps // cfg.sac_chunk
    assert out["env_steps"] == cfg.sac_steps and out["updates"] == cfg.sac_steps - 100  # the lost chunk taken again
    assert all(v % k == 0 for v in versions) and versions == sorted(versions) and len(set(versions)) > 3
    assert [u for _, u, _ in calls] == [i * cfg.sac_chunk < 100 for i in range(len(calls))]
    first = {}
    for v, _, w in calls:
        first.setdefault(v, w)
        assert all(np.array_equal(w[key], first[v][key]) for key in w)  # one version, one set of weights
    a, b = first[versions[0]], first[versions[-1]]
    assert not all(np.array_equal(a[key], b[key]) for key in a)  # the policy sent did change


def test_local_mode_is_deterministic_for_a_seed(tmp_path):
    ms = [runner.execute("ray-distributed", "quick", s, OVERRIDES, tmp_path / str(i), progress=False)["metrics"]
          for i, s in enumerate((3, 3, 4))]
    same = {k: v for k, v in ms[0].items() if "seconds" not in k and "steps_per_s" not in k}
    assert {k: ms[1][k] for k in same} == same
    assert ms[0]["fault/recollected"] == 2  # one killed actor per arm, its lost call made again
    assert ms[2]["ppo/eval_return"] != ms[0]["ppo/eval_return"] or ms[2]["sac/eval_return"] != ms[0]["sac/eval_return"]
    assert all(math.isfinite(ms[0][k]) for k in ("ppo/eval_return", "sac/eval_return", "ppo/env_steps"))


@pytest.mark.parametrize("pair", ["arms=ppo,foo", "arms=", "ppo_steps=50", "ppo_preset=huge", "kill_actor_at=1",
                                  "sac_steps=20", "ppo_overrides=epochs=0"])
def test_config_errors_are_one_line(pair, tmp_path):
    with pytest.raises(SeminalError) as e:
        cfg = apply_overrides(TINY, [pair])
        cfg.validate()
        rd.ppo_config(cfg)
    assert "\n" not in str(e.value)


def test_ray_mode_kill_restarts_the_actor_and_recollects_without_double_counting(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    calls = _spy(monkeypatch)
    cfg = replace(TINY, mode="ray", ppo_rollout=64, ppo_steps=2560, checkpoint_every=1000)  # 10 updates, kill in 5
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        with Run(tmp_path, "ray-distributed", 4, cfg, progress=False, tensorboard=False) as run:
            out = rd.train_ppo_arm(cfg, run, None, lambda s: None)
    finally:
        ray.shutdown()
    _check_ppo_run(calls, out, cfg)
    assert out["recollected"] == out["restarts"] == 1  # one death, one rollout made again, and no more
    pids = [c["pids"][0] for c in calls]
    assert len(set(pids)) == 2 and pids[0] == pids[4] != pids[5] == pids[-1]  # actor 0 back as a new process
    assert len({c["pids"][1] for c in calls}) == 1  # actor 1 was never touched
    with Run(tmp_path / "local", "ray-distributed", 4, cfg, progress=False, tensorboard=False) as run:
        local = rd.train_ppo_arm(replace(cfg, mode="local"), run, None, lambda s: None)
    assert local["episodes"] == out["episodes"]  # synchronous PPO: ray mode, kill and restart included, is local mode


def test_ppo_update_u_is_given_progress_u_over_n(tmp_path, monkeypatch):
    """Paper 11's annealing reads the fraction of training done before the update: u / n for u = 0 ... n - 1."""
    progress = []
    real = rd.ppo_learner_step

    def step(update, rollouts, p, rng):
        progress.append(p)
        return real(update, rollouts, p, rng)

    monkeypatch.setattr(rd, "ppo_learner_step", step)
    cfg = replace(TINY, kill_actor_at=0.0, ppo_steps=4 * TINY.ppo_actors * TINY.ppo_envs_per_actor * TINY.ppo_rollout)
    with Run(tmp_path, "ray-distributed", 4, cfg, progress=False, tensorboard=False) as run:
        rd.train_ppo_arm(cfg, run, None, lambda s: None)
    assert progress == [0.0, 0.25, 0.5, 0.75]


def test_acting_actor_episode_returns_are_the_sums_of_their_stored_rewards():
    replay = rd.ReplayActor(500, 3, 1, seed=0)
    actor = rd.ActingActor("Pendulum-v1", (8,), 2, replay, 0)
    weights = rd.numpy_weights(sac.SquashedGaussianActor(3, 1, (8,)))
    episodes = actor.act(250, weights, 0, True)["episodes"] + actor.act(200, weights, 0, False)["episodes"]
    rewards = replay.data["reward"][:450].astype(np.float64)
    assert episodes == pytest.approx([rewards[:200].sum(), rewards[200:400].sum()], rel=1e-5)  # 200-step episodes
