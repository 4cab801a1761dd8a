"""MAPPO (papers/multi_agent/mappo.py): the shared-policy losses with masks against explicit loops, the value input
(global state for MAPPO, local observation for IPPO), value normalisation, one whole update against an independent
re-derivation, the NumPy acting path, and a tiny deterministic run."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from seminal.core import runner
from seminal.core.errors import Interrupted
from seminal.papers.multi_agent import mappo
from seminal.papers.multi_agent._marl import MultiAgentEnv

pytestmark = pytest.mark.usefixtures("one_thread_no_plots")


def test_actor_and_value_inputs_by_hand():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2, 3, 4)).astype(np.float32)  # (batch, n agents, obs)
    state = rng.normal(size=(2, 7)).astype(np.float32)
    xa = mappo.actor_inputs(obs, True)
    for b in range(2):
        for i in range(3):
            assert np.array_equal(xa[b, i], np.concatenate([obs[b, i], np.eye(3)[i]]))
            assert np.array_equal(mappo.value_inputs(obs, state, "global", True)[b, i], state[b])
            assert np.array_equal(mappo.value_inputs(obs, state, "local", True)[b, i],
                                  np.concatenate([obs[b, i], np.eye(3)[i]]))
            assert np.array_equal(mappo.value_inputs(obs, state, "agent_specific", True)[b, i],
                                  np.concatenate([state[b], obs[b, i], np.eye(3)[i]]))
    assert np.array_equal(mappo.actor_inputs(obs, False), obs)
    assert np.array_equal(mappo.value_inputs(obs, state, "local", False), obs)


@pytest.mark.parametrize("arm", ["mappo", "ippo"])
def test_the_critic_sees_the_global_state_for_mappo_and_local_obs_for_ippo(arm):
    cfg = replace(mappo.PRESETS["quick"], hidden=(8,), epochs=1, minibatches=1)
    env = MultiAgentEnv("simple_spread", seed=3)
    kind = "global" if arm == "mappo" else "local"
    actor, critic, opt, vnorm = mappo.make_learner(env, kind, cfg, 3)
    rng = np.random.default_rng(0)
    batch = mappo.collect(env, actor, 0, 2, True, rng)
    seen = []
    critic.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    mappo.update(actor, critic, opt, vnorm, batch, cfg, kind, rng)
    first = seen[0]  # (T + 1, E, n, d): every state of the batch, each agent
    T, E, n = batch["actions"].shape
    for t in (0, 10, T):
        for i in range(n):
            if arm == "mappo":  # the global state: every agent's observation (mpe2), the same for every agent
                want = env_state = batch["state"][t, 1]
                assert np.allclose(env_state, np.concatenate(batch["obs"][t, 1]))
            else:
                want = np.concatenate([batch["obs"][t, 1, i], np.eye(n)[i]])
            assert np.array_equal(first[t, 1, i].numpy(), want)


def test_masked_policy_and_value_losses_equal_loops_over_agents_and_steps():
    g = torch.Generator().manual_seed(0)
    T, n, clip, delta = 5, 3, 0.2, 0.7
    logp, old = -torch.rand(T, n, generator=g) * 2, -torch.rand(T, n, generator=g) * 2
    adv, v, old_v, tgt = (torch.randn(T, n, generator=g) for _ in range(4))
    mask = (torch.rand(T, n, generator=g) > 0.3).float()
    assert 0 < mask.sum() < T * n
    pol = val = val_noclip = 0.0
    for t in range(T):
        for i in range(n):
            if not mask[t, i]:
                continue
            r = math.exp(float(logp[t, i] - old[t, i]))
            a = float(adv[t, i])
            rc = min(max(r, 1 - clip), 1 + clip)
            pol += min(r * a, rc * a)

            def hub(e):
                return 0.5 * e * e if abs(e) <= delta else delta * (abs(e) - 0.5 * delta)
            vc = float(old_v[t, i]) + min(max(float(v[t, i] - old_v[t, i]), -clip), clip)
            val += max(hub(float(tgt[t, i] - v[t, i])), hub(float(tgt[t, i]) - vc))
            val_noclip += hub(float(tgt[t, i] - v[t, i]))
    live = float(mask.sum())
    assert mappo.policy_loss(logp, old, adv, mask, clip).item() == pytest.approx(-pol / live, rel=1e-5)
    assert mappo.value_loss(v, old_v, tgt, mask, clip, delta).item() == pytest.approx(val / live, rel=1e-5)
    assert mappo.value_loss(v, old_v, tgt, mask, None, delta).item() == pytest.approx(val_noclip / live, rel=1e-5)
    assert mappo.value_loss(v, old_v, tgt, mask, None, None).item() == pytest.approx(
        float((0.5 * (tgt - v) ** 2 * mask).sum()) / live, rel=1e-5)


def test_value_norm_running_statistics_and_denormalisation():
    beta = 0.5
    vn = mappo.ValueNorm(beta)
    mean0, var0 = vn.stats()  # nothing seen: mean 0, variance at its floor
    assert float(mean0) == 0.0 and float(var0) == pytest.approx(1e-2)
    x1, x2 = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([10.0, 20.0])
    vn.update(x1)
    vn.update(x2)
    w1, w2 = beta * (1 - beta), 1 - beta  # debiased weights of the two batches
    mean = (w1 * 3.0 + w2 * 15.0) / (w1 + w2)
    mean_sq = (w1 * np.mean([1, 9, 25]) + w2 * np.mean([100, 400])) / (w1 + w2)
    m, var = vn.stats()
    assert float(m) == pytest.approx(mean) and float(var) == pytest.approx(mean_sq - mean**2)
    y = torch.tensor([-1.0, 0.0, 2.5])
    assert torch.allclose(vn.normalize(y), (y - mean) / np.sqrt(mean_sq - mean**2))
    assert torch.allclose(vn.denormalize(vn.normalize(y)), y, atol=1e-5)
    assert torch.allclose(vn.denormalize(torch.tensor([0.0, 1.0])),
                          torch.tensor([mean, mean + np.sqrt(mean_sq - mean**2)], dtype=torch.float32))


def _tiny_batch():
    """2 episodes of T = 3 steps, n = 2 agents, obs 3, state = both observations; episode 1 terminates at t = 1
    (t = 2 is padding: mask 0 and a garbage reward that must be ignored); episode 0 is truncated at T."""
    rng = np.random.default_rng(5)
    T, E, n = 3, 2, 2
    obs = rng.normal(size=(T + 1, E, n, 3)).astype(np.float32)
    b = {"obs": obs, "state": obs.reshape(T + 1, E, n * 3).copy(), "actions": rng.integers(0, 4, (T, E, n)),
         "rewards": rng.normal(size=(T, E, n)).astype(np.float32), "mask": np.ones((T, E, n), np.float32),
         "terminated": np.zeros((T, E), bool), "dones": np.zeros((T, E), bool)}
    b["dones"][T - 1] = True
    b["terminated"][1, 1] = b["dones"][1, 1] = True
    b["mask"][2, 1] = 0.0
    b["rewards"][2, 1] = 1e3
    return b


def test_one_whole_update_equals_an_independent_computation():
    cfg = replace(mappo.PRESETS["quick"], epochs=2, minibatches=1, gamma=0.9, lam=0.8, clip=0.2, huber_delta=1.0,
                  value_norm_beta=0.5, ent_coef=0.05, vf_coef=0.7, max_grad_norm=0.0, hidden=(5,))
    b = _tiny_batch()
    T, E, n = b["actions"].shape
    gen = torch.Generator().manual_seed(1)
    actor, critic = mappo.Actor(3 + n, 4, cfg.hidden, gen), mappo.Critic(6, cfg.hidden, gen)
    lr = 2.0
    ref_a, ref_c = copy.deepcopy(actor), copy.deepcopy(critic)
    opt = torch.optim.SGD([*actor.parameters(), *critic.parameters()], lr=lr)
    mappo.update(actor, critic, opt, mappo.ValueNorm(cfg.value_norm_beta), b, cfg, "global",
                 np.random.default_rng(0))

    # independently: inputs by hand, V de-normalised with the empty statistics (mean 0, std 0.1)
    xa = torch.tensor(np.array([[[np.concatenate([b["obs"][t, e, i], np.eye(n)[i]]) for i in range(n)]
                                 for e in range(E)] for t in range(T)]), dtype=torch.float32)
    xv = torch.tensor(np.array([[[b["state"][t, e] for _ in range(n)] for e in range(E)] for t in range(T + 1)]))
    with torch.no_grad():
        old_logp = torch.distributions.Categorical(logits=ref_a.net(xa)).log_prob(torch.as_tensor(b["actions"]))
        old_v = ref_c.net(xv)[..., 0]
    V = 0.1 * old_v.double().numpy()
    team = b["rewards"].sum(-1)  # every agent learns from the team reward
    adv = np.zeros((T, E, n))
    for e in range(E):
        for i in range(n):
            for t in range(T):
                if not b["mask"][t, e, i]:
                    continue
                total, k = 0.0, t
                while True:  # A_t = sum_l (gamma lambda)^l delta_{t+l}, stopping at the episode's end
                    nxt = 0.0 if b["terminated"][k, e] else V[k + 1, e, i]
                    total += (cfg.gamma * cfg.lam) ** (k - t) * (team[k, e] + cfg.gamma * nxt - V[k, e, i])
                    if b["dones"][k, e]:
                        break
                    k += 1
                adv[t, e, i] = total
    live = b["mask"] > 0
    R = adv + V[:-1]
    mean, var = R[live].mean(), max(np.mean(R[live] ** 2) - R[live].mean() ** 2, 1e-2)
    tgt = (R - mean) / np.sqrt(var)
    A = (adv - adv[live].mean()) / (adv[live].std() + 1e-5)
    ratios = []
    for _ in range(cfg.epochs):
        dist = torch.distributions.Categorical(logits=ref_a.net(xa))
        logp, ent = dist.log_prob(torch.as_tensor(b["actions"])), dist.entropy()
        v = ref_c.net(xv[:-1])[..., 0]
        loss = torch.zeros(())
        for t in range(T):
            for e in range(E):
                for i in range(n):
                    if not live[t, e, i]:
                        continue
                    r = (logp[t, e, i] - old_logp[t, e, i]).exp()
                    ratios.append(r.item())
                    a = float(A[t, e, i])
                    surr = r * a if (a >= 0 and r <= 1 + cfg.clip) or (a < 0 and r >= 1 - cfg.clip) else \
                        r.clamp(1 - cfg.clip, 1 + cfg.clip) * a
                    vc = old_v[t, e, i] + (v[t, e, i] - old_v[t, e, i]).clamp(-cfg.clip, cfg.clip)
                    err = torch.stack([float(tgt[t, e, i]) - v[t, e, i], float(tgt[t, e, i]) - vc])
                    hub = torch.where(err.abs() <= 1.0, 0.5 * err**2, err.abs() - 0.5).max()
                    loss = loss - surr - cfg.ent_coef * ent[t, e, i] + cfg.vf_coef * hub
        loss = loss / live.sum()
        params = [*ref_a.parameters(), *ref_c.parameters()]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, gr in zip(params, grads):
                p -= lr * gr
    assert max(abs(r - 1) for r in ratios) > cfg.clip  # the clip binds in the second epoch
    for p, q in zip([*actor.parameters(), *critic.parameters()], [*ref_a.parameters(), *ref_c.parameters()]):
        assert torch.allclose(p, q, atol=1e-5, rtol=1e-4)


def test_numpy_acting_path_equals_the_torch_actor():
    gen = torch.Generator().manual_seed(2)
    actor = mappo.Actor(7, 5, (16, 16), gen)
    x = np.random.default_rng(0).normal(size=(6, 7)).astype(np.float32)
    with torch.no_grad():
        want = actor.net(torch.as_tensor(x)).numpy()
    assert np.allclose(mappo.numpy_policy(actor)(x), want, atol=1e-5)
    logits = np.log(np.array([[0.7, 0.2, 0.1]] * 20000))
    counts = np.bincount(mappo.sample(logits, np.random.default_rng(1)), minlength=3) / 20000
    assert np.allclose(counts, [0.7, 0.2, 0.1], atol=0.015)


_TINY = ["episodes=8", "episodes_per_update=4", "epochs=2", "hidden=8", "eval_episodes=2"]


def test_tiny_run_is_deterministic_for_a_seed(tmp_path):
    a = runner.execute("mappo", "quick", 7, _TINY, tmp_path / "a", progress=False)["metrics"]
    b = runner.execute("mappo", "quick", 7, _TINY, tmp_path / "b", progress=False)["metrics"]
    c = runner.execute("mappo", "quick", 8, _TINY, tmp_path / "c", progress=False)["metrics"]
    keys = ["eval/mappo_return", "eval/ippo_return", "eval/random_return", "eval/mappo_minus_ippo"]
    assert all(np.isfinite(a[k]) for k in keys)
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert a["eval/mappo_return"] != c["eval/mappo_return"]


def test_the_claims_numbers_are_the_arms_differences(tmp_path):
    """Long enough for the two critics to steer the two policies apart (16 episodes, 4 updates of 4 epochs): the
    paired claims' numbers are MAPPO - IPPO and each arm - the random baseline, from the returns `train` reports."""
    m = runner.execute("mappo", "quick", 1, ["episodes=16", "episodes_per_update=4", "epochs=4", "hidden=16",
                                             "eval_episodes=2"], tmp_path, progress=False)["metrics"]
    assert m["eval/mappo_return"] != m["eval/ippo_return"]
    assert m["eval/mappo_minus_ippo"] == m["eval/mappo_return"] - m["eval/ippo_return"]
    for arm in ("mappo", "ippo"):
        assert m[f"eval/{arm}_over_random"] == m[f"eval/{arm}_return"] - m["eval/random_return"]


def test_train_gives_mappo_the_global_state_and_ippo_the_local_observation(tmp_path, monkeypatch):
    sizes = []

    class Spy(mappo.Critic):
        def __init__(self, n_in, *args):
            sizes.append(n_in)
            super().__init__(n_in, *args)

    monkeypatch.setattr(mappo, "Critic", Spy)
    runner.execute("mappo", "quick", 1, _TINY[:-1] + ["eval_episodes=1", "episodes=4"], tmp_path, progress=False)
    runner.execute("mappo", "quick", 1, _TINY[:-1] + ["eval_episodes=1", "episodes=4", "state=agent_specific",
                                                      "arms=mappo"], tmp_path, progress=False)
    assert sizes == [54, 18 + 3, 54 + 18 + 3]  # simple_spread: state 54 = 3 x 18, obs 18, 3 agents


def test_bad_arms_and_unequal_agents_are_one_line_errors():
    with pytest.raises(mappo.SeminalError, match="arms must be distinct"):
        replace(mappo.PRESETS["quick"], arms=("mappo", "qmix")).validate()
    env = MultiAgentEnv("simple_speaker_listener", seed=0)
    with pytest.raises(mappo.SeminalError, match="identical agents"):
        mappo.make_learner(env, "global", mappo.PRESETS["quick"], 0)


def test_collect_records_a_time_limit_as_not_terminal_and_chains_steps():
    """simple_spread ends at max_cycles only: every step live (mask 1), `dones` only at the last step, never
    `terminated` (so GAE bootstraps from V(s_T)); obs and state at t + 1 are the env's after the t-th actions."""
    env = MultiAgentEnv("simple_spread", seed=2)
    actor = mappo.Actor(18 + 3, 5, (8,), torch.Generator().manual_seed(0))
    b = mappo.collect(env, actor, 0, 2, True, np.random.default_rng(0))
    T = env.max_cycles
    assert b["mask"].min() == 1.0 and not b["terminated"].any()
    assert b["dones"][:-1].sum() == 0 and b["dones"][-1].all()
    replay = MultiAgentEnv("simple_spread", seed=2)  # the same episodes, replayed with the recorded actions
    for e in range(2):
        obs = replay.reset(e)
        assert np.array_equal(b["obs"][0, e], np.stack(obs)) and np.array_equal(b["state"][0, e], replay.state())
        for t in range(T):
            obs, rew, _, _ = replay.step(list(b["actions"][t, e]))
            assert np.array_equal(b["obs"][t + 1, e], np.stack(obs)) and np.allclose(b["rewards"][t, e], rew)
            assert np.array_equal(b["state"][t + 1, e], replay.state())


def test_actor_and_critic_gradients_are_clipped_separately():
    """SGD at lr 1 with max_grad_norm tiny: one minibatch step moves the actor by exactly the clip and the
    critic by exactly the clip (each network's norm clipped on its own, not jointly)."""
    clip = 1e-4
    cfg = replace(mappo.PRESETS["quick"], epochs=1, minibatches=1, max_grad_norm=clip, hidden=(5,))
    b = _tiny_batch()
    gen = torch.Generator().manual_seed(3)
    actor, critic = mappo.Actor(3 + 2, 4, cfg.hidden, gen), mappo.Critic(6, cfg.hidden, gen)
    before = [copy.deepcopy(actor), copy.deepcopy(critic)]
    opt = torch.optim.SGD([*actor.parameters(), *critic.parameters()], lr=1.0)
    mappo.update(actor, critic, opt, mappo.ValueNorm(cfg.value_norm_beta), b, cfg, "global", np.random.default_rng(0))
    for net, old in zip((actor, critic), before):
        step = torch.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(net.parameters(), old.parameters())))
        assert step.item() == pytest.approx(clip, rel=1e-3), type(net).__name__


def test_resume_continues_every_logged_update(tmp_path, monkeypatch):
    """A run cut at its second checkpoint and resumed logs, update by update, the uninterrupted run's training
    returns and losses: the sampling and minibatch generator resumes where it stopped (the final greedy return of a
    tiny run is too coarse to tell)."""
    monkeypatch.setenv("SEMINAL_CHECKPOINT_SECONDS", "1e9")
    over = ["episodes=16", "episodes_per_update=4", "epochs=2", "hidden=8", "eval_episodes=1", "checkpoint_every=1",
            "arms=mappo"]
    whole = runner.execute("mappo", "quick", 1, over, tmp_path / "whole", progress=False)
    with pytest.raises(Interrupted) as stop:
        runner.execute("mappo", "quick", 1, over, tmp_path / "cut", progress=False, stop_after_checkpoints=2)
    resumed = runner.execute("mappo", resume_dir=stop.value.run_dir, progress=False)

    def rows(summary):
        lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k.startswith("mappo/")} for line in lines]

    logged = rows(whole)
    assert resumed["resumed"] and len([r for r in logged if r]) == 4 and rows(resumed) == logged
