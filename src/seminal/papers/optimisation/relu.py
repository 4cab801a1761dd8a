"""Deep Sparse Rectifier Neural Networks — Glorot, Bordes & Bengio, AISTATS 2011 (JMLR W&CP 15).

Replace the hidden units' logistic sigmoid or tanh by the rectifier max(0, x). A rectifier unit is
linear where it is active, so gradients pass through deep stacks without shrinking, and it outputs true
zeros where it is not, so the hidden code is sparse (the paper measures about 83% exact zeros on MNIST).
We train the same deep MLP once per nonlinearity on MNIST (tanh and ReLU in quick), changing only the
hidden nonlinearity (same initial weights, same minibatch order, same learning rate), and measure:

  * the test error of each net (the paper's headline: rectifiers equal or beat tanh, Table 1);
  * how many SGD steps each net needs to bring its training loss down to a target fixed in advance
    (Krizhevsky et al.'s speed comparison; ReLU should need fewer);
  * the fraction of hidden activations that are exactly zero on test images (ReLU: most of them).

Equation map (section numbers as in the paper):
  §2.2  rectifier(x) = max(0, x)                 -> `activation("relu")`, derivative 1[x > 0]
  §2.2  softplus(x) = log(1 + e^x)               -> `activation("softplus")` (a smooth variant)
  §1    sigmoid(x) = 1 / (1 + e^-x), tanh(x)     -> `activation("sigmoid")`, `activation("tanh")`
  §3.1  L1 penalty on the activation values      -> `l1_activation_penalty`
  §4.1  sparsity = fraction of true zeros        -> `exact_zero_fraction`
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Sizes
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import load_images

ACTIVATIONS = ("sigmoid", "tanh", "relu", "softplus")


@dataclass(frozen=True)
class Config:
    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu")
    """Hidden nonlinearities compared, each a separate net (from sigmoid, tanh, relu, softplus)."""
    hidden: Sizes = (256, 256, 256)
    """Hidden layer widths (the paper: 3 hidden layers of 1,000 units)."""
    train_limit: NonNegInt = 10000
    """Training images: the first N of 60,000 (0: all)."""
    test_limit: PosInt = 10000
    """Test images for the test error and the sparsity (the first N of 10,000)."""
    epochs: PosInt = 3
    """Passes through the training images."""
    batch: PosInt = 64
    """Minibatch size."""
    lr: PosFloat = 0.05
    """SGD learning rate, the same for every nonlinearity."""
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    """SGD momentum, the same for every nonlinearity."""
    l1_activation: NonNegFloat = 0.0
    """Coefficient of the L1 penalty on hidden activations (§3.1; 0: off; the paper used 0.001)."""
    target_loss: PosFloat = 0.25
    """Training loss (cross-entropy, nats; mean over the last `window` minibatches) each net must reach."""
    window: PosInt = 50
    """Minibatches in the running mean of the training loss."""
    log_every: PosInt = 10
    """Log the running training loss every this many steps."""
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    """Images: MNIST (the paper's, and the claims') or Fashion-MNIST (same 28x28 grey format)."""

    def validate(self) -> None:
        bad = [a for a in self.activations if a not in ACTIVATIONS]
        if bad or not self.activations:
            raise SeminalError(f"activations {bad or '()'}: choose from {', '.join(ACTIVATIONS)}")


PRESETS = {
    # sigmoid is left out of quick: at the shared step size it never leaves the ln 10 plateau (notes), so a
    # race against it says nothing about rectifiers; `--set activations=sigmoid,tanh,relu` puts it back.
    "quick": Config(activations=("tanh", "relu")),
    "full": Config(hidden=(1000, 1000, 1000), train_limit=0, epochs=30, l1_activation=0.001, target_loss=0.05),
}

_HEADLINE = Claim(
    "Rectifier net's test error is below the tanh net's (same weights, same minibatches), every seed",
    "test_error/tanh_minus_relu", ">", 0.0,
    "rectifiers 'yield equal or better performance than hyperbolic tangent networks'; MNIST, no pre-training: "
    "rectifier below tanh", "Glorot et al. 2011, abstract and Table 1", aggregate="all", bar="sanity",
    paired=("tanh/test_error", "relu/test_error"))
_SPEED = Claim(
    "ReLU reaches the target training loss in fewer steps than tanh, every seed (direction only)",
    "speedup/relu_vs_tanh", ">", 1.0, "6x fewer epochs than tanh (a CIFAR-10 CNN; not Glorot et al.'s claim)",
    "Krizhevsky et al. 2012, Fig. 1 (peer)", aggregate="all", bar="sanity",
    paired=("tanh/steps_to_target", "relu/steps_to_target"))
CLAIMS = {
    "quick": [
        _HEADLINE,
        _SPEED,
        Claim("ReLU keeps most hidden activations at exact zeros without an L1 penalty (sanity bar)",
              "relu/sparsity", ">=", 0.5,
              "83.4% true zeros on MNIST with an L1 activation penalty; 50% is a rectifier's share at init",
              "Glorot et al. 2011, §4.1 (the paper's figure is the full preset's bar)", bar="sanity"),
    ],
    "full": [
        _HEADLINE,
        _SPEED,
        Claim("ReLU hidden activations are as sparse as the paper's (L1 penalty 0.001, all of MNIST)",
              "relu/sparsity", ">=", 0.834, "83.4% true zeros on MNIST", "Glorot et al. 2011, §4.1", bar="paper"),
    ],
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The switch: the hidden nonlinearity called `name`."""
    if name == "relu":
        return lambda x: x.clamp_min(0.0)  # §2.2: rectifier(x) = max(0, x)
    if name == "softplus":
        return nn.functional.softplus  # §2.2: log(1 + e^x)
    if name == "sigmoid":
        return torch.sigmoid  # 1 / (1 + e^-x)
    if name == "tanh":
        return torch.tanh
    raise SeminalError(f"unknown activation '{name}': choose from {', '.join(ACTIVATIONS)}")


def exact_zero_fraction(hidden: list[torch.Tensor]) -> float:
    """Fraction of hidden activations that are exactly 0.0, over all layers' units and examples (§4.1)."""
    zeros = sum(int((h == 0).sum()) for h in hidden)
    return zeros / sum(h.numel() for h in hidden)


def l1_activation_penalty(hidden: list[torch.Tensor], coeff: float) -> torch.Tensor:
    """coeff * sum over layers and units of |h|, averaged over the batch (§3.1)."""
    return coeff * sum(h.abs().sum(dim=1).mean() for h in hidden)


def steps_to_target(losses: np.ndarray, target: float, window: int) -> int:
    """First step (1-based) at which the mean of the last `window` minibatch losses is <= target; 0 if never.

    Before `window` steps have passed, the mean runs over the steps so far.
    """
    csum = np.cumsum(np.asarray(losses, dtype=np.float64))
    t = np.arange(1, len(csum) + 1)
    running = (csum - np.concatenate([np.zeros(window), csum[:-window]])[: len(csum)]) / np.minimum(t, window)
    hit = np.flatnonzero(running <= target)
    return int(hit[0] + 1) if len(hit) else 0


# ---- the network ---------------------------------------------------------------------------------------
class DeepMLP(nn.Module):
    """784 -> hidden[0] -> ... -> hidden[-1] -> 10, one nonlinearity `act` after every hidden layer."""

    def __init__(self, hidden: tuple[int, ...], act: str):
        super().__init__()
        sizes = (784, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], 10)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, 784) -> logits (B, 10) and the hidden activations [(B, H_l)]."""
        hidden = []
        for layer in self.layers:
            x = self.act(layer(x))
            hidden.append(x)
        return self.out(x), hidden


def _mnist(cfg: Config, device: torch.device):
    xtr, ytr = load_images(cfg.dataset, "train")
    xte, yte = load_images(cfg.dataset, "test")
    if cfg.train_limit:
        xtr, ytr = xtr[: cfg.train_limit], ytr[: cfg.train_limit]
    xte, yte = xte[: cfg.test_limit], yte[: cfg.test_limit]

    def to_x(a):
        return torch.tensor(a.reshape(len(a), -1), dtype=torch.float32, device=device) / 255.0

    return to_x(xtr), torch.tensor(ytr, device=device), to_x(xte), torch.tensor(yte, device=device)


def paired_models(cfg: Config, seed: int, device: torch.device | str = "cpu") -> dict[str, DeepMLP]:
    """One net per nonlinearity, all from the same initial weights: the switch is the only difference."""
    models = {}
    for a in cfg.activations:
        torch.manual_seed(seed)  # the same initial weights for every nonlinearity
        models[a] = DeepMLP(cfg.hidden, a).to(device)
    return models


def sgd_update(model: DeepMLP, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, l1: float) -> float:
    """One step on cross-entropy (+ the §3.1 L1 penalty on activations when l1 > 0); returns the cross-entropy."""
    logits, hidden = model(x)
    ce = nn.functional.cross_entropy(logits, y)
    loss = ce + l1_activation_penalty(hidden, l1) if l1 else ce
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(ce.detach())


@torch.no_grad()
def evaluate(model: DeepMLP, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(test error, exact-zero fraction of the hidden activations) over (x, y), in chunks."""
    wrong, zeros, total = 0, 0.0, 0
    for i in range(0, len(x), 2000):
        logits, hidden = model(x[i : i + 2000])
        wrong += int((logits.argmax(1) != y[i : i + 2000]).sum())
        n = sum(h.numel() for h in hidden)
        zeros, total = zeros + exact_zero_fraction(hidden) * n, total + n
    return wrong / len(x), zeros / total


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    xtr, ytr, xte, yte = _mnist(cfg, run.device)
    acts = cfg.activations
    models = paired_models(cfg, run.seed, run.device)
    opts = {a: torch.optim.SGD(models[a].parameters(), lr=cfg.lr, momentum=cfg.momentum) for a in acts}
    state = run.restore() or {"epoch": 0, "losses": {a: [] for a in acts}}
    if "models" in state:
        for a in acts:
            models[a].load_state_dict(state["models"][a])
            opts[a].load_state_dict(state["opts"][a])
    losses = {a: list(state["losses"][a]) for a in acts}  # every minibatch loss, for steps_to_target

    def snapshot(epoch: int) -> dict:
        return {"epoch": epoch, "losses": losses, "models": {a: m.state_dict() for a, m in models.items()},
                "opts": {a: o.state_dict() for a, o in opts.items()}}

    for epoch in run.progress(range(state["epoch"], cfg.epochs), total=cfg.epochs, desc="relu"):
        order = list(batches(len(xtr), cfg.batch, epoch_rng(run.seed, epoch)))  # shared by all nets
        for a in acts:
            model, opt = models[a], opts[a]
            done = len(losses[a]) - epoch * len(order)  # > 0 after a mid-epoch checkpoint: those are done
            for idx in order[done:]:
                ce = sgd_update(model, opt, xtr[idx], ytr[idx], cfg.l1_activation)
                losses[a].append(run.check_finite(ce, len(losses[a]), hint="lr"))
                step = len(losses[a])
                if step % cfg.log_every == 0:
                    run.log({f"{a}/train_loss": float(np.mean(losses[a][-cfg.window :]))}, step=step)
                if run.due():  # Ctrl-C or checkpoint_seconds: the loss lists say where each net stopped
                    run.checkpoint(snapshot(epoch))
        run.checkpoint(snapshot(epoch + 1))

    metrics: dict[str, float] = {}
    total_steps = cfg.epochs * math.ceil(len(xtr) / cfg.batch)  # not len(order): no epoch runs on a finished resume
    for a in acts:
        reached = steps_to_target(np.array(losses[a]), cfg.target_loss, cfg.window)
        # A net that never reaches the target is counted as total_steps + 1: speedups are then lower bounds.
        metrics[f"{a}/steps_to_target"] = float(reached or total_steps + 1)
        metrics[f"{a}/reached_target"] = float(reached > 0)
        metrics[f"{a}/final_train_loss"] = float(np.mean(losses[a][-cfg.window :])) if losses[a] else float("nan")
        metrics[f"{a}/test_error"], metrics[f"{a}/sparsity"] = evaluate(models[a], xte, yte)
    if "relu" in acts:
        for other in acts:
            if other != "relu":
                metrics[f"speedup/relu_vs_{other}"] = (metrics[f"{other}/steps_to_target"]
                                                       / metrics["relu/steps_to_target"])
                metrics[f"test_error/{other}_minus_relu"] = metrics[f"{other}/test_error"] - metrics["relu/test_error"]
    _plots(cfg, run, metrics)
    return metrics


def _plots(cfg: Config, run: Run, metrics: dict[str, float]) -> None:
    line_plot(run.plots_dir / "train_loss.png", {a: run.history(f"{a}/train_loss") for a in cfg.activations},
              xlabel="SGD step", ylabel=f"training loss (mean of last {cfg.window} minibatches)",
              title=f"{len(cfg.hidden)}-hidden-layer MLP on MNIST", logy=True, hline=cfg.target_loss)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    acts = list(cfg.activations)
    ax.bar(acts, [100 * metrics[f"{a}/sparsity"] for a in acts], color="tab:blue", label="ours (exact zeros)")
    ax.axhline(83.4, color="red", ls="--", lw=1, label="paper, rectifier on MNIST (83.4%)")
    ax.set_ylabel("% hidden activations exactly 0 (test set)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Sparsity of the hidden code")
    run.savefig(fig, "sparsity")
