"""R2D2 (papers/distributed_rl/r2d2.py): the value rescaling and its inverse, rescaled n-step double-Q targets against
a slow literal loop, the priority mix, burn-in without gradient, stored vs zero state, the actor's stored state
against a re-run over the episode prefix, overlapping sequences, Ape-X epsilons, importance weights from the
sum-tree, one whole loss and gradient against an independent step-by-step computation, determinism, local/ray
equivalence of the actors, and a smoke run."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest
import torch

from seminal.core import runner
from seminal.core.run import Run
from seminal.papers.distributed_rl import r2d2

SMALL = replace(r2d2.PRESETS["quick"], mode="local", n_actors=2, envs_per_actor=2, unroll_length=10, burn_in=2,
                learn_length=4, period=3, n_step=3, torso=8, lstm=6, capacity=200, batch_size=8, probe_every=1,
                total_steps=600, learning_starts=200, update_every=4, eval_every=300, eval_episodes=1,
                target_update=10, sync_every=5, checkpoint_every=20, arms=("r2d2", "zero", "ff"))


pytestmark = pytest.mark.usefixtures("one_thread_no_plots")


# ---- value rescaling -----------------------------------------------------------------------------------------
def test_h_against_hand_values_and_its_inverse_round_trips():
    eps = 1e-3
    x = torch.tensor([0.0, 3.0, -8.0, 99.0], dtype=torch.float64)
    want = torch.tensor([0.0, 2 - 1 + 0.003, -(3 - 1) - 0.008, 10 - 1 + 0.099], dtype=torch.float64)
    assert torch.allclose(r2d2.h(x, eps), want, atol=1e-12)
    wide = torch.cat([torch.logspace(-6, 6, 200, dtype=torch.float64), -torch.logspace(-6, 6, 200, dtype=torch.float64),
                      torch.zeros(1, dtype=torch.float64)])
    for e in (1e-3, 1e-2, 0.5):
        assert torch.allclose(r2d2.h_inv(r2d2.h(wide, e), e), wide, rtol=1e-8, atol=1e-9)
        assert torch.allclose(r2d2.h(r2d2.h_inv(wide, e), e), wide, rtol=1e-8, atol=1e-9)
    assert r2d2.h(torch.tensor(1e6, dtype=torch.float64), eps) < 1e6 / 100  # it does compress large values


# ---- n-step rescaled double-Q targets ----------------------------------------------------------------------------
def slow_targets(rewards, q_online, q_target, lengths, terminated, gamma, n, eps):
    """y_t one (t, b) at a time, as written: sum the rewards of the (at most n) steps left; stop at a terminal step;
    else bootstrap gamma^k h^-1(Q_target(s_{t+k}, argmax_a Q_online(s_{t+k}, a)))."""
    def hh(x):
        return math.copysign(math.sqrt(abs(x) + 1) - 1, x) + eps * x

    def hh_inv(x):
        return math.copysign(((math.sqrt(1 + 4 * eps * (abs(x) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1, x)

    T, B = len(rewards), len(rewards[0])
    y = [[None] * B for _ in range(T)]
    for b in range(B):
        for t in range(lengths[b]):
            total, k = 0.0, 0
            while k < n and t + k < lengths[b]:
                total += gamma**k * rewards[t + k][b]
                k += 1
            if terminated[b] and t + k == lengths[b]:
                y[t][b] = hh(total)
            else:
                row = q_online[t + k][b]
                a = max(range(len(row)), key=lambda i: row[i])
                y[t][b] = hh(total + gamma**k * hh_inv(q_target[t + k][b][a]))
    return y


def test_n_step_targets_equal_a_slow_literal_loop():
    g = torch.Generator().manual_seed(0)
    T, B, A, n, gamma, eps = 7, 4, 3, 3, 0.9, 1e-2
    rewards = torch.randn(T, B, generator=g, dtype=torch.float64)
    q_on, q_tg = (torch.randn(T + 1, B, A, generator=g, dtype=torch.float64) * 5 for _ in range(2))
    lengths = torch.tensor([7, 5, 2, 7])
    terminated = torch.tensor([False, True, False, True])  # col 1 ends at step 4; col 3 at its last step
    assert (q_on.argmax(-1) != q_tg.argmax(-1)).float().mean() > 0.3  # picking and evaluating nets disagree often
    y = r2d2.n_step_targets(rewards, q_on, q_tg, lengths, terminated, gamma, n, eps)
    want = slow_targets(rewards.tolist(), q_on.tolist(), q_tg.tolist(), lengths.tolist(), terminated.tolist(),
                        gamma, n, eps)
    for t in range(T):
        for b in range(B):
            if want[t][b] is not None:
                assert float(y[t, b]) == pytest.approx(want[t][b], rel=1e-12, abs=1e-12), (t, b)


def test_n_step_target_by_hand():
    """One column by hand: gamma 0.5, n 2, rewards 1, 2, 4, length 3, terminal at the end, eps so small h is ~ the
    identity on these values' scale is not assumed: h is applied explicitly."""
    eps = 1e-3
    rewards = torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64)
    q_on = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]]], dtype=torch.float64)  # t=2: a*=0
    q_tg = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[3.0, 9.0]], [[0.0, 0.0]]], dtype=torch.float64)
    y = r2d2.n_step_targets(rewards, q_on, q_tg, torch.tensor([3]), torch.tensor([True]), 0.5, 2, eps)
    h = lambda x: r2d2.h(torch.tensor(x, dtype=torch.float64), eps).item()  # noqa: E731
    h_inv = lambda x: r2d2.h_inv(torch.tensor(x, dtype=torch.float64), eps).item()  # noqa: E731
    assert y[0, 0].item() == pytest.approx(h(1 + 0.5 * 2 + 0.25 * h_inv(3.0)), abs=1e-12)  # Q^-(s_2, a*=0) = 3
    assert y[1, 0].item() == pytest.approx(h(2 + 0.5 * 4), abs=1e-12)  # the window reaches the terminal step
    assert y[2, 0].item() == pytest.approx(h(4.0), abs=1e-12)


# ---- priorities, epsilons, importance weights ----------------------------------------------------------------
def test_priority_is_eta_max_plus_one_minus_eta_mean_over_valid_steps():
    abs_td = torch.tensor([[1.0, 5.0, 7.0], [2.0, 1.0, 7.0], [3.0, 9.0, 7.0], [4.0, 0.5, 7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.float32)
    p = r2d2.sequence_priority(abs_td, mask, 0.9)
    assert torch.allclose(p, torch.tensor([0.9 * 4 + 0.1 * 2.5, 0.9 * 5 + 0.1 * 3, 0.0]))


def test_ape_x_epsilons():
    eps = np.concatenate([r2d2.actor_epsilons(i, 3, 2, 0.4, 7.0) for i in range(2)])  # N = 6 envs
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4**8)
    assert eps[2] == pytest.approx(0.4 ** (1 + 7 * 2 / 5)) and eps[4] == pytest.approx(0.4 ** (1 + 7 * 4 / 5))
    assert np.all(np.diff(eps) < 0)
    assert r2d2.actor_epsilons(0, 1, 1, 0.4, 7.0)[0] == pytest.approx(0.4)


def test_importance_weights_use_the_sum_tree_probabilities():
    cfg = replace(SMALL, capacity=4, alpha=0.7, beta=0.6)
    replay = r2d2.SequenceReplay(cfg, 2)
    seq = {"obs": np.zeros((7, 2)), "actions": np.zeros(6), "rewards": np.zeros(6), "length": 6, "terminated": False,
           "start": 0,
           "h0": np.zeros(6), "c0": np.zeros(6), "probe": False}
    for _ in range(4):
        replay.add(seq)
    replay.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    P = np.array([1.0, 2.0, 3.0, 4.0]) ** 0.7
    P /= P.sum()
    index, w = replay.sample(np.random.default_rng(0), 4000)
    assert np.allclose(np.bincount(index, minlength=4) / 4000, P, atol=2e-3)  # stratified: near exact
    want = (4 * P[index]) ** -0.6
    assert np.allclose(w, want / want.max())
    assert w[index == 0].min() == pytest.approx(1.0)  # the least likely sequence gets the largest weight


# ---- the loss: burn-in, stored and zero state, one whole update ----------------------------------------------
def _batch(cfg, B=3, seed=0, D=2):
    g = torch.Generator().manual_seed(seed)
    m = cfg.seq_len
    b = {"obs": torch.randn(m + 1, B, D, generator=g), "actions": torch.randint(0, 2, (m, B), generator=g),
         "rewards": torch.randn(m, B, generator=g), "length": torch.tensor([m, m - 1, 4][:B]),
         "terminated": torch.tensor([False, True, False][:B]), "h0": torch.randn(B, cfg.lstm, generator=g),
         "c0": torch.randn(B, cfg.lstm, generator=g), "start": torch.tensor([6, 3, 0][:B])}  # 2: an episode start
    return b


def _nets(cfg, recurrent=True):
    online = r2d2.R2D2Net(2, 2, cfg, recurrent, seed=1)
    target = r2d2.R2D2Net(2, 2, cfg, recurrent, seed=2)
    return online, target


def test_burn_in_carries_no_gradient_but_sets_the_learning_parts_state():
    cfg = SMALL
    online, target = _nets(cfg)
    b = _batch(cfg)
    b["obs"].requires_grad_(True)
    loss, _, _ = r2d2.r2d2_loss(online, target, b, torch.ones(3), cfg, stored=True, burn=True)
    (grad,) = torch.autograd.grad(loss, b["obs"])
    k = cfg.burn_in
    assert torch.all(grad[:k, :2] == 0) and grad[k:, :2].abs().sum() > 0  # sequences 0, 1 have a burn-in
    assert grad[:k, 2].abs().sum() > 0  # sequence 2 starts an episode: its exact zero state needs none
    b2 = {**b, "obs": b["obs"].detach().clone()}
    b2["obs"][0] += 1.0  # a different burn-in input changes the state the learning part starts from
    loss2, _, _ = r2d2.r2d2_loss(online, target, b2, torch.ones(3), cfg, stored=True, burn=True)
    assert abs(loss2.item() - loss.item()) > 1e-6
    # with no burn-in the first steps do carry the loss
    (grad0,) = torch.autograd.grad(r2d2.r2d2_loss(online, target, b, torch.ones(3), cfg, True, False)[0], b["obs"])
    assert torch.all(grad0[0].abs().sum(-1) > 0)


def test_zero_state_arm_ignores_the_stored_state_and_stored_arm_uses_it():
    cfg = SMALL
    online, target = _nets(cfg)
    b = _batch(cfg)
    other = {**b, "h0": b["h0"] + 1.0, "c0": b["c0"] - 1.0}
    w = torch.ones(3)
    for burn in (True, False):
        zero = r2d2.r2d2_loss(online, target, b, w, cfg, stored=False, burn=burn)[0]
        assert zero.item() == r2d2.r2d2_loss(online, target, other, w, cfg, stored=False, burn=burn)[0].item()
        zeros = {**b, "h0": torch.zeros_like(b["h0"]), "c0": torch.zeros_like(b["c0"])}
        assert zero.item() == pytest.approx(r2d2.r2d2_loss(online, target, zeros, w, cfg, True, burn)[0].item())
        stored = r2d2.r2d2_loss(online, target, b, w, cfg, stored=True, burn=burn)[0]
        assert abs(stored.item() - r2d2.r2d2_loss(online, target, other, w, cfg, True, burn)[0].item()) > 1e-6


def test_one_loss_and_gradient_equal_a_step_by_step_computation():
    """The loss of r2d2_loss against one sequence at a time, one time step per network call: the burn-in under
    no_grad from the stored state (both nets), Q_online for the learning steps, targets from `slow_targets`, the
    importance-weighted mean over sequences of the mean over valid steps of 0.5 delta^2; then their gradients."""
    cfg = replace(SMALL, gamma=0.8, rescale_eps=1e-2)
    online, target = _nets(cfg)
    b = _batch(cfg)
    w = torch.tensor([0.5, 1.0, 0.8])
    loss, abs_td, mask = r2d2.r2d2_loss(online, target, b, w, cfg, stored=True, burn=True)
    grads = torch.autograd.grad(loss, list(online.parameters()))
    B = 3
    ref_loss, ref_td, firsts = 0.0, [], []
    for j in range(B):
        k = cfg.burn_in if b["start"][j] > 0 else 0  # an episode's first sequence needs no burn-in
        firsts.append(k)
        state = (b["h0"][j : j + 1], b["c0"][j : j + 1])
        t_state = state
        with torch.no_grad():
            for t in range(k):
                _, state = online(b["obs"][t : t + 1, j : j + 1], state)
                _, t_state = target(b["obs"][t : t + 1, j : j + 1], t_state)
        q_on, q_tg = [], []
        for t in range(k, cfg.seq_len + 1):
            q, state = online(b["obs"][t : t + 1, j : j + 1], state)
            with torch.no_grad():
                qt, t_state = target(b["obs"][t : t + 1, j : j + 1], t_state)
            q_on.append(q[0, 0])
            q_tg.append(qt[0, 0])
        L = int(b["length"][j]) - k
        rewards = [[float(b["rewards"][t, j])] for t in range(k, cfg.seq_len)]
        y = slow_targets(rewards, [[q.tolist()] for q in q_on], [[q.tolist()] for q in q_tg], [L],
                         [bool(b["terminated"][j])], cfg.gamma, cfg.n_step, cfg.rescale_eps)
        per = 0.0
        for t in range(L):
            delta = y[t][0] - q_on[t][b["actions"][k + t, j]]
            ref_td.append(abs(delta.item()))
            per = per + 0.5 * delta**2 / L
        ref_loss = ref_loss + w[j] * per / B
    ref_grads = torch.autograd.grad(ref_loss, list(online.parameters()))
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    for g1, g2 in zip(grads, ref_grads):
        assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-4)
    want = np.zeros(mask.shape)  # |delta| by (time, sequence), from the sequence-major reference
    i = 0
    for j, k in enumerate(firsts):
        L = int(b["length"][j]) - k
        want[k : k + L, j] = ref_td[i : i + L]
        i += L
    assert np.array_equal(mask.numpy(), (want > 0).astype(np.float32))
    assert np.allclose((abs_td * mask).numpy(), want, atol=1e-5)


# ---- actors: sequences, overlap, stored state ----------------------------------------------------------------
def _actor_sequences(cfg, steps=60, seed=3):
    actor = r2d2.R2D2Actor(cfg, True, seed, 1)
    net = r2d2.R2D2Net(2, 2, cfg, True, seed=7)
    actor.set_weights(r2d2.numpy_weights(net), 0)
    out = actor.unroll(steps)
    return actor, net, out


def test_stored_state_equals_the_lstm_state_over_the_episode_prefix():
    actor, net, out = _actor_sequences(SMALL)
    checked = 0
    for seq in out["sequences"]:
        assert seq["probe"]  # probe_every = 1
        state = net.initial_state(1)
        if seq["start"]:
            with torch.no_grad():
                _, state = net(torch.as_tensor(seq["prefix"])[:, None], state)
            checked += 1
        assert len(seq["prefix"]) == seq["start"]
        assert np.allclose(state[0][0].numpy(), seq["h0"], atol=1e-5)
        assert np.allclose(state[1][0].numpy(), seq["c0"], atol=1e-5)
    assert checked >= 5 and any(np.abs(s["h0"]).sum() > 0.01 for s in out["sequences"])


def test_each_env_explores_with_its_own_epsilon():
    """Ape-X's eps_i per env: in the first episode of each env (episode id = env index), an env with eps 0 takes the
    greedy action of the LSTM from its stored state at every step, one with eps 1 a random action about half the
    time."""
    actor = r2d2.R2D2Actor(SMALL, True, 3, 0)
    net = r2d2.R2D2Net(2, 2, SMALL, True, seed=7)
    actor.set_weights(r2d2.numpy_weights(net), 0)
    actor.eps = np.array([0.0, 1.0])
    out = actor.unroll(80)
    off: dict[int, list] = {0: [], 1: []}
    for seq in out["sequences"]:
        if seq["episode"] in off:
            n = seq["length"]
            with torch.no_grad():
                q, _ = net(torch.as_tensor(seq["obs"][:n])[:, None], (torch.as_tensor(seq["h0"])[None],
                                                                     torch.as_tensor(seq["c0"])[None]))
            off[seq["episode"]] += list(q[:, 0].argmax(-1).numpy() != seq["actions"][:n])
    assert len(off[0]) >= 8 and len(off[1]) >= 8
    assert np.mean(off[0]) == 0.0 and 0.2 < np.mean(off[1]) < 0.8, (np.mean(off[0]), np.mean(off[1]))


def test_overlapping_sequences_cover_each_episode_with_padding_masked():
    cfg = SMALL  # m = 6, a new sequence every 3 steps
    actor, _, out = _actor_sequences(cfg, steps=80)
    m, p = cfg.seq_len, cfg.period
    running = {ep["id"] for ep in actor.episodes}
    by_ep = defaultdict(list)
    for seq in out["sequences"]:
        by_ep[seq["episode"]].append(seq)
    finished = []
    for ep, seqs in by_ep.items():
        seqs.sort(key=lambda s: s["start"])
        starts = [s["start"] for s in seqs]
        assert starts == list(range(0, p * len(seqs), p))  # cut every `period` steps, none skipped
        for a, c in zip(seqs, seqs[1:]):  # the overlap holds the same steps
            assert np.array_equal(a["obs"][p : m + 1], c["obs"][: m + 1 - p])
            assert np.array_equal(a["actions"][p:], c["actions"][: m - p])
        for s in seqs:
            n = s["length"]
            assert np.all(s["obs"][n + 1 :] == 0) and np.all(s["actions"][n:] == 0) and np.all(s["rewards"][n:] == 0)
            assert np.all(s["rewards"][:n] == 1.0)  # CartPole: 1 a step
        if ep not in running:
            L = seqs[-1]["start"] + seqs[-1]["length"]
            assert all(s["length"] == min(m, L - s["start"]) for s in seqs)  # no step lost at the end
            assert seqs[-1]["start"] + p >= L  # no start left out
            assert seqs[-1]["terminated"]  # CartPole falls well before 500 steps here
            assert all(s["terminated"] == (s["start"] + s["length"] == L) for s in seqs)  # those ending at the end
            finished.append(float(L))
        else:
            assert all(s["length"] == m for s in seqs) and not any(s["terminated"] for s in seqs)
    assert len(finished) >= 2 and sorted(finished) == sorted(out["episodes"])


# ---- training: determinism, local vs ray, smoke --------------------------------------------------------------
def test_local_mode_is_deterministic_for_a_seed(tmp_path):
    results = []
    for i, seed in enumerate((5, 5, 6)):
        with Run(tmp_path / str(i), "r2d2", seed, SMALL, progress=False, tensorboard=False) as run:
            results.append(r2d2.train_arm("r2d2", SMALL, run, None, lambda s: None))
    assert results[0]["updates"] == (600 - 200) // 4 and results[0]["evals"]
    keys = ("evals", "dq_first", "dq_last")
    assert all(results[0][k] == results[1][k] for k in keys) and math.isfinite(results[0]["dq"])
    assert any(results[0][k] != results[2][k] for k in keys)


def test_a_ray_actor_and_a_local_actor_give_the_same_sequences():
    ray = pytest.importorskip("ray")
    from seminal.papers.distributed_rl import _actors

    weights = r2d2.numpy_weights(r2d2.R2D2Net(2, 2, SMALL, True, seed=7))
    local = r2d2.R2D2Actor(SMALL, True, 3, 1)
    local.set_weights(weights, 0)
    with _actors.ray_session(1):
        remote = ray.remote(num_cpus=1)(r2d2.R2D2Actor).remote(SMALL, True, 3, 1)
        from_ray = [ray.get(remote.unroll.remote(30, weights, 0)), ray.get(remote.unroll.remote(30))]
        ray.kill(remote)
    from_local = [local.unroll(30), local.unroll(30)]
    for a, b in zip(from_local, from_ray):
        assert a["episodes"] == b["episodes"] and len(a["sequences"]) == len(b["sequences"]) > 0
        for sa, sb in zip(a["sequences"], b["sequences"]):
            for key in ("obs", "actions", "rewards", "h0", "c0", "prefix", "length", "terminated", "start"):
                assert np.array_equal(sa[key], sb[key]), key


def test_smoke_train_returns_every_arm_and_claim_metric(tmp_path):
    overrides = ["mode=local", "n_actors=2", "envs_per_actor=2", "unroll_length=10", "burn_in=2", "learn_length=4",
                 "period=3", "torso=8", "lstm=6", "total_steps=600", "learning_starts=200", "batch_size=8",
                 "eval_every=300", "eval_episodes=1", "probe_every=2"]
    summary = runner.execute("r2d2", "quick", 3, overrides, tmp_path, progress=False)
    m = summary["metrics"]
    for key in ("r2d2/return", "r2d2/auc", "r2d2/dq", "zero/dq", "zero/auc", "ff/return", "r2d2_minus_zero/dq",
                "r2d2_minus_zero/auc"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["r2d2_minus_zero/dq"] == pytest.approx(m["r2d2/dq"] - m["zero/dq"])
    assert "ff/dq" not in m
    assert [c["metric"] for c in summary["claims"]] == [c.metric for c in r2d2.CLAIMS["quick"]]


def test_q_discrepancy_by_hand():
    """§3: Delta Q = ||q_hat - q||_2 / |max_j q_j|, normalised by the true state's Q, not the replayed one's."""
    q_hat = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    q_true = torch.tensor([[0.0, 4.0], [-2.0, -5.0]])
    want = torch.tensor([math.sqrt(1 + 4) / 4.0, math.sqrt(25 + 16) / 2.0])
    torch.testing.assert_close(r2d2.q_discrepancy(q_hat, q_true), want)


def test_target_network_is_the_online_network_of_the_last_multiple_of_target_update(tmp_path, monkeypatch):
    """Spy on the loss: at update u + 1 (u = 0, 1, ...) the target holds the online weights after 10 (u // 10)
    updates, i.e. those the online net had at call 10 (u // 10)."""
    seen = []
    real = r2d2.r2d2_loss

    def spy(online, target, *args, **kwargs):
        seen.append(([p.detach().clone() for p in online.parameters()],
                     [p.detach().clone() for p in target.parameters()]))
        return real(online, target, *args, **kwargs)

    monkeypatch.setattr(r2d2, "r2d2_loss", spy)
    cfg = replace(SMALL, total_steps=320, eval_every=0, arms=("r2d2",))
    with Run(tmp_path, "r2d2", 5, cfg, progress=False, tensorboard=False) as run:
        out = r2d2.train_arm("r2d2", cfg, run, None, lambda s: None)
    assert out["updates"] == len(seen) == (320 - 200) // 4 > 20
    for u, (_, target) in enumerate(seen):
        online = seen[10 * (u // 10)][0]
        assert all(torch.equal(a, b) for a, b in zip(target, online)), f"update {u + 1}"
    assert not all(torch.equal(a, b) for a, b in zip(seen[0][0], seen[-1][0]))  # the online net did move


def test_new_sequences_enter_with_the_largest_priority_seen_and_a_ring_overwrites_the_oldest():
    cfg = replace(SMALL, capacity=3, alpha=0.7)
    replay = r2d2.SequenceReplay(cfg, 2)
    seq = {"obs": np.zeros((7, 2)), "actions": np.zeros(6), "rewards": np.zeros(6), "length": 6, "terminated": False,
           "start": 0, "h0": np.zeros(6), "c0": np.zeros(6), "probe": False}
    replay.add(seq)
    assert replay.tree.leaves[0] == pytest.approx(1.0)  # nothing seen yet: priority 1
    replay.update(np.array([0]), np.array([5.0]))
    replay.add({**seq, "start": 1})
    assert replay.tree.leaves[1] == pytest.approx(5.0**0.7)  # the largest priority seen, to the alpha
    replay.update(np.array([0, 1]), np.array([0.5, 2.0]))
    replay.add({**seq, "start": 2})
    replay.add({**seq, "start": 3})  # capacity 3: slot 0 rewritten
    assert replay.size == 3 and list(replay.data["start"]) == [3, 1, 2]
    np.testing.assert_allclose(replay.tree.leaves[:3], [5.0**0.7, 2.0**0.7, 5.0**0.7])  # max stays 5, not 2
