"""TD3 (Fujimoto et al. 2018): one whole update against an independent computation (smoothing, clipped double-Q,
target networks, delay, Polyak), the DDPG special case, and the three-agent run."""

from __future__ import annotations

import copy
import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_ddpg import assert_nets_equal, critic_lists, make_case, q_member, snapshot
from torch.func import functional_call

from seminal.core.runner import execute
from seminal.papers.rl import ddpg, td3

TINY = ["total_steps=300", "start_steps=150", "batch_size=32", "hidden=(16,16)", "eval_every=150",
        "eval_episodes=1", "mc_episodes=1", "mc_states=20", "mc_horizon=20", "checkpoint_every=1000"]
CFG = dataclasses.replace(td3.PRESETS["quick"], gamma=0.9, tau=0.2, target_noise=0.6, target_noise_clip=0.3,
                          policy_delay=2)


def saturate_target_actor(nets):
    """Scale the target actor's last layer so that mu'(s') sits near +-1: the action clip of Eq. (15) then acts."""
    with torch.no_grad():
        last = [m for m in nets.actor_target if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(20.0)
        last.bias.mul_(20.0)


def expected_td3_step(nets, batch, cfg, step, seed, lr_actor=0.05, lr_critic=0.1):
    """Parameters after one TD3 step, computed independently of `td3_update` (same noise draw: same seed)."""
    s, a, r, s2, d = batch
    actor, critic = snapshot(nets.actor), snapshot(nets.critic)
    actor_t, critic_t = snapshot(nets.actor_target), snapshot(nets.critic_target)
    mu_t = functional_call(nets.actor_target, actor_t, (s2,))
    torch.manual_seed(seed)
    eps = torch.randn(mu_t.shape) * cfg.target_noise  # the update's first random draw
    noise = torch.maximum(torch.minimum(eps, torch.tensor(cfg.target_noise_clip)), torch.tensor(-cfg.target_noise_clip))
    a2 = torch.maximum(torch.minimum(mu_t + noise, torch.tensor(1.0)), torch.tensor(-1.0))  # Eq. (15)
    assert (eps.abs() > cfg.target_noise_clip).any() and ((mu_t + noise).abs() > 1).any()  # both clips matter
    wt, bt = critic_lists(critic_t)
    q1_t, q2_t = (q_member(wt, bt, k, s2, a2) for k in range(2))
    y = r + cfg.gamma * (1 - d) * torch.where(q1_t < q2_t, q1_t, q2_t)  # Eq. (10): the smaller of the two
    assert (q1_t < q2_t).any() and (q2_t < q1_t).any()  # the min picks from both critics in this batch
    theta = {n: p.clone().requires_grad_() for n, p in critic.items()}
    w, b = critic_lists(theta)
    loss = sum(((q_member(w, b, k, s, a) - y) ** 2).mean() for k in range(2))
    grads = torch.autograd.grad(loss, list(theta.values()))
    critic_new = {n: p.detach() - lr_critic * g for (n, p), g in zip(theta.items(), grads)}
    want = {"critic": critic_new, "actor": actor, "actor_target": actor_t, "critic_target": critic_t}
    if step % cfg.policy_delay == 0:  # §5.2: actor and targets move every d-th step only
        phi = {n: p.clone().requires_grad_() for n, p in actor.items()}
        w, b = critic_lists(critic_new)
        j = -q_member(w, b, 0, s, functional_call(nets.actor, phi, (s,))).mean()  # on Q_1
        grads = torch.autograd.grad(j, list(phi.values()))
        want["actor"] = {n: p.detach() - lr_actor * g for (n, p), g in zip(phi.items(), grads)}
        want["actor_target"] = {n: cfg.tau * want["actor"][n] + (1 - cfg.tau) * actor_t[n] for n in actor_t}
        want["critic_target"] = {n: cfg.tau * critic_new[n] + (1 - cfg.tau) * critic_t[n] for n in critic_t}
    return want, loss.detach()


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_one_td3_update_matches_an_independent_computation(step):
    nets, batch = make_case(critics=2, seed=1)  # a batch where each critic is the smaller one for some samples
    saturate_target_actor(nets)
    want, loss = expected_td3_step(nets, batch, CFG, step, seed=7)
    torch.manual_seed(7)
    out = td3.td3_update(nets, batch, CFG, step)
    assert torch.allclose(out["critic_loss"], loss, rtol=1e-5)
    assert ("actor_loss" in out) == (step % 2 == 0)
    assert_nets_equal(nets, want)


def test_delay_of_three_moves_the_actor_at_steps_0_3_6():
    cfg = dataclasses.replace(CFG, policy_delay=3)
    nets, batch = make_case(critics=2)
    moved = []
    for step in range(7):
        before = snapshot(nets.actor)
        td3.td3_update(nets, batch, cfg, step)
        moved.append(any(not torch.equal(before[n], p) for n, p in nets.actor.named_parameters()))
    assert moved == [True, False, False, True, False, False, True]


def test_clipped_double_q_target_by_hand():
    q_next = torch.tensor([[5.0, -1.0, 2.0], [4.0, 3.0, 7.0]])  # (K=2, B=3)
    y = td3.clipped_double_q_target(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 1.0]), 0.5, q_next)
    assert torch.allclose(y, torch.tensor([1.0 + 0.5 * 4.0, 0.0 + 0.5 * -1.0, 2.0]))  # min; no bootstrap at end


def test_target_smoothing_clips_the_noise_then_the_action():
    mu = torch.tensor([0.0, 0.9, -0.2, 0.3])
    eps = torch.tensor([0.3, 0.3, -2.0, 0.7])
    a = td3.smoothed_target_action(mu, sigma=0.2, clip=0.5, eps=eps)
    # eps clipped to [-0.5, 0.5], then the sum clipped to [-1, 1]
    assert torch.allclose(a, torch.tensor([0.3, 1.0, -0.7, 0.8]))
    drawn = td3.smoothed_target_action(torch.zeros(10000), sigma=0.2, clip=0.5)
    assert drawn.abs().max() <= 0.5 and abs(drawn.std().item() - 0.2) < 0.02


def test_td3_with_every_switch_off_is_ddpg():
    cfg = td3.ddpg_style(CFG)
    a, batch = make_case(critics=1)
    b = copy.deepcopy(a)
    for step in range(3):
        td3.td3_update(a, batch, cfg, step)
        ddpg.ddpg_update(b, batch, cfg, step)
    for net in ("actor", "critic", "actor_target", "critic_target"):
        for p, q in zip(getattr(a, net).parameters(), getattr(b, net).parameters()):
            assert torch.allclose(p, q, atol=1e-6), net


def test_the_arms_differ_in_exactly_their_switches():
    td3_cfg, cdq, plain = (c for _, c in td3.arms(CFG))
    assert (cdq.clipped_double_q, cdq.policy_delay, cdq.target_smoothing) == (True, 1, False)
    assert (plain.clipped_double_q, plain.policy_delay, plain.target_smoothing) == (False, 1, False)
    for other in (cdq, plain):
        diff = {f.name for f in dataclasses.fields(CFG) if getattr(other, f.name) != getattr(td3_cfg, f.name)}
        assert diff <= {"clipped_double_q", "policy_delay", "target_smoothing"}


def test_smoke_run_reports_the_overestimation_metrics_of_all_three_agents(tmp_path):
    s = execute("td3", "quick", 0, TINY, tmp_path, progress=False)
    m = s["metrics"]
    assert {"eval/return", "overest/td3_bias", "overest/cdq_bias", "overest/ddpg_bias", "cdq_only/eval_return",
            "ddpg_style/eval_return"} <= set(m)
    for key, arm in (("overest/removed_fraction", "td3"), ("overest/cdq_removed_fraction", "cdq")):
        if m["overest/ddpg_bias"] > 0:
            frac = (m["overest/ddpg_bias"] - m[f"overest/{arm}_bias"]) / m["overest/ddpg_bias"]
            assert np.isclose(m[key], frac)
    claim = next(c for c in s["claims"] if c["metric"] == "overest/cdq_removed_fraction")
    assert claim["arms"] == {"overest/cdq_bias": m["overest/cdq_bias"], "overest/ddpg_bias": m["overest/ddpg_bias"]}
    run_dir = next((tmp_path / "td3").iterdir())
    assert (run_dir / "plots" / "q_vs_return.png").exists()
    # each agent's bias is the mean of its logged biases after bias_after x total_steps (300): here step 300 only
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    cut = td3.PRESETS["quick"].bias_after * 300
    for tag, key in (("td3", "overest/td3_bias"), ("ddpg_style", "overest/ddpg_bias")):
        logged = [(r["step"], r[f"{tag}/q_bias"]) for r in rows if f"{tag}/q_bias" in r]
        late = [b for t, b in logged if t > cut]
        assert len(late) < len(logged) and m[key] == pytest.approx(sum(late) / len(late))


def test_each_arm_gets_its_critic_count_and_the_same_initial_draws(monkeypatch):
    """train_arm: TD3 and CDQ-only build twin critics, the DDPG-style agent one; every agent's nets come from
    the same seeded draws (paired arms), and its update runs with that arm's own config."""
    built, updates = [], []
    real_make_nets = td3.make_nets

    def recording_make_nets(*args, **kwargs):
        built.append(real_make_nets(*args, **kwargs))
        return built[-1]

    def fake_loop(env, cfg, act, update, stateful, **kwargs):
        updates.append(cfg)
        env.close()
        return 0.0

    monkeypatch.setattr(td3, "make_nets", recording_make_nets)
    monkeypatch.setattr(td3, "offpolicy_loop", fake_loop)
    run = SimpleNamespace(seed=3, device="cpu")
    cfg = dataclasses.replace(CFG, hidden=(8, 8))
    for tag, arm_cfg in td3.arms(cfg):
        torch.rand(5)  # whatever was drawn before (another agent's training) must not matter
        td3.train_arm(arm_cfg, run, tag, None, {})
    assert [n.critic.members for n in built] == [2, 2, 1]
    assert updates == [c for _, c in td3.arms(cfg)]
    for nets in built[1:]:
        for p, q in zip(nets.actor.parameters(), built[0].actor.parameters()):
            assert torch.equal(p, q)
    assert torch.equal(built[1].critic.weights[0], built[0].critic.weights[0])
