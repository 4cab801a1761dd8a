"""Backprop: the hand-written backward pass against finite differences, and the update rule by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from seminal.data import vision
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
    # A 2-2-1 net with hand-set weights that computes XOR (OR and NAND units, then AND) is "solved"; the same net
    # with every weight shrunk 8x is not (its outputs sit near 0.5), and backprop from there must solve it again.
    p = {"W1": np.array([[[20.0, -20.0], [20.0, -20.0]]]), "b1": np.array([[[-10.0, 30.0]]]),
         "W2": np.array([[[20.0], [20.0]]]), "b2": np.array([[[-30.0]]])}
    y = bp.forward(p, bp.XOR_X, "sigmoid", "sigmoid")["y2"]
    assert (np.abs(y - bp.XOR_D) < 0.01).all()
    shrunk = {k: v / 8 for k, v in p.items()}
    before = np.abs(bp.forward(shrunk, bp.XOR_X, "sigmoid", "sigmoid")["y2"] - bp.XOR_D)
    assert before.max() > 0.3
    curve = bp.train_full_batch(shrunk, bp.XOR_X, bp.XOR_D, sweeps=400, lr=0.5, momentum=0.9)
    after = np.abs(bp.forward(shrunk, bp.XOR_X, "sigmoid", "sigmoid")["y2"] - bp.XOR_D)
    assert after.max() < 0.1 and curve[-1][0] < curve[0][0]


def test_toy_experiments_run_and_report_rates():
    cfg = dataclasses.replace(bp.Config(), xor_starts=8, xor_sweeps=300, encoder_starts=4, encoder_sweeps=300)
    rate, curve = bp.xor_experiment(cfg, np.random.default_rng(0))
    assert 0.0 <= rate <= 1.0 and curve.shape == (len(range(0, 300, 20)) + 1, 8)  # every 20th sweep and the last
    assert (curve[-1] <= curve[0] + 1e-9).mean() > 0.5  # error falls for most starts
    correct, code_rate, _, _, code = bp.encoder_experiment(cfg, np.random.default_rng(0))
    assert code.shape == (8, 3) and 0 <= code_rate <= correct <= 1


# ---- one whole update step against an independent computation ----------------------------------------
def _torch_params(p):
    import torch

    return {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p.items()}


def _torch_forward(tp, x, hidden, output):
    import torch

    act = torch.sigmoid if hidden == "sigmoid" else torch.tanh
    y1 = act(x @ tp["W1"] + tp["b1"])
    x2 = y1 @ tp["W2"] + tp["b2"]
    return torch.sigmoid(x2) if output == "sigmoid" else torch.softmax(x2, dim=-1)


def test_full_batch_sweeps_with_momentum_equal_autograd_and_torch_sgd():
    # Eq. (3)'s E, differentiated by autograd, stepped by torch.optim.SGD (v = a v + g, w -= eps v, the same
    # recursion as Eq. 9 at a constant eps), against `train_full_batch`'s hand-written Eqs. (4)-(9).
    import torch

    rng = np.random.default_rng(3)
    p = bp.init_params(rng, (2, 2, 1), 1.0)
    tp = _torch_params(p)
    opt = torch.optim.SGD(tp.values(), lr=0.5, momentum=0.9)
    x, d = torch.tensor(bp.XOR_X), torch.tensor(bp.XOR_D)
    for _ in range(5):
        opt.zero_grad()
        E = 0.5 * ((_torch_forward(tp, x, "sigmoid", "sigmoid") - d) ** 2).sum(-1).mean()
        E.backward()
        opt.step()
    bp.train_full_batch(p, bp.XOR_X, bp.XOR_D, sweeps=5, lr=0.5, momentum=0.9)
    for k in p:
        np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12)
    assert not np.allclose(p["W1"], bp.init_params(np.random.default_rng(3), (2, 2, 1), 1.0)["W1"])


def test_softmax_minibatch_steps_equal_autograd_cross_entropy():
    # The MNIST experiment's step: tanh hidden layer, softmax + cross-entropy, minibatches, momentum.
    import torch

    rng = np.random.default_rng(4)
    p = bp.init_params(rng, (6, 5, 4), 0.5)
    tp = _torch_params(p)
    opt = torch.optim.SGD(tp.values(), lr=0.3, momentum=0.8)
    v = {k: np.zeros_like(a) for k, a in p.items()}
    x = rng.normal(size=(9, 6))
    labels = rng.integers(0, 4, 9)
    for idx in (np.arange(0, 4), np.arange(4, 9), np.arange(2, 7)):
        d = np.eye(4)[labels[idx]]
        bp.sgd_step(p, bp.backward(p, bp.forward(p, x[idx], "tanh", "softmax"), d, "tanh", "softmax"), v, 0.3, 0.8)
        opt.zero_grad()
        logits = torch.tanh(torch.tensor(x[idx]) @ tp["W1"] + tp["b1"]) @ tp["W2"] + tp["b2"]
        torch.nn.functional.cross_entropy(logits, torch.tensor(labels[idx])).backward()
        opt.step()
    for k in p:
        np.testing.assert_allclose(p[k], tp[k].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_batched_k_net_training_equals_one_net_at_a_time():
    stacked = bp.init_params(np.random.default_rng(5), (8, 3, 8), 1.0, nets=4)
    singles = [{k: v[i].copy() for k, v in stacked.items()} for i in range(4)]
    eye = np.eye(8)
    curve = bp.train_full_batch(stacked, eye, eye, sweeps=60, lr=0.5, momentum=0.9)
    for i, single in enumerate(singles):
        single_curve = bp.train_full_batch(single, eye, eye, sweeps=60, lr=0.5, momentum=0.9)
        for k in single:
            np.testing.assert_allclose(stacked[k][i], single[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.stack(curve)[:, i], np.array(single_curve), rtol=1e-12)


def test_loss_is_equation_three_by_hand():
    y = np.array([[0.2, 0.9], [0.6, 0.1]])
    d = np.array([[0.0, 1.0], [1.0, 0.0]])
    # pattern 1: 0.04 + 0.01; pattern 2: 0.16 + 0.01; half of each, mean over the two patterns
    assert float(bp.loss(y, d, "sigmoid")) == pytest.approx((0.5 * 0.05 + 0.5 * 0.17) / 2)


def _fake_images(split):
    rng = np.random.default_rng(0 if split == "train" else 1)
    y = rng.integers(0, 10, 40)
    x = rng.integers(0, 30, (40, 28, 28)).astype(np.uint8)
    x[np.arange(40), y] = 255
    return x, y


def test_dataset_key_picks_the_loader(tmp_path, monkeypatch):
    from seminal.core.run import Run

    def forbidden(split):
        raise AssertionError("dataset=fashion-mnist must not read MNIST")

    monkeypatch.setattr(vision, "load_mnist", forbidden)
    monkeypatch.setattr(vision, "load_fashion_mnist", _fake_images)
    cfg = dataclasses.replace(bp.Config(), dataset="fashion-mnist", mnist_hidden=8, mnist_epochs=1, mnist_batch=20)
    with Run(tmp_path / "f", "backprop", 0, cfg, progress=False, tensorboard=False) as run:
        out = bp.mnist_experiment(cfg, run)
    assert 0.0 <= out["mnist/test_acc"] <= 1.0
    with pytest.raises(AssertionError, match="must not read MNIST"):
        bp.load_images("mnist", "train")


def test_mid_epoch_stop_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from seminal.core.errors import Interrupted
    from seminal.core.run import Run

    monkeypatch.setattr(vision, "load_mnist", _fake_images)
    cfg = dataclasses.replace(bp.Config(), mnist_hidden=8, mnist_epochs=2, mnist_batch=8)  # 5 batches an epoch

    def run_(name, **kw):
        with Run(tmp_path / name, "backprop", 0, cfg, progress=False, tensorboard=False, **kw) as run:
            return bp.mnist_experiment(cfg, run)

    full = run_("a")
    with pytest.raises(Interrupted):  # due() is True after every batch: stop at the 3rd, mid-epoch 0
        run_("b", checkpoint_seconds=1e-9, stop_after_checkpoints=3)
    import torch

    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]["batch"] == 3
    assert run_("b") == full
    log = [(tmp_path / d / "metrics.jsonl").read_text() for d in "ab"]
    assert log[0] == log[1] and "mnist/train_loss" in log[0]  # the epoch's partial sums came back too


# ---- the experiments' success criteria on hand-built nets (training patched out) -----------------------
def _stack(*nets):
    return {k: np.stack([n[k] for n in nets]) for k in nets[0]}


def test_xor_success_needs_every_pattern_right(monkeypatch):
    # Net 1 computes XOR (OR and NAND units, then AND); net 2 computes OR: right on 3 of the 4 patterns, wrong
    # on (1, 1). A start solves XOR only when all four outputs are on the correct side of 0.5: rate 1/2.
    xor_net = {"W1": np.array([[20.0, -20.0], [20.0, -20.0]]), "b1": np.array([[-10.0, 30.0]]),
               "W2": np.array([[20.0], [20.0]]), "b2": np.array([[-30.0]])}
    or_net = {"W1": xor_net["W1"], "b1": xor_net["b1"], "W2": np.array([[20.0], [0.0]]), "b2": np.array([[-10.0]])}
    y_or = bp.forward(or_net, bp.XOR_X, "sigmoid", "sigmoid")["y2"][:, 0]
    assert (np.abs(y_or - bp.XOR_D[:, 0]) < 0.5).tolist() == [True, True, True, False]
    monkeypatch.setattr(bp, "init_params", lambda rng, sizes, scale, nets=0: _stack(xor_net, or_net))
    monkeypatch.setattr(bp, "train_full_batch", lambda p, x, d, *a, **k: [np.zeros(2)])
    rate, _ = bp.xor_experiment(dataclasses.replace(bp.Config(), xor_starts=2), np.random.default_rng(0))
    assert rate == 0.5


def _encoder_net(collide=False, swap=False):
    """8-3-8 by hand: one-hot pattern i -> hidden code = the 3 bits of i (saturated sigmoids, 0.9975 / 0.0025);
    output unit j scores -10 x (L1 distance of the code to j's bits), the nearest code wins."""
    bits = np.array([[(i >> (2 - k)) & 1 for k in range(3)] for i in range(8)], dtype=float)  # (8, 3)
    W1 = 6.0 * (2 * bits - 1)
    W2 = 10.0 * (2 * bits - 1).T  # (3, 8)
    b2 = -10.0 * bits.sum(1)[None]
    if collide:  # pattern 7's code (0.6, 0.6, 0.4) thresholds to pattern 6's corner; unit 7 is a constant -5
        W1[7] = np.log([0.6 / 0.4, 0.6 / 0.4, 0.4 / 0.6])
        W2[:, 7], b2[0, 7] = 0.0, -5.0
    if swap:  # output units 0 and 1 exchanged: patterns 0 and 1 are decoded wrong, the other six right
        W2[:, [0, 1]], b2[:, [0, 1]] = W2[:, [1, 0]], b2[:, [1, 0]]
    return {"W1": W1, "b1": np.zeros((1, 3)), "W2": W2, "b2": b2}


def test_encoder_rates_need_all_eight_right_and_eight_distinct_corners(monkeypatch):
    hand = [_encoder_net(), _encoder_net(collide=True), _encoder_net(swap=True)]
    eye = np.eye(8)
    for net, right, corners in zip(hand, (8, 8, 6), (8, 7, 8)):  # the hand-built nets are what they claim
        out = bp.forward(net, eye, "sigmoid", "sigmoid")
        assert int((out["y2"].argmax(-1) == np.arange(8)).sum()) == right
        assert len({tuple(c) for c in (out["y1"] > 0.5).astype(int)}) == corners
    monkeypatch.setattr(bp, "init_params", lambda rng, sizes, scale, nets=0: _stack(*hand))
    monkeypatch.setattr(bp, "train_full_batch", lambda p, x, d, *a, **k: [np.zeros(3)])
    cfg = dataclasses.replace(bp.Config(), encoder_starts=3)
    correct, code_rate, corner, _, best = bp.encoder_experiment(cfg, np.random.default_rng(0))
    assert correct == pytest.approx(2 / 3) and code_rate == pytest.approx(1 / 3)  # only net 1 has a 3-bit code
    assert corner == pytest.approx(1 / (1 + np.exp(6.0)), rel=1e-9)  # its units sit 0.0025 from 0 or 1
    np.testing.assert_allclose(best, bp.forward(hand[0], eye, "sigmoid", "sigmoid")["y1"])


def test_mnist_pixels_reach_the_net_scaled_to_the_unit_interval(tmp_path, monkeypatch):
    """uint8 pixels / 255: the net sees 0 for black and exactly 1 for white, in training and in evaluation."""
    from seminal.core.run import Run

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 0, 0] = 255, 0
    monkeypatch.setattr(bp, "load_images", lambda name, split: (images, rng.integers(0, 10, 40)))
    seen, real = [], bp.forward

    def spy(p, x, *args, **kwargs):
        seen.append((float(x.min()), float(x.max())))
        return real(p, x, *args, **kwargs)

    monkeypatch.setattr(bp, "forward", spy)
    cfg = dataclasses.replace(bp.PRESETS["quick"], mnist_epochs=1, mnist_hidden=8, mnist_train_limit=0)
    with Run(tmp_path, "backprop", 0, None, tensorboard=False) as run:
        bp.mnist_experiment(cfg, run)
    assert seen and all(0.0 <= lo and hi <= 1.0 for lo, hi in seen)
    assert max(hi for _, hi in seen) == 1.0
