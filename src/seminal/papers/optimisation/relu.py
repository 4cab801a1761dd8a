"""Deep Sparse Rectifier Neural Networks — Glorot, Bordes & Bengio, AISTATS 2011 (JMLR W&CP 15).

Replace the hidden units' logistic sigmoid or tanh by the rectifier max(0, x). A rectifier unit is
linear where it is active, so gradients pass through deep stacks without shrinking, and it outputs true
zeros where it is not, so the hidden code is sparse (the paper measures about 83% exact zeros on MNIST).
We train the same deep MLP three times on MNIST, changing only the hidden nonlinearity (same initial
weights up to the switch, same minibatch order, same learning rate), and measure:

  * how many SGD steps each net needs to bring its training loss down to a target fixed in advance
    (ReLU should need fewer than tanh and sigmoid);
  * the fraction of hidden activations that are exactly zero on test images (ReLU: most of them).

Equation map (section numbers as in the paper):
  §2.2  rectifier(x) = max(0, x)                 -> `activation("relu")`, derivative 1[x > 0]
  §2.2  softplus(x) = log(1 + e^x)               -> `activation("softplus")` (a smooth variant)
  §1    sigmoid(x) = 1 / (1 + e^-x), tanh(x)     -> `activation("sigmoid")`, `activation("tanh")`
  §3.1  L1 penalty on the activation values      -> `l1_activation_penalty`
  §4.1  sparsity = fraction of true zeros        -> `exact_zero_fraction`
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import load_mnist

ACTIVATIONS = ("sigmoid", "tanh", "relu", "softplus")


@dataclass(frozen=True)
class Config:
    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu")
    """Hidden nonlinearities compared, each a separate net (from sigmoid, tanh, relu, softplus)."""
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden layer widths (the paper: 3 hidden layers of 1,000 units)."""
    train_limit: int = 10000
    """Training images: the first N of 60,000 (0: all)."""
    test_limit: int = 10000
    """Test images for the test error and the sparsity (the first N of 10,000)."""
    epochs: int = 3
    """Passes through the training images."""
    batch: int = 64
    """Minibatch size."""
    lr: float = 0.05
    """SGD learning rate, the same for every nonlinearity."""
    momentum: float = 0.9
    """SGD momentum, the same for every nonlinearity."""
    l1_activation: float = 0.0
    """Coefficient of the L1 penalty on hidden activations (§3.1; 0: off; the paper used 0.001)."""
    target_loss: float = 0.25
    """Training loss (cross-entropy, nats; mean over the last `window` minibatches) each net must reach."""
    window: int = 50
    """Minibatches in the running mean of the training loss."""
    log_every: int = 10
    """Log the running training loss every this many steps."""

    def validate(self) -> None:
        bad = [a for a in self.activations if a not in ACTIVATIONS]
        if bad or not self.activations:
            raise SeminalError(f"activations {bad or '()'}: choose from {', '.join(ACTIVATIONS)}")
        if not self.hidden or min(self.hidden) < 1:
            raise SeminalError("hidden needs at least one layer of width >= 1, e.g. --set hidden=256,256,256")


PRESETS = {
    "quick": Config(),
    "full": Config(hidden=(1000, 1000, 1000), train_limit=0, epochs=30, l1_activation=0.001, target_loss=0.05),
}

_CLAIMS = [
    Claim("ReLU reaches the target training loss in fewer steps than tanh", "speedup/relu_vs_tanh", ">", 1.0,
          "ReLU trains faster (6x vs tanh in a CIFAR-10 CNN)", "Krizhevsky et al. 2012, Fig. 1; issue target"),
    Claim("ReLU reaches the target training loss in fewer steps than sigmoid", "speedup/relu_vs_sigmoid", ">",
          1.0, "sigmoid deep nets train worst", "Glorot & Bengio 2010; Glorot et al. 2011, §1"),
    Claim("ReLU hidden activations are sparse (exact zeros)", "relu/sparsity", ">=", 0.5,
          "83.4% true zeros on MNIST", "Glorot et al. 2011, §4.1"),
]
CLAIMS = {"quick": _CLAIMS, "full": _CLAIMS}


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
    xtr, ytr = load_mnist("train")
    xte, yte = load_mnist("test")
    if cfg.train_limit:
        xtr, ytr = xtr[: cfg.train_limit], ytr[: cfg.train_limit]
    xte, yte = xte[: cfg.test_limit], yte[: cfg.test_limit]

    def to_x(a):
        return torch.tensor(a.reshape(len(a), -1), dtype=torch.float32, device=device) / 255.0

    return to_x(xtr), torch.tensor(ytr, device=device), to_x(xte), torch.tensor(yte, device=device)


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
    models, opts = {}, {}
    for a in acts:
        torch.manual_seed(run.seed)  # the same initial weights for every nonlinearity
        models[a] = DeepMLP(cfg.hidden, a).to(run.device)
        opts[a] = torch.optim.SGD(models[a].parameters(), lr=cfg.lr, momentum=cfg.momentum)
    state = run.restore() or {"epoch": 0, "losses": {a: [] for a in acts}}
    if "models" in state:
        for a in acts:
            models[a].load_state_dict(state["models"][a])
            opts[a].load_state_dict(state["opts"][a])
    losses = {a: list(state["losses"][a]) for a in acts}  # every minibatch loss, for steps_to_target

    for epoch in run.progress(range(state["epoch"], cfg.epochs), total=cfg.epochs, desc="relu"):
        order = list(batches(len(xtr), cfg.batch, epoch_rng(run.seed, epoch)))  # shared by all nets
        for a in acts:
            model, opt = models[a], opts[a]
            for idx in order:
                logits, hidden = model(xtr[idx])
                ce = nn.functional.cross_entropy(logits, ytr[idx])
                loss = ce + l1_activation_penalty(hidden, cfg.l1_activation) if cfg.l1_activation else ce
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses[a].append(run.check_finite(float(ce.detach()), len(losses[a]), hint="lr"))
                step = len(losses[a])
                if step % cfg.log_every == 0:
                    run.log({f"{a}/train_loss": float(np.mean(losses[a][-cfg.window :]))}, step=step)
        run.checkpoint({"epoch": epoch + 1, "losses": losses, "models": {a: m.state_dict() for a, m in models.items()},
                        "opts": {a: o.state_dict() for a, o in opts.items()}})

    metrics: dict[str, float] = {}
    total_steps = cfg.epochs * len(order) if cfg.epochs else 0
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
