"""Rectifier paper: the activation switch, the sparsity metric, steps-to-target, and tiny runs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from seminal.core.run import Run
from seminal.data import vision
from seminal.papers.optimisation import relu

TINY = replace(relu.PRESETS["quick"], activations=("sigmoid", "tanh", "relu"), hidden=(16, 16),
               train_limit=256, test_limit=200, epochs=2, batch=32,
               log_every=2, window=4, target_loss=2.0)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "softplus"])
def test_activation_values_and_derivatives(name):
    x = torch.tensor([-3.0, -1.5, -0.2, 0.3, 1.1, 2.5], dtype=torch.float64, requires_grad=True)
    xd = x.detach().numpy()
    value = {"sigmoid": 1 / (1 + np.exp(-xd)), "tanh": np.tanh(xd), "relu": np.maximum(0.0, xd),
             "softplus": np.log1p(np.exp(xd))}[name]
    slope = {"sigmoid": value * (1 - value), "tanh": 1 - value**2, "relu": (xd > 0).astype(float),
             "softplus": 1 / (1 + np.exp(-xd))}[name]
    y = relu.activation(name)(x)
    np.testing.assert_allclose(y.detach().numpy(), value, rtol=1e-12)
    (grad,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(grad.numpy(), slope, rtol=1e-10)
    # Finite differences away from relu's kink at 0.
    h = 1e-6
    fd = (relu.activation(name)(x.detach() + h) - relu.activation(name)(x.detach() - h)) / (2 * h)
    np.testing.assert_allclose(fd.numpy(), slope, atol=1e-6)


def test_relu_outputs_true_zeros_and_unknown_name_fails():
    y = relu.activation("relu")(torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], dtype=torch.float64))
    assert y.tolist() == [0.0, 0.0, 0.0, 1e-30, 3.0]
    with pytest.raises(Exception, match="choose from"):
        relu.activation("swish")


def test_exact_zero_fraction_on_hand_built_tensors():
    h1 = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])  # 4 zeros of 6
    h2 = torch.tensor([[1e-9, 0.5], [0.0, -0.0]])  # 2 zeros of 4 (tiny values are not zeros)
    assert relu.exact_zero_fraction([h1, h2]) == pytest.approx(6 / 10)
    assert relu.exact_zero_fraction([torch.sigmoid(torch.randn(5, 7))]) == 0.0


def test_l1_penalty_by_hand():
    h = [torch.tensor([[1.0, -2.0], [0.0, 3.0]]), torch.tensor([[4.0], [0.0]])]
    # layer sums per example: (3, 3) and (4, 0) -> batch means 3 and 2
    assert float(relu.l1_activation_penalty(h, 0.1)) == pytest.approx(0.1 * (3 + 2))


def test_steps_to_target_by_hand():
    losses = [3.0, 2.0, 1.0, 0.5, 0.4, 0.1]
    # running means, window 2: 3, 2.5, 1.5, 0.75, 0.45, 0.25
    assert relu.steps_to_target(losses, 0.75, 2) == 4
    assert relu.steps_to_target(losses, 0.3, 2) == 6
    assert relu.steps_to_target(losses, 0.1, 2) == 0  # never
    assert relu.steps_to_target(losses, 3.0, 10) == 1  # shorter than the window: mean so far


def test_same_initial_weights_for_each_activation():
    models = relu.paired_models(replace(TINY, activations=("sigmoid", "tanh", "relu")), seed=3)
    a, b, c = models["sigmoid"], models["tanh"], models["relu"]
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q) and torch.equal(p, r)
    assert c.act is not a.act and not torch.equal(relu.paired_models(TINY, seed=4)["relu"].out.weight, c.out.weight)


def test_mid_epoch_stop_resumes_to_the_uninterrupted_result(tmp_path):
    full = _run(tmp_path, "a")  # 8 batches an epoch for each of three nets
    from seminal.core.errors import Interrupted

    with pytest.raises(Interrupted):  # due() after every batch: the 11th checkpoint is tanh's 3rd batch
        _run(tmp_path, "b", checkpoint_seconds=1e-9, stop_after_checkpoints=11)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]
    assert state["epoch"] == 0 and [len(state["losses"][a]) for a in TINY.activations] == [8, 3, 0]
    assert _run(tmp_path, "b") == full
    log = [(tmp_path / d / "metrics.jsonl").read_text() for d in "ab"]
    assert log[0] == log[1] and "tanh/train_loss" in log[0]


def _run(tmp_path, name, seed=0, cfg=TINY, **kw):
    torch.manual_seed(seed)
    np.random.seed(seed)
    with Run(tmp_path / name, "relu", seed, cfg, progress=False, tensorboard=False, **kw) as run:
        return relu.train(cfg, run)


def test_smoke_determinism_and_resume(tmp_path):
    m1 = _run(tmp_path, "a")
    assert set(m1) >= {"relu/sparsity", "speedup/relu_vs_tanh", "speedup/relu_vs_sigmoid"}
    assert 0.0 < m1["relu/sparsity"] < 1.0 and m1["tanh/sparsity"] == 0.0
    assert all(np.isfinite(v) for v in m1.values())
    assert (tmp_path / "a" / "plots" / "train_loss.png").exists()
    assert m1 == _run(tmp_path, "b")  # same seed, same metrics
    # Interrupted after the first epoch's checkpoint, then resumed: the same final metrics.
    from seminal.core.errors import Interrupted

    with pytest.raises(Interrupted):
        _run(tmp_path, "c", stop_after_checkpoints=1)
    assert _run(tmp_path, "c") == m1
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]


# ---- one whole update step against a naive NumPy re-derivation -----------------------------------------
def _numpy_step(Ws, bs, vW, vb, x, y, l1, lr, mu, act):
    """Forward, cross-entropy + L1 on the hidden activations, backward by hand, SGD with momentum (torch's
    form v = mu v + g, w -= lr v)."""
    f = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[act]
    df = {"relu": lambda z, h: (z > 0).astype(float), "tanh": lambda z, h: 1 - h**2}[act]
    B = len(x)
    hs, zs = [x], []
    for W, b in zip(Ws[:-1], bs[:-1]):
        zs.append(hs[-1] @ W.T + b)
        hs.append(f(zs[-1]))
    logits = hs[-1] @ Ws[-1].T + bs[-1]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(10)[y]) / B  # d mean-CE / d logits
    gW, gb = [None] * len(Ws), [None] * len(Ws)
    gW[-1], gb[-1] = delta.T @ hs[-1], delta.sum(0)
    dh = delta @ Ws[-1]
    for i in range(len(Ws) - 2, -1, -1):
        dh = dh + l1 * np.sign(hs[i + 1]) / B  # §3.1: d/dh of l1 * mean_b sum_j |h_j|
        dz = dh * df(zs[i], hs[i + 1])
        gW[i], gb[i] = dz.T @ hs[i], dz.sum(0)
        dh = dz @ Ws[i]
    for i in range(len(Ws)):
        vW[i] = mu * vW[i] + gW[i]
        vb[i] = mu * vb[i] + gb[i]
        Ws[i] = Ws[i] - lr * vW[i]
        bs[i] = bs[i] - lr * vb[i]
    return -np.log(p[np.arange(B), y]).mean()


@pytest.mark.parametrize("act,l1", [("relu", 0.0), ("relu", 0.01), ("tanh", 0.01)])
def test_sgd_updates_equal_a_numpy_backward_pass(act, l1):
    torch.manual_seed(7)
    model = relu.DeepMLP((6, 5), act).double()
    linears = list(model.layers) + [model.out]
    Ws = [lin.weight.detach().numpy().copy() for lin in linears]
    bs = [lin.bias.detach().numpy().copy() for lin in linears]
    vW, vb = [np.zeros_like(w) for w in Ws], [np.zeros_like(b) for b in bs]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 8, 784, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (3, 8), generator=g)
    for k in range(3):
        ce = relu.sgd_update(model, opt, x[k], y[k], l1)
        ce_np = _numpy_step(Ws, bs, vW, vb, x[k].numpy(), y[k].numpy(), l1, 0.1, 0.9, act)
        assert ce == pytest.approx(ce_np, rel=1e-10)
    for lin, W, b in zip(linears, Ws, bs):
        np.testing.assert_allclose(lin.weight.detach().numpy(), W, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(lin.bias.detach().numpy(), b, rtol=1e-9, atol=1e-12)


def test_evaluate_sparsity_over_chunks_equals_a_direct_count():
    torch.manual_seed(9)
    model = relu.DeepMLP((7, 5), "relu")
    x = torch.rand(4500, 784) - 0.5  # three chunks of at most 2000
    y = torch.randint(0, 10, (4500,))
    err, sparsity = relu.evaluate(model, x, y)
    with torch.no_grad():
        h1 = torch.relu(model.layers[0](x))
        h2 = torch.relu(model.layers[1](h1))
        logits = model.out(h2)
    zeros = int((h1 == 0).sum() + (h2 == 0).sum())
    assert sparsity == pytest.approx(zeros / (h1.numel() + h2.numel()), rel=1e-12)
    assert err == pytest.approx(int((logits.argmax(1) != y).sum()) / 4500, abs=1e-12)
    assert 0.05 < sparsity < 0.95


def test_dataset_key_picks_the_loader(monkeypatch):
    def fake(split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        return rng.integers(0, 255, (30, 28, 28)).astype(np.uint8), rng.integers(0, 10, 30)

    def forbidden(split):
        raise AssertionError("dataset=fashion-mnist must not read MNIST")

    monkeypatch.setattr(vision, "load_mnist", forbidden)
    monkeypatch.setattr(vision, "load_fashion_mnist", fake)
    cfg = replace(TINY, dataset="fashion-mnist", train_limit=20, test_limit=10)
    xtr, ytr, xte, yte = relu._mnist(cfg, torch.device("cpu"))
    assert xtr.shape == (20, 784) and xte.shape == (10, 784)
    np.testing.assert_allclose(xte.numpy(), fake("test")[0][:10].reshape(10, -1) / 255.0, rtol=1e-6)


def test_steps_to_target_means_only_the_steps_so_far_before_a_full_window():
    # window 5, losses 2, 1, 0: the means so far are 2, 1.5, 1.0 (not 0.4, 0.6, 0.6 over a window of 5)
    assert relu.steps_to_target([2.0, 1.0, 0.0], 1.0, 5) == 3
    assert relu.steps_to_target([1.0] * 6, 0.5, 4) == 0  # a constant 1 never averages down to 0.5


def _fake_mnist(split):
    rng = np.random.default_rng(0 if split == "train" else 1)
    y = rng.integers(0, 10, 128)
    x = rng.integers(0, 40, (128, 28, 28)).astype(np.uint8)
    x[np.arange(128), y, :] = 255  # a learnable signal: the label's row is bright
    return x, y


def test_train_reports_the_paired_comparisons(tmp_path, monkeypatch):
    # steps_to_target stubbed to fixed answers, in the order `train` asks (sigmoid, tanh, relu): 2, never, 1.
    monkeypatch.setattr(vision, "load_mnist", _fake_mnist)
    answers = iter([2, 0, 1])
    monkeypatch.setattr(relu, "steps_to_target", lambda losses, target, window: next(answers))
    cfg = replace(TINY, hidden=(8,), train_limit=0, test_limit=128, epochs=1, batch=64)  # 2 steps in all
    m = _run(tmp_path, "a", cfg=cfg)
    # never reached: counted one step past the end (2 + 1), so the speedup over it is a lower bound
    assert [m[f"{a}/steps_to_target"] for a in cfg.activations] == [2.0, 3.0, 1.0]
    assert [m[f"{a}/reached_target"] for a in cfg.activations] == [1.0, 0.0, 1.0]
    assert m["speedup/relu_vs_sigmoid"] == pytest.approx(2.0) and m["speedup/relu_vs_tanh"] == pytest.approx(3.0)
    for other in ("sigmoid", "tanh"):
        assert m[f"test_error/{other}_minus_relu"] == pytest.approx(m[f"{other}/test_error"] - m["relu/test_error"])
    assert m["test_error/sigmoid_minus_relu"] != 0.0 or m["test_error/tanh_minus_relu"] != 0.0  # not vacuous
