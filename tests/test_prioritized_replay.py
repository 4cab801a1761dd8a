"""Prioritized replay: the sum-tree against NumPy's cumsum + searchsorted, Eq. (1), the weights of §3.4."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from seminal.core.run import Run, seed_everything
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
    sampler = per.PrioritizedSampler(4, alpha=1.0, beta_start=0.4, eps=0.0)
    sampler.add(0)
    sampler.update(np.array([0]), np.array([3.0]))
    sampler.add(1)
    assert sampler.tree.leaves[1] == pytest.approx(3.0)


def test_smoke_uniform_vs_prioritized(tmp_path):
    cfg = dataclasses.replace(per.PRESETS["quick"], total_steps=800, learning_starts=200, buffer_size=500,
                              batch_size=32, eval_every=400, eval_episodes=2, checkpoint_every=400)
    seed_everything(0)
    with Run(tmp_path, "prioritized-replay", 0, cfg, progress=False, tensorboard=False) as run:
        metrics = per.train(cfg, run)
    assert np.isfinite(metrics["per/eval/return"]) and np.isfinite(metrics["uniform/eval/return"])
    assert (tmp_path / "plots" / "uniform_vs_prioritized.png").exists()
