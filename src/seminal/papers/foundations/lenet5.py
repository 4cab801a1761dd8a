"""Gradient-Based Learning Applied to Document Recognition — LeCun, Bottou, Bengio & Haffner, Proc. IEEE 86(11), 1998.

LeNet-5, the convolutional network of §II-B, trained on MNIST. Three ideas carry it: local receptive fields,
shared weights (convolution) and spatial subsampling. The net reads a 32x32 image (MNIST's 28x28 padded by
2) through seven layers: C1 (6 maps 28x28, 5x5 convolutions), S2 (6 maps 14x14: each unit adds its 2x2
inputs, multiplies the sum by a trainable coefficient, adds a trainable bias and squashes), C3 (16 maps
10x10, each looking at a *subset* of S2's maps, Table I), S4 (like S2, 16 maps 5x5), C5 (120 maps 1x1, 5x5
on all of S4), F6 (84 units), and ten Euclidean RBF output units: each outputs the squared distance from
F6's vector to a fixed +-1 code, a 7x12 bitmap of its digit. The smallest distance wins. The paper reports
0.95% test error after 20 passes without distortions (Fig. 5, §III-C), the claim of the full preset.

Equation map (numbers as in the paper):
  Eq. (6)    f(a) = A tanh(S a), A = 1.7159, S = 2/3          -> `squash`
  §II-B S2   f(coef * sum_{2x2} x + bias)                       -> `subsample`
  Table I    which S2 maps feed which C3 map                    -> `C3_TABLE`, `c3_mask`, `partial_conv`
  Eq. (7)    y_i = sum_j (x_j - w_ij)^2                         -> `rbf`
  Fig. 3     the fixed +-1 RBF codes (7x12 bitmaps)             -> `DIGIT_BITMAPS`, `rbf_codes`
  Eq. (9)    E = 1/P sum_p [y_Dp + log(e^-j + sum_i e^-y_i)]    -> `map_loss`
  App. A     inputs: white -0.1, black 1.175                    -> `normalise`
  App. A     init U(-2.4/F_i, 2.4/F_i), F_i the fan-in          -> `LeNet5.reset_parameters`
  §III-C     learning-rate schedule over passes                 -> `lr_schedule`

Deviations (numbered as in docs/papers/02-lenet5.md):
  1. Optimizer: minibatch SGD (B = 16, lr 0.005, no momentum) instead of the paper's per-pattern stochastic
     diagonal Levenberg-Marquardt (App. C); the paper's schedule of its global rate eta (5e-4 x 1, 0.4, 0.2,
     0.1, 0.02 from passes 0, 2, 5, 8, 12) is kept as factors of our rate. Why: our SDLM diverged at the
     paper's eta (see the notes), and minibatches are what make torch fast.
  2. RBF codes: the paper's 7x12 ASCII bitmaps (Fig. 3) are not published as data; we hand-drew 7x12
     digit bitmaps in their style (`DIGIT_BITMAPS`); `codes="random"` gives fixed random +-1 codes.
  3. Loss: Eq. (9) as written; the paper does not print its constant j, we use j = `map_j` = 10.
  4. Init: U(-2.4/F_i, 2.4/F_i) for weights *and* biases; in C3, F_i counts only the connected inputs.
  5. Input: the paper's levels (-0.1 paper, 1.175 ink), mapped linearly from MNIST's 0..255 grey levels.
  6. Quick preset: one pass over the first 30,000 training images, not 20 passes over 60,000.
  7. C3 runs as a dense 6->16 convolution on masked kernels: Table I's function, not its FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt
from seminal.core.plots import line_plot
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import load_images


@dataclass(frozen=True)
class Config:
    epochs: PosInt = 20
    """Passes through the training set (the paper: 20)."""
    batch_size: PosInt = 16
    """Minibatch size (the paper updated after every pattern; deviation 1)."""
    lr: PosFloat = 0.005
    """SGD learning rate for passes 0-1; later passes scale it like the paper's eta (`lr_schedule`)."""
    map_j: PosFloat = 10.0
    """The constant j of Eq. (9): wrong-class penalties above ~j are no longer pushed up (deviation 3)."""
    codes: Literal["bitmap", "random"] = "bitmap"
    """RBF target codes: hand-drawn 7x12 digit bitmaps or fixed random +-1 vectors (deviation 2)."""
    train_limit: NonNegInt = 0
    """Use only the first N training images (0: all 60,000)."""
    test_limit: NonNegInt = 0
    """Use only the first N test images (0: all 10,000); for smoke tests."""
    evals_per_epoch: PosInt = 1
    """Test-set evaluations per pass (the learning curve's resolution)."""
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    """Images: MNIST (the paper's, and the claims') or Fashion-MNIST (same 28x28 grey format)."""


PRESETS = {
    "quick": Config(epochs=1, train_limit=30_000, evals_per_epoch=3),
    "full": Config(),
}

CLAIMS = {
    "quick": [
        Claim(
            "Half of one pass (30k digits) already beats a fully trained 2-layer MLP, on every seed",
            "test/error",
            "<=",
            0.047,
            "2-layer NN, 300 hidden units: 4.7% test error (linear classifier 12.0%, LeNet-5 0.95%)",
            "Fig. 9",
            aggregate="all",
            bar="paper",
        ),
    ],
    "full": [
        Claim(
            "LeNet-5 reaches <= 1.1% MNIST test error without distortions",
            "test/error",
            "<=",
            0.011,
            "0.95% test error",
            "§III-C, Fig. 5 and Fig. 9",
            bar="paper",
        ),
    ],
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
A, S = 1.7159, 2.0 / 3.0


def squash(a: Tensor) -> Tensor:
    """The scaled tanh: f(1) = 1, f(-1) = -1, f''(a) is largest at a = +-1."""
    return A * torch.tanh(S * a)  # Eq. (6)


def normalise(images: np.ndarray) -> Tensor:
    """uint8 (N, 28, 28), 0 = white -> float (N, 1, 32, 32) with white -0.1, black 1.175, padded by 2."""
    x = torch.from_numpy(images).float() / 255.0 * 1.275 - 0.1  # App. A: mean ~0, variance ~1
    return F.pad(x[:, None], (2, 2, 2, 2), value=-0.1)  # §III-A: the 28x28 digit centred in 32x32


def subsample(x: Tensor, coef: Tensor, bias: Tensor) -> Tensor:
    """S2/S4 before squashing: each map's 2x2 sums times its coefficient plus its bias. (B,C,H,W) -> (B,C,H/2,W/2)."""
    sums = 4.0 * F.avg_pool2d(x, 2)  # sum of the four inputs
    return sums * coef[:, None, None] + bias[:, None, None]  # §II-B


# Table I: the S2 maps each C3 map takes input from. 0-5: three neighbours, 6-11: four neighbours, 12-14:
# four non-contiguous, 15: all six. Breaks symmetry and keeps C3 to 1,516 parameters.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


def c3_mask() -> Tensor:
    """Table I as a 0/1 matrix (16 C3 maps, 6 S2 maps)."""
    mask = torch.zeros(16, 6)
    for out, ins in enumerate(C3_TABLE):
        mask[out, list(ins)] = 1.0
    return mask


def partial_conv(x: Tensor, weight: Tensor, bias: Tensor, mask: Tensor) -> Tensor:
    """A convolution whose output map o sees input map i only where mask[o, i] = 1 (Table I)."""
    return F.conv2d(x, weight * mask[:, :, None, None], bias)


def rbf(x: Tensor, codes: Tensor) -> Tensor:
    """Euclidean RBF units: (B, 84) and (10, 84) -> squared distances (B, 10), the penalties y_i."""
    return ((x[:, None, :] - codes[None]) ** 2).sum(-1)  # Eq. (7)


def map_loss(y: Tensor, target: Tensor, j: float) -> Tensor:
    """Eq. (9), averaged over the batch: pull the right penalty down, push the others up until ~j."""
    y_right = y.gather(1, target[:, None])[:, 0]
    neg = torch.cat([torch.full_like(y[:, :1], -j), -y], dim=1)  # log(e^-j + sum_i e^-y_i)
    return (y_right + torch.logsumexp(neg, dim=1)).mean()  # Eq. (9)


# Fig. 3 stand-in: 7 wide, 12 tall; '#' is ink (+1), '.' is paper (-1). Deviation 2.
DIGIT_BITMAPS = (
    (".#####.", "##...##", "#.....#", "#.....#", "#.....#", "#.....#",
     "#.....#", "#.....#", "#.....#", "#.....#", "##...##", ".#####."),
    ("...#...", "..##...", ".###...", "#.##...", "..##...", "..##...",
     "..##...", "..##...", "..##...", "..##...", "..##...", "#######"),
    (".#####.", "##...##", ".....##", ".....##", "....##.", "...##..",
     "..##...", ".##....", "##.....", "#......", "#......", "#######"),
    (".#####.", "##...##", ".....##", ".....##", "....##.", "..###..",
     "....##.", ".....##", ".....##", ".....##", "##...##", ".#####."),
    ("....##.", "...###.", "..#.##.", ".#..##.", "#...##.", "#...##.",
     "#######", "....##.", "....##.", "....##.", "....##.", "....##."),
    ("#######", "#......", "#......", "#......", "######.", ".....##",
     "......#", "......#", "......#", ".....##", "##...##", ".#####."),
    ("..####.", ".##....", "##.....", "#......", "#......", "######.",
     "##...##", "#.....#", "#.....#", "#.....#", "##...##", ".#####."),
    ("#######", "......#", ".....##", ".....#.", "....##.", "....#..",
     "...##..", "...#...", "..##...", "..#....", "..#....", "..#...."),
    (".#####.", "##...##", "#.....#", "#.....#", "##...##", ".#####.",
     "##...##", "#.....#", "#.....#", "#.....#", "##...##", ".#####."),
    (".#####.", "##...##", "#.....#", "#.....#", "#.....#", "##...##",
     ".######", "......#", "......#", ".....##", "....##.", ".####.."),
)  # fmt: skip


def rbf_codes(kind: str, seed: int = 0) -> Tensor:
    """The ten fixed +-1 code vectors (10, 84): flattened digit bitmaps, or random signs."""
    if kind == "random":
        rng = np.random.default_rng(seed)
        return torch.from_numpy(rng.choice([-1.0, 1.0], size=(10, 84))).float()
    bits = [[[1.0 if c == "#" else -1.0 for c in row] for row in digit] for digit in DIGIT_BITMAPS]
    return torch.tensor(bits).reshape(10, 84)


def lr_schedule(epoch: int, lr: float) -> float:
    """The paper's eta: 5e-4 for 2 passes, then 2e-4 (3), 1e-4 (3), 5e-5 (4), 1e-5; as factors of `lr`."""
    for start, factor in ((12, 0.02), (8, 0.1), (5, 0.2), (2, 0.4)):
        if epoch >= start:
            return lr * factor  # §III-C
    return lr


# ---- the network -------------------------------------------------------------------------------------
class LeNet5(nn.Module):
    """C1-S2-C3-S4-C5-F6-RBF, every hidden layer squashed by `squash`."""

    def __init__(self, codes: Tensor):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.s2_coef, self.s2_bias = nn.Parameter(torch.empty(6)), nn.Parameter(torch.empty(6))
        self.c3 = nn.Conv2d(6, 16, 5)
        self.s4_coef, self.s4_bias = nn.Parameter(torch.empty(16)), nn.Parameter(torch.empty(16))
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.register_buffer("c3_mask", c3_mask())
        self.register_buffer("codes", codes.float())  # fixed, not trained (§II-B)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-2.4/F_i, 2.4/F_i), F_i the fan-in of its unit (App. A, deviation 4)."""

        def fill(t: Tensor, fan_in: Tensor | float) -> None:
            bound = 2.4 / torch.as_tensor(fan_in, dtype=t.dtype)
            t.copy_((torch.rand_like(t) * 2 - 1) * bound.reshape(-1, *[1] * (t.dim() - 1)))

        c3_fan = self.c3_mask.sum(1) * 25  # 75, 100 or 150 connected inputs per C3 map
        for layer, fan in ((self.c1, 25.0), (self.c3, c3_fan), (self.c5, 400.0), (self.f6, 120.0)):
            fill(layer.weight, fan)
            fill(layer.bias, fan)
        for p in (self.s2_coef, self.s2_bias, self.s4_coef, self.s4_bias):
            fill(p, 4.0)

    def layers(self, x: Tensor) -> dict[str, Tensor]:
        """Every layer's output, by the paper's names."""
        out = {"input": x}  # (B, 1, 32, 32)
        out["C1"] = squash(self.c1(x))  # (B, 6, 28, 28)
        out["S2"] = squash(subsample(out["C1"], self.s2_coef, self.s2_bias))  # (B, 6, 14, 14)
        out["C3"] = squash(partial_conv(out["S2"], self.c3.weight, self.c3.bias, self.c3_mask))  # (B, 16, 10, 10)
        out["S4"] = squash(subsample(out["C3"], self.s4_coef, self.s4_bias))  # (B, 16, 5, 5)
        out["C5"] = squash(self.c5(out["S4"])).flatten(1)  # (B, 120)
        out["F6"] = squash(self.f6(out["C5"]))  # (B, 84)
        out["output"] = rbf(out["F6"], self.codes)  # (B, 10) penalties
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)["output"]


def count_parameters(net: LeNet5) -> int:
    """Trainable parameters with C3's masked-out kernels left out (the paper counts 60,000 in all)."""
    total = sum(p.numel() for p in net.parameters())
    return total - int((1 - net.c3_mask).sum().item()) * 25


@torch.no_grad()
def error_rate(net: LeNet5, x: Tensor, y: Tensor, batch: int = 500) -> float:
    """Fraction misclassified: the predicted class is the RBF unit with the smallest penalty."""
    wrong = sum(int((net(x[i : i + batch]).argmin(1) != y[i : i + batch]).sum()) for i in range(0, len(x), batch))
    return wrong / len(x)


# ---- training ----------------------------------------------------------------------------------------
def sgd_step(net: LeNet5, x: Tensor, target: Tensor, lr: float, j: float) -> tuple[Tensor, Tensor]:
    """One update on Eq. (9)'s loss: W <- W - lr dE/dW for every trainable weight. Returns (loss, penalties)."""
    y = net(x)  # (B, 10) RBF penalties
    loss = map_loss(y, target, j)  # Eq. (9)
    net.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= lr * p.grad  # §I-D: W <- W - lr dE/dW (the paper: a rate per weight, App. C)
    return loss.detach(), y.detach()


def train(cfg: Config, run: Run) -> dict[str, float]:
    dev = run.device
    xtr, ytr = load_images(cfg.dataset, "train")
    xte, yte = load_images(cfg.dataset, "test")
    if cfg.train_limit:
        xtr, ytr = xtr[: cfg.train_limit], ytr[: cfg.train_limit]
    if cfg.test_limit:
        xte, yte = xte[: cfg.test_limit], yte[: cfg.test_limit]
    xtr, xte = normalise(xtr).to(dev), normalise(xte).to(dev)
    ytr, yte = torch.from_numpy(ytr).to(dev), torch.from_numpy(yte).to(dev)

    net = LeNet5(rbf_codes(cfg.codes, seed=run.seed)).to(dev)
    state = run.restore()
    if state is not None:
        net.load_state_dict(state["net"])
    start = 0 if state is None else state["epoch"]
    skip = 0 if state is None else state.get("batch", 0)  # a mid-epoch checkpoint resumes at its next batch

    steps_per_epoch = -(-len(xtr) // cfg.batch_size)
    eval_at = {round(k * steps_per_epoch / cfg.evals_per_epoch) for k in range(1, cfg.evals_per_epoch + 1)}
    for epoch in run.progress(range(start, cfg.epochs), total=cfg.epochs, desc="lenet5"):
        order = epoch_rng(run.seed, epoch).permutation(len(xtr))
        lr = lr_schedule(epoch, cfg.lr)  # §III-C (deviation 1)
        total, wrong, count = torch.zeros((), device=dev), torch.zeros((), device=dev), 0
        if epoch == start and skip:  # the partial sums since the last log, as they were at the checkpoint
            total, wrong, count = state["total"].to(dev), state["wrong"].to(dev), state["count"]
        for step, idx in enumerate(batches(len(xtr), cfg.batch_size), 1):
            if epoch == start and step <= skip:
                continue  # done before the checkpoint (the epoch's order depends only on seed and epoch)
            idx = order[idx]
            idx_t = torch.from_numpy(idx).to(dev)
            loss, y = sgd_step(net, xtr[idx_t], ytr[idx_t], lr, cfg.map_j)  # Eq. (9), one SGD step
            total += loss * len(idx)  # kept on the device: no sync per step
            wrong += (y.argmin(1) != ytr[idx_t]).sum()
            count += len(idx)
            if step in eval_at:
                loss_avg = run.check_finite(total / count, epoch * steps_per_epoch + step, hint="lr")
                # Like Fig. 5, the training error is measured on the fly: over the batches since the last log.
                seen = epoch * len(xtr) + min(step * cfg.batch_size, len(xtr))
                run.log(
                    {
                        "train/loss": loss_avg,
                        "train/error": float(wrong) / count,
                        "test/error": error_rate(net, xte, yte),
                    },
                    step=seen,
                )  # step: images seen
                total, wrong, count = torch.zeros((), device=dev), torch.zeros((), device=dev), 0
            if run.due() and step < steps_per_epoch:  # Ctrl-C or checkpoint_seconds: a mid-epoch checkpoint
                run.checkpoint({"epoch": epoch, "batch": step, "net": net.state_dict(), "total": total.cpu(),
                                "wrong": wrong.cpu(), "count": count})
        run.log({"train/lr": lr}, step=(epoch + 1) * len(xtr))
        run.checkpoint({"epoch": epoch + 1, "net": net.state_dict()})

    metrics = {"test/error": run.history("test/error")[1][-1], "train/error": run.history("train/error")[1][-1]}
    steps, err = run.history("test/error")
    line_plot(
        run.plots_dir / "learning_curve.png",
        {
            "test error": ([s / len(xtr) for s in steps], err),
            "train error": ([s / len(xtr) for s in run.history("train/error")[0]], run.history("train/error")[1]),
        },
        xlabel="passes through the training set",
        ylabel="error rate",
        title=f"LeNet-5 on MNIST ({len(xtr):,} training images)",
        hline=CLAIMS["full" if cfg.epochs >= 10 else "quick"][0].threshold,
        logy=True,
    )
    return metrics
