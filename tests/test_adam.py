"""Adam (Kingma & Ba 2014): our optimizers against torch.optim step by step, hand-computed bias correction,
a tiny end-to-end run, same-seed determinism and resume."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from seminal.core.errors import Interrupted
from seminal.core.run import Run, seed_everything
from seminal.data import vision
from seminal.papers.optimisation import adam


def _problem(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A small float64 MLP and data: gradients change from step to step, unlike a quadratic's."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    return net, x, y


PAIRS = {
    "adam": (lambda ps: adam.Adam(ps, alpha=0.01, beta1=0.9, beta2=0.999, eps=1e-8),
             lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
    "adam_beta2_near_1": (lambda ps: adam.Adam(ps, alpha=0.03, beta1=0.5, beta2=0.9999, eps=1e-6),
                          lambda ps: torch.optim.Adam(ps, lr=0.03, betas=(0.5, 0.9999), eps=1e-6)),
    "sgd": (lambda ps: adam.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    "momentum": (lambda ps: adam.SGD(ps, lr=0.05, momentum=0.9),
                 lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "nesterov": (lambda ps: adam.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
                 lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)),
    "adagrad": (lambda ps: adam.AdaGrad(ps, lr=0.1, eps=1e-10), lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10)),
    "rmsprop": (lambda ps: adam.RMSProp(ps, lr=0.01, rho=0.99, eps=1e-8),
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.99, eps=1e-8)),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_step_by_step_equal_to_torch_optim(name):
    ours_net, x, y = _problem()
    ref_net, _, _ = _problem()
    ours, ref = PAIRS[name][0](ours_net.parameters()), PAIRS[name][1](ref_net.parameters())
    for step in range(30):
        for net, opt in ((ours_net, ours), (ref_net, ref)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        for a, b in zip(ours_net.parameters(), ref_net.parameters()):
            assert torch.allclose(a, b, rtol=0, atol=1e-6), f"{name}: differs from torch.optim at step {step + 1}"
    # The run moved the parameters (so the equality above is not vacuous).
    start, _, _ = _problem()
    assert any(not torch.allclose(a, b, atol=1e-3) for a, b in zip(ours_net.parameters(), start.parameters()))


def test_bias_correction_step_one_by_hand():
    # t = 1, m_0 = v_0 = 0: m_1 = (1-b1) g, v_1 = (1-b2) g^2.
    alpha, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    g = torch.tensor([0.5, -2.0, 1e-3], dtype=torch.float64)
    corrected = adam.adam_update(g, torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 1,
                                 alpha, b1, b2, eps, bias_correction=True)
    raw = adam.adam_update(g, torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 1,
                           alpha, b1, b2, eps, bias_correction=False)
    for i, gi in enumerate([0.5, -2.0, 1e-3]):
        # m_hat = g, v_hat = g^2: the first step is alpha * g / (|g| + eps), about alpha * sign(g).
        assert corrected[i].item() == pytest.approx(alpha * gi / (abs(gi) + eps), rel=1e-12)
        # Uncorrected: alpha (1-b1) g / (sqrt(1-b2) |g| + eps), about 3.16 alpha here.
        assert raw[i].item() == pytest.approx(alpha * (1 - b1) * gi / (math.sqrt(1 - b2) * abs(gi) + eps), rel=1e-12)
    assert raw[0].item() / corrected[0].item() == pytest.approx((1 - b1) / math.sqrt(1 - b2), rel=1e-6)


def test_adam_step_two_by_hand():
    alpha, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    m, v = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    adam.adam_update(torch.tensor([1.0], dtype=torch.float64), m, v, 1, alpha, b1, b2, eps)
    step2 = adam.adam_update(torch.tensor([-3.0], dtype=torch.float64), m, v, 2, alpha, b1, b2, eps)
    m2 = 0.9 * 0.1 * 1.0 + 0.1 * -3.0  # = -0.21
    v2 = 0.999 * 0.001 * 1.0 + 0.001 * 9.0  # = 0.009999
    assert m.item() == pytest.approx(m2) and v.item() == pytest.approx(v2)
    expected = alpha * (m2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps)
    assert step2.item() == pytest.approx(expected, rel=1e-12)


def test_steps_to_target():
    assert adam.steps_to_target([10, 20, 30], [0.9, 0.4, 0.2], 0.5, never=31) == 20
    assert adam.steps_to_target([10, 20, 30], [0.9, 0.8, 0.7], 0.5, never=31) == 31


def _tiny_mnist(split: str):
    rng = np.random.default_rng(0 if split == "train" else 1)
    n = 192 if split == "train" else 64
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    x[np.arange(n), y, :] = 255  # a learnable signal: the label's row is bright
    return x, y.astype(np.int64)


TINY = replace(adam.PRESETS["quick"], train_limit=0, batch_size=32, logreg_epochs=2, mlp_epochs=3, ablation_epochs=1,
               mlp_hidden=16, log_every=2, logreg_lr_grid=(1.0, 10.0))


def _run(tmp_path, name, seed=0, stop=None, **kw):
    seed_everything(seed)
    with Run(tmp_path / name, "adam", seed, TINY, progress=False, tensorboard=False,
             stop_after_checkpoints=stop, **kw) as run:
        return adam.train(TINY, run)


def test_smoke_same_seed_and_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "load_mnist", _tiny_mnist)
    first = _run(tmp_path, "a")
    assert all(math.isfinite(v) for v in first.values())
    assert {"logreg/adam_speedup_vs_sgd", "mlp/adam_speedup_vs_sgd", "ablation/loss_ratio_uncorrected"} <= set(first)
    assert (tmp_path / "a" / "plots" / "mlp_train_loss.png").exists()
    assert (tmp_path / "a" / "plots" / "ablation_bias_correction.png").exists()
    assert _run(tmp_path, "b") == first  # same seed, same numbers
    with pytest.raises(Interrupted):
        _run(tmp_path, "c", stop=1)  # stopped after epoch 1's checkpoint
    assert _run(tmp_path, "c") == first  # resumed: the same final metrics
    assert _run(tmp_path, "d", seed=1) != first


def test_three_bias_corrected_steps_by_hand():
    # Algorithm 1 unrolled by hand for t = 1, 2, 3 on one coordinate, gradients 0.5, -1, 2.
    alpha, b1, b2, eps = 0.02, 0.8, 0.99, 1e-8
    m, v = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    mh, vh = 0.0, 0.0
    for t, g in enumerate([0.5, -1.0, 2.0], start=1):
        step = adam.adam_update(torch.tensor([g], dtype=torch.float64), m, v, t, alpha, b1, b2, eps).item()
        mh, vh = b1 * mh + (1 - b1) * g, b2 * vh + (1 - b2) * g * g
        assert m.item() == pytest.approx(mh, rel=1e-12) and v.item() == pytest.approx(vh, rel=1e-12)
        assert step == pytest.approx(alpha * (mh / (1 - b1**t)) / (math.sqrt(vh / (1 - b2**t)) + eps), rel=1e-12)
    # t = 3 by the numbers: m3 = 0.8(0.8*0.1 - 0.2) + 0.4 = 0.304, v3 = 0.99(0.99*0.0025 + 0.01) + 0.04
    assert mh == pytest.approx(0.304) and vh == pytest.approx(0.99 * (0.99 * 0.0025 + 0.01) + 0.04)


def test_uncorrected_variant_two_steps_by_hand_and_through_the_optimizer():
    alpha, b1, b2, eps = 0.1, 0.9, 0.9999, 1e-8
    theta = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = adam.Adam([theta], alpha=alpha, beta1=b1, beta2=b2, eps=eps, bias_correction=False)
    expected = [1.0, -2.0]
    m, v = [0.0, 0.0], [0.0, 0.0]
    for _ in range(2):
        opt.zero_grad()
        (theta**2).sum().backward()  # g = 2 theta
        g = [2 * e for e in expected]
        opt.step()
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            expected[i] -= alpha * m[i] / (math.sqrt(v[i]) + eps)  # no 1 - beta^t: the raw moments
        torch.testing.assert_close(theta.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert opt.state[theta]["t"] == 2


def test_dataset_key_picks_the_loader(monkeypatch):
    def forbidden(split):
        raise AssertionError("dataset=fashion-mnist must not read MNIST")

    monkeypatch.setattr(vision, "load_mnist", forbidden)
    monkeypatch.setattr(vision, "load_fashion_mnist", _tiny_mnist)
    x, y = adam.images_flat("fashion-mnist", "train", 10)
    assert x.shape == (10, 784) and torch.equal(y, torch.from_numpy(_tiny_mnist("train")[1][:10]))
    assert float(x.max()) == 1.0 and float(x.min()) >= 0.0


def test_ablation_pair_differs_only_in_the_bias_correction():
    cfg = adam.PRESETS["quick"]
    groups = {}
    for name in ("adam_corrected", "adam_uncorrected"):
        opt = adam.make_optimizer(name, [torch.zeros(2, requires_grad=True)], cfg)
        groups[name] = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        assert isinstance(opt, adam.Adam) and groups[name]["beta2"] == cfg.ablation_beta2
        assert groups[name]["alpha"] == cfg.ablation_alpha
    assert groups["adam_corrected"]["bias_correction"] is True
    assert groups["adam_uncorrected"]["bias_correction"] is False
    assert {k for k in groups["adam_corrected"] if groups["adam_corrected"][k] != groups["adam_uncorrected"].get(k)} \
        == {"bias_correction"}


def test_mid_epoch_stop_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "load_mnist", _tiny_mnist)
    first = _run(tmp_path, "a")  # 6 minibatches an epoch; 17 arms
    with pytest.raises(Interrupted):  # due() after every batch: the 8th checkpoint is the 2nd arm's 3rd batch
        _run(tmp_path, "b", stop=8, checkpoint_seconds=1e-9)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]
    assert (state["epoch"], state["arm"], state["batch"]) == (0, 1, 3)
    assert _run(tmp_path, "b") == first
    log = [(tmp_path / d / "metrics.jsonl").read_text() for d in "ab"]
    assert log[0] == log[1]


def test_steps_to_target_counts_a_loss_equal_to_the_target():
    assert adam.steps_to_target([10, 20, 30], [0.9, 0.5, 0.2], 0.5, never=31) == 20  # "<= target"


def test_each_arm_is_built_with_its_own_settings():
    # Behaviour, not attributes: one step on theta = 0 with the constant gradient 1 (loss = theta).
    cfg = replace(adam.PRESETS["quick"], lr_momentum=0.1, momentum=0.9, alpha=0.01, beta1=0.9, beta2=0.999,
                  ablation_beta2=0.5, eps=1e-8)

    def steps(name, n):
        theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = adam.make_optimizer(name, [theta], cfg)
        out = []
        for _ in range(n):
            opt.zero_grad()
            theta.sum().backward()
            before = theta.item()
            opt.step()
            out.append(before - theta.item())
        return out

    # SGDNesterov: b_1 = 1, step lr (g + mu b_1) = 0.1 x 1.9; then b_2 = 1.9, step 0.1 (1 + 0.9 x 1.9).
    assert steps("momentum", 2) == pytest.approx([0.19, 0.1 * (1 + 0.9 * 1.9)], rel=1e-12)
    # Adam: one step on the loss 3 theta; its moments show which beta1, beta2 the arm was given.
    theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = adam.make_optimizer("adam", [theta], cfg)
    (3.0 * theta).sum().backward()
    opt.step()
    assert opt.state[theta]["v"].item() == pytest.approx((1 - 0.999) * 9.0, rel=1e-12)  # beta2, not ablation_beta2
    assert opt.state[theta]["m"].item() == pytest.approx((1 - 0.9) * 3.0, rel=1e-12)
    assert theta.item() == pytest.approx(-0.01 * 3.0 / (3.0 + 1e-8), rel=1e-12)


def test_metrics_are_the_best_grid_arm_and_its_ratios(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(vision, "load_mnist", _tiny_mnist)
    m = _run(tmp_path, "a")
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]

    def mean(name):
        vals = [r[f"{name}/train_loss"] for r in rows if f"{name}/train_loss" in r]
        return float(np.mean(vals)) if vals else math.inf

    spread, best = False, {}
    for k, grid in (("logreg", TINY.logreg_lr_grid), ("mlp", TINY.mlp_lr_grid)):
        for o in adam.OPTIMIZERS:
            means = {s: mean(f"{k}/{o}@{s:g}") for s in grid}
            s_best = min(means, key=means.get)  # the paper's grid search: the lowest mean training loss wins
            assert m[f"{k}/{o}/mean_loss"] == pytest.approx(means[s_best], rel=1e-12), (k, o)
            assert m[f"{k}/{o}/lr"] == pytest.approx(adam.base_lr(o, TINY) * s_best)
            best[o] = means[s_best]
            spread |= len(set(means.values())) > 1
        for o in ("sgd", "momentum", "adagrad", "rmsprop"):
            assert m[f"{k}/{o}_over_adam_mean_loss"] == pytest.approx(best[o] / best["adam"])
        assert m[f"{k}/adam_speedup_vs_sgd"] == pytest.approx(m[f"{k}/sgd/steps_to_target"]
                                                               / m[f"{k}/adam/steps_to_target"])
    assert spread  # the grid's step sizes do give different losses: picking the best is not vacuous
    corrected, uncorrected = mean("ablation/adam_corrected"), mean("ablation/adam_uncorrected")
    assert m["ablation/loss_ratio_uncorrected"] == pytest.approx(uncorrected / corrected)
    assert corrected != uncorrected
