"""IMPALA (papers/distributed_rl/impala.py): V-trace against a slow, literal double sum of Eq. (1), the on-policy
case against n-step returns by hand, §5.3's corrections, one whole learner update against an independent
re-derivation, the policy lag, local-mode determinism, local/ray equivalence of an update, and a smoke run."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from seminal.core import runner
from seminal.core.run import Run
from seminal.papers.distributed_rl import _actors, impala

TINY = replace(impala.PRESETS["quick"], mode="local", n_actors=2, envs_per_actor=2, unroll_length=5, batch_unrolls=2,
               total_steps=400, hidden=(8,), eval_every=200, eval_episodes=1, ablation=(), checkpoint_every=10)


pytestmark = pytest.mark.usefixtures("one_thread_no_plots")


def slow_vtrace(blogp, tlogp, rewards, values, bootstrap, discounts, rho_bar, c_bar, pg_rho_bar, lam=1.0):
    """Eq. (1) and §4.2 as written, one (s, t, i) at a time in Python floats. discounts[t][b] is gamma, or 0 where the
    episode ended at t: gamma^{t-s} of Eq. (1) is then the product of the discounts from s to t - 1."""
    T, B = len(rewards), len(rewards[0])
    vs, adv = [[0.0] * B for _ in range(T)], [[0.0] * B for _ in range(T)]
    for b in range(B):
        def V(t, b=b):
            return bootstrap[b] if t == T else values[t][b]

        def ratio(t, b=b):
            return math.exp(tlogp[t][b] - blogp[t][b])

        for s in range(T):
            total = V(s)
            for t in range(s, T):
                weight = 1.0
                for i in range(s, t):
                    weight *= discounts[i][b] * lam * min(c_bar, ratio(i))  # gamma^{t-s} prod_i c_i
                delta = min(rho_bar, ratio(t)) * (rewards[t][b] + discounts[t][b] * V(t + 1) - V(t))
                total += weight * delta
            vs[s][b] = total
        for s in range(T):
            v_next = bootstrap[b] if s == T - 1 else vs[s + 1][b]
            adv[s][b] = min(pg_rho_bar, ratio(s)) * (rewards[s][b] + discounts[s][b] * v_next - V(s))
    return vs, adv


def random_inputs(T=7, B=4, seed=0, ends=False):
    g = torch.Generator().manual_seed(seed)
    blogp = -torch.rand(T, B, generator=g, dtype=torch.float64) * 2
    tlogp = blogp + (torch.rand(T, B, generator=g, dtype=torch.float64) * 3 - 1.5)  # ratios e^-1.5 ... e^1.5
    rewards, values = torch.randn(T, B, generator=g, dtype=torch.float64), torch.randn(T, B, generator=g,
                                                                                          dtype=torch.float64)
    bootstrap = torch.randn(B, generator=g, dtype=torch.float64)
    discounts = torch.full((T, B), 0.9, dtype=torch.float64)
    if ends:
        discounts[2, 0] = discounts[4, 1] = discounts[0, B - 1] = 0.0
    return blogp, tlogp, rewards, values, bootstrap, discounts


@pytest.mark.parametrize("ends, lam", [(False, 1.0), (True, 1.0), (True, 0.8)])
def test_vtrace_equals_the_slow_double_sum_of_eq1(ends, lam):
    inputs = random_inputs(ends=ends)
    rho_bar, c_bar, pg_rho_bar = 1.6, 0.9, 1.2  # clip_rho != clip_pg_rho, and c_bar < rho_bar
    ratio = torch.exp(inputs[1] - inputs[0])
    for lo, hi in ((0, 0.9), (0.9, 1.2), (1.2, 1.6), (1.6, 99)):  # ratios on every side of every threshold
        assert ((ratio > lo) & (ratio < hi)).sum() >= 2
    vs, adv = impala.vtrace(*inputs, rho_bar, c_bar, pg_rho_bar, lam)
    want_vs, want_adv = slow_vtrace(*[x.tolist() for x in inputs], rho_bar, c_bar, pg_rho_bar, lam)
    assert vs.shape == adv.shape == (7, 4)
    assert torch.allclose(vs, torch.tensor(want_vs, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(adv, torch.tensor(want_adv, dtype=torch.float64), atol=1e-12)


def test_on_policy_vtrace_is_the_n_step_return_by_hand():
    logp = torch.log(torch.tensor([[0.3, 0.5], [0.6, 0.5], [0.2, 0.5]]))
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [1.0, 0.0], [2.0, 0.0]])
    bootstrap = torch.tensor([4.0, 8.0])
    discounts = torch.tensor([[0.5, 0.5], [0.5, 0.0], [0.5, 0.5]])  # column 1: the episode ends at t = 1
    want = torch.tensor([[1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 4, 1 + 0.5 * 1],  # 3.25; 1.5 (cut at t = 1)
                         [2 + 0.5 * 3 + 0.25 * 4, 1.0],                      # 4.5; 1 (the last step)
                         [3 + 0.5 * 4, 1 + 0.5 * 8]])                        # 5; the new episode bootstraps
    for bars in (1.0, 2.5):  # ratios 1 and bars >= 1: no truncation happens
        vs, adv = impala.vtrace(logp, logp, rewards, values, bootstrap, discounts, bars, bars, bars)
        assert torch.allclose(vs, want)
        assert torch.allclose(adv, want - values)  # r_s + gamma v_{s+1} - V(x_s) = (n-step return) - V(x_s)


def test_no_correction_and_one_step_is_of_section_5_3():
    blogp, tlogp, rewards, values, bootstrap, discounts = random_inputs(T=5, B=3, seed=1, ends=True)
    cfg = replace(impala.Config(), rho_bar=1.0, c_bar=1.0, pg_rho_bar=1.0)
    n_step, n_adv = slow_vtrace(*[x.tolist() for x in (blogp, blogp, rewards, values, bootstrap, discounts)],
                                1.0, 1.0, 1.0)  # behaviour taken for target: the uncorrected n-step targets
    vs, adv = impala.targets("none", blogp, tlogp, rewards, values, bootstrap, discounts, cfg)
    assert torch.allclose(vs, torch.tensor(n_step, dtype=torch.float64))
    assert torch.allclose(adv, torch.tensor(n_adv, dtype=torch.float64))
    vs_is, adv_is = impala.targets("is", blogp, tlogp, rewards, values, bootstrap, discounts, cfg)
    assert torch.allclose(vs_is, vs)  # no correction of V's target
    ratio = torch.exp(tlogp - blogp)
    assert ratio.max() > 2  # the weight is not truncated
    assert torch.allclose(adv_is, ratio * torch.tensor(n_adv, dtype=torch.float64))
    vs_vt, _ = impala.targets("vtrace", blogp, tlogp, rewards, values, bootstrap, discounts, cfg)
    assert not torch.allclose(vs_vt, vs)  # off-policy: V-trace does correct


def test_one_learner_update_equals_an_independent_computation():
    """One SGD step of learner_step against a hand-written loss on the same fixed batch, through autograd: the
    truncated step bootstraps from V(final x), the terminal one from 0; targets are constants."""
    cfg = replace(impala.Config(), gamma=0.9, rho_bar=1.3, c_bar=0.8, pg_rho_bar=1.1, baseline_cost=0.7,
                  entropy_cost=0.05, max_grad_norm=0.0)
    rng = np.random.default_rng(0)
    T, B, D, A = 4, 3, 4, 2
    batch = {"obs": rng.normal(size=(T + 1, B, D)).astype(np.float32), "actions": rng.integers(0, A, (T, B)),
             "behaviour_logp": np.log(rng.uniform(0.15, 0.85, (T, B))).astype(np.float32),
             "rewards": rng.normal(size=(T, B)).astype(np.float32), "terminated": np.zeros((T, B), bool),
             "truncated": np.zeros((T, B), bool), "final_obs": np.zeros((T, B, D), np.float32)}
    batch["terminated"][1, 0] = True
    batch["truncated"][2, 1] = True
    batch["final_obs"][2, 1] = rng.normal(size=D)
    net = _actors.PolicyNet(D, A, (5,), seed=3)
    for p in net.parameters():  # move off the near-uniform initial policy, so that ratios leave 1
        p.data += 0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
    ref = copy.deepcopy(net)
    lr = 0.3
    impala.learner_step(net, torch.optim.SGD(net.parameters(), lr=lr), batch, cfg, "vtrace")

    obs = torch.as_tensor(batch["obs"], dtype=torch.float64)
    ref = ref.double()
    with torch.no_grad():
        V = ref.v(obs).squeeze(-1)  # (T + 1, B)
        logp_all = torch.log_softmax(ref.pi(obs[:-1]), -1)
        V_final = ref.v(torch.as_tensor(batch["final_obs"], dtype=torch.float64)).squeeze(-1)
    rewards = [[float(batch["rewards"][t, b]) + (cfg.gamma * float(V_final[t, b]) if batch["truncated"][t, b] else 0)
                for b in range(B)] for t in range(T)]
    discounts = [[0.0 if batch["terminated"][t, b] or batch["truncated"][t, b] else cfg.gamma for b in range(B)]
                 for t in range(T)]
    tlogp = [[float(logp_all[t, b, batch["actions"][t, b]]) for b in range(B)] for t in range(T)]
    vs, adv = slow_vtrace(batch["behaviour_logp"].tolist(), tlogp, rewards, V[:-1].tolist(), V[-1].tolist(),
                          discounts, cfg.rho_bar, cfg.c_bar, cfg.pg_rho_bar)
    loss = 0.0
    for t in range(T):
        for b in range(B):
            lp = torch.log_softmax(ref.pi(obs[t, b]), -1)
            v = ref.v(obs[t, b])[0]
            loss = loss - lp[batch["actions"][t, b]] * adv[t][b] / (T * B)  # -rho_s log pi (r + gamma v_{s+1} - V)
            loss = loss + cfg.baseline_cost * 0.5 * (vs[t][b] - v) ** 2 / (T * B)
            loss = loss + cfg.entropy_cost * (lp.exp() * lp).sum() / (T * B)  # minus the entropy
    loss.backward()
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(p.double(), (q - lr * q.grad).detach(), atol=1e-5)
    assert not all(torch.allclose(p.double(), q) for p, q in zip(net.parameters(), ref.parameters()))


def _record_updates(monkeypatch):
    """Wrap learner_step: for every call, the policy the learner holds before it and the batch it gets."""
    calls = []
    real = impala.learner_step

    def spy(net, opt, batch, cfg, correction):
        calls.append((_actors.policy_weights(net), batch))
        return real(net, opt, batch, cfg, correction)
    monkeypatch.setattr(impala, "learner_step", spy)
    return calls


@pytest.mark.parametrize("lag, every", [(3, 1), (0, 2), (2, 3), (0, 1)])
def test_actors_act_with_the_policy_of_update_u_minus_lag(lag, every, tmp_path, monkeypatch):
    calls = _record_updates(monkeypatch)
    cfg = replace(TINY, broadcast_every=every, total_steps=12 * TINY.steps_per_update, eval_every=0, lr=0.05)
    with Run(tmp_path, "impala", 5, cfg, progress=False, tensorboard=False) as run:
        impala.train_arm("impala", "vtrace", lag, cfg.total_steps, cfg, run, None, lambda s: None)
    assert len(calls) == 12
    stale = 0
    for u, (_, batch) in enumerate(calls):  # the batch of update u + 1 was played after u updates
        version = max(0, (u // every) * every - lag)  # last broadcast: after update (u // k) k, of update that - lag
        weights = calls[version][0]
        logits = torch.as_tensor(_actors.numpy_logits(weights, batch["obs"][:-1]))
        logp = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(batch["actions"])[..., None])[..., 0]
        assert torch.allclose(logp, torch.as_tensor(batch["behaviour_logp"]), atol=1e-5), f"update {u + 1}"
        if version != u:  # and it is not the learner's current policy
            stale += 1
            current = torch.log_softmax(torch.as_tensor(_actors.numpy_logits(calls[u][0], batch["obs"][:-1])), -1)
            assert not torch.allclose(current.gather(-1, torch.as_tensor(batch["actions"])[..., None])[..., 0], logp)
    assert stale == sum(max(0, (u // every) * every - lag) != u for u in range(12))


def test_local_mode_is_deterministic_for_a_seed(tmp_path):
    results = []
    for i, seed in enumerate((7, 7, 8)):
        with Run(tmp_path / str(i), "impala", seed, TINY, progress=False, tensorboard=False) as run:
            results.append(impala.train_arm("impala", "vtrace", 1, TINY.total_steps, TINY, run, None, lambda s: None))
    assert results[0]["episodes"] and results[0]["evals"]
    assert results[0]["episodes"] == results[1]["episodes"] and results[0]["evals"] == results[1]["evals"]
    assert results[0]["episodes"] != results[2]["episodes"]


def test_a_ray_actor_and_a_local_actor_give_the_same_unroll_and_update():
    pytest.importorskip("ray")
    net = _actors.PolicyNet(4, 2, (8,), seed=1)
    weights = _actors.policy_weights(net)
    local = _actors.Actor("CartPole-v1", 3, 11, 1)
    local.set_weights(weights, 0)
    with _actors.ray_session(1):
        remote = _actors.RayActors(1, "CartPole-v1", 3, 11)  # actor index 0 ...
        remote.actors = [remote.ray.remote(num_cpus=1)(_actors.Actor).remote("CartPole-v1", 3, 11, 1)]  # ... now 1
        remote.broadcast(weights, 0)
        from_ray = remote.unrolls(2, 25)
        remote.close()
    from_local = [local.unroll(25), local.unroll(25)]
    for a, b in zip(from_local, from_ray):
        for key in ("obs", "actions", "behaviour_logp", "rewards", "terminated", "truncated", "final_obs"):
            assert np.array_equal(a[key], b[key]), key
    cfg = replace(impala.Config(), hidden=(8,))
    nets = [copy.deepcopy(net) for _ in range(2)]
    for n, unrolls in zip(nets, (from_local, from_ray)):
        impala.learner_step(n, torch.optim.RMSprop(n.parameters(), lr=1e-2, eps=0.01), _actors.stack(unrolls), cfg,
                            "vtrace")
    assert all(torch.equal(p, q) for p, q in zip(*(n.parameters() for n in nets)))
    assert not torch.equal(next(nets[0].parameters()), next(net.parameters()))


def test_smoke_train_returns_every_arm(tmp_path):
    overrides = ["mode=local", "main=true", "n_actors=2", "envs_per_actor=2", "unroll_length=5", "total_steps=400",
                 "ablation_steps=400", "ablation_lag=2", "hidden=8", "eval_every=200", "eval_episodes=1"]
    summary = runner.execute("impala", "ablation", 3, overrides, tmp_path, progress=False)
    m = summary["metrics"]
    for key in ("eval/return", "eval/auc", "lag/vtrace_auc", "lag/none_auc", "lag/is_auc",
                "lag/vtrace_minus_none_auc", "lag/vtrace_minus_is_auc"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["lag/vtrace_minus_none_auc"] == pytest.approx(m["lag/vtrace_auc"] - m["lag/none_auc"])
    assert m["train/policy_lag"] == 0 and m["lag/vtrace_policy_lag"] > 1  # stale on purpose in the ablation arms
    assert [c["metric"] for c in summary["claims"]] == ["lag/vtrace_minus_none_auc", "lag/vtrace_minus_is_auc"]


def spy_on_the_learners_lr(monkeypatch) -> list[float]:
    """The learning rate of every `impala.learner_step` from now on (also used by tests/test_seed_rl.py)."""
    rates = []
    real = impala.learner_step

    def spy(net, opt, batch, cfg, correction):
        rates.append(opt.param_groups[0]["lr"])
        return real(net, opt, batch, cfg, correction)

    monkeypatch.setattr(impala, "learner_step", spy)
    return rates


def test_learning_rate_is_annealed_linearly_to_zero_over_the_updates(tmp_path, monkeypatch):
    """The paper anneals the learning rate linearly to 0: update u (0-based) of n runs at lr (1 - u / n), by hand."""
    rates = spy_on_the_learners_lr(monkeypatch)
    cfg = replace(TINY, total_steps=4 * TINY.steps_per_update, eval_every=0, lr=0.02)
    with Run(tmp_path, "impala", 5, cfg, progress=False, tensorboard=False) as run:
        impala.train_arm("impala", "vtrace", 0, cfg.total_steps, cfg, run, None, lambda s: None)
    assert rates == pytest.approx([0.02, 0.015, 0.01, 0.005])


def test_a_resumed_stale_run_continues_exactly(tmp_path):
    """Local mode with actors 3 updates stale: a run resumed from its checkpoint at update 10 (the snapshots of
    updates 7 ... 10 included) ends exactly as the uninterrupted one."""
    cfg = replace(TINY, total_steps=16 * TINY.steps_per_update, eval_every=4 * TINY.steps_per_update, lr=0.05)
    saved = []
    runs = []
    for i, state in enumerate((None, "resume")):
        with Run(tmp_path / str(i), "impala", 5, cfg, progress=False, tensorboard=False) as run:
            resume = copy.deepcopy(saved[0]) if state else None
            runs.append(impala.train_arm("impala", "vtrace", 3, cfg.total_steps, cfg, run, resume,
                                         lambda s: saved.append(copy.deepcopy(s))))
    assert saved[0]["update"] == 10 and len(saved[0]["snapshots"]) == 4
    assert runs[0]["episodes"] == runs[1]["episodes"] and runs[0]["evals"] == runs[1]["evals"]
