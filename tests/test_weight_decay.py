"""Weight decay paper: the decay term against autograd and finite differences, decay=0 equals plain
training, the linear-teacher theory against Monte Carlo, and tiny runs (determinism, resume)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from seminal.core.errors import Interrupted
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import vision
from seminal.papers.foundations import weight_decay as wd


# ---- Eqs. (1)-(2) -------------------------------------------------------------------------------------
def test_decay_grad_is_the_gradient_of_the_penalty():
    torch.manual_seed(0)
    ws = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True), torch.randn(5, dtype=torch.float64,
                                                                                  requires_grad=True)]
    lam = 0.37
    auto = torch.autograd.grad(wd.l2_penalty(ws, lam), ws)
    for w in ws:
        w.grad = torch.zeros_like(w)
    wd.add_decay_grad(ws, lam)
    for w, g in zip(ws, auto):
        torch.testing.assert_close(w.grad, g)
    # Central finite differences of the penalty, one coordinate at a time.
    h = 1e-6
    with torch.no_grad():
        for w in ws:
            flat = w.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + h
                up = wd.l2_penalty(ws, lam).item()
                flat[i] = old - h
                down = wd.l2_penalty(ws, lam).item()
                flat[i] = old
                assert (up - down) / (2 * h) == pytest.approx(w.grad.view(-1)[i].item(), rel=1e-6)
    assert wd.l2_penalty(ws, lam).item() == pytest.approx(0.5 * lam * sum((w**2).sum().item() for w in ws))


def _batches(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y, list(batches(n, 32, epoch_rng(seed, 0)))


def test_zero_decay_equals_plain_training_exactly():
    cfg = replace(wd.PRESETS["quick"], hidden=32, decay=0.0, anneal=False)
    x, y, order = _batches()
    torch.manual_seed(1)
    ours = wd.MLP(32)
    plain = wd.MLP(32)
    plain.load_state_dict(ours.state_dict())
    wd.train_epoch(ours, [torch.zeros_like(p) for p in ours.parameters()], x, y, cfg, 0.0, order)
    # The plain loop, written out with no decay term anywhere: bit-for-bit the same weights.
    params = list(plain.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    for idx in order:
        plain.zero_grad()
        nn.functional.cross_entropy(plain(x[idx]), y[idx]).backward()
        wd.sgd_step(params, velocity, cfg.lr, cfg.momentum)
    for p, q in zip(ours.parameters(), plain.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(ours.fc1.weight, wd.MLP(32).fc1.weight)  # and training did move them


def test_decay_matches_torch_sgd_weight_decay_on_the_weights():
    cfg = replace(wd.PRESETS["quick"], hidden=32, anneal=False)
    lam = 0.01
    x, y, order = _batches(seed=2)
    torch.manual_seed(2)
    ours = wd.MLP(32)
    ref = wd.MLP(32)
    ref.load_state_dict(ours.state_dict())
    wd.train_epoch(ours, [torch.zeros_like(p) for p in ours.parameters()], x, y, cfg, lam, order)
    decayed = [ref.fc1.weight, ref.fc2.weight]
    rest = [ref.fc1.bias, ref.fc2.bias]
    opt = torch.optim.SGD([{"params": decayed, "weight_decay": lam}, {"params": rest, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum)
    for idx in order:
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x[idx]), y[idx]).backward()
        opt.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_noisy_labels_fraction_and_range():
    y = np.arange(20000) % 10
    z = wd.noisy_labels(y, 0.3, np.random.default_rng(0))
    changed = (z != y).mean()
    assert changed == pytest.approx(0.3 * 0.9, abs=0.01)  # a random label equals the true one 1 time in 10
    assert z.min() >= 0 and z.max() <= 9
    assert np.array_equal(wd.noisy_labels(y, 0.0, np.random.default_rng(0)), y)


# ---- the linear network: §3-4 --------------------------------------------------------------------------
def test_ridge_solution_is_the_minimum_and_the_fixed_point_of_gradient_descent():
    rng = np.random.default_rng(0)
    u, xi, zeta = wd.linear_task(rng, 8, 12, 0.3, 1.0, 1)
    lam = 0.4
    w_star = wd.ridge_solution(xi, zeta, lam)[0]
    A, b = wd.normal_equations(xi, zeta)
    # Gradient descent on E = E_0 + lambda/2 |w|^2 (Eq. 2, discretised): dE/dw = A w - b + lambda w.
    w = np.zeros(8)
    for _ in range(5000):
        w -= 0.05 * (A[0] @ w - b[0] + lam * w)
    np.testing.assert_allclose(w, w_star, atol=1e-8)
    # E_0 written from its definition, minimised: any perturbation raises E.
    def E(v):
        return 0.5 * ((zeta[0] - xi[0] @ v / np.sqrt(8)) ** 2).sum() + 0.5 * lam * (v**2).sum()
    for d in np.eye(8):
        assert E(w_star + 1e-3 * d) > E(w_star) and E(w_star - 1e-3 * d) > E(w_star)
    # The eigendecomposition path equals the direct solves.
    path = wd.ridge_path(xi, zeta, np.array([0.0, lam, 3.0]))
    np.testing.assert_allclose(path[1], wd.ridge_solution(xi, zeta, lam), atol=1e-10)
    np.testing.assert_allclose(path[2], wd.ridge_solution(xi, zeta, 3.0), atol=1e-10)


def test_gen_error_is_the_expected_squared_output_error():
    rng = np.random.default_rng(1)
    n = 20
    w, u = rng.normal(size=n), rng.normal(size=n)
    xi = rng.normal(size=(200000, n))
    mc = (((u - w) @ xi.T) ** 2).mean() / n  # <(u.xi/sqrt N - w.xi/sqrt N)^2> over fresh inputs
    assert wd.gen_error(w, u) == pytest.approx(mc, rel=0.02)


def test_G_is_the_mean_resolvent_trace():
    rng = np.random.default_rng(2)
    n = 400
    for alpha, lam in [(0.5, 0.1), (1.5, 0.05), (3.0, 1.0)]:
        xi = rng.normal(size=(int(alpha * n), n))
        a = np.linalg.eigvalsh(xi.T @ xi / n)
        assert wd.mp_G(alpha, lam) == pytest.approx((1 / (a + lam)).mean(), rel=0.02)
        h = 1e-6  # dG/dlambda against central differences of G
        fd = (wd.mp_G(alpha, lam + h) - wd.mp_G(alpha, lam - h)) / (2 * h)
        assert wd.mp_dG(alpha, lam) == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("alpha,lam,sigma2,s2", [(0.5, 0.2, 0.5, 1.0), (1.5, 0.5, 0.5, 1.0),
                                                 (2.0, 0.05, 0.2, 2.0), (3.0, 3.0, 1.0, 1.0)])
def test_theory_gen_error_against_monte_carlo(alpha, lam, sigma2, s2):
    rng = np.random.default_rng(3)
    n = 300
    u, xi, zeta = wd.linear_task(rng, n, int(alpha * n), sigma2, s2, 24)
    measured = wd.gen_error(wd.ridge_solution(xi, zeta, lam), u).mean()
    assert measured == pytest.approx(float(wd.theory_gen_error(alpha, lam, sigma2, s2)), rel=0.05)


def test_theory_optimum_is_sigma2_over_s2_and_limits():
    lams = np.geomspace(1e-3, 1e2, 20001)
    for alpha, sigma2, s2 in [(0.7, 0.5, 1.0), (1.5, 0.2, 2.0), (4.0, 1.0, 0.5)]:
        F = wd.theory_gen_error(alpha, lams, sigma2, s2)
        assert lams[np.argmin(F)] == pytest.approx(wd.optimal_lambda(sigma2, s2), rel=2e-3)
    # lambda -> 0 with alpha > 1: least squares, F = sigma^2 / (alpha - 1) (tr of the inverse Wishart).
    assert float(wd.theory_gen_error(3.0, 0.0, 0.4)) == pytest.approx(0.4 / 2.0)
    # lambda -> inf: w -> 0, F -> teacher variance s^2.
    assert float(wd.theory_gen_error(1.5, 1e7, 0.4, 2.0)) == pytest.approx(2.0, rel=1e-4)


# ---- tiny runs ------------------------------------------------------------------------------------------
TINY = replace(wd.PRESETS["quick"], mnist_train=100, mnist_test=200, hidden=16, epochs=3, eval_every=2,
               lin_inputs=20, lin_trials=10, lin_points=7)


def _run(tmp_path, name, seed=0, **kw):
    torch.manual_seed(seed)
    np.random.seed(seed)
    with Run(tmp_path / name, "weight-decay", seed, TINY, progress=False, tensorboard=False, **kw) as run:
        return wd.train(TINY, run)


def test_smoke_determinism_and_resume(tmp_path):
    m1 = _run(tmp_path, "a")
    for claim in wd.CLAIMS["quick"]:
        assert np.isfinite(m1[claim.metric])
    assert (tmp_path / "a" / "plots" / "linear_gen_error_vs_lambda.png").exists()
    assert (tmp_path / "a" / "plots" / "mnist_error.png").exists()
    assert m1 == _run(tmp_path, "b")
    with pytest.raises(Interrupted):
        _run(tmp_path, "c", stop_after_checkpoints=1)
    assert _run(tmp_path, "c") == m1
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]


# ---- whole update steps against independent computations ------------------------------------------------
def test_annealed_decay_steps_equal_torch_sgd_with_the_hand_schedule():
    # Eq. (2) with momentum and the linear anneal lr_k = lr (1 - k / total): torch.optim.SGD, its lr set by
    # hand before each step, weight_decay on the weight matrices only.
    cfg = replace(wd.PRESETS["quick"], hidden=16, anneal=True, epochs=2, lr=0.2)
    lam = 0.05
    x, y, order = _batches(n=96, seed=4)
    torch.manual_seed(4)
    ours, ref = wd.MLP(16), wd.MLP(16)
    ref.load_state_dict(ours.state_dict())
    velocity = [torch.zeros_like(p) for p in ours.parameters()]
    opt = torch.optim.SGD([{"params": [ref.fc1.weight, ref.fc2.weight], "weight_decay": lam},
                           {"params": [ref.fc1.bias, ref.fc2.bias], "weight_decay": 0.0}], lr=cfg.lr, momentum=0.9)
    total = cfg.epochs * len(order)
    for epoch in range(cfg.epochs):
        wd.train_epoch(ours, velocity, x, y, cfg, lam, order, epoch)
        for k, idx in enumerate(order):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * (1 - (epoch * len(order) + k) / total)
            opt.zero_grad()
            nn.functional.cross_entropy(ref(x[idx]), y[idx]).backward()
            opt.step()
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_first_step_by_hand_decays_weights_not_biases():
    cfg = replace(wd.PRESETS["quick"], hidden=8, anneal=False, lr=0.1)
    lam = 0.3
    x, y, order = _batches(n=32, seed=5)
    torch.manual_seed(5)
    model = wd.MLP(8)
    before = [p.detach().clone() for p in model.parameters()]
    copy_ = wd.MLP(8)
    copy_.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(copy_(x[order[0]]), y[order[0]]).backward()
    wd.train_epoch(model, [torch.zeros_like(p) for p in model.parameters()], x, y, cfg, lam, order[:1])
    names = [n for n, _ in model.named_parameters()]
    for name, p0, p1, q in zip(names, before, model.parameters(), copy_.parameters()):
        decay = lam * p0 if name.endswith("weight") else 0.0  # Eq. (2): -lambda w on weights only
        torch.testing.assert_close(p1.detach(), p0 - 0.1 * (q.grad + decay))


def test_ridge_equals_an_explicit_solve_built_from_the_definition():
    rng = np.random.default_rng(6)
    u, xi, zeta = wd.linear_task(rng, 6, 9, 0.2, 1.5, 3)
    lams = np.array([0.0, 0.07, 1.3])
    path = wd.ridge_path(xi, zeta, lams)
    for t in range(3):
        A = sum(np.outer(xi[t, mu], xi[t, mu]) for mu in range(9)) / 6  # (1/N) sum xi xi^T
        b = sum(zeta[t, mu] * xi[t, mu] for mu in range(9)) / np.sqrt(6)  # (1/sqrt N) sum zeta xi
        for i, lam in enumerate(lams):
            w = np.linalg.solve(A + lam * np.eye(6), b)
            np.testing.assert_allclose(wd.ridge_solution(xi, zeta, lam)[t], w, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(path[i, t], w, rtol=1e-8, atol=1e-10)
    assert not np.allclose(path[0], path[2])  # lambda does shrink the solution


def test_dataset_key_picks_the_loader(monkeypatch):
    def fake(split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        return rng.integers(0, 255, (30, 28, 28)).astype(np.uint8), rng.integers(0, 10, 30)

    def forbidden(split):
        raise AssertionError("dataset=fashion-mnist must not read MNIST")

    monkeypatch.setattr(vision, "load_mnist", forbidden)
    monkeypatch.setattr(vision, "load_fashion_mnist", fake)
    cfg = replace(TINY, dataset="fashion-mnist", mnist_train=20, mnist_test=10)
    xtr, ytr, xte, yte = wd._mnist_tensors(cfg, torch.device("cpu"))
    assert xtr.shape == (20, 784) and xte.shape == (10, 784)
    np.testing.assert_allclose(xte.numpy(), fake("test")[0][:10].reshape(10, -1) / 255.0, rtol=1e-6)


def test_mid_epoch_stop_resumes_to_the_uninterrupted_result(tmp_path):
    m1 = _run(tmp_path, "a")  # 2 minibatches an epoch for each arm; epoch 1 is an evaluation epoch
    with pytest.raises(Interrupted):  # due() after every batch: the 5th checkpoint is epoch 1, decay arm, batch 1
        _run(tmp_path, "b", checkpoint_seconds=1e-9, stop_after_checkpoints=5)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]
    assert (state["epoch"], state["arm"], state["batch"]) == (1, 1, 1) and "plain/test_error" in state["row"]
    assert _run(tmp_path, "b") == m1
    rows = [(tmp_path / d / "metrics.jsonl").read_text() for d in "ab"]
    assert rows[0] == rows[1]


# ---- the two MNIST arms and the claim metrics derived from them ---------------------------------------------
def _arms_run(tmp_path, name, monkeypatch, decay):
    def fake(split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        return rng.integers(0, 255, (40, 28, 28)).astype(np.uint8), rng.integers(0, 10, 40)

    monkeypatch.setattr(vision, "load_mnist", fake)
    cfg = replace(TINY, mnist_train=40, mnist_test=40, hidden=8, epochs=2, eval_every=1, batch=20, decay=decay)
    torch.manual_seed(0)
    with Run(tmp_path / name, "weight-decay", 0, cfg, progress=False, tensorboard=False) as run:
        final = wd.mnist_experiment(cfg, run, None)
        norms = {a: run.history(f"{a}/weight_norm")[1] for a in ("plain", "decay")}
    return final, norms


def test_mnist_arms_and_their_derived_metrics(tmp_path, monkeypatch):
    # lambda = 0 for the decay arm: the same initial weights and minibatches make the two arms identical.
    final0, norms0 = _arms_run(tmp_path, "zero", monkeypatch, 0.0)
    assert norms0["plain"] == norms0["decay"]
    assert final0["mnist/plain_test_error"] == final0["mnist/decay_test_error"]
    assert final0["mnist/plain_train_error"] == final0["mnist/decay_train_error"]
    # lambda = 0.5: every step shrinks the weights by (1 - lr lambda) = 0.975, the decay arm ends shorter.
    final, norms = _arms_run(tmp_path, "decay", monkeypatch, 0.5)
    assert all(d < 0.97 * p for p, d in zip(norms["plain"], norms["decay"]))
    gap = {a: final[f"mnist/{a}_test_error"] - final[f"mnist/{a}_train_error"] for a in ("plain", "decay")}
    assert final["mnist/plain_gap"] == pytest.approx(gap["plain"])
    assert final["mnist/decay_gap"] == pytest.approx(gap["decay"])
    assert final["mnist/gap_reduction"] == pytest.approx(gap["plain"] - gap["decay"])
    assert final["mnist/test_error_reduction"] == pytest.approx(final["mnist/plain_test_error"]
                                                                - final["mnist/decay_test_error"])


def test_linear_best_is_interior_only_inside_the_sweep():
    # sigma^2 / s^2 = 0.5: a sweep over [1e-2, 1e2] has its best point inside, one over [10, 1e3] at its first end.
    base = replace(TINY, lin_inputs=40, lin_trials=40, lin_points=9, lin_noise=0.5, lin_teacher_var=1.0)
    inside, lams, F = wd.linear_experiment(replace(base, lin_lambda_min=1e-2, lin_lambda_max=1e2),
                                           np.random.default_rng(0))
    assert inside["linear/best_is_interior"] == 1.0 and 0 < int(np.argmin(F)) < len(lams) - 1
    edge, lams, F = wd.linear_experiment(replace(base, lin_lambda_min=10.0, lin_lambda_max=1e3),
                                         np.random.default_rng(0))
    assert int(np.argmin(F)) == 0 and edge["linear/best_is_interior"] == 0.0
    assert edge["linear/best_lambda"] == pytest.approx(10.0)
