"""Rectifier paper: the activation switch, the sparsity metric, steps-to-target, and tiny runs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from seminal.core.run import Run
from seminal.papers.optimisation import relu

TINY = replace(relu.PRESETS["quick"], hidden=(16, 16), train_limit=256, test_limit=200, epochs=2, batch=32,
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
    torch.manual_seed(3)
    a = relu.DeepMLP((8, 8), "relu")
    torch.manual_seed(3)
    b = relu.DeepMLP((8, 8), "tanh")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


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
