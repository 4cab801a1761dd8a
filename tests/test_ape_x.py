"""Ape-X (papers/distributed_rl/ape_x.py): the per-actor epsilons, the n-step double-Q target and the actor's n-step
transitions against literal re-derivations, the dueling head, the replay server (priorities from the actors, FIFO,
stale priority updates dropped, importance weights), initial priorities equal to the learner's TD errors, one whole
learner update against an independent computation, the rate limiter, local-mode determinism, local/ray equivalence
of an actor's unroll, and a smoke run."""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.run import Run
from seminal.papers.distributed_rl import ape_x

TINY = replace(ape_x.PRESETS["quick"], mode="local", actors=(1, 2), envs_per_actor=2, unroll_length=5,
               buffer_size=500, batch_size=16, learning_starts=50, hidden=(8,), target_update=10, sync_every=3,
               batches_per_call=2, total_steps=600, eval_every=20, eval_episodes=1, checkpoint_every=15,
               solved_return=1e9)


pytestmark = pytest.mark.usefixtures("one_thread_no_plots")


def test_actor_epsilons_are_eps_to_the_power_1_plus_alpha_i_over_n_minus_1():
    got = ape_x.actor_epsilons(4, 0.4, 7.0)
    want = [0.4, 0.4 ** (1 + 7 / 3), 0.4 ** (1 + 14 / 3), 0.4**8]  # §4.1 by hand
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert ape_x.actor_epsilons(1, 0.4, 7.0)[0] == pytest.approx(0.4)
    actor = ape_x.ApeXActor(replace(TINY, envs_per_actor=3), 2, 0, None, 1)  # actor 1 of 2, 3 envs each: i = 3, 4, 5
    np.testing.assert_allclose(actor.eps, [0.4 ** (1 + 7 * i / 5) for i in (3, 4, 5)], rtol=1e-12)


def test_actor_env_starts_come_from_the_seed_and_the_actor_index():
    def first_obs(seed, index):
        return ape_x.ApeXActor(TINY, 2, seed, None, index).obs

    np.testing.assert_array_equal(first_obs(3, 1), first_obs(3, 1))
    assert not np.array_equal(first_obs(3, 1), first_obs(4, 1))
    assert not np.array_equal(first_obs(3, 0), first_obs(3, 1))
    assert not np.array_equal(first_obs(3, 0)[0], first_obs(3, 0)[1])  # and each env of an actor its own


def test_n_step_target_lets_the_online_net_pick_and_the_target_net_evaluate():
    q_online = np.array([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])  # picks actions 1 and 0
    q_target = np.array([[9.0, -1.0, 4.0], [2.0, 8.0, 7.0]])  # whose own argmax would be 0 and 1
    got = ape_x.n_step_target(np.array([0.5, 1.5]), np.array([0.9**3, 0.0]), q_online, q_target)
    np.testing.assert_allclose(got, [0.5 + 0.9**3 * -1.0, 1.5 + 0.0 * 2.0])


def slow_n_step(obs, actions, rewards, terminated, truncated, next_obs, n, gamma):
    """The n-step transitions of one env's trajectory, one start t at a time: the window runs n steps or up to the
    episode's end; a terminal end gives no bootstrap; windows not complete by the end of the data give nothing."""
    out, T = [], len(rewards)
    for t in range(T):
        m, ended = 0, False
        while m < n and t + m < T:
            m += 1
            if terminated[t + m - 1] or truncated[t + m - 1]:
                ended = True
                break
        if not ended and m < n:
            continue
        last = t + m - 1
        ret = sum(gamma**k * rewards[t + k] for k in range(m))
        out.append((obs[t], actions[t], ret, next_obs[last], 0.0 if terminated[last] else gamma**m))
    return out


def test_n_step_transitions_match_a_literal_rederivation_across_episode_ends():
    rng = np.random.default_rng(3)
    T, n, gamma = 14, 3, 0.9
    obs = rng.normal(size=(T + 1, 2))
    actions, rewards = rng.integers(0, 2, T), rng.normal(size=T)
    terminated, truncated = np.zeros(T, bool), np.zeros(T, bool)
    terminated[4], truncated[9] = True, True  # an episode terminates at 4, the next is cut at 9
    next_obs = obs[1:].copy()
    next_obs[9] = [7.0, 7.0]  # the observation episode 2 was cut at (obs[10] is the next episode's first)
    nstep, got = ape_x.NStep(n, gamma), []
    for t in range(T):
        got += nstep.step(obs[t], int(actions[t]), float(rewards[t]), next_obs[t], bool(terminated[t]),
                          bool(truncated[t]))
    want = slow_n_step(obs, actions, rewards, terminated, truncated, next_obs, n, gamma)
    assert len(got) == len(want) == T - 2  # every step but the last n - 1 of the unfinished episode
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[0], w[0])
        assert g[1] == w[1]
        assert g[2] == pytest.approx(w[2])
        np.testing.assert_allclose(g[3], w[3])
        assert g[4] == pytest.approx(w[4])
    assert [g[4] == 0.0 for g in got].count(True) == 3  # steps 2, 3 and 4: their windows reach the terminal state


def test_dueling_head_and_its_numpy_twin():
    net = ape_x.DuelingQ(3, 4, (5, 6), seed=1)
    x = torch.randn(7, 3)
    h = x
    for layer in net.layers[:-1]:
        h = torch.relu(layer(h))
    out = net.layers[-1](h)
    v, a = out[:, 0:1], out[:, 1:]
    want = torch.cat([v + a[:, j:j + 1] - a.mean(1, keepdim=True) for j in range(4)], 1)  # Eq. (9), column by column
    torch.testing.assert_close(net(x), want)
    np.testing.assert_allclose(ape_x.numpy_q(ape_x.weights_of(net), x.numpy()), want.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    assert torch.equal(ape_x.DuelingQ(3, 4, (5, 6), seed=1)(x), net(x))  # initial weights from the seed alone


def transitions(k, offset=0.0, obs_dim=2):
    return {"obs": np.full((k, obs_dim), offset, np.float32), "action": np.arange(k) % 2,
            "ret": np.arange(k, dtype=np.float32) + offset, "next_obs": np.ones((k, obs_dim), np.float32),
            "discount": np.full(k, 0.9, np.float32)}


def test_replay_server_priorities_fifo_stale_updates_and_importance_weights():
    cfg = replace(TINY, buffer_size=8, priority_alpha=0.5, priority_beta=0.4, priority_eps=0.01)
    replay = ape_x.ReplayServer(cfg, 2, seed=0)
    td = np.array([1.0, -3.0, 0.0, 2.0, 0.5, -1.0])
    replay.add(transitions(6), td)
    np.testing.assert_allclose(replay.sampler.tree.leaves[:6], (np.abs(td) + 0.01) ** 0.5)  # the actor's, not max
    [batch] = replay.sample(5)
    p = replay.sampler.tree.leaves[:6] / replay.sampler.tree.leaves[:6].sum()
    w = (6 * p[batch["index"]]) ** -0.4
    np.testing.assert_allclose(batch["weights"], w / w.max(), rtol=1e-6)  # (N P(i))^-beta / max, beta fixed
    np.testing.assert_allclose(batch["ret"], batch["index"])  # the rows belong to the slots named
    replay.add(transitions(4, offset=100.0), np.ones(4))  # 10 > 8: slots 6, 7, 0, 1 rewritten, FIFO
    assert replay.size == 8 and replay.pos == 2
    np.testing.assert_allclose(replay.data["ret"][[6, 7, 0, 1, 2]], [100, 101, 102, 103, 2])
    before = replay.sampler.tree.leaves.copy()
    index, writes = np.array([0, 2]), np.array([1, 1])  # what a sample before the overwrite saw
    replay.update([(index, writes, np.array([5.0, 5.0]))])
    assert replay.sampler.tree.leaves[0] == before[0]  # slot 0 holds new data now: its update is dropped
    assert replay.sampler.tree.leaves[2] == pytest.approx((5.0 + 0.01) ** 0.5)  # slot 2 still holds it
    assert replay.sample(9) == []  # fewer than k transitions: nothing


def test_the_actors_initial_priorities_are_the_learners_td_errors():
    cfg = replace(TINY, envs_per_actor=2, unroll_length=12, n_step=3)
    replay = ape_x.ReplayServer(cfg, 4, seed=0)
    actor = ape_x.ApeXActor(cfg, 1, 5, replay, 0)
    net, target = ape_x.DuelingQ(4, 2, cfg.hidden, 1), ape_x.DuelingQ(4, 2, cfg.hidden, 2)
    out = actor.unroll(12, {"online": ape_x.weights_of(net), "target": ape_x.weights_of(target)}, 0)
    n = replay.size
    assert n == out["added"] > 0 and out["steps"] == 24
    batch = {k: v[:n] for k, v in replay.data.items()}
    with torch.no_grad():  # the learner's TD error, written out in torch
        q = net(torch.as_tensor(batch["obs"]))[torch.arange(n), torch.as_tensor(batch["action"])]
        a_star = net(torch.as_tensor(batch["next_obs"])).argmax(1)
        g = torch.as_tensor(batch["ret"]) + torch.as_tensor(batch["discount"]) * target(
            torch.as_tensor(batch["next_obs"]))[torch.arange(n), a_star]
    want = (np.abs((g - q).numpy()) + cfg.priority_eps) ** cfg.priority_alpha
    np.testing.assert_allclose(replay.sampler.tree.leaves[:n], want, rtol=1e-4)


def test_each_env_explores_with_its_own_epsilon():
    """§4.1 gives each env its own eps_i: an env with eps 0 always takes the greedy action of the online weights,
    one with eps 1 a uniform random action (non-greedy about half the time on CartPole)."""
    cfg = replace(TINY, envs_per_actor=2)
    actor = ape_x.ApeXActor(cfg, 1, 3, ape_x.ReplayServer(cfg, 4, seed=0), 0)
    net = ape_x.DuelingQ(4, 2, cfg.hidden, 1)
    weights = {"online": ape_x.weights_of(net), "target": ape_x.weights_of(net)}
    taken: dict[int, list] = {0: [], 1: []}
    for j, nstep in enumerate(actor.nstep):
        def record(obs, action, *rest, j=j, step=nstep.step):
            taken[j].append((obs, action))
            return step(obs, action, *rest)
        nstep.step = record
    actor.eps = np.array([0.0, 1.0])
    actor.unroll(60, weights, 0)
    for j in (0, 1):
        obs = np.stack([o for o, _ in taken[j]])
        greedy = ape_x.numpy_q(weights["online"], obs).argmax(axis=1)
        off = np.mean(np.array([a for _, a in taken[j]]) != greedy)
        assert (off == 0.0) if j == 0 else (0.25 < off < 0.75), (j, off)


def test_one_learner_update_against_an_independent_computation():
    cfg = replace(TINY, huber_delta=1.0, max_grad_norm=1e9)
    net, target = ape_x.DuelingQ(3, 2, (6,), 0), ape_x.DuelingQ(3, 2, (6,), 1)
    rng = np.random.default_rng(0)
    B = 9
    batch = {"obs": rng.normal(size=(B, 3)).astype(np.float32), "action": rng.integers(0, 2, B),
             "ret": rng.normal(size=B).astype(np.float32) * 3, "next_obs": rng.normal(size=(B, 3)).astype(np.float32),
             "discount": np.where(rng.random(B) < 0.3, 0.0, 0.99**3).astype(np.float32),
             "weights": rng.uniform(0.2, 1.0, B).astype(np.float32)}
    ref = copy.deepcopy(net)
    loss = 0.0
    tds = []
    for i in range(B):  # one sample at a time: y_i by hand, Huber by cases
        qn_on = ref(torch.as_tensor(batch["next_obs"][i:i + 1]))[0].detach()
        qn_t = target(torch.as_tensor(batch["next_obs"][i:i + 1]))[0].detach()
        y = float(batch["ret"][i]) + float(batch["discount"][i]) * float(qn_t[int(qn_on.argmax())])
        q = ref(torch.as_tensor(batch["obs"][i:i + 1]))[0, int(batch["action"][i])]
        d = y - q
        tds.append(d.item())
        loss = loss + float(batch["weights"][i]) * (0.5 * d * d if abs(d.item()) <= 1.0 else abs(d) - 0.5)
    (loss / B).backward()
    lr = 0.1
    td, _ = ape_x.learner_step(net, target, torch.optim.SGD(net.parameters(), lr=lr), batch, cfg)
    np.testing.assert_allclose(td, tds, rtol=1e-5, atol=1e-6)  # the new priorities: G - q before the step
    for p, r in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), (r - lr * r.grad).detach(), rtol=1e-5, atol=1e-6)


def _tiny_run(tmp_path, name, cfg=TINY, seed=0):
    with Run(tmp_path / name, "ape-x", seed, cfg, progress=False, tensorboard=False) as run:
        return ape_x.train(cfg, run)


def _untimed(metrics):
    return {k: v for k, v in metrics.items() if "second" not in k}


def test_rate_limiter_local_determinism_and_a_smoke_run(tmp_path):
    cfg = replace(TINY, actors=(1,), main_actors=1)
    a = _tiny_run(tmp_path, "a", cfg)
    b = _tiny_run(tmp_path, "b", cfg)
    assert _untimed(a) == _untimed(b)  # local mode: deterministic for a seed (wall times aside)
    assert _untimed(a) != _untimed(_tiny_run(tmp_path, "c", cfg, seed=1))
    steps, updates = a["a1/env_steps"], a["a1/updates"]
    assert steps == cfg.total_steps and a["a1/solved"] == 0.0
    # the learner samples replay_ratio transitions per one inserted after learning_starts, to within one unroll
    unroll = cfg.envs_per_actor * cfg.unroll_length
    assert cfg.replay_ratio * (steps - unroll - cfg.learning_starts) <= updates * cfg.batch_size
    assert updates * cfg.batch_size <= cfg.replay_ratio * (steps - cfg.learning_starts) + cfg.batch_size
    assert np.isfinite(a["a1/eval/return"]) and a["a1/seconds_to_solve"] == cfg.max_seconds


def test_two_actors_run_and_the_scaling_metric_is_paired(tmp_path):
    m = _tiny_run(tmp_path, "d", replace(TINY, solved_return=9.0, eval_every=5))  # solved at the first evaluation
    assert m["a1/solved"] == m["a2/solved"] == 1.0
    assert m["scaling/t1_minus_t2_seconds"] == pytest.approx(m["a1/seconds_to_solve"] - m["a2/seconds_to_solve"])
    assert m["a2/env_steps"] < TINY.total_steps  # an arm stops at its first solved evaluation


def test_bad_configs_are_one_line_errors():
    with pytest.raises(SeminalError, match="main_actors"):
        replace(TINY, actors=(1, 4), main_actors=2).validate()
    with pytest.raises(SeminalError, match="learning_starts"):
        replace(TINY, learning_starts=8, batch_size=16).validate()


def test_a_ray_actor_writes_the_same_transitions_as_a_local_one():
    ray = pytest.importorskip("ray")
    from seminal.papers.distributed_rl._actors import ray_session

    cfg = replace(TINY, unroll_length=10)
    net, target = ape_x.DuelingQ(4, 2, cfg.hidden, 1), ape_x.DuelingQ(4, 2, cfg.hidden, 2)
    weights = {"online": ape_x.weights_of(net), "target": ape_x.weights_of(target)}
    local = ape_x.ReplayServer(cfg, 4, seed=3)
    ape_x.ApeXActor(cfg, 2, 7, local, 1).unroll(10, weights, 0)
    with ray_session(1):
        replay = ray.remote(num_cpus=0)(ape_x.ReplayServer).remote(cfg, 4, 3)
        actor = ray.remote(num_cpus=1)(ape_x.ApeXActor).remote(cfg, 2, 7, replay, 1)
        added = ray.get(actor.unroll.remote(10, weights, 0))["added"]
        for _ in range(200):  # the actor's add is sent without waiting: let it land
            remote = ray.get(replay.state.remote())
            if remote["size"] == added:
                break
            time.sleep(0.01)
    for k, v in local.state()["data"].items():
        np.testing.assert_array_equal(remote["data"][k], v)
    np.testing.assert_allclose(remote["sampler"]["leaves"], local.state()["sampler"]["leaves"], rtol=1e-6)


def test_the_loop_refreshes_the_target_syncs_the_actors_and_sends_every_priority_back(tmp_path, monkeypatch):
    """Spies on the learner step, the actors' weights and the replay server's priority updates of a local run:
    at update u + 1 the target holds the online weights after target_update * (u // target_update) updates; every
    sync_every updates the actors get the online and target weights of that moment; every TD error the learner
    computes goes back to the replay server, batches_per_call at a time, in order."""
    steps, synced, sent = [], {}, []
    real_step, real_set, real_update = ape_x.learner_step, ape_x.ApeXActor.set_weights, ape_x.ReplayServer.update

    def step(net, target, opt, batch, cfg):
        steps.append([[p.detach().clone() for p in m.parameters()] for m in (net, target)])
        td, loss = real_step(net, target, opt, batch, cfg)
        steps[-1].append((batch["index"].copy(), td.copy()))
        return td, loss

    def set_weights(self, weights, version):
        if self.index == 0:
            synced[int(version)] = weights
        return real_set(self, weights, version)

    def update(self, updates):
        sent.extend((index.copy(), td.copy()) for index, _, td in updates)
        return real_update(self, updates)

    monkeypatch.setattr(ape_x, "learner_step", step)
    monkeypatch.setattr(ape_x.ApeXActor, "set_weights", set_weights)
    monkeypatch.setattr(ape_x.ReplayServer, "update", update)
    cfg = replace(TINY, actors=(1,), main_actors=1)
    _tiny_run(tmp_path, "spy", cfg)
    k, n = cfg.target_update, len(steps)
    assert n > 3 * k
    for u, (_, target, _) in enumerate(steps):
        assert all(torch.equal(a, b) for a, b in zip(target, steps[k * (u // k)][0])), f"update {u + 1}"
    assert sorted(synced) == list(range(0, n + 1, cfg.sync_every))
    for v, w in synced.items():
        if v < n:  # the weights after update v are the ones the learner holds at its call v
            for key, held in (("online", steps[v][0]), ("target", steps[v][1])):
                assert all(np.array_equal(a, b.numpy()) for a, b in zip(w[key], held)), (v, key)
    m = cfg.batches_per_call
    assert len(sent) == n - n % m
    for (index, td), (_, _, (want_index, want_td)) in zip(sent, steps):
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_array_equal(td, want_td)


def test_initial_priorities_read_q_at_the_action_taken():
    """As the test above, with every env acting at random (eps 1), so that both actions occur in the transitions:
    the actor's TD error is G_t - q(S_t, A_t) at the action taken, written out here in torch."""
    cfg = replace(TINY, envs_per_actor=2, unroll_length=12, n_step=3)
    replay = ape_x.ReplayServer(cfg, 4, seed=0)
    actor = ape_x.ApeXActor(cfg, 1, 5, replay, 0)
    actor.eps = np.array([1.0, 1.0])
    net, target = ape_x.DuelingQ(4, 2, cfg.hidden, 1), ape_x.DuelingQ(4, 2, cfg.hidden, 2)
    actor.unroll(12, {"online": ape_x.weights_of(net), "target": ape_x.weights_of(target)}, 0)
    n = replay.size
    batch = {k: torch.as_tensor(v[:n]) for k, v in replay.data.items()}
    assert set(batch["action"].tolist()) == {0, 1}
    with torch.no_grad():
        q = net(batch["obs"])
        q_sa = torch.stack([q[i, int(batch["action"][i])] for i in range(n)])
        a_star = net(batch["next_obs"]).argmax(1)
        g = batch["ret"] + batch["discount"] * target(batch["next_obs"])[torch.arange(n), a_star]
    want = (np.abs((g - q_sa).numpy()) + cfg.priority_eps) ** cfg.priority_alpha
    np.testing.assert_allclose(replay.sampler.tree.leaves[:n], want, rtol=1e-4)
