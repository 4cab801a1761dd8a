"""SEED RL (papers/distributed_rl/seed_rl.py): the dynamic batching rule (flush at batch_size, on timeout with fewer),
each actor's action from its own observation against the network run by hand, the logged unrolls against a naive
single-env replay (episode ends, truncation, behaviour log-probs), the learner's first update against IMPALA's update
on an independently built batch, local-mode determinism, one-line config errors, and Ray against local."""

from __future__ import annotations

import asyncio
import copy
import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_impala import spy_on_the_learners_lr

from seminal.core import runner
from seminal.core.errors import SeminalError
from seminal.core.rl import make_env
from seminal.core.run import Run
from seminal.papers.distributed_rl import _actors, impala, seed_rl

TINY = replace(seed_rl.PRESETS["quick"], mode="local", n_actors=2, envs_per_actor=2, batch_size=2, unroll_length=5,
               batch_unrolls=2, total_steps=400, hidden=(8,), eval_every=200, eval_episodes=1, bench_steps=20,
               ray_bench_steps=0, bench_warmup=2, checkpoint_every=10)
SEED = 5


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **kw: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sharp_net(obs_dim=4, n_actions=3, seed=1, gain=1.0):
    """A policy far from uniform, whose action depends strongly on the observation (gain: of the first layer, for
    CartPole's small starting observations)."""
    net = _actors.PolicyNet(obs_dim, n_actions, (8,), seed=seed)
    g = torch.Generator().manual_seed(seed)
    for k, p in enumerate(net.pi.parameters()):
        p.data = (gain if k == 0 else 1.0) * 3.0 * torch.randn(p.shape, generator=g)
    return net


def by_hand(net, obs, seed, g):
    """Env g's action on obs alone: the inverse CDF of softmax(pi(obs)) at env g's own first uniform, and its
    log-probability."""
    with torch.no_grad():
        probs = torch.softmax(net.pi(torch.as_tensor(obs, dtype=torch.float32)), -1).double().numpy()
    u = np.random.default_rng([seed, g, 19]).random()
    a = int(np.searchsorted(np.cumsum(probs), u, side="right"))
    return a, math.log(probs[a])


def request(actor, obs):
    E = len(obs)
    return {"actor": actor, "obs": np.asarray(obs, np.float32), "reward": np.zeros(E, np.float32),
            "terminated": np.zeros(E, bool), "truncated": np.zeros(E, bool), "final_obs": np.zeros_like(obs)}


def test_the_server_runs_a_full_batch_at_once_and_the_rest_at_the_rounds_end():
    cfg = replace(TINY, n_actors=5, envs_per_actor=2, batch_size=2)
    system = seed_rl.LocalSEED(cfg, 4, SEED, cfg.batch_size)
    net = sharp_net(4, 2, gain=30.0)
    system.set_weights(_actors.policy_weights(net), 0)
    obs = [a.obs.copy() for a in system.actors]
    submitted = [system.server.submit(a.request()) for a in system.actors[:2]]
    assert submitted == [False, True]  # the second request fills the batch
    system.server.pending.clear()
    system.round()
    assert system.server.flushes == [[0, 1], [2, 3], [4]]  # two full batches, the leftover one at the round's end
    for i, o in enumerate(obs):  # each actor's envs stepped with the action for its own observation
        got = system.server.buf[i]
        for j in range(cfg.envs_per_actor):
            a, logp = by_hand(net, o[j], SEED, i * cfg.envs_per_actor + j)
            assert got["actions"][0, j] == a and got["behaviour_logp"][0, j] == pytest.approx(logp, abs=1e-5)
            np.testing.assert_array_equal(got["obs"][0, j], o[j])
    assert len({int(a) for b in system.server.buf for a in b["actions"][0]}) > 1  # actions differ across envs


def test_the_async_server_flushes_at_batch_size_or_at_timeout_with_fewer():
    """The Ray actor's class driven by asyncio directly (no Ray): its batching rule and its replies."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(4, 3, 4)).astype(np.float32)  # 4 actors x 3 envs
    net = sharp_net()
    timeout = 0.15

    async def scenario():
        server = seed_rl.RayInferenceServer(timeout, None, 4, 3, 4, 5, 3, SEED)
        await server.set_weights(_actors.policy_weights(net), 0)
        t0 = time.perf_counter()
        two = await asyncio.gather(*(server.infer(request(i, obs[i])) for i in (2, 0)))  # 2 of 3: the timeout
        waited = time.perf_counter() - t0
        three = await asyncio.gather(*(server.infer(request(i, obs[i])) for i in (1, 3, 2)))  # full: at once
        return server, two, three, waited

    server, two, three, waited = asyncio.run(scenario())
    assert waited >= timeout * 0.9
    assert server.core.flushes == [[2, 0], [1, 3, 2]]
    for actor, actions in zip((2, 0, 1, 3), [*two, *three[:2]]):
        want = [by_hand(net, obs[actor][j], SEED, actor * 3 + j)[0] for j in range(3)]
        np.testing.assert_array_equal(actions, want)


def replay_env(actor, j, seed, actions, max_steps):
    """One env of one actor replayed alone with the logged actions: per step obs, reward, terminated, truncated,
    final_obs, and the returns of the episodes that ended."""
    env = make_env("CartPole-v1", max_episode_steps=max_steps)
    o, _ = env.reset(seed=seed * 10_007 + actor * 101 + j)
    rows, episodes, ret = [], [], 0.0
    for a in actions:
        o2, r, term, trunc, _ = env.step(int(a))
        ret += r
        final = o2 if trunc and not term else np.zeros_like(o2)
        rows.append((o, r, term, trunc and not term, final))
        if term or trunc:
            episodes.append(ret)
            ret = 0.0
            o2, _ = env.reset()
        o = o2
    return rows, o, episodes


def test_logged_unrolls_are_the_envs_trajectories():
    cfg = replace(TINY, n_actors=2, envs_per_actor=2, batch_size=2, unroll_length=6)
    system = seed_rl.LocalSEED(cfg, 4, SEED, cfg.batch_size)
    limits = (30, 9)  # env 1's time limit falls inside the unrolls; env 0 runs until it falls (TimeLimit: outermost)
    for actor in system.actors:
        for env, limit in zip(actor.envs, limits):
            env._max_episode_steps = limit
    net = sharp_net(4, 2, seed=3)
    system.set_weights(_actors.policy_weights(net), 7)
    unrolls = system.unrolls(2 * 5)  # 5 unrolls per actor, 30 steps of every env
    assert [u["actor"] for u in unrolls] == [0, 1] * 5 and all(u["version"] == 7 for u in unrolls)
    ends = {"terminated": 0, "truncated": 0}
    for i in range(2):
        mine = [u for u in unrolls if u["actor"] == i]
        for a, b in zip(mine, mine[1:]):  # unrolls overlap by one observation: the bootstrap is the next first
            np.testing.assert_array_equal(a["obs"][-1], b["obs"][0])
        replayed = []
        for j in range(2):
            actions = np.concatenate([u["actions"][:, j] for u in mine])
            rows, last_obs, episodes = replay_env(i, j, SEED, actions, limits[j])
            replayed += episodes
            got = {k: np.concatenate([u[k][:, j] for u in mine]) for k in seed_rl._LOG if k != "obs"}
            got["obs"] = np.concatenate([u["obs"][:-1, j] for u in mine])
            for t, (o, r, term, trunc, final) in enumerate(rows):
                np.testing.assert_allclose(got["obs"][t], o, rtol=1e-6)
                assert (got["rewards"][t], got["terminated"][t], got["truncated"][t]) == (r, term, trunc), t
                np.testing.assert_allclose(got["final_obs"][t], final, rtol=1e-6)
                ends["terminated"] += term
                ends["truncated"] += trunc
            np.testing.assert_allclose(mine[-1]["obs"][-1, j], last_obs, rtol=1e-6)
            with torch.no_grad():  # mu(a|x): log-softmax of the server's policy at each logged observation
                logp = torch.log_softmax(net.pi(torch.as_tensor(got["obs"])), -1)
            want = logp.gather(-1, torch.as_tensor(actions)[:, None])[:, 0].numpy()
            np.testing.assert_allclose(got["behaviour_logp"], want, atol=1e-5)
        logged = sorted(r for u in mine for r in u["episodes"])  # every episode that ended, as the replay saw it
        assert logged == sorted(replayed)
    assert ends["terminated"] >= 1 and ends["truncated"] >= 1  # both kinds of episode end were exercised


def test_the_learners_first_update_is_impalas_update_on_the_envs_own_batch(tmp_path):
    """The batch built here without the server (each env reset from its seed, acting by hand with its own uniform)
    and one `impala.learner_step` on it with IMPALA's config written out: SEED's learner must end equal."""
    cfg = replace(TINY, n_actors=2, envs_per_actor=2, batch_size=1, unroll_length=4, batch_unrolls=2,
                  total_steps=16, gamma=0.9, rho_bar=0.5, c_bar=0.7, pg_rho_bar=0.6, baseline_cost=0.3,
                  entropy_cost=0.05, lr=0.01, rms_eps=0.1, max_grad_norm=0.5, hidden=(6,), eval_every=0)
    icfg = impala.Config(gamma=0.9, rho_bar=0.5, c_bar=0.7, pg_rho_bar=0.6, baseline_cost=0.3, entropy_cost=0.05,
                         lr=0.01, rms_eps=0.1, max_grad_norm=0.5, hidden=(6,))
    net, opt = impala.make_learner(4, 2, icfg, SEED)
    T, B = 4, 4
    batch = {"obs": np.zeros((T + 1, B, 4), np.float32), "actions": np.zeros((T, B), np.int64),
             "behaviour_logp": np.zeros((T, B), np.float32), "rewards": np.zeros((T, B), np.float32),
             "terminated": np.zeros((T, B), bool), "truncated": np.zeros((T, B), bool),
             "final_obs": np.zeros((T, B, 4), np.float32)}
    for i in range(2):
        for j in range(2):
            b, env = i * 2 + j, make_env("CartPole-v1")
            o, _ = env.reset(seed=SEED * 10_007 + i * 101 + j)
            u = np.random.default_rng([SEED, b, 19])
            for t in range(T):
                with torch.no_grad():
                    probs = torch.softmax(net.pi(torch.as_tensor(o)), -1).double().numpy()
                a = int(np.searchsorted(np.cumsum(probs), u.random(), side="right"))
                batch["obs"][t, b], batch["actions"][t, b], batch["behaviour_logp"][t, b] = o, a, math.log(probs[a])
                o, r, term, _, _ = env.step(a)
                batch["rewards"][t, b], batch["terminated"][t, b] = r, term
            batch["obs"][T, b] = o
    before = copy.deepcopy(net)
    impala.learner_step(net, opt, batch, icfg, "vtrace")
    with Run(tmp_path, "seed-rl", SEED, cfg, progress=False, tensorboard=False) as run:
        s, seed_net = seed_rl.train_learner(cfg, run, None, lambda state: None)
    assert s["update"] == 1
    for p, q in zip(seed_net.parameters(), net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(p, r) for p, r in zip(seed_net.parameters(), before.parameters()))


def test_inference_runs_the_learners_newest_weights(tmp_path, monkeypatch):
    """Spy on impala.learner_step: the batch of update u + 1 was played by the policy after update u, except its first
    step, logged (with its observation) in the round that completed the previous unrolls, before update u."""
    calls = []
    real = impala.learner_step

    def spy(net, opt, batch, cfg, correction):
        calls.append((_actors.policy_weights(net), batch))
        return real(net, opt, batch, cfg, correction)

    monkeypatch.setattr(impala, "learner_step", spy)
    cfg = replace(TINY, batch_unrolls=2, total_steps=5 * TINY.steps_per_update, eval_every=0, lr=0.05)
    with Run(tmp_path, "seed-rl", SEED, cfg, progress=False, tensorboard=False) as run:
        seed_rl.train_learner(cfg, run, None, lambda state: None)
    assert len(calls) == 5

    def logp(weights, batch, rows):
        logits = torch.as_tensor(_actors.numpy_logits(weights, batch["obs"][rows]))
        return torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(batch["actions"][rows])[..., None])[..., 0]

    for u, (weights, batch) in enumerate(calls):
        mu = torch.as_tensor(batch["behaviour_logp"])
        assert torch.allclose(logp(weights, batch, slice(1, cfg.unroll_length)), mu[1:], atol=1e-5), f"update {u + 1}"
        first = calls[max(u - 1, 0)][0]
        assert torch.allclose(logp(first, batch, slice(0, 1)), mu[:1], atol=1e-5), f"update {u + 1}"
        if u:
            assert not torch.allclose(logp(calls[u - 1][0], batch, slice(1, cfg.unroll_length)), mu[1:], atol=1e-5)


def _untimed(metrics):
    return {k: v for k, v in metrics.items() if not any(w in k for w in ("seconds", "steps_per_s", "mean_batch"))}


def test_local_mode_is_deterministic_and_a_smoke_run_has_every_metric(tmp_path):
    runs = [runner.execute("seed-rl", "quick", seed, [f"{k}={v}" for k, v in (
        ("mode", "local"), ("n_actors", 2), ("envs_per_actor", 2), ("batch_size", 2), ("unroll_length", 5),
        ("batch_unrolls", 2), ("total_steps", 400), ("hidden", 8), ("eval_every", 200), ("eval_episodes", 1),
        ("bench_steps", 20), ("ray_bench_steps", 0), ("bench_warmup", 2))], tmp_path / str(i), progress=False)
        for i, seed in enumerate((7, 7, 8))]
    a, b, c = (r["metrics"] for r in runs)
    assert _untimed(a) == _untimed(b) and _untimed(a) != _untimed(c)
    for key in ("central/steps_per_s", "unbatched/steps_per_s", "per_actor/steps_per_s", "central/latency_seconds",
                "per_actor/latency_seconds", "eval/return", "train/policy_lag"):
        assert isinstance(a[key], float) and math.isfinite(a[key]) and a[key] >= 0, key
    assert a["bench/batched_minus_unbatched_steps_per_s"] == pytest.approx(
        a["central/steps_per_s"] - a["unbatched/steps_per_s"])
    assert a["bench/central_minus_per_actor_steps_per_s"] == pytest.approx(
        a["central/steps_per_s"] - a["per_actor/steps_per_s"])
    assert a["central/mean_batch"] == 2.0 and a["unbatched/mean_batch"] == 1.0
    assert [cl["metric"] for cl in runs[0]["claims"]] == ["bench/central_minus_per_actor_steps_per_s",
                                                          "bench/batched_minus_unbatched_steps_per_s", "eval/return"]


def test_bad_configs_are_one_line_errors():
    with pytest.raises(SeminalError, match="batch_size") as e:
        replace(TINY, n_actors=2, batch_size=3).validate()
    assert "\n" not in str(e.value)
    with pytest.raises(SeminalError, match="max_queue"):
        replace(TINY, mode="ray", max_queue=2, batch_unrolls=3).validate()
    with pytest.raises(SeminalError, match="one update"):
        replace(TINY, total_steps=10).validate()


def test_ray_and_local_servers_give_the_same_actions_and_logs():
    ray = pytest.importorskip("ray")
    cfg = replace(TINY, n_actors=2, envs_per_actor=2, batch_size=2, unroll_length=4, timeout_ms=50.0)
    weights = _actors.policy_weights(sharp_net(4, 2, seed=4))
    local = seed_rl.LocalSEED(cfg, 4, SEED, cfg.batch_size)
    local.set_weights(weights, 0)
    for _ in range(9):
        local.round()
    obs = np.random.default_rng(1).normal(size=(3, 2, 4)).astype(np.float32)
    with _actors.ray_session(2):
        system = seed_rl.RaySEED(cfg, 4, SEED, cfg.batch_size)
        system.set_weights(weights, 0)
        stats = system.run(9)  # both env actors on Ray, 9 requests each
        ready = ray.get(system.server.state.remote())["ready"]
        system.close()
        server = ray.remote(num_cpus=0)(seed_rl.RayInferenceServer).remote(0.05, None, 3, 2, 4, 4, 2, SEED)
        ray.get(server.set_weights.remote(weights, 0))
        from_ray = ray.get([server.infer.remote(request(i, obs[i])) for i in range(3)], timeout=60)  # 2, then 1
        flushes = ray.get(server.flushes.remote())
    assert [s["steps"] for s in stats] == [18, 18] and all(s["latency"] > 0 for s in stats)
    assert len(ready) == len(local.server.ready) == 4
    key = lambda u: (u["actor"], u["obs"][0].tobytes())  # noqa: E731
    for u, v in zip(sorted(ready, key=key), sorted(local.server.ready, key=key)):
        for k in seed_rl._LOG:
            np.testing.assert_array_equal(u[k], v[k], err_msg=k)
    assert sorted(len(f) for f in flushes) == [1, 2]
    plain = seed_rl.InferenceServer(3, 2, 4, 4, 1, SEED)
    plain.set_weights(weights, 0)
    for i in range(3):
        plain.submit(request(i, obs[i]))
        np.testing.assert_array_equal(plain.flush()[i], from_ray[i])


def test_the_timeout_runs_from_the_batchs_first_request_not_its_last():
    """§3: a batch that does not fill runs `timeout` after its first request; a later request does not restart the
    clock (it would run at 0.6 + 1.0 s here, not 1.0 s). The margins leave 0.45 s for a loaded machine."""
    obs = np.random.default_rng(1).normal(size=(3, 1, 4)).astype(np.float32)

    async def scenario():
        server = seed_rl.RayInferenceServer(1.0, None, 3, 1, 4, 5, 3, SEED)
        await server.set_weights(_actors.policy_weights(sharp_net()), 0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = asyncio.ensure_future(server.infer(request(0, obs[0])))
        await asyncio.sleep(0.6)
        second = asyncio.ensure_future(server.infer(request(1, obs[1])))
        await asyncio.gather(first, second)
        return server, loop.time() - t0

    server, waited = asyncio.run(scenario())
    assert server.core.flushes == [[0, 1]]  # one batch of two, run by the timeout
    assert 0.98 <= waited < 1.45


def test_an_unroll_carries_its_oldest_policy_version_and_the_oldest_unrolls_go_first():
    """An unroll played partly under update 4's policy and partly under 5's has version 4 (the lag is counted from
    its stalest step); with several unrolls ready the learner takes them oldest first."""
    server = seed_rl.InferenceServer(2, 1, 4, 3, 1, SEED)
    weights = _actors.policy_weights(sharp_net())
    obs = np.zeros((1, 4), np.float32)
    for t in range(4):  # steps 0, 1, 2 logged; the 4th request completes the unroll of 3 steps
        server.set_weights(weights, 4 if t == 0 else 5)
        for actor in (0, 1):
            server.submit(request(actor, obs))
            server.flush()
    assert [u["version"] for u in server.ready] == [4, 4]
    assert [u["actor"] for u in server.take(1)] == [0] and [u["actor"] for u in server.take(1)] == [1]


def test_the_learning_rate_is_annealed_linearly_to_zero(tmp_path, monkeypatch):
    rates = spy_on_the_learners_lr(monkeypatch)
    cfg = replace(TINY, total_steps=4 * TINY.steps_per_update, eval_every=0, lr=0.02)
    with Run(tmp_path, "seed-rl", SEED, cfg, progress=False, tensorboard=False) as run:
        seed_rl.train_learner(cfg, run, None, lambda state: None)
    assert rates == pytest.approx([0.02, 0.015, 0.01, 0.005])  # lr (1 - u / n), u = 0 ... n - 1


def test_each_step_is_logged_with_the_reward_and_done_its_next_request_brings():
    """§3's log order with rewards that differ (CartPole's are all 1): request k brings the outcome of step k - 1;
    the unroll of T = 3 holds obs 0..3 (obs 3: the bootstrap, and the next unroll's first), rewards r_0, r_1, r_2."""
    server = seed_rl.InferenceServer(1, 1, 4, 3, 1, SEED)
    server.set_weights(_actors.policy_weights(sharp_net()), 0)
    for k in range(7):
        req = request(0, np.full((1, 4), float(k), np.float32))
        req["reward"][:] = 10.0 * k  # the reward of step k - 1 (ignored for the very first request)
        req["terminated"][:] = k == 2  # step 1 ended its episode
        server.submit(req)
        server.flush()
    first, second = server.ready
    np.testing.assert_array_equal(first["obs"][:, 0, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(first["rewards"][:, 0], [10, 20, 30])
    np.testing.assert_array_equal(first["terminated"][:, 0], [False, True, False])
    np.testing.assert_array_equal(second["obs"][:, 0, 0], [3, 4, 5, 6])
    np.testing.assert_array_equal(second["rewards"][:, 0], [40, 50, 60])
    assert first["episodes"] == [30.0] and second["episodes"] == []  # r_0 + r_1 ended at step 1
