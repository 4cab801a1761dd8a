"""TD3 (Fujimoto et al. 2018): clipped double-Q target, target smoothing, delays, and the DDPG special case."""

from __future__ import annotations

import copy

import numpy as np
import torch

from seminal.core.runner import execute
from seminal.papers.rl import ddpg, td3

TINY = ["total_steps=300", "start_steps=150", "batch_size=32", "hidden=(16,16)", "eval_every=150",
        "eval_episodes=1", "mc_episodes=1", "mc_states=20", "mc_horizon=20", "checkpoint_every=1000"]


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


def _nets_and_batch(critics):
    torch.manual_seed(0)
    nets = ddpg.make_nets(3, 1, (16, 16), critics, 1e-3, 1e-3)
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(32, 3, generator=g), torch.rand(32, 1, generator=g) * 2 - 1, torch.randn(32, generator=g),
             torch.randn(32, 3, generator=g), (torch.rand(32, generator=g) < 0.1).float())
    return nets, batch


def test_td3_with_every_switch_off_is_ddpg():
    cfg = td3.ddpg_style(td3.PRESETS["quick"])
    a, batch = _nets_and_batch(1)
    b = copy.deepcopy(a)
    for step in range(3):
        td3.td3_update(a, batch, cfg, step)
        ddpg.ddpg_update(b, batch, cfg, step)
    for net in ("actor", "critic", "actor_target", "critic_target"):
        for p, q in zip(getattr(a, net).parameters(), getattr(b, net).parameters()):
            assert torch.allclose(p, q, atol=1e-6), net


def test_delayed_policy_updates_move_actor_and_targets_every_d_steps():
    cfg = td3.PRESETS["quick"]  # policy_delay = 2
    nets, batch = _nets_and_batch(2)
    before = [p.clone() for p in (*nets.actor.parameters(), *nets.critic_target.parameters())]
    out = td3.td3_update(nets, batch, cfg, step=1)  # odd step: critics only
    after = list((*nets.actor.parameters(), *nets.critic_target.parameters()))
    assert "actor_loss" not in out and all(torch.equal(p, q) for p, q in zip(before, after))
    out = td3.td3_update(nets, batch, cfg, step=2)
    assert "actor_loss" in out and not all(torch.equal(p, q) for p, q in zip(before, after))


def test_critic_regresses_both_members_on_the_min_target():
    cfg = td3.PRESETS["quick"]
    nets, batch = _nets_and_batch(2)
    s, a, r, s2, d = batch
    torch.manual_seed(5)
    with torch.no_grad():  # the hand-computed target, same noise draw
        mu = td3.smoothed_target_action(nets.actor_target(s2), cfg.target_noise, cfg.target_noise_clip)
        q_next = nets.critic_target(torch.cat([s2, mu], -1))[..., 0]
        y = r + cfg.gamma * (1 - d) * torch.minimum(q_next[0], q_next[1])
        q = nets.critic(torch.cat([s, a], -1))[..., 0]
        expected = ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean()
    torch.manual_seed(5)
    out = td3.td3_update(nets, batch, cfg, step=1)
    assert torch.allclose(out["critic_loss"], expected, rtol=1e-5)


def test_smoke_run_reports_the_overestimation_metrics(tmp_path):
    s = execute("td3", "quick", 0, TINY, tmp_path, progress=False)
    m = s["metrics"]
    assert {"eval/return", "overest/td3_bias", "overest/ddpg_bias", "ddpg_style/eval_return"} <= set(m)
    if isinstance(m["overest/ddpg_bias"], float) and m["overest/ddpg_bias"] > 0:
        frac = (m["overest/ddpg_bias"] - m["overest/td3_bias"]) / m["overest/ddpg_bias"]
        assert np.isclose(m["overest/removed_fraction"], frac)
    assert (tmp_path / "td3").exists() and any((p / "plots" / "q_vs_return.png").exists()
                                               for p in (tmp_path / "td3").iterdir())
