"""Prioritized replay: the sum-tree against NumPy's cumsum + searchsorted, Eq. (1) and stratified draws, the
weights of §3.4 by hand, beta annealed over a real run, priorities |delta| + eps after a real update step,
exact resume in either arm."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seminal.core.errors import Interrupted
from seminal.core.run import Run, seed_everything
from seminal.core.runner import execute
from seminal.papers.rl import dqn
from seminal.papers.rl import prioritized_replay as per


def _reference_find(leaves: np.ndarray, mass: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.cumsum(leaves), mass, side="right")


@pytest.mark.parametrize("capacity", [1, 5, 8, 1000])
def test_sum_tree_prefix_sums_match_cumsum_searchsorted(capacity):
    rng = np.random.default_rng(capacity)
    tree = per.SumTree(capacity)
    leaves = rng.random(capacity) + 0.01
    tree.update(np.arange(capacity), leaves)
    assert tree.total == pytest.approx(leaves.sum())
    mass = rng.random(5000) * leaves.sum()
    np.testing.assert_array_equal(tree.find(mass), _reference_find(leaves, mass))


def test_sum_tree_updates_with_duplicates_and_zeros():
    rng = np.random.default_rng(1)
    capacity = 37
    tree, reference = per.SumTree(capacity), np.zeros(capacity)
    for _ in range(50):
        index = rng.integers(0, capacity, size=8)  # duplicates on purpose
        value = rng.random(8) * (rng.random(8) > 0.3)  # some zero priorities
        tree.update(index, value)
        for i, v in zip(index, value):  # plain loop: the last write wins
            reference[i] = v
        np.testing.assert_allclose(tree.leaves, reference)
        assert tree.total == pytest.approx(reference.sum())
        mass = rng.random(500) * reference.sum()
        found = tree.find(mass)
        np.testing.assert_array_equal(found, _reference_find(reference, mass))
        assert (reference[found] > 0).all()  # a zero-priority leaf is never drawn
    rebuilt = per.SumTree(capacity)
    rebuilt.load(tree.leaves.copy())
    np.testing.assert_allclose(rebuilt.nodes, tree.nodes)


def test_sampling_frequencies_follow_eq1():
    rng = np.random.default_rng(0)
    n, alpha, draws = 10, 0.6, 200_000
    td = np.array([0.0, 0.1, 0.5, 1, 2, 3, 0.2, 0.05, 4, 1.5])
    sampler = per.PrioritizedSampler(n, alpha, beta_start=0.4, eps=0.01)
    for i in range(n):
        sampler.add(i)
    sampler.update(np.arange(n), td)
    expected = per.sampling_probabilities(per.priorities(td, 0.01), alpha)
    counts = np.zeros(n)
    for _ in range(draws // 50):
        index, _ = sampler.sample(rng, 50, n, progress=0.0)
        counts += np.bincount(index, minlength=n)
    freq = counts / draws
    # Stratified draws have less variance than i.i.d. ones; 5 binomial sigmas is a safe bound for both.
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(freq - expected) < 5 * sigma + 1e-4)


def test_sampling_probabilities_and_priorities_by_hand():
    np.testing.assert_allclose(per.priorities(np.array([-2.0, 0.0, 3.0]), 0.5), [2.5, 0.5, 3.5])
    np.testing.assert_allclose(per.sampling_probabilities(np.array([1.0, 4.0]), 0.5), [1 / 3, 2 / 3])
    np.testing.assert_allclose(per.sampling_probabilities(np.array([1.0, 4.0, 9.0]), 0.0), [1 / 3] * 3)


def test_importance_weights_by_hand():
    prob = np.array([0.5, 0.25, 0.125])
    w = per.importance_weights(prob, n=4, beta=0.5)
    raw = np.array([2.0**-0.5, 1.0, 0.5**-0.5])  # (N P)^-beta = (2, 1, 0.5)^-0.5
    np.testing.assert_allclose(w, raw / raw.max())
    np.testing.assert_allclose(per.importance_weights(prob, n=4, beta=0.0), [1.0, 1.0, 1.0])


def test_beta_schedule_anneals_to_one():
    assert per.beta_schedule(0.0, 0.4) == pytest.approx(0.4)
    assert per.beta_schedule(0.5, 0.4) == pytest.approx(0.7)
    assert per.beta_schedule(1.0, 0.4) == pytest.approx(1.0)
    assert per.beta_schedule(2.0, 0.4) == pytest.approx(1.0)


def test_new_transitions_get_max_priority():
    sampler = per.PrioritizedSampler(4, alpha=0.5, beta_start=0.4, eps=0.0)
    sampler.add(0)
    assert sampler.tree.leaves[0] == pytest.approx(1.0)  # the first one: p = 1
    sampler.update(np.array([0]), np.array([9.0]))
    sampler.add(1)
    assert sampler.tree.leaves[1] == pytest.approx(9.0**0.5)  # max_{i<t} p_i, raised to alpha
    sampler.update(np.array([0]), np.array([0.25]))  # a smaller priority later does not lower the max
    sampler.add(2)
    assert sampler.tree.leaves[2] == pytest.approx(3.0) and sampler.tree.leaves[0] == pytest.approx(0.5)


def test_stratified_sampling_one_draw_per_slice():
    """k equal slices of the total mass, one draw in each: equal priorities and k = N give every index once
    (i.i.d. draws would repeat some); in general draw i falls in slice i of the cumulative mass."""
    rng = np.random.default_rng(3)
    sampler = per.PrioritizedSampler(16, alpha=1.0, beta_start=0.4, eps=0.0)
    for i in range(16):
        sampler.add(i)
    for _ in range(20):
        index, _ = sampler.sample(rng, 16, 16, progress=0.0)
        np.testing.assert_array_equal(index, np.arange(16))
    p = rng.random(16) + 0.1
    sampler.update(np.arange(16), p)
    cum = np.concatenate([[0.0], np.cumsum(p)])
    for _ in range(20):
        index, _ = sampler.sample(rng, 4, 16, progress=0.0)
        lo, hi = cum[index], cum[index + 1]  # the mass interval of each drawn leaf
        edges = np.arange(5) * cum[-1] / 4
        assert np.all((hi > edges[:-1]) & (lo < edges[1:]))  # overlaps its own slice


def test_sampler_weights_by_hand_with_annealed_beta():
    n = 5
    sampler = per.PrioritizedSampler(8, alpha=0.6, beta_start=0.4, eps=0.01)
    for i in range(n):
        sampler.add(i)
    td = np.array([0.5, 2.0, 0.0, 1.0, 4.0])
    sampler.update(np.arange(n), td)
    index, w = sampler.sample(np.random.default_rng(0), 6, n, progress=0.5)
    p = (np.abs(td) + 0.01) ** 0.6  # p_i^alpha
    prob = p[index] / p.sum()  # Eq. (1)
    beta = 0.4 + (1 - 0.4) * 0.5  # annealed halfway: 0.7
    raw = (n * prob) ** -beta  # §3.4
    np.testing.assert_allclose(w, raw / raw.max())
    assert sampler.beta == pytest.approx(0.7) and w.max() == pytest.approx(1.0) and w.min() < 1


class _Recording(per.PrioritizedSampler):
    """The real sampler, recording each draw: progress, the leaves before it, indices and weights."""

    def __init__(self, *args):
        super().__init__(*args)
        self.draws: list[tuple] = []

    def sample(self, rng, batch, n, progress):
        leaves = self.tree.leaves.copy()
        index, w = super().sample(rng, batch, n, progress)
        self.draws.append((progress, n, leaves, index.copy(), w.copy()))
        return index, w


def test_loop_anneals_beta_to_one_and_weights_follow_it(tmp_path):
    """Through dqn.learn: beta goes from near beta_0 at the first update to exactly 1 at the last, and every
    minibatch's weights are (N P(i))^-beta / max w with that beta (the fault 'beta never annealed')."""
    cfg = dataclasses.replace(per.PRESETS["quick"], total_steps=400, learning_starts=100, buffer_size=400,
                              batch_size=16, train_freq=4, gradient_steps=1, eval_every=400, eval_episodes=1,
                              hidden=(16,), checkpoint_every=400)
    sampler = _Recording(cfg.buffer_size, cfg.alpha, cfg.beta_start, cfg.priority_eps)
    seed_everything(0)
    with Run(tmp_path, "prioritized-replay", 0, cfg, progress=False, tensorboard=False) as run:
        dqn.learn(dqn.Config(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(dqn.Config)}), run,
                  sampler=sampler)
    progress = np.array([d[0] for d in sampler.draws])
    assert len(progress) == (400 - 100) // 4 + 1
    assert progress[0] == pytest.approx(100 / 400) and progress[-1] == pytest.approx(1.0)
    assert np.all(np.diff(progress) > 0)
    for prog, n, leaves, index, w in sampler.draws:
        beta = cfg.beta_start + (1 - cfg.beta_start) * prog
        raw = (n * leaves[index] / leaves.sum()) ** -beta
        np.testing.assert_allclose(w, raw / raw.max(), rtol=1e-10)
    assert sampler.beta == pytest.approx(1.0)


def test_priorities_after_a_real_update_step_are_abs_td_plus_eps():
    """One `dqn.replay_updates` phase with the prioritized sampler: the drawn transitions' leaves become
    (|y - Q(s, a; theta)| + eps)^alpha, with delta computed here from the nets as they were before the step."""
    torch.manual_seed(0)
    q, q_target = dqn.QMLP(3, 4, (8,)), dqn.QMLP(3, 4, (8,))
    rng = np.random.default_rng(0)
    mem = dqn.Replay(32, (3,), np.float32)
    sampler = _Recording(32, 0.6, 0.4, 0.01)
    for i in range(20):
        sampler.add(mem.add(rng.standard_normal(3), i % 4, float(3 * rng.standard_normal()),
                            rng.standard_normal(3), i % 7 == 0))
    cfg = dataclasses.replace(per.PRESETS["quick"], batch_size=8, gradient_steps=1, gamma=0.9)
    before = copy.deepcopy(q)
    updates, _ = dqn.replay_updates(q, q_target, torch.optim.SGD(q.parameters(), lr=0.1), mem, sampler, rng, cfg,
                                    0.3, 0)
    assert updates == 1
    _, _, _, index, _ = sampler.draws[0]
    s, a, r, s2, term = (torch.as_tensor(x[index]) for x in (mem.obs, mem.action, mem.reward, mem.next_obs,
                                                                mem.terminated))
    with torch.no_grad():
        y = r + 0.9 * (1 - term) * q_target(s2).max(1).values
        delta = (y - before(s).gather(1, a[:, None])[:, 0]).numpy()
    np.testing.assert_allclose(sampler.tree.leaves[index], (np.abs(delta) + 0.01) ** 0.6, rtol=1e-5)
    untouched = np.setdiff1d(np.arange(20), index)
    np.testing.assert_allclose(sampler.tree.leaves[untouched], 1.0)  # still the initial max priority^alpha
    assert sampler.max_priority == pytest.approx(max(1.0, float(np.abs(delta).max() + 0.01)), rel=1e-5)


def test_smoke_uniform_vs_prioritized(tmp_path):
    cfg = dataclasses.replace(per.PRESETS["quick"], total_steps=800, learning_starts=200, buffer_size=500,
                              batch_size=32, eval_every=400, eval_episodes=2, checkpoint_every=400)
    seed_everything(0)
    with Run(tmp_path, "prioritized-replay", 0, cfg, progress=False, tensorboard=False) as run:
        metrics = per.train(cfg, run)
    assert np.isfinite(metrics["per/eval/return"]) and np.isfinite(metrics["uniform/eval/return"])
    assert (tmp_path / "plots" / "uniform_vs_prioritized.png").exists()
    assert [c.metric for c in per.CLAIMS["quick"]] == ["per_minus_uniform/mean_eval_return"]
    assert metrics["per_minus_uniform/mean_eval_return"] == pytest.approx(
        metrics["per/eval/mean_return"] - metrics["uniform/eval/mean_return"])


RESUME = ["total_steps=600", "learning_starts=100", "buffer_size=600", "batch_size=32", "eval_every=300",
          "eval_episodes=2", "checkpoint_every=250", "target_update=20", "hidden=16,16", "exploration_steps=400"]


def _histories(run_dir, keys) -> dict:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    """A Ctrl-C at the 1st checkpoint (mid uniform arm) and at the 4th (mid prioritized arm, its sum-tree in the
    checkpoint), each resumed: every returned and logged number equals the uninterrupted run's."""
    monkeypatch.setenv("SEMINAL_CHECKPOINT_SECONDS", "1e9")
    whole = execute("prioritized-replay", "quick", 1, RESUME, tmp_path / "whole", progress=False)
    keys = [f"{arm}/{k}" for arm in ("uniform", "per") for k in ("train/episode_return", "train/loss", "eval/return")]
    for stop_after, phase in ((1, "uniform"), (4, "per")):
        with pytest.raises(Interrupted) as stop:
            execute("prioritized-replay", "quick", 1, RESUME, tmp_path / f"cut{stop_after}", progress=False,
                    stop_after_checkpoints=stop_after)
        ckpt = torch.load(Path(stop.value.run_dir) / "checkpoint.pt", weights_only=False)["state"]
        assert ckpt["phase"] == phase and ckpt["learner"]["env"] is not None
        resumed = execute("prioritized-replay", resume_dir=stop.value.run_dir, progress=False)
        assert resumed["resumed"] and resumed["metrics"] == whole["metrics"]
        assert _histories(stop.value.run_dir, keys) == _histories(whole["run_dir"], keys)


def test_sum_tree_find_at_exact_prefix_sums_skips_zero_leaves():
    """A mass exactly at a prefix sum belongs to the next leaf of nonzero priority (side="right"): zero-priority
    leaves are never found, even at the boundaries (mass 0 included). Leaves and answers by hand."""
    tree = per.SumTree(8)
    tree.update(np.arange(8), np.array([0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.5]))  # cumsum 0 0 1 1 3 3 3 3.5
    np.testing.assert_array_equal(tree.find(np.array([0.0, 0.5, 1.0, 2.999, 3.0, 3.4])), [2, 2, 4, 4, 7, 7])


def test_sampler_state_round_trip_keeps_the_leaves_and_the_largest_priority():
    """A sampler loaded from `state()` (as on resume) has the same tree, and its next new transition gets the
    restored max priority: 16^alpha = 4 here, by hand."""
    a = per.PrioritizedSampler(8, alpha=0.5, beta_start=0.4, eps=0.0)
    for i in range(4):
        a.add(i)
    a.update(np.array([1]), np.array([16.0]))
    b = per.PrioritizedSampler(8, alpha=0.5, beta_start=0.4, eps=0.0)
    b.load(copy.deepcopy(a.state()))
    assert b.tree.total == pytest.approx(1 + 4 + 1 + 1)
    b.add(4)
    np.testing.assert_allclose(b.tree.leaves[:5], [1.0, 4.0, 1.0, 1.0, 4.0])
    assert b.tree.total == pytest.approx(11.0)


def test_the_prioritized_sampler_goes_to_the_per_arm_only(tmp_path, monkeypatch):
    """The two arms of one seed: the uniform arm is DQN's own replay (no sampler, the preset's lr), the per arm
    Algorithm 1's sum-tree sampler with its lr scaled by per_lr_scale (the paper's eta / 4)."""
    calls, real = [], dqn.learn

    def spy(cfg, run, sampler=None, prefix="", **kw):
        calls.append((prefix, type(sampler).__name__ if sampler is not None else None, cfg.lr))
        return real(cfg, run, sampler=sampler, prefix=prefix, **kw)

    monkeypatch.setattr(dqn, "learn", spy)
    execute("prioritized-replay", "quick", 1, RESUME, tmp_path, progress=False)
    q = per.PRESETS["quick"]
    assert calls == [("uniform/", None, q.lr), ("per/", "PrioritizedSampler", q.lr * q.per_lr_scale)]
