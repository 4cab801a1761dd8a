"""LeNet-5: every layer's shape, Table I, the subsampling gradient, the masked C3 against a naive one, the RBF
units and loss against hand-computed values, the scaled tanh, and a smoke run that resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seminal.core.errors import Interrupted
from seminal.core.runner import execute
from seminal.data import vision
from seminal.papers.foundations import lenet5 as L

# Table I of the paper, typed from the printed table: row = S2 map 0..5, column = C3 map 0..15, X = connected.
TABLE_I = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)


def test_shapes_at_every_layer():
    net = L.LeNet5(L.rbf_codes("bitmap"))
    out = net.layers(torch.zeros(3, 1, 32, 32))
    expected = {
        "input": (3, 1, 32, 32),
        "C1": (3, 6, 28, 28),
        "S2": (3, 6, 14, 14),
        "C3": (3, 16, 10, 10),
        "S4": (3, 16, 5, 5),
        "C5": (3, 120),
        "F6": (3, 84),
        "output": (3, 10),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected


def test_parameter_count_is_the_papers():
    # §II-B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 trainable parameters; RBF codes are fixed.
    assert L.count_parameters(L.LeNet5(L.rbf_codes("bitmap"))) == 156 + 12 + 1516 + 32 + 48120 + 10164


def test_c3_connections_are_table_one():
    table = torch.tensor([[c == "X" for c in row] for row in TABLE_I], dtype=torch.float32)  # (6 S2, 16 C3)
    assert torch.equal(L.c3_mask(), table.T)
    per_map = table.sum(0).tolist()
    assert per_map == [3] * 6 + [4] * 9 + [6]  # six maps see 3 inputs, nine see 4, one sees all 6
    assert L.C3_TABLE[4] == (4, 5, 0) and set(L.C3_TABLE[14]) == {0, 2, 3, 5}  # wrap-around and a gappy one


def test_normalise_levels_and_padding():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 0, 0] = 255
    x = L.normalise(img)
    assert x.shape == (1, 1, 32, 32)
    assert x[0, 0, 2, 2].item() == pytest.approx(1.175)  # ink, shifted by the 2-pixel pad
    assert x[0, 0, 0, 0].item() == pytest.approx(-0.1) and x[0, 0, 10, 10].item() == pytest.approx(-0.1)


def test_scaled_tanh_values_and_slope():
    a = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    f = L.squash(a)
    assert f[1].item() == pytest.approx(1.7159 * math.tanh(2 / 3), rel=1e-6)
    assert f[1].item() == pytest.approx(1.0, abs=1e-3) and f[2].item() == pytest.approx(-1.0, abs=1e-3)
    (grad,) = torch.autograd.grad(f[0], a)
    assert grad[0].item() == pytest.approx(1.7159 * 2 / 3, rel=1e-6)


def test_subsampling_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    coef = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c, b: L.squash(L.subsample(x, c, b)), (x, coef, bias))


def test_subsampling_is_coefficient_times_2x2_sum_plus_bias():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = L.subsample(x, torch.tensor([0.5]), torch.tensor([1.0]))
    # top-left block 0+1+4+5 = 10, top-right 2+3+6+7 = 18, bottom-left 8+9+12+13 = 42, bottom-right 50
    assert out[0, 0].tolist() == [[6.0, 10.0], [22.0, 26.0]]


def test_masked_c3_equals_naive_sum_over_connected_maps():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 14, 14, generator=g, dtype=torch.float64)
    w = torch.randn(16, 6, 5, 5, generator=g, dtype=torch.float64)
    b = torch.randn(16, generator=g, dtype=torch.float64)
    fast = L.partial_conv(x, w, b, L.c3_mask().double())
    for o, row in enumerate(zip(*TABLE_I)):  # column o of Table I
        naive = b[o] + sum(F.conv2d(x[:, i : i + 1], w[o : o + 1, i : i + 1]) for i, c in enumerate(row) if c == "X")
        torch.testing.assert_close(fast[:, o : o + 1], naive)


def test_rbf_is_squared_euclidean_distance():
    codes = torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]])
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.5]])
    # (0-1)^2+(0+1)^2+(0-1)^2 = 3; 3; 0+4+0 = 4; 4+4+4 = 12; 0+0+0.25; 4+0+2.25
    expected = torch.tensor([[3.0, 3.0], [4.0, 12.0], [0.25, 6.25]])
    torch.testing.assert_close(L.rbf(x, codes), expected)


def test_map_loss_is_equation_nine():
    y = torch.tensor([[1.0, 2.0, 3.0], [0.5, 4.0, 0.1]])
    target = torch.tensor([0, 2])
    j = 1.0
    e1 = 1.0 + math.log(math.exp(-j) + math.exp(-1) + math.exp(-2) + math.exp(-3))
    e2 = 0.1 + math.log(math.exp(-j) + math.exp(-0.5) + math.exp(-4) + math.exp(-0.1))
    assert L.map_loss(y, target, j).item() == pytest.approx((e1 + e2) / 2, rel=1e-6)


def test_rbf_codes_are_distinct_plus_minus_one_bitmaps():
    assert all(len(d) == 12 and all(len(r) == 7 for r in d) for d in L.DIGIT_BITMAPS)
    for kind in ("bitmap", "random"):
        codes = L.rbf_codes(kind)
        assert codes.shape == (10, 84) and set(codes.unique().tolist()) == {-1.0, 1.0}
        distances = L.rbf(codes, codes)
        assert (distances + torch.eye(10) * 1e9).min() >= 4 * 4  # every pair differs in >= 4 pixels


def test_init_is_uniform_within_2_4_over_fan_in():
    torch.manual_seed(0)
    net = L.LeNet5(L.rbf_codes("bitmap"))
    fan = torch.tensor([25.0 * len(t) for t in L.C3_TABLE])
    assert (net.c3.weight.abs().amax(dim=(1, 2, 3)) <= 2.4 / fan).all()
    assert net.c1.weight.abs().max() <= 2.4 / 25 and net.f6.weight.abs().max() <= 2.4 / 120
    assert net.c1.weight.abs().max() > 0.8 * 2.4 / 25  # uses the range, not a tiny fraction of it


def _smoke_overrides() -> list[str]:
    return ["epochs=2", "train_limit=256", "test_limit=200", "evals_per_epoch=2"]


@pytest.fixture
def one_thread():
    """Small-batch CPU training with two threads slows ~10x when the other core is busy (shared CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_smoke_run_and_exact_resume(tmp_path, one_thread):
    full = execute("lenet5", "quick", seed=3, overrides=_smoke_overrides(), out_root=tmp_path / "a", progress=False)
    assert all(math.isfinite(v) for v in full["metrics"].values())
    run_dir = full["run_dir"]
    assert (tmp_path / "a" / "lenet5").exists() and any((tmp_path / "a").rglob("learning_curve.png"))
    assert full["metrics"]["test/error"] < 0.9  # 2 passes over 256 digits: better than chance

    with pytest.raises(Interrupted):
        execute(
            "lenet5",
            "quick",
            seed=3,
            overrides=_smoke_overrides(),
            out_root=tmp_path / "b",
            progress=False,
            stop_after_checkpoints=1,
        )
    (interrupted,) = (tmp_path / "b" / "lenet5").iterdir()
    resumed = execute("lenet5", resume_dir=interrupted, progress=False)
    assert resumed["metrics"] == full["metrics"] and run_dir != resumed["run_dir"]


# ---- one whole update step of Eq. (9) against a naive re-derivation ------------------------------------
def _naive_penalties(prm, x, codes):
    """LeNet-5 written from §II-B without the module's helpers: Table I typed above, 2x2 sums by slicing,
    RBF distances one code at a time."""

    def f(a):
        return 1.7159 * torch.tanh(2.0 / 3.0 * a)  # Eq. (6)

    def sub(h, coef, bias):
        s = h[..., ::2, ::2] + h[..., 1::2, ::2] + h[..., ::2, 1::2] + h[..., 1::2, 1::2]
        return s * coef[None, :, None, None] + bias[None, :, None, None]

    c1 = f(F.conv2d(x, prm["c1.weight"], prm["c1.bias"]))
    s2 = f(sub(c1, prm["s2_coef"], prm["s2_bias"]))
    c3_maps = []
    for o, col in enumerate(zip(*TABLE_I)):
        acc = prm["c3.bias"][o]
        for i, c in enumerate(col):
            if c == "X":
                acc = acc + F.conv2d(s2[:, i : i + 1], prm["c3.weight"][o : o + 1, i : i + 1])[:, 0]
        c3_maps.append(acc)
    c3 = f(torch.stack(c3_maps, 1))
    s4 = f(sub(c3, prm["s4_coef"], prm["s4_bias"]))
    c5 = f(F.conv2d(s4, prm["c5.weight"], prm["c5.bias"]).flatten(1))
    f6 = f(c5 @ prm["f6.weight"].T + prm["f6.bias"])
    return torch.stack([((f6 - codes[i]) ** 2).sum(1) for i in range(10)], 1)  # Eq. (7)


def test_one_sgd_step_of_equation_nine_equals_a_naive_recomputation():
    torch.manual_seed(0)
    codes = L.rbf_codes("bitmap").double()
    net = L.LeNet5(codes).double()
    prm = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 32, 32, generator=g, dtype=torch.float64)
    target = torch.tensor([3, 0, 7])
    lr, j = 0.01, 10.0
    y = _naive_penalties(prm, x, codes)
    yd = y.detach().tolist()
    per_pattern = [yd[p][target[p]] + math.log(math.exp(-j) + sum(math.exp(-v) for v in yd[p])) for p in range(3)]
    E = sum(y[p, target[p]] + torch.log(math.exp(-j) + torch.exp(-y[p]).sum()) for p in range(3)) / 3  # Eq. (9)
    grads = dict(zip(prm, torch.autograd.grad(E, list(prm.values()))))
    loss, penalties = L.sgd_step(net, x, target, lr, j)
    torch.testing.assert_close(penalties, y.detach())
    assert loss.item() == pytest.approx(sum(per_pattern) / 3, rel=1e-10)
    after = dict(net.named_parameters())
    for k in prm:
        torch.testing.assert_close(after[k].detach(), prm[k].detach() - lr * grads[k], rtol=1e-9, atol=1e-12)
    assert any((grads[k].abs() > 0).any() for k in ("s2_coef", "c3.weight", "c1.weight"))  # the step reached C1


def test_dataset_key_picks_the_loader(tmp_path, monkeypatch, one_thread):
    from seminal.core.run import Run

    def fake(split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        return rng.integers(0, 255, (24, 28, 28)).astype(np.uint8), rng.integers(0, 10, 24)

    def forbidden(split):
        raise AssertionError("dataset=fashion-mnist must not read MNIST")

    monkeypatch.setattr(vision, "load_mnist", forbidden)
    monkeypatch.setattr(vision, "load_fashion_mnist", fake)
    import dataclasses

    cfg = dataclasses.replace(L.PRESETS["quick"], dataset="fashion-mnist", epochs=1, train_limit=16, evals_per_epoch=1)
    with Run(tmp_path / "f", "lenet5", 0, cfg, progress=False, tensorboard=False) as run:
        out = L.train(cfg, run)
    assert 0.0 <= out["test/error"] <= 1.0


def test_mid_epoch_stop_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, one_thread):
    import dataclasses

    from seminal.core.run import Run

    def fake(split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        return rng.integers(0, 255, (40, 28, 28)).astype(np.uint8), rng.integers(0, 10, 40)

    monkeypatch.setattr(vision, "load_mnist", fake)
    cfg = dataclasses.replace(L.PRESETS["quick"], epochs=2, train_limit=0, batch_size=8, evals_per_epoch=2)

    def run_(name, **kw):
        torch.manual_seed(0)
        with Run(tmp_path / name, "lenet5", 0, cfg, progress=False, tensorboard=False, **kw) as run:
            return L.train(cfg, run)

    full = run_("a")
    with pytest.raises(Interrupted):  # due() after every batch: stop at the 4th checkpoint, inside epoch 0
        run_("b", checkpoint_seconds=1e-9, stop_after_checkpoints=4)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]["batch"] == 4
    assert run_("b") == full
    log = [(tmp_path / d / "metrics.jsonl").read_text() for d in "ab"]
    assert log[0] == log[1] and "train/loss" in log[0]


# ---- the schedule, the decision rule and the C3 init, against the paper's numbers --------------------
def test_lr_schedule_is_the_papers_eta_as_factors():
    # §III-C: eta = 5e-4 for passes 0-1, 2e-4 for 2-4, 1e-4 for 5-7, 5e-5 for 8-11, 1e-5 from 12 on.
    eta = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8
    for epoch, e in enumerate(eta):
        assert L.lr_schedule(epoch, 0.005) == pytest.approx(0.005 * e / 5e-4, rel=1e-12), epoch


def test_error_rate_takes_the_smallest_penalty_over_chunks():
    penalties = torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 9.0], [7.0, 8.0, 0.1], [2.0, 2.5, 3.0], [5.0, 0.2, 0.3]])
    y = torch.tensor([1, 0, 0, 0, 2])  # smallest penalties: 1, 0, 2, 0, 1 -> rows 2 and 4 wrong
    assert L.error_rate(torch.nn.Identity(), penalties, y, batch=2) == pytest.approx(2 / 5)


def test_c3_init_uses_each_maps_connected_fan_in():
    # App. A, deviation 4: a C3 map with 3 inputs draws from U(-2.4/75, 2.4/75), wider than a 6-input map's.
    torch.manual_seed(1)
    net = L.LeNet5(L.rbf_codes("bitmap"))
    amax = net.c3.weight.abs().amax(dim=(1, 2, 3))
    for o, ins in enumerate(L.C3_TABLE):
        bound = 2.4 / (25 * len(ins))
        assert 0.9 * bound < amax[o].item() <= bound, o  # 150 draws per map: the range is used to the full


def test_logged_errors_count_the_smallest_penalty_as_the_prediction(tmp_path, monkeypatch, one_thread):
    # With a step size of 1e-12 the net does not move: every label set to the untrained net's argmin makes the
    # logged on-the-fly training error and the test error exactly 0 (argmax would make them 1).
    import dataclasses

    from seminal.core.run import Run

    rng = np.random.default_rng(3)
    images = {s: rng.integers(0, 255, (24, 28, 28)).astype(np.uint8) for s in ("train", "test")}
    torch.manual_seed(0)
    untrained = L.LeNet5(L.rbf_codes("bitmap"))  # the net `train` builds after the same seed
    with torch.no_grad():
        labels = {s: untrained(L.normalise(a)).argmin(1).numpy() for s, a in images.items()}
    monkeypatch.setattr(vision, "load_mnist", lambda split: (images[split], labels[split]))
    cfg = dataclasses.replace(L.PRESETS["quick"], epochs=1, train_limit=0, batch_size=8, evals_per_epoch=1, lr=1e-12)
    torch.manual_seed(0)
    with Run(tmp_path / "r", "lenet5", 0, cfg, progress=False, tensorboard=False) as run:
        out = L.train(cfg, run)
    assert out == {"test/error": 0.0, "train/error": 0.0}


def test_rbf_codes_are_the_bitmaps_or_seeded_random_signs():
    """`bitmap`: digit d's code is its 7x12 bitmap read row by row, '#' -> +1, '.' -> -1 (Fig. 3); `random`: fixed
    +-1 vectors of the seed, not the bitmaps."""
    codes = L.rbf_codes("bitmap")
    assert codes.shape == (10, 84)
    for d, bitmap in enumerate(L.DIGIT_BITMAPS):
        want = [1.0 if ch == "#" else -1.0 for row in bitmap for ch in row]
        assert codes[d].tolist() == want, d
    rnd = L.rbf_codes("random", seed=3)
    assert set(rnd.unique().tolist()) == {-1.0, 1.0} and not torch.equal(rnd, codes)
    assert torch.equal(rnd, L.rbf_codes("random", seed=3)) and not torch.equal(rnd, L.rbf_codes("random", seed=4))
