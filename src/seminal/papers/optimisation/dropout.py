"""Dropout: A Simple Way to Prevent Neural Networks from Overfitting — Srivastava, Hinton, Krizhevsky,
Sutskever & Salakhutdinov, JMLR 15 (2014) 1929-1958.

While training, every unit of the input and hidden layers is kept with probability p (and dropped, output
zero, otherwise), a fresh Bernoulli mask for every example and every update. A net of n units thus trains
an exponential family of "thinned" nets that share weights; no unit can rely on particular others being
present (less co-adaptation). At test time one runs the full net with each unit's outgoing weights scaled by
p, so a unit's expected output under the masks equals its test-time output (the weight-scaling rule, §4).
We use the equivalent *inverted* form: multiply kept units by 1/p while training and leave the net alone at
test time. The claim (Table 2): on MNIST a wide ReLU MLP has lower test error with dropout than without,
and the gap between training and test error narrows.

Equation map (numbers as in the paper, §4 "Model Description"):
  Eq. r_j^(l) ~ Bernoulli(p)                             -> `bernoulli_mask`
  Eq. y~^(l) = r^(l) * y^(l)                             -> `inverted_dropout` (with the 1/p of inverted dropout)
  Eq. z^(l+1) = w^(l+1) y~^(l) + b^(l+1)                 -> `DropoutMLP.forward`
  §4 (Fig. 2) test time: W_test = p W                    -> `weight_scaling_rule`; equal to `Dropout.eval()`
  §5.1 max-norm ||w|| <= c on each unit's incoming weights -> `max_norm_` (optional, off by default)
  Table 2 / §6.1.1 p = 0.8 for inputs, 0.5 for hidden units

Deviations (numbered as in docs/papers/06-dropout.md): 1. inverted dropout (scale 1/p while training)
instead of scaling weights by p at test time, mathematically the same net (tested); 2. no max-norm and a
constant learning rate with fixed momentum (the paper decays the rate and ramps momentum 0.5 -> 0.99);
3. the quick preset trains a 2x512 net on 3,000 images for 16 epochs, not 3x1024 on 60,000 for ~3000.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Sizes
from seminal.core.plots import line_plot
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import images_flat
from seminal.papers.optimisation.adam import SGD

RetainProb = Annotated[float, Range(gt=0, le=1)]
"""A retain probability p: 1 keeps every unit, 0 would keep none."""


@dataclass(frozen=True)
class Config:
    hidden: Sizes = (1024, 1024, 1024)
    """Widths of the hidden ReLU layers (Table 2's best ReLU row: 3 x 1024)."""
    p_input: RetainProb = 0.8
    """Retain probability p of an input unit (the paper: 0.8)."""
    p_hidden: RetainProb = 0.5
    """Retain probability p of a hidden unit (the paper: 0.5)."""
    epochs: PosInt = 200
    """Passes through the training set, for both nets."""
    batch_size: PosInt = 128
    """Minibatch size."""
    lr: PosFloat = 0.05
    """SGD step size, the same for the net with and without dropout."""
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    """SGD momentum (constant; the paper ramps it from 0.5 to 0.99)."""
    max_norm: NonNegFloat = 0.0
    """Max-norm bound c on each hidden unit's incoming weight vector, dropout net only (0: off; paper: 3-4)."""
    train_limit: NonNegInt = 0
    """Use only the first N training images (0: all 60,000). Fewer images overfit sooner."""
    eval_every: PosInt = 5
    """Epochs between test-error evaluations (the learning curve's resolution)."""
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    """Images: MNIST (the paper's Table 2, and the claims') or Fashion-MNIST (same 28x28 grey format)."""


PRESETS = {
    "quick": Config(hidden=(512, 512), epochs=16, train_limit=3_000, eval_every=4),
    "full": Config(),
}

CLAIMS = {
    preset: [
        Claim("Dropout lowers MNIST test error (error without - with > 0), every seed",
              "dropout/test_error_reduction", ">", 0.0,
              "1.60% (standard net) -> 1.25% (dropout, 3x1024 ReLU)", "Table 2", aggregate="all", bar="sanity",
              paired=("plain/test_error", "dropout/test_error")),
        Claim("Dropout narrows the train-test gap (gap without - with > 0), every seed",
              "dropout/gap_reduction", ">", 0.0,
              "less overfitting: test error falls while training error rises", "Table 2, Fig. 4, §6.1",
              aggregate="all", bar="sanity", paired=("plain/gap", "dropout/gap")),
    ]
    for preset in ("quick", "full")
}


# ---- the paper's math: pure functions ------------------------------------------------------------------
def bernoulli_mask(shape: torch.Size, p: float, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> Tensor:
    """r ~ Bernoulli(p), elementwise: 1 (keep) with probability p, 0 (drop) otherwise (§4)."""
    return (torch.rand(shape, generator=generator, device=device) < p).float()  # §4 r_j ~ Bernoulli(p)


def inverted_dropout(y: Tensor, r: Tensor, p: float) -> Tensor:
    """y~ = r * y / p: the paper's thinning (§4) with 1/p moved from test time to training time."""
    return y * r / p  # §4 y~ = r * y, scaled so that E[y~] = y


def weight_scaling_rule(w: Tensor, p: float) -> Tensor:
    """The paper's test-time net (§4, Fig. 2): the outgoing weights of units retained with prob p times p."""
    return p * w


@torch.no_grad()
def max_norm_(w: Tensor, c: float) -> None:
    """Project each row (a unit's incoming weights) onto the ball ||w|| <= c, in place (§5.1)."""
    norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w.mul_((c / norms).clamp(max=1.0))


# ---- modules -------------------------------------------------------------------------------------------
class Dropout(nn.Module):
    """Inverted dropout with retain probability p; the identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None  # a private generator, so that resumes replay masks

    def forward(self, y: Tensor) -> Tensor:
        if not self.training or self.p >= 1.0:
            return y  # §4: at test time the full net (inverted dropout already scaled while training)
        return inverted_dropout(y, bernoulli_mask(y.shape, self.p, self.generator, y.device), self.p)


class DropoutMLP(nn.Module):
    """784 -> hidden... -> 10, ReLU, dropout on the input (p_input) and on every hidden layer (p_hidden)."""

    def __init__(self, hidden: tuple[int, ...], p_input: float, p_hidden: float):
        super().__init__()
        sizes = (784,) + tuple(hidden)
        self.drops = nn.ModuleList([Dropout(p_input)] + [Dropout(p_hidden) for _ in hidden])
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nn.Linear(sizes[-1], 10)

    def forward(self, x: Tensor) -> Tensor:  # (B, 784) -> (B, 10) logits
        y = x
        for drop, layer in zip(self.drops, self.layers):
            y = F.relu(layer(drop(y)))  # §4 z = w (r * y) + b, then f(z); (B, H)
        return self.out(self.drops[-1](y))

    def set_generator(self, generator: torch.Generator) -> None:
        for d in self.drops:
            d.generator = generator


# ---- training ------------------------------------------------------------------------------------------
def paired_nets(cfg: Config, device: torch.device | str = "cpu") -> dict[str, DropoutMLP]:
    """Two nets from the same initial weights: "plain" never drops a unit (p = 1), "dropout" uses the paper's p."""
    plain = DropoutMLP(cfg.hidden, 1.0, 1.0).to(device)
    nets = {"plain": plain, "dropout": copy.deepcopy(plain)}
    for d, p in zip(nets["dropout"].drops, [cfg.p_input] + [cfg.p_hidden] * len(cfg.hidden)):
        d.p = p
    return nets


def error_rate(net: nn.Module, x: Tensor, y: Tensor, chunk: int = 5000) -> float:
    net.eval()
    with torch.no_grad():
        wrong = sum((net(x[i : i + chunk]).argmax(1) != y[i : i + chunk]).sum().item() for i in range(0, len(x), chunk))
    net.train()
    return wrong / len(x)


def train(cfg: Config, run: Run) -> dict[str, float]:
    dev = run.device
    xtr, ytr = images_flat(cfg.dataset, "train", cfg.train_limit, dev)  # (N, 784) in [0, 1], (N,)
    xte, yte = images_flat(cfg.dataset, "test", 0, dev)

    nets = paired_nets(cfg, dev)
    generator = torch.Generator(device=dev)
    generator.manual_seed(run.seed)
    nets["dropout"].set_generator(generator)
    opts = {k: SGD(net.parameters(), cfg.lr, momentum=cfg.momentum) for k, net in nets.items()}

    state = run.restore() or {}
    start = state.get("epoch", 0)
    arm0, batch0 = state.get("arm", 0), state.get("batch", 0)  # where a mid-epoch checkpoint stopped
    if state:
        generator.set_state(state["generator"])
        for k in nets:
            nets[k].load_state_dict(state["nets"][k])
            opts[k].load_state_dict(state["opts"][k])

    def snapshot(epoch: int, **extra) -> dict:
        return {"epoch": epoch, "generator": generator.get_state(),
                "nets": {k: n.state_dict() for k, n in nets.items()},
                "opts": {k: o.state_dict() for k, o in opts.items()}, **extra}

    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    for epoch in run.progress(range(start, cfg.epochs), total=cfg.epochs, desc="dropout"):
        order = [torch.as_tensor(i, device=dev) for i in batches(len(xtr), cfg.batch_size, epoch_rng(run.seed, epoch))]
        resuming = epoch == start and (arm0, batch0) != (0, 0)
        row = dict(state["row"]) if resuming else {}
        for a, (k, net) in enumerate(nets.items()):
            if resuming and a < arm0:
                continue  # this arm's epoch was done before the checkpoint; its row entries came back
            skip = batch0 if resuming and a == arm0 else 0
            total = state["total"].to(dev) if skip else torch.zeros((), device=dev)
            for b, idx in enumerate(order):  # the same minibatches for both nets
                if b < skip:
                    continue
                loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
                if k == "dropout" and cfg.max_norm > 0:
                    for layer in net.layers:
                        max_norm_(layer.weight, cfg.max_norm)  # §5.1
                total += loss.detach()
                if run.due() and b + 1 < len(order):  # Ctrl-C or checkpoint_seconds: a mid-epoch checkpoint
                    run.checkpoint(snapshot(epoch, arm=a, batch=b + 1, total=total.cpu(), row=row))
            row[f"{k}/train_loss"] = run.check_finite(total / len(order), (epoch + 1) * steps_per_epoch)
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                row[f"{k}/test_error"] = error_rate(net, xte, yte)
        run.log(row, step=epoch + 1)
        run.checkpoint(snapshot(epoch + 1))

    metrics: dict[str, float] = {}
    for k, net in nets.items():
        metrics[f"{k}/train_error"] = error_rate(net, xtr, ytr)
        metrics[f"{k}/test_error"] = error_rate(net, xte, yte)
        metrics[f"{k}/gap"] = metrics[f"{k}/test_error"] - metrics[f"{k}/train_error"]
    metrics["dropout/test_error_reduction"] = metrics["plain/test_error"] - metrics["dropout/test_error"]
    metrics["dropout/gap_reduction"] = metrics["plain/gap"] - metrics["dropout/gap"]

    line_plot(run.plots_dir / "test_error.png",
              {"without dropout": run.history("plain/test_error"), "with dropout": run.history("dropout/test_error")},
              xlabel="epoch", ylabel="test error", title=f"MNIST, ReLU MLP {'x'.join(map(str, cfg.hidden))}")
    line_plot(run.plots_dir / "train_loss.png",
              {"without dropout": run.history("plain/train_loss"), "with dropout": run.history("dropout/train_loss")},
              xlabel="epoch", ylabel="training loss (nats, with masks)", title="Training loss", logy=True)
    return metrics
