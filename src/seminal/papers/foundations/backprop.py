"""Learning representations by back-propagating errors — Rumelhart, Hinton & Williams, Nature 323 (1986).

A two-layer perceptron in NumPy only, forward and backward pass written out. The paper's rule: run the
net forward, measure the error E, propagate dE/dx back through each layer with the chain rule, and move
every weight against its gradient, with a momentum term. Three experiments, each a claim:

  * XOR with a 2-2-1 net: learned from most random starts; the rest stick in local minima (the paper
    discusses both), so we report the success rate over many starts.
  * The 8-3-8 encoder: the three hidden units learn a binary-like code for the eight one-hot inputs.
  * MNIST with a 784-H-10 net: >= 97% test accuracy (our modern yardstick for the same algorithm).

Equation map (numbers as in the paper):
  Eq. (1)  x_j = sum_i y_i w_ji (+ bias)                         -> `forward`, pre-activations
  Eq. (2)  y_j = 1 / (1 + exp(-x_j))                             -> `_act` ("sigmoid")
  Eq. (3)  E = 1/2 sum_c sum_j (y_jc - d_jc)^2                   -> `loss` ("squared")
  Eq. (4)  dE/dy_j = y_j - d_j                                   -> `backward`, output error
  Eq. (5)  dE/dx_j = dE/dy_j * y_j (1 - y_j)                     -> `backward`, `_act_grad`
  Eq. (6)  dE/dw_ji = dE/dx_j * y_i                              -> `backward`, weight gradients
  Eq. (7)  dE/dy_i = sum_j dE/dx_j * w_ji                        -> `backward`, error sent down
  Eq. (8)  dw = -eps dE/dw                                       -> `sgd_step`
  Eq. (9)  dw(t) = -eps dE/dw(t) + alpha dw(t-1)                 -> `sgd_step` (momentum)

Every function works on one net, with weights (in, out), or on K nets trained side by side, with weights
(K, in, out): the XOR and encoder experiments train all their random starts in one batch of matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Range
from seminal.core.plots import line_plot
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import load_images

Momentum = Annotated[float, Range(ge=0, lt=1)]

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Config:
    xor_starts: PosInt = 100
    """Random starts of the 2-2-1 XOR net (each a separate net; the claim is a success rate)."""
    xor_sweeps: PosInt = 2000
    """Full-batch sweeps through the four XOR patterns for each start."""
    xor_lr: PosFloat = 0.5
    """Learning rate epsilon for XOR and the encoder (Eq. 8); the paper used 0.5 for XOR."""
    xor_momentum: Momentum = 0.9
    """Momentum alpha (Eq. 9); the paper's 0.9."""
    init_scale: PosFloat = 1.0
    """Initial weights ~ U(-init_scale, init_scale) for XOR and the encoder ("small random weights")."""
    encoder_starts: PosInt = 50
    """Random starts of the 8-3-8 encoder."""
    encoder_sweeps: PosInt = 10000
    """Full-batch sweeps through the eight encoder patterns."""
    encoder_lr: PosFloat = 0.5
    """Learning rate for the encoder (its gradients are small: eight outputs, mostly near 0)."""
    mnist_hidden: PosInt = 256
    """Hidden units H of the 784-H-10 MNIST net."""
    mnist_activation: Literal["sigmoid", "tanh"] = "tanh"
    """Hidden nonlinearity for MNIST (the paper's logistic, or tanh: its rescaled, zero-centred twin)."""
    mnist_epochs: PosInt = 8
    """Passes through the 60,000 MNIST training images."""
    mnist_batch: PosInt = 64
    """Minibatch size (the paper updated after every pattern or every sweep; see notes, deviation 2)."""
    mnist_lr: PosFloat = 0.05
    """Learning rate epsilon for MNIST."""
    mnist_momentum: Momentum = 0.9
    """Momentum alpha for MNIST."""
    mnist_train_limit: NonNegInt = 0
    """Use only the first N training images (0: all 60,000); for smoke tests."""
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    """Images of the third experiment: MNIST (the claim's) or Fashion-MNIST (same 28x28x1 format, harder)."""


PRESETS = {
    "quick": Config(),
    "full": Config(xor_starts=1000, encoder_starts=200, mnist_hidden=800, mnist_epochs=30),
}

CLAIMS = {
    preset: [
        Claim("XOR 2-2-1 is learned from most random starts", "xor/success_rate", ">=", 0.5,
              "learned, with occasional local minima", "Rumelhart et al. 1986; PDP vol. 1 ch. 8", bar="sanity"),
        Claim("8-3-8 encoder learns a binary-like hidden code", "encoder/binary_code_rate", ">=", 0.5,
              "hidden units take on a binary code", "PDP vol. 1 ch. 8, encoder problem", bar="sanity"),
        Claim("NumPy MLP reaches 97% MNIST test accuracy", "mnist/test_acc", ">=", 0.97,
              "2-layer MLPs: 95.3-98.4% (LeCun et al. 1998, Fig. 9)", "LeCun 1998 Fig. 9; issue target",
              bar="peer"),
    ]
    for preset in ("quick", "full")
}


# ---- the paper's math: pure functions ----------------------------------------------------------------
def _act(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))  # Eq. (2)
    return np.tanh(x)


def _act_grad(y: np.ndarray, kind: str) -> np.ndarray:
    """dy/dx written in terms of the output y, as the paper does: y(1-y) for the logistic."""
    return y * (1.0 - y) if kind == "sigmoid" else 1.0 - y * y  # Eq. (5)


def init_params(rng: np.random.Generator, sizes: tuple[int, int, int], scale: float, nets: int = 0) -> Params:
    """Weights U(-scale, scale); `nets > 0` makes a stack of that many independent nets."""
    lead = (nets,) if nets else ()
    n_in, n_hid, n_out = sizes
    return {
        "W1": rng.uniform(-scale, scale, lead + (n_in, n_hid)),
        "b1": rng.uniform(-scale, scale, lead + (1, n_hid)),
        "W2": rng.uniform(-scale, scale, lead + (n_hid, n_out)),
        "b2": rng.uniform(-scale, scale, lead + (1, n_out)),
    }


def forward(p: Params, x: np.ndarray, hidden: str, output: str) -> dict[str, np.ndarray]:
    """x (B, in) -> hidden y1 (.., B, H) and output y2 (.., B, out); `output` is sigmoid or softmax."""
    y1 = _act(x @ p["W1"] + p["b1"], hidden)  # Eq. (1), (2)
    x2 = y1 @ p["W2"] + p["b2"]  # Eq. (1)
    if output == "sigmoid":
        y2 = _act(x2, "sigmoid")
    else:  # softmax, stabilised
        e = np.exp(x2 - x2.max(axis=-1, keepdims=True))
        y2 = e / e.sum(axis=-1, keepdims=True)
    return {"x": x, "y1": y1, "y2": y2}


def loss(y2: np.ndarray, d: np.ndarray, output: str) -> np.ndarray:
    """Per-net loss averaged over the batch: squared error (Eq. 3) or cross-entropy (for softmax)."""
    if output == "sigmoid":
        return 0.5 * ((y2 - d) ** 2).sum(axis=-1).mean(axis=-1)  # Eq. (3), per pattern
    return -(d * np.log(y2 + 1e-12)).sum(axis=-1).mean(axis=-1)


def backward(p: Params, cache: dict[str, np.ndarray], d: np.ndarray, hidden: str, output: str) -> Params:
    """Gradients of `loss` w.r.t. every weight: the backward pass, Eqs. (4)-(7)."""
    x, y1, y2 = cache["x"], cache["y1"], cache["y2"]
    batch = x.shape[0]
    if output == "sigmoid":
        dE_dx2 = (y2 - d) * _act_grad(y2, "sigmoid")  # Eq. (4) then (5)
    else:
        dE_dx2 = y2 - d  # softmax + cross-entropy: the two factors collapse
    dE_dx2 = dE_dx2 / batch  # the loss is a mean over the batch
    T = np.swapaxes
    grads = {"W2": T(y1, -1, -2) @ dE_dx2, "b2": dE_dx2.sum(axis=-2, keepdims=True)}  # Eq. (6)
    dE_dy1 = dE_dx2 @ T(p["W2"], -1, -2)  # Eq. (7)
    dE_dx1 = dE_dy1 * _act_grad(y1, hidden)  # Eq. (5)
    grads["W1"] = T(x, -1, -2) @ dE_dx1  # Eq. (6); x is shared by all K nets
    grads["b1"] = dE_dx1.sum(axis=-2, keepdims=True)
    return grads


def sgd_step(p: Params, grads: Params, velocity: Params, lr: float, momentum: float) -> None:
    """dw(t) = -lr * dE/dw + momentum * dw(t-1); w += dw(t). In place. Eqs. (8)-(9)."""
    for k in p:
        velocity[k] = momentum * velocity[k] - lr * grads[k]  # Eq. (9)
        p[k] += velocity[k]


def train_full_batch(p: Params, x: np.ndarray, d: np.ndarray, sweeps: int, lr: float, momentum: float,
                     hidden: str = "sigmoid") -> list[np.ndarray]:
    """Sweep the whole pattern set `sweeps` times (the paper's batch mode). Returns per-net loss curves."""
    velocity = {k: np.zeros_like(v) for k, v in p.items()}
    curve = []
    for sweep in range(sweeps):
        cache = forward(p, x, hidden, "sigmoid")
        if sweep % 20 == 0 or sweep == sweeps - 1:
            curve.append(loss(cache["y2"], d, "sigmoid"))
        sgd_step(p, backward(p, cache, d, hidden, "sigmoid"), velocity, lr, momentum)
    return curve


# ---- the three experiments ---------------------------------------------------------------------------
XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_D = np.array([[0], [1], [1], [0]], dtype=np.float64)


def xor_experiment(cfg: Config, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    p = init_params(rng, (2, 2, 1), cfg.init_scale, nets=cfg.xor_starts)
    curve = train_full_batch(p, XOR_X, XOR_D, cfg.xor_sweeps, cfg.xor_lr, cfg.xor_momentum)
    y = forward(p, XOR_X, "sigmoid", "sigmoid")["y2"]  # (K, 4, 1)
    solved = (np.abs(y - XOR_D) < 0.5).all(axis=(1, 2))  # every pattern on the right side of 0.5
    return float(solved.mean()), np.stack(curve)  # curve: (checkpoints, K)


def encoder_experiment(cfg: Config, rng: np.random.Generator) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    eye = np.eye(8)
    p = init_params(rng, (8, 3, 8), cfg.init_scale, nets=cfg.encoder_starts)
    curve = train_full_batch(p, eye, eye, cfg.encoder_sweeps, cfg.encoder_lr, cfg.xor_momentum)
    cache = forward(p, eye, "sigmoid", "sigmoid")
    correct = (cache["y2"].argmax(axis=-1) == np.arange(8)).all(axis=-1)  # (K,)
    codes = cache["y1"]  # (K, 8, 3)
    # Binary-like: the hidden vectors, thresholded at 0.5, are 8 distinct corners of the unit cube, i.e. the
    # net found a 3-bit code; `corner_distance` says how close to 0/1 the units sit.
    distinct = np.array([len({tuple(c) for c in (k > 0.5).astype(int)}) == 8 for k in codes])
    ok = correct & distinct
    corner_distance = float(np.abs(codes - np.round(codes))[ok].mean()) if ok.any() else float("nan")
    best = codes[int(np.argmax(ok))] if ok.any() else codes[0]
    return float(correct.mean()), float(ok.mean()), corner_distance, np.stack(curve), best


def mnist_experiment(cfg: Config, run: Run) -> dict[str, float]:
    xtr, ytr = load_images(cfg.dataset, "train")
    xte, yte = load_images(cfg.dataset, "test")
    if cfg.mnist_train_limit:
        xtr, ytr = xtr[: cfg.mnist_train_limit], ytr[: cfg.mnist_train_limit]
    xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255.0
    xte = xte.reshape(len(xte), -1).astype(np.float32) / 255.0
    onehot = np.eye(10, dtype=np.float32)
    act = cfg.mnist_activation

    state = run.restore()
    if state is None:
        rng = np.random.default_rng(run.seed)
        scale = np.sqrt(6.0 / (784 + cfg.mnist_hidden))  # Glorot-uniform; the paper predates it (dev. 3)
        p = {k: v.astype(np.float32) for k, v in init_params(rng, (784, cfg.mnist_hidden, 10), scale).items()}
        p["b1"][:] = 0
        p["b2"][:] = 0
        state = {"epoch": 0, "params": p, "velocity": {k: np.zeros_like(v) for k, v in p.items()}}
    p, velocity = state["params"], state["velocity"]
    first, skip = state["epoch"], state.get("batch", 0)  # a mid-epoch checkpoint resumes at its next batch

    def accuracy(x, y):
        return float((forward(p, x, act, "softmax")["y2"].argmax(axis=1) == y).mean())

    for epoch in run.progress(range(first, cfg.mnist_epochs), total=cfg.mnist_epochs, desc="mnist"):
        total, count = (state.get("total", 0.0), state.get("count", 0)) if epoch == first else (0.0, 0)
        for step, idx in enumerate(batches(len(xtr), cfg.mnist_batch, epoch_rng(run.seed, epoch))):
            if epoch == first and step < skip:
                continue  # done before the checkpoint (the epoch's order depends only on seed and epoch)
            cache = forward(p, xtr[idx], act, "softmax")
            batch_loss = float(loss(cache["y2"], onehot[ytr[idx]], "softmax"))
            run.check_finite(batch_loss, epoch * len(xtr) // cfg.mnist_batch + step, hint="mnist_lr")
            sgd_step(p, backward(p, cache, onehot[ytr[idx]], act, "softmax"), velocity, cfg.mnist_lr,
                     cfg.mnist_momentum)
            total, count = total + batch_loss * len(idx), count + len(idx)
            if run.due():  # Ctrl-C or checkpoint_seconds: a mid-epoch checkpoint
                run.checkpoint({"epoch": epoch, "batch": step + 1, "total": total, "count": count, "params": p,
                                "velocity": velocity})
        run.log({"mnist/train_loss": total / count, "mnist/train_acc": accuracy(xtr, ytr),
                 "mnist/test_acc": accuracy(xte, yte)}, step=epoch + 1)
        run.checkpoint({"epoch": epoch + 1, "params": p, "velocity": velocity})
    return {"mnist/test_acc": accuracy(xte, yte), "mnist/train_acc": accuracy(xtr, ytr)}


def train(cfg: Config, run: Run) -> dict[str, float]:
    # The toy problems take seconds and are rerun in full on resume; MNIST checkpoints every epoch.
    rng = np.random.default_rng(run.seed)
    xor_rate, xor_curve = xor_experiment(cfg, rng)
    enc_correct, enc_rate, enc_corner, enc_curve, code = encoder_experiment(cfg, rng)
    toy = {"xor/success_rate": xor_rate, "encoder/correct_rate": enc_correct,
           "encoder/binary_code_rate": enc_rate, "encoder/corner_distance": enc_corner}
    run.log(toy, step=0)
    sweeps_x = np.minimum(np.arange(len(xor_curve)) * 20, cfg.xor_sweeps - 1)
    line_plot(run.plots_dir / "xor_error.png",
              {f"start {k}": (sweeps_x, xor_curve[:, k]) for k in range(min(12, cfg.xor_starts))},
              xlabel="sweep", ylabel="E (Eq. 3)", title=f"XOR 2-2-1: {xor_rate:.0%} of starts solve it", logy=True)
    sweeps_e = np.minimum(np.arange(len(enc_curve)) * 20, cfg.encoder_sweeps - 1)
    line_plot(run.plots_dir / "encoder_error.png",
              {f"start {k}": (sweeps_e, enc_curve[:, k]) for k in range(min(12, cfg.encoder_starts))},
              xlabel="sweep", ylabel="E (Eq. 3)", title=f"8-3-8 encoder: {enc_rate:.0%} learn a binary code",
              logy=True)
    _plot_code(run, code)

    metrics = dict(toy)
    metrics.update(mnist_experiment(cfg, run))
    steps, acc = run.history("mnist/test_acc")
    line_plot(run.plots_dir / "mnist_test_acc.png", {"test accuracy": (steps, acc)}, xlabel="epoch",
              ylabel="accuracy", title="NumPy MLP on MNIST", hline=0.97)
    return metrics


def _plot_code(run: Run, code: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.2, 4))
    ax.imshow(code, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xlabel("hidden unit")
    ax.set_ylabel("input pattern")
    ax.set_title("8-3-8 hidden code")
    for (i, j), v in np.ndenumerate(code):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="red", fontsize=7)
    run.savefig(fig, "encoder_code")
