"""QMIX: the mixer against a hand computation, monotonicity (Eq. 5) by autograd, the decentralised argmax (Eq. 4),
one whole update step (QMIX, VDN, IQL; double Q on and off; padded episodes) against explicit loops, the two-step
game's payoffs, episode replay's padding, the acting path against the batch unroll, and tiny train runs."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from seminal.core.errors import SeminalError
from seminal.core.run import Run, seed_everything
from seminal.papers.multi_agent import qmix
from seminal.papers.multi_agent._marl import rollout_return

TINY = dataclasses.replace(qmix.PRESETS["quick"], episodes=60, batch_size=8, buffer_episodes=40, target_update=10,
                           eval_every=30, checkpoint_every=0, hidden=16, arms=("qmix", "vdn", "iql"))


def test_monotonic_mix_matches_hand_computation():
    q = torch.tensor([[1.0, 2.0]])
    w1 = torch.tensor([[[1.0, 0.0], [0.5, 2.0]]])  # (B, n, E)
    b1, w2, b2 = torch.tensor([[-3.0, 0.0]]), torch.tensor([[2.0, 0.5]]), torch.tensor([1.0])
    # w1^T q = [1 + 1, 0 + 4] = [2, 4]; + b1 = [-1, 4]; elu = [e^-1 - 1, 4]; . w2 = 2 (e^-1 - 1) + 2; + b2
    expected = 2.0 * (math.exp(-1.0) - 1.0) + 0.5 * 4.0 + 1.0
    assert qmix.monotonic_mix(q, w1, b1, w2, b2).item() == pytest.approx(expected, abs=1e-6)


def test_mixer_takes_abs_of_hypernet_weights_and_biases_as_they_are():
    mixer = qmix.QMixer(2, 3, 2)
    with torch.no_grad():
        for layer in (mixer.hyper_w1, mixer.hyper_b1, mixer.hyper_w2, mixer.hyper_b2[2]):
            layer.weight.zero_()
        mixer.hyper_w1.bias.copy_(torch.tensor([-1.0, 0.0, 0.5, -2.0]))  # w1[a, e] row-major: [[-1, 0], [.5, -2]]
        mixer.hyper_b1.bias.copy_(torch.tensor([-3.0, 0.0]))
        mixer.hyper_w2.bias.copy_(torch.tensor([-2.0, 0.5]))
        mixer.hyper_b2[2].bias.copy_(torch.tensor([-1.0]))
    q, s = torch.tensor([[1.0, 2.0]]), torch.randn(1, 3)
    # |w1| = [[1, 0], [.5, 2]]: as in the hand computation above, b2 = -1 (not abs'd)
    expected = 2.0 * (math.exp(-1.0) - 1.0) + 0.5 * 4.0 - 1.0
    assert mixer(q, s).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_mixing_is_monotone_in_every_agent_for_random_states(layers):
    torch.manual_seed(0)
    mixer = qmix.QMixer(3, 6, 8, hypernet_layers=layers, hypernet_embed=16)
    q = (3 * torch.randn(256, 3)).requires_grad_()
    s = 3 * torch.randn(256, 6)
    (grad,) = torch.autograd.grad(mixer(q, s).sum(), q)
    assert (grad >= 0).all() and (grad > 0).float().mean() > 0.5  # Eq. (5), and not trivially zero


def test_mixer_depends_on_the_state():
    torch.manual_seed(1)
    mixer, q = qmix.QMixer(2, 4, 8), torch.randn(5, 2)
    assert not torch.allclose(mixer(q, torch.randn(5, 4)), mixer(q, torch.randn(5, 4)))


def test_joint_argmax_is_the_agents_argmax():  # Eq. (4)
    torch.manual_seed(2)
    mixer = qmix.QMixer(3, 5, 8)
    for _ in range(20):
        utilities, s = torch.randn(3, 4), torch.randn(1, 5)  # 3 agents, 4 actions
        joint = list(itertools.product(range(4), repeat=3))
        q = torch.stack([utilities[[0, 1, 2], list(u)] for u in joint])  # (64, 3)
        best = joint[int(mixer(q, s.expand(len(joint), 5)).argmax())]
        assert tuple(qmix.greedy_actions(utilities).tolist()) == best


def test_td_loss_bootstraps_time_limits_and_masks_padding():
    q_taken = torch.tensor([[1.0, 2.0, 5.0]])
    target_next = torch.tensor([[3.0, 4.0, 100.0]])
    reward, terminated = torch.tensor([[0.5, 1.0, 9.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third step is padding
    # y = [0.5 + 0.9 * 3, 1.0] = [3.2, 1.0]; errors [-2.2, 1.0]; mean over 2 real steps
    loss = qmix.td_loss(q_taken, target_next, reward, terminated, mask, 0.9)
    assert loss.item() == pytest.approx((2.2**2 + 1.0**2) / 2)


def test_two_step_game_payoffs_and_returns():
    env = qmix.TwoStepGame()
    assert rollout_return(env, lambda obs, s: [0, 1], 1, 0) == 7.0  # A: 2A pays 7 whatever they do
    for first2 in (0, 1):  # agent 2's first action does not matter
        for (u1, u2), r in {(0, 0): 0.0, (0, 1): 1.0, (1, 0): 1.0, (1, 1): 8.0}.items():
            env.reset(0)
            env.step([1, first2])
            obs, rew, done, terminal = env.step([u1, u2])
            assert rew.sum() == r and done and terminal
    obs = env.reset(0)
    assert np.array_equal(obs[0], [1, 0, 0]) and np.array_equal(env.state(), [1, 0, 0])
    env.step([1, 0])
    assert np.array_equal(env.state(), [0, 0, 1])  # 2B


def test_agent_inputs_one_hot_last_action_and_id():
    obs = torch.arange(12.0).view(1, 3, 2, 2)  # (B, T, n, D)
    prev = torch.tensor([[[-1, -1], [2, 0], [1, 1]]])
    x = qmix.agent_inputs(obs, prev, 3, last_action=True, agent_id=True)
    assert x.shape == (1, 3, 2, 2 + 3 + 2)
    assert torch.equal(x[0, 0, 1], torch.tensor([2.0, 3.0, 0, 0, 0, 0, 1]))  # t=0: no last action; agent 1
    assert torch.equal(x[0, 1, 0], torch.tensor([4.0, 5.0, 0, 0, 1, 1, 0]))  # last action 2; agent 0
    assert qmix.agent_inputs(obs, prev, 3, False, False).shape == (1, 3, 2, 2)


def test_episode_replay_pads_masks_and_wraps():
    memory = qmix.EpisodeReplay(2, 3, 2, 1, 2)
    for length in (3, 1, 2):
        memory.add({"obs": np.ones((length + 1, 2, 1)), "state": np.ones((length + 1, 2)),
                    "actions": np.ones((length, 2), np.int64), "reward": np.full(length, 5.0),
                    "terminated": np.zeros(length), "mask": np.ones(length)})
    b = memory.batch(np.array([0, 1]))  # slot 0 now holds the third episode (length 2), slot 1 the second
    assert b["mask"].tolist() == [[1, 1, 0], [1, 0, 0]] and b["reward"].tolist() == [[5, 5, 0], [5, 0, 0]]
    assert b["obs"][1, 2:].abs().sum() == 0 and b["obs"][0, :3].sum() == 6 and memory.n == 2


# ---- one update step against explicit loops -----------------------------------------------------------------
def _batch(n=2, a=3, d=4, s_dim=5, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"obs": torch.randn(3, t + 1, n, d, generator=g), "state": torch.randn(3, t + 1, s_dim, generator=g),
             "actions": torch.randint(0, a, (3, t, n), generator=g), "reward": torch.randn(3, t, generator=g),
             "terminated": torch.zeros(3, t), "mask": torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 0, 0]])}
    batch["terminated"][1, 1] = 1.0  # episode 1 ends in a terminal state; 0 hits the time limit; 2 is cut short
    return batch  # padding holds garbage (random obs, rewards, actions): the mask alone must remove it


def _naive_q(agent, batch, b, n_actions, n):
    """Q-values [t][agent] (A,) of episode b, stepping the GRU one agent and one step at a time."""
    out = []
    h = [torch.zeros(1, agent.rnn.hidden_size) for _ in range(n)]
    for t in range(batch["obs"].shape[1]):
        row = []
        for i in range(n):
            last = torch.zeros(n_actions)
            if t > 0:
                last[int(batch["actions"][b, t - 1, i])] = 1.0
            x = torch.cat([batch["obs"][b, t, i], last, torch.eye(n)[i]]).unsqueeze(0)
            q, h[i] = agent(x, h[i])
            row.append(q[0])
        out.append(row)
    return out


def _naive_hyper(net, s):
    """A hypernetwork by hand: one linear layer, or Linear-ReLU-Linear."""
    if isinstance(net, torch.nn.Linear):
        return net.weight @ s + net.bias
    return net[2].weight @ torch.relu(net[0].weight @ s + net[0].bias) + net[2].bias


def _naive_mix(mixer, qs, s):
    e, n = mixer.embed, len(qs)
    w1 = _naive_hyper(mixer.hyper_w1, s).abs()
    b1 = mixer.hyper_b1.weight @ s + mixer.hyper_b1.bias
    w2 = _naive_hyper(mixer.hyper_w2, s).abs()
    v = mixer.hyper_b2[2].weight @ torch.relu(mixer.hyper_b2[0].weight @ s + mixer.hyper_b2[0].bias) \
        + mixer.hyper_b2[2].bias
    total = v[0]
    for k in range(e):
        pre = b1[k] + sum(qs[i] * w1[i * e + k] for i in range(n))
        total = total + w2[k] * (pre if pre > 0 else torch.exp(pre) - 1.0)
    return total


def _naive_loss(kind, agent, mixer, t_agent, t_mixer, batch, cfg, n_actions, n, reward_mean_std=None):
    terms = []
    for b in range(batch["obs"].shape[0]):
        q, qt = _naive_q(agent, batch, b, n_actions, n), _naive_q(t_agent, batch, b, n_actions, n)
        for t in range(batch["actions"].shape[1]):
            if batch["mask"][b, t] == 0:
                continue
            taken = [q[t][i][int(batch["actions"][b, t, i])] for i in range(n)]
            nxt = []
            for i in range(n):
                chooser = q[t + 1][i] if cfg.double_q else qt[t + 1][i]
                best = max(range(n_actions), key=lambda u, c=chooser: float(c[u].detach()))
                nxt.append(qt[t + 1][i][best].detach())
            r = float(batch["reward"][b, t])
            if reward_mean_std is not None:
                r = (r - reward_mean_std[0]) / reward_mean_std[1]
            r *= cfg.reward_scale
            boot = cfg.gamma * (1.0 - float(batch["terminated"][b, t]))
            if kind == "iql":
                terms += [(taken[i] - (r + boot * nxt[i])) ** 2 for i in range(n)]
            elif kind == "vdn":
                terms.append((sum(taken) - (r + boot * sum(nxt))) ** 2)
            else:
                with torch.no_grad():
                    y = r + boot * _naive_mix(t_mixer, nxt, cfg.state_scale * batch["state"][b, t + 1])
                terms.append((_naive_mix(mixer, taken, cfg.state_scale * batch["state"][b, t]) - y) ** 2)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("kind,double_q,variant", [("qmix", True, ""), ("qmix", False, ""), ("vdn", True, ""),
                                                   ("iql", False, ""), ("qmix", True, "epymarl"),
                                                   ("iql", False, "epymarl")])
def test_one_update_step_matches_explicit_loops(kind, double_q, variant):
    n, n_actions, d, s_dim = 2, 3, 4, 5
    cfg = dataclasses.replace(qmix.PRESETS["quick"], double_q=double_q, gamma=0.9, reward_scale=0.5,
                              grad_clip=1e9, embed=4)
    layers, mean_std, stats = 1, None, None
    if variant == "epymarl":  # 2-layer hypernets, standardised rewards, a scaled state
        cfg, layers = dataclasses.replace(cfg, hypernet_layers=2, hypernet_embed=6, state_scale=0.3), 2
        raw = np.random.default_rng(0).normal(-2.0, 3.0, 50)
        mean_std, stats = (raw.mean(), raw.std()), (0.0, 0.0, 0.0)
        for chunk in np.split(raw, [7, 30]):  # the running stats, merged chunk by chunk as the loop does
            stats = qmix.update_stats(stats, chunk)
    torch.manual_seed(3)
    agent = qmix.RNNAgent(d + n_actions + n, 8, n_actions)
    mixer = qmix.QMixer(n, s_dim, 4, hypernet_layers=layers, hypernet_embed=6)
    t_agent, t_mixer = copy.deepcopy(agent), copy.deepcopy(mixer)
    with torch.no_grad():  # target nets differ from the online nets, so using the wrong one shows
        for p in list(t_agent.parameters()) + list(t_mixer.parameters()):
            p.add_(0.3 * torch.randn_like(p))
    mixer = mixer if kind == "qmix" else None
    t_mixer = t_mixer if kind == "qmix" else None
    batch = _batch(n, n_actions, d, s_dim)
    params = list(agent.parameters()) + ([] if mixer is None else list(mixer.parameters()))

    expected_loss = _naive_loss(kind, agent, mixer, t_agent, t_mixer, batch, cfg, n_actions, n, mean_std)
    grads = torch.autograd.grad(expected_loss, params)
    expected = [(p - 0.1 * g).detach() for p, g in zip(params, grads)]
    target_before = [p.detach().clone() for p in t_agent.parameters()]

    loss = qmix.qmix_update(kind, agent, mixer, t_agent, t_mixer, torch.optim.SGD(params, lr=0.1), batch, cfg,
                            n_actions, stats)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    for p, e in zip(params, expected):
        assert torch.allclose(p, e, atol=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(t_agent.parameters(), target_before))  # the target stays put


def test_running_reward_stats_match_numpy():
    x = np.random.default_rng(1).normal(-5.0, 2.0, 200)
    stats = (0.0, 0.0, 0.0)
    for chunk in np.split(x, [1, 25, 26, 120]):
        stats = qmix.update_stats(stats, chunk)
    assert stats[0] == 200 and stats[1] == pytest.approx(x.mean()) and stats[2] / 200 == pytest.approx(x.var())
    z = qmix.standardise(torch.as_tensor(x), stats).numpy()
    assert z.mean() == pytest.approx(0.0, abs=1e-9) and z.std() == pytest.approx(1.0)
    assert qmix.standardise(torch.ones(3), None).tolist() == [1.0, 1.0, 1.0]


def test_soft_target_update_is_polyak_of_agents_and_mixer():
    cfg = dataclasses.replace(qmix.PRESETS["quick"], target_tau=0.25)
    torch.manual_seed(6)
    agent, mixer = qmix.RNNAgent(4 + 3 + 2, 8, 3), qmix.QMixer(2, 5, 4, hypernet_layers=2, hypernet_embed=6)
    t_agent, t_mixer = copy.deepcopy(agent), copy.deepcopy(mixer)
    with torch.no_grad():
        for p in list(t_agent.parameters()) + list(t_mixer.parameters()):
            p.add_(torch.randn_like(p))
    old = [p.detach().clone() for p in list(t_agent.parameters()) + list(t_mixer.parameters())]
    params = list(agent.parameters()) + list(mixer.parameters())
    qmix.qmix_update("qmix", agent, mixer, t_agent, t_mixer, torch.optim.SGD(params, lr=0.1), _batch(), cfg, 3)
    for t, o, p in zip(list(t_agent.parameters()) + list(t_mixer.parameters()), old, params):
        assert torch.allclose(t, 0.25 * p.detach() + 0.75 * o, atol=1e-6)  # after the step, from the new online


def test_gradient_is_clipped():
    cfg = dataclasses.replace(qmix.PRESETS["quick"], grad_clip=1e-3)
    torch.manual_seed(4)
    agent, mixer = qmix.RNNAgent(4 + 3 + 2, 8, 3), qmix.QMixer(2, 5, 4)
    params = list(agent.parameters()) + list(mixer.parameters())
    before = [p.detach().clone() for p in params]
    qmix.qmix_update("qmix", agent, mixer, copy.deepcopy(agent), copy.deepcopy(mixer),
                     torch.optim.SGD(params, lr=1.0), _batch(), cfg, 3)
    step = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(params, before)))
    assert step.item() == pytest.approx(1e-3, rel=1e-3)  # lr 1 x a gradient of norm grad_clip


def test_acting_path_equals_the_batch_unroll():
    cfg = qmix.PRESETS["quick"]
    env = qmix.make_env(dataclasses.replace(cfg, task="simple_spread"), seed=0)
    torch.manual_seed(5)
    agent = qmix.RNNAgent(env.obs_dims[0] + 5 + 3, 16, 5)
    actor = qmix.Actor(agent, 3, 5, cfg)
    obs, done, rec_obs, rec_u = env.reset(0), False, [], []
    while not done:
        rec_obs.append(np.stack(obs))
        u = actor.act(obs)
        rec_u.append(u)
        obs, _, done, _ = env.step(u)
    obs_t, u_t = torch.as_tensor(np.stack(rec_obs))[None], torch.tensor(rec_u)[None]
    prev = torch.cat([torch.full_like(u_t[:, :1], -1), u_t[:, :-1]], dim=1)
    q = agent.unroll(qmix.agent_inputs(obs_t, prev, 5, True, True))
    assert torch.equal(q.argmax(-1), u_t)


# ---- train -------------------------------------------------------------------------------------------------
def _train(cfg, tmp_path, seed=0):
    seed_everything(seed)
    with Run(tmp_path, "qmix", seed, cfg, progress=False, tensorboard=False) as run:
        return qmix.train(cfg, run)


def test_tiny_train_runs_is_deterministic_and_plots(tmp_path):
    a = _train(TINY, tmp_path / "a")
    b = _train(TINY, tmp_path / "b")
    assert a == b and all(math.isfinite(v) for v in a.values())
    assert a["twostep/qmix_minus_vdn"] == a["twostep/qmix_return"] - a["twostep/vdn_return"]
    assert a["twostep/iql_return"] in (0.0, 1.0, 7.0, 8.0)
    assert 3.5 < a["twostep/random_return"] < 6.0  # uniform random: 0.5 * 7 + 0.5 * 10 / 4 = 4.75
    assert list((tmp_path / "a").rglob("greedy_return.png"))


def test_tiny_spread_run(tmp_path):
    cfg = dataclasses.replace(qmix.PRESETS["spread"], episodes=4, batch_size=2, buffer_episodes=4, eval_every=4,
                              eval_episodes=1, hidden=8, embed=4, checkpoint_every=0)
    m = _train(cfg, tmp_path)
    assert set(m) >= {"spread/qmix_return", "spread/iql_return", "spread/qmix_minus_iql", "spread/random_return"}
    assert all(math.isfinite(v) for v in m.values()) and m["spread/random_return"] < 0
    # the paired claims' numbers are the arms' differences (a sign slip there flips a verdict, the arms stay right)
    assert m["spread/qmix_minus_iql"] == m["spread/qmix_return"] - m["spread/iql_return"]
    assert m["spread/qmix_over_random"] == m["spread/qmix_return"] - m["spread/random_return"]
    assert m["spread/qmix_return"] != m["spread/random_return"]


def test_bad_arms_are_one_line():
    with pytest.raises(SeminalError, match="arms=qmix,foo: choose from qmix, vdn, iql"):
        dataclasses.replace(TINY, arms=("qmix", "foo")).validate()


def test_resume_keeps_reward_stats_and_soft_targets(tmp_path, monkeypatch):
    """The running reward statistics live in the checkpoint: a run cut at its first checkpoint and resumed ends
    with the uninterrupted run's numbers (standardised rewards and Polyak targets on, unlike the resume contract)."""
    from seminal.core import runner
    from seminal.core.errors import Interrupted

    monkeypatch.setenv("SEMINAL_CHECKPOINT_SECONDS", "1e9")
    over = ["episodes=40", "batch_size=8", "buffer_episodes=40", "eval_every=20", "checkpoint_every=20", "hidden=8",
            "arms=qmix", "standardise_rewards=true", "target_tau=0.05"]
    whole = runner.execute("qmix", "quick", 1, over, tmp_path / "whole", progress=False)
    with pytest.raises(Interrupted) as stop:
        runner.execute("qmix", "quick", 1, over, tmp_path / "cut", progress=False, stop_after_checkpoints=1)
    resumed = runner.execute("qmix", resume_dir=stop.value.run_dir, progress=False)
    keep = lambda s: {k: v for k, v in s["metrics"].items() if "second" not in k}  # noqa: E731
    assert resumed["resumed"] and keep(resumed) == keep(whole)


def test_epsilon_falls_linearly_then_stays():
    cfg = dataclasses.replace(qmix.PRESETS["quick"], eps_start=1.0, eps_end=0.05, eps_episodes=100)
    assert [qmix.epsilon(e, cfg) for e in (0, 50, 100, 400)] == pytest.approx([1.0, 0.525, 0.05, 0.05])


def test_acting_explores_with_probability_epsilon():
    """eps = 0: the greedy actions whatever the generator; eps = 1: uniform actions. One act() call of 4000
    "agents" (no id, no last action), so the draws are many and cheap."""
    torch.manual_seed(7)
    cfg, n = dataclasses.replace(qmix.PRESETS["quick"], agent_id=False, last_action=False), 4000
    agent = qmix.RNNAgent(3, 8, 4)
    obs = list(np.random.default_rng(1).normal(size=(n, 3)).astype(np.float32))
    greedy = qmix.Actor(agent, n, 4, cfg).act(obs)
    rng = np.random.default_rng(0)
    assert qmix.Actor(agent, n, 4, cfg).act(obs, 0.0, rng) == greedy
    picks = np.array(qmix.Actor(agent, n, 4, cfg).act(obs, 1.0, rng))
    assert np.allclose(np.bincount(picks, minlength=4) / n, 0.25, atol=0.03)
    half = np.array(qmix.Actor(agent, n, 4, cfg).act(obs, 0.5, rng))
    assert abs((half != np.array(greedy)).mean() - 0.5 * 3 / 4) < 0.03  # explore half the time, 3/4 of it off-greedy


def test_training_loop_stores_team_rewards_and_copies_targets_every_c_episodes(tmp_path, monkeypatch):
    """The two-step game run by `train`: each stored episode's rewards are the team payoff of the actions taken
    (state 1 pays 0; then 2A pays 7, 2B the matrix, Table 1), its states follow agent 1's first action; and the
    target nets equal the online nets exactly at the first update after every C-th episode (App. B), not between."""
    cfg = dataclasses.replace(TINY, arms=("qmix",), episodes=24, batch_size=4, buffer_episodes=24, target_update=5,
                              eval_every=24)
    episodes, same = [], []
    real_add, real_update = qmix.EpisodeReplay.add, qmix.qmix_update

    def spy_add(self, episode):
        episodes.append({k: np.array(v) for k, v in episode.items()})
        real_add(self, episode)

    def spy_update(kind, agent, mixer, t_agent, t_mixer, *args, **kwargs):
        nets = [(agent, t_agent), (mixer, t_mixer)]
        same.append(all(torch.equal(p, q) for a, b in nets for p, q in zip(a.parameters(), b.parameters())))
        return real_update(kind, agent, mixer, t_agent, t_mixer, *args, **kwargs)

    monkeypatch.setattr(qmix.EpisodeReplay, "add", spy_add)
    monkeypatch.setattr(qmix, "qmix_update", spy_update)
    _train(cfg, tmp_path)
    assert len(episodes) == 24
    payoff = {0: np.full((2, 2), 7.0), 1: np.array([[0.0, 1.0], [1.0, 8.0]])}
    for ep in episodes:
        (u1, _), (v1, v2) = ep["actions"]
        assert ep["reward"].tolist() == [0.0, payoff[int(u1)][v1, v2]]  # the team sum, not a per-agent share
        assert ep["state"].tolist() == [[1, 0, 0], np.eye(3)[1 + int(u1)].tolist(), [0, 0, 0]]
        assert ep["terminated"].tolist() == [0.0, 1.0] and ep["mask"].tolist() == [1.0, 1.0]
    # updates run from episode index 3 (batch_size 4); the copy follows episodes 4, 9, 14, 19 (ep + 1 = 5, 10, ...)
    ep_of_call = list(range(3, 24))
    assert same == [ep == 3 or ep % 5 == 0 for ep in ep_of_call]
