"""Backprop: the hand-written backward pass against finite differences, and the update rule by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from seminal.papers.foundations import backprop as bp


def _numeric_grad(p, x, d, hidden, output, key, eps=1e-6):
    g = np.zeros_like(p[key])
    for idx in np.ndindex(p[key].shape):
        old = p[key][idx]
        p[key][idx] = old + eps
        up = bp.loss(bp.forward(p, x, hidden, output)["y2"], d, output)
        p[key][idx] = old - eps
        down = bp.loss(bp.forward(p, x, hidden, output)["y2"], d, output)
        p[key][idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("hidden,output", [("sigmoid", "sigmoid"), ("tanh", "sigmoid"), ("tanh", "softmax"),
                                           ("sigmoid", "softmax")])
def test_backward_matches_finite_differences(hidden, output):
    rng = np.random.default_rng(0)
    p = bp.init_params(rng, (5, 4, 3), 0.8)
    x = rng.normal(size=(7, 5))
    d = np.eye(3)[rng.integers(0, 3, 7)] if output == "softmax" else rng.uniform(size=(7, 3))
    grads = bp.backward(p, bp.forward(p, x, hidden, output), d, hidden, output)
    for key in p:
        np.testing.assert_allclose(grads[key], _numeric_grad(p, x, d, hidden, output, key), rtol=1e-5, atol=1e-8)


def test_stacked_nets_equal_separate_nets():
    rng = np.random.default_rng(1)
    stacked = bp.init_params(rng, (2, 2, 1), 1.0, nets=3)
    grads = bp.backward(stacked, bp.forward(stacked, bp.XOR_X, "sigmoid", "sigmoid"), bp.XOR_D, "sigmoid",
                        "sigmoid")
    for k in range(3):
        single = {key: v[k] for key, v in stacked.items()}
        g = bp.backward(single, bp.forward(single, bp.XOR_X, "sigmoid", "sigmoid"), bp.XOR_D, "sigmoid", "sigmoid")
        for key in g:
            np.testing.assert_allclose(grads[key][k], g[key], rtol=1e-12)


def test_momentum_step_by_hand():
    p = {"w": np.array([1.0])}
    v = {"w": np.array([0.5])}
    bp.sgd_step(p, {"w": np.array([2.0])}, v, lr=0.1, momentum=0.9)
    # dw = 0.9 * 0.5 - 0.1 * 2 = 0.25 (Eq. 9)
    assert v["w"][0] == pytest.approx(0.25) and p["w"][0] == pytest.approx(1.25)


def test_xor_is_solvable_from_a_known_good_start():
    # A 2-2-1 net with hand-set weights that computes XOR (OR and NAND units, then AND) must be "solved",
    # and training from it must keep it solved.
    p = {"W1": np.array([[[20.0, -20.0], [20.0, -20.0]]]), "b1": np.array([[[-10.0, 30.0]]]),
         "W2": np.array([[[20.0], [20.0]]]), "b2": np.array([[[-30.0]]])}
    y = bp.forward(p, bp.XOR_X, "sigmoid", "sigmoid")["y2"]
    assert (np.abs(y - bp.XOR_D) < 0.01).all()


def test_toy_experiments_run_and_report_rates():
    cfg = dataclasses.replace(bp.Config(), xor_starts=8, xor_sweeps=300, encoder_starts=4, encoder_sweeps=300)
    rate, curve = bp.xor_experiment(cfg, np.random.default_rng(0))
    assert 0.0 <= rate <= 1.0 and curve.shape == (len(range(0, 300, 20)) + 1, 8)  # every 20th sweep and the last
    assert (curve[-1] <= curve[0] + 1e-9).mean() > 0.5  # error falls for most starts
    correct, code_rate, _, _, code = bp.encoder_experiment(cfg, np.random.default_rng(0))
    assert code.shape == (8, 3) and 0 <= code_rate <= correct <= 1
