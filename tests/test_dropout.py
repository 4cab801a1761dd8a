"""Dropout (Srivastava et al. 2014): mask statistics, expectation, the weight-scaling rule's equivalence,
eval-mode identity, max-norm, and a tiny end-to-end run with same-seed determinism and resume."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seminal.core.errors import Interrupted
from seminal.core.run import Run, seed_everything
from seminal.data import vision
from seminal.papers.optimisation import dropout


@pytest.mark.parametrize("p", [0.8, 0.5, 0.2])
def test_mask_rate_is_one_minus_p(p):
    n = 1_000_000
    r = dropout.bernoulli_mask(torch.Size([n]), p, torch.Generator().manual_seed(1))
    assert set(r.unique().tolist()) <= {0.0, 1.0}
    dropped = 1.0 - r.mean().item()
    assert abs(dropped - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)  # a 6-sigma binomial band


@pytest.mark.parametrize("p", [0.8, 0.5])
def test_expectation_over_masks_is_the_input(p):
    n = 40_000
    x = torch.linspace(-2.0, 3.0, 25, dtype=torch.float64)
    layer = dropout.Dropout(p)
    layer.generator = torch.Generator().manual_seed(2)
    out = layer(x.expand(n, -1))  # n independent masks of the same input, (n, 25)
    se = x.abs() * math.sqrt((1 - p) / p) / math.sqrt(n)  # std of y * r / p over masks, over sqrt(n)
    assert ((out.mean(0) - x).abs() <= 6 * se + 1e-12).all()
    kept = out != 0
    assert torch.allclose(out[kept], (x.expand(n, -1) / p)[kept])  # kept units are scaled by exactly 1/p


def test_eval_mode_is_the_identity():
    layer = dropout.Dropout(0.5).eval()
    x = torch.randn(7, 9)
    assert torch.equal(layer(x), x)
    net = dropout.DropoutMLP((12, 8), 0.8, 0.5).eval()
    x = torch.rand(5, 784)
    a, b = net(x), net(x)
    assert torch.equal(a, b)  # no randomness left
    h = x
    for lin in net.layers:
        h = torch.relu(lin(h))
    assert torch.allclose(a, net.out(h))


def _paper_net_forward(net: dropout.DropoutMLP, x, ps, generator=None):
    """The paper's formulation: train with y~ = r * y (no 1/p) on weights W' = W / p; at test time use p W'."""
    h = x
    linears = list(net.layers) + [net.out]
    for i, (lin, p) in enumerate(zip(linears, ps)):
        w_paper = lin.weight / p  # the weights the paper's net would hold
        if generator is not None:
            h = h * dropout.bernoulli_mask(h.shape, p, generator)  # train: thin, do not rescale
            z = F.linear(h, w_paper, lin.bias)
        else:
            z = F.linear(h, dropout.weight_scaling_rule(w_paper, p), lin.bias)  # test: W_test = p W'
        h = torch.relu(z) if i < len(linears) - 1 else z
    return h


def test_inverted_dropout_equals_the_weight_scaling_rule():
    torch.manual_seed(0)
    net = dropout.DropoutMLP((32, 16), 0.8, 0.5).double()
    ps = [0.8, 0.5, 0.5]
    x = torch.rand(6, 784, dtype=torch.float64)
    # Test time: our eval-mode net (identity dropout) == the paper's net with weights scaled by p.
    assert torch.allclose(net.eval()(x), _paper_net_forward(net, x, ps), atol=1e-12)
    # Training time, the same masks: inverted dropout (r y / p, W) == the paper's (r y, W / p).
    net.train()
    net.set_generator(torch.Generator().manual_seed(5))
    ours = net(x)
    paper = _paper_net_forward(net, x, ps, torch.Generator().manual_seed(5))
    assert torch.allclose(ours, paper, atol=1e-12)
    assert not torch.allclose(ours, net.eval()(x))  # the masks did something


def test_max_norm_projects_only_long_rows():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    dropout.max_norm_(w, 2.0)
    assert torch.allclose(w, torch.tensor([[1.2, 1.6], [0.3, 0.4]]))


def _tiny_mnist(split: str):
    rng = np.random.default_rng(0 if split == "train" else 1)
    n = 160 if split == "train" else 64
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    x[np.arange(n), y, :] = 255
    return x, y.astype(np.int64)


TINY = replace(dropout.PRESETS["quick"], hidden=(24, 24), epochs=3, train_limit=0, batch_size=32, eval_every=2,
               max_norm=3.0)


def _run(tmp_path, name, seed=0, stop=None):
    seed_everything(seed)
    with Run(tmp_path / name, "dropout", seed, TINY, progress=False, tensorboard=False,
             stop_after_checkpoints=stop) as run:
        return dropout.train(TINY, run)


def test_smoke_same_seed_and_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "load_mnist", _tiny_mnist)
    first = _run(tmp_path, "a")
    assert all(math.isfinite(v) for v in first.values())
    assert {"dropout/test_error_reduction", "dropout/gap_reduction"} <= set(first)
    assert (tmp_path / "a" / "plots" / "test_error.png").exists()
    assert _run(tmp_path, "b") == first  # same seed, same numbers
    with pytest.raises(Interrupted):
        _run(tmp_path, "c", stop=1)
    assert _run(tmp_path, "c") == first  # resumed after epoch 1: the same final metrics
    assert _run(tmp_path, "d", seed=1) != first


def test_bad_retain_probability_is_a_clear_error():
    from seminal.core.config import check_ranges
    from seminal.core.errors import SeminalError

    with pytest.raises(SeminalError, match="p_hidden"):
        check_ranges(replace(TINY, p_hidden=0.0))
    for preset in dropout.PRESETS.values():
        check_ranges(preset)


# ---- one whole update step against a naive re-derivation ------------------------------------------------
def test_sgd_steps_with_dropout_equal_explicit_masks_and_autograd():
    torch.manual_seed(3)
    net = dropout.DropoutMLP((10, 6), 0.8, 0.5).double()
    ps = [0.8, 0.5, 0.5]
    net.set_generator(torch.Generator().manual_seed(11))
    opt = dropout.SGD(net.parameters(), 0.1, momentum=0.9)
    linears = list(net.layers) + [net.out]
    W = [lin.weight.detach().clone().requires_grad_(True) for lin in linears]
    b = [lin.bias.detach().clone().requires_grad_(True) for lin in linears]
    vel = [torch.zeros_like(t) for t in W + b]
    masks = torch.Generator().manual_seed(11)  # the same stream: input mask, then each hidden layer's
    g = torch.Generator().manual_seed(12)
    for _ in range(2):
        x = torch.rand(5, 784, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (5,), generator=g)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        h = x
        for i in range(3):  # r ~ Bernoulli(p); y~ = r * y / p; z = W y~ + b (§4, inverted)
            r = (torch.rand(h.shape, generator=masks) < ps[i]).double()
            h = (h * r / ps[i]) @ W[i].T + b[i]
            h = torch.relu(h) if i < 2 else h
        naive = F.cross_entropy(h, y)
        assert naive.item() == pytest.approx(loss.item(), rel=1e-12)
        grads = torch.autograd.grad(naive, W + b)
        with torch.no_grad():
            for t, v, gr in zip(W + b, vel, grads):
                v.mul_(0.9).add_(gr)
                t.sub_(0.1 * v)
    for lin, w_, b_ in zip(linears, W, b):
        torch.testing.assert_close(lin.weight.detach(), w_.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lin.bias.detach(), b_.detach(), rtol=1e-10, atol=1e-12)


def test_dataset_key_picks_the_loader(monkeypatch):
    def forbidden(split):
        raise AssertionError("dataset=fashion-mnist must not read MNIST")

    monkeypatch.setattr(vision, "load_mnist", forbidden)
    monkeypatch.setattr(vision, "load_fashion_mnist", _tiny_mnist)
    x, y = dropout.images_flat("fashion-mnist", "test", 0)
    assert x.shape == (64, 784) and torch.equal(y, torch.from_numpy(_tiny_mnist("test")[1]))


def test_the_two_nets_differ_only_in_their_retain_probabilities():
    torch.manual_seed(0)
    nets = dropout.paired_nets(replace(TINY, hidden=(7, 5), p_input=0.8, p_hidden=0.5))
    assert [d.p for d in nets["plain"].drops] == [1.0, 1.0, 1.0]
    assert [d.p for d in nets["dropout"].drops] == [0.8, 0.5, 0.5]  # input, then each hidden layer
    for p, q in zip(nets["plain"].parameters(), nets["dropout"].parameters()):
        assert torch.equal(p, q) and p is not q


def test_mid_epoch_stop_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    monkeypatch.setattr(vision, "load_mnist", _tiny_mnist)
    full = _run(tmp_path, "a")

    def interrupted():
        seed_everything(0)
        with Run(tmp_path / "b", "dropout", 0, TINY, progress=False, tensorboard=False, checkpoint_seconds=1e-9,
                 stop_after_checkpoints=7) as run:  # due() after every batch: the 7th is the dropout net's 3rd
            return dropout.train(TINY, run)

    with pytest.raises(Interrupted):
        interrupted()
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state"]
    assert (state["epoch"], state["arm"], state["batch"]) == (0, 1, 3)
    assert _run(tmp_path, "b") == full
    log = [(tmp_path / d / "metrics.jsonl").read_text() for d in "ab"]
    assert log[0] == log[1] and "plain/train_loss" in log[0]


def test_error_rate_uses_the_full_net_and_leaves_training_mode_on():
    # §4: the test-time net has no masks. A net with p = 0.2 everywhere would misclassify at random if masks
    # were drawn; the error must equal the deterministic forward written out by hand.
    torch.manual_seed(4)
    net = dropout.DropoutMLP((16,), 0.2, 0.2)
    net.set_generator(torch.Generator().manual_seed(0))
    x, y = torch.rand(300, 784), torch.randint(0, 10, (300,))
    with torch.no_grad():
        pred = net.out(torch.relu(net.layers[0](x))).argmax(1)
    y[:150] = pred[:150]  # half the labels agree with the full net: its error is 150/300 at most, near 0.45
    expected = int((pred != y).sum()) / len(y)
    assert dropout.error_rate(net, x, y, chunk=128) == pytest.approx(expected, abs=1e-12)
    assert net.training  # back in training mode for the next update


@pytest.fixture(scope="module")
def max_norm_run(tmp_path_factory):
    """One tiny run with a max-norm bound (0.3) below every initial row norm (about 0.58 for both layers)."""
    cfg = replace(TINY, max_norm=0.3)
    path = tmp_path_factory.mktemp("maxnorm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision, "load_mnist", _tiny_mnist)
        seed_everything(0)
        with Run(path / "r", "dropout", 0, cfg, progress=False, tensorboard=False) as run:
            metrics = dropout.train(cfg, run)
    state = torch.load(path / "r" / "checkpoint.pt", weights_only=True)["state"]
    return cfg, metrics, state["nets"]


def test_train_applies_max_norm_to_the_dropout_net_only(max_norm_run):
    cfg, _, nets = max_norm_run
    for i in range(len(cfg.hidden)):
        rows = {k: nets[k][f"layers.{i}.weight"].norm(dim=1) for k in ("plain", "dropout")}
        assert rows["dropout"].max().item() <= cfg.max_norm * (1 + 1e-5)  # §5.1: ||w|| <= c after every step
        assert rows["plain"].min().item() > 1.5 * cfg.max_norm  # the plain net is never projected


def test_final_metrics_are_the_errors_and_their_differences(max_norm_run):
    cfg, m, nets = max_norm_run
    x = {s: torch.tensor(_tiny_mnist(s)[0].reshape(-1, 784) / 255.0, dtype=torch.float32) for s in ("train", "test")}
    y = {s: torch.from_numpy(_tiny_mnist(s)[1]) for s in ("train", "test")}
    err = {}
    for k, sd in nets.items():  # the test-time net by hand: no masks, no scaling (inverted dropout)
        for s in ("train", "test"):
            h = x[s]
            with torch.no_grad():
                for i in range(len(cfg.hidden)):
                    h = torch.relu(h @ sd[f"layers.{i}.weight"].T + sd[f"layers.{i}.bias"])
                pred = (h @ sd["out.weight"].T + sd["out.bias"]).argmax(1)
            err[k, s] = int((pred != y[s]).sum()) / len(y[s])
            assert m[f"{k}/{s}_error"] == pytest.approx(err[k, s], abs=1e-12)
    gap = {k: err[k, "test"] - err[k, "train"] for k in nets}
    assert m["plain/gap"] == pytest.approx(gap["plain"]) and m["dropout/gap"] == pytest.approx(gap["dropout"])
    assert m["dropout/test_error_reduction"] == pytest.approx(err["plain", "test"] - err["dropout", "test"])
    assert m["dropout/gap_reduction"] == pytest.approx(gap["plain"] - gap["dropout"])
    assert gap["plain"] != 0.0 or gap["dropout"] != 0.0  # not vacuous
