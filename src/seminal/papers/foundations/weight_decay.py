"""A Simple Weight Decay Can Improve Generalization — Krogh & Hertz, NIPS 4 (1991).

Add (lambda/2) |w|^2 to the training error, so that gradient descent pulls every weight towards zero by
lambda * w on each step. The paper proves two effects in a linear network: the decay removes weight
components the data do not determine, and, chosen right, it suppresses part of the static noise on the
targets. For a linear student learning a linear teacher from p noisy examples the generalization error
has a closed form, minimal at lambda = (noise variance) / (teacher weight variance). Two experiments:

  * A, MNIST: a one-hidden-layer MLP over-fits 1,000 training images, a fifth of whose labels are
    replaced by random ones (the paper's static noise on the targets); the same net, same initial
    weights and same minibatch order, trained with the decay term, has a smaller train-test gap and a
    lower test error.
  * B, the paper's linear setting: sweep lambda, measure the generalization error over many random
    teachers and data sets, and compare with the closed form (interior optimum near sigma^2 / s^2).

Equation map (numbers as in the paper):
  Eq. (1)  E(w) = E_0(w) + lambda/2 sum_i w_i^2                        -> `l2_penalty`
  Eq. (2)  dw_i/dt = -dE_0/dw_i - lambda w_i                           -> `add_decay_grad`, `sgd_step`
  §3       E_0 = 1/2 sum_mu (zeta^mu - w.xi^mu / sqrt(N))^2           -> `linear_task`, `ridge_solution`
  §3       generalization error F = <(f_u(xi) - f_w(xi))^2> = |w-u|^2/N -> `gen_error`
  §4       minimum of E with noisy targets: (A + lambda) w = b         -> `ridge_solution`
  §4       F = sigma^2 G + lambda (sigma^2 - lambda) dG/dlambda         -> `theory_gen_error`
           G = (1/N) <tr (A + lambda)^-1>, closed form                  -> `mp_G`
  §4       lambda_opt = sigma^2 (teacher |u|^2 = N; here sigma^2 / s^2)  -> `optimal_lambda`
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from torch import nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegFloat, PosFloat, PosInt, Prob, Range
from seminal.core.errors import SeminalError
from seminal.core.plots import line_plot
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import load_images

Momentum = Annotated[float, Range(ge=0, lt=1)]


@dataclass(frozen=True)
class Config:
    decay: NonNegFloat = 1e-2
    """Weight decay lambda for the MNIST net (Eq. 1, on the mean cross-entropy per image; weights only)."""
    mnist_train: PosInt = 1000
    """Training images: the first N of MNIST's 60,000 (small, so the net over-fits)."""
    label_noise: Prob = 0.2
    """Fraction of training labels replaced by uniformly random ones: the paper's static target noise (§4)."""
    mnist_test: PosInt = 10000
    """Test images used for the test error (the first N of 10,000)."""
    hidden: PosInt = 256
    """Hidden units H of the 784-H-10 tanh net."""
    epochs: PosInt = 60
    """Passes through the training images ("trained long": far past zero training error)."""
    batch: PosInt = 50
    """Minibatch size."""
    lr: PosFloat = 0.05
    """Learning rate (SGD with momentum)."""
    momentum: Momentum = 0.9
    """Momentum coefficient."""
    anneal: bool = True
    """Lower the learning rate linearly to 0 over training, so each arm ends near a minimum of its E (Eq. 1)
    instead of at a noisy SGD iterate."""
    eval_every: PosInt = 5
    """Evaluate train and test error every this many epochs (and at the last)."""
    lin_inputs: PosInt = 100
    """Linear experiment: inputs N of the student and teacher."""
    lin_alpha: PosFloat = 1.5
    """Linear experiment: examples per input, alpha = p / N (the paper's load parameter)."""
    lin_noise: NonNegFloat = 0.5
    """Linear experiment: variance sigma^2 of the Gaussian noise on the targets."""
    lin_teacher_var: PosFloat = 1.0
    """Linear experiment: variance s^2 of the teacher's weights u_i (the paper takes |u|^2 = N, s^2 = 1)."""
    lin_trials: PosInt = 200
    """Linear experiment: random teachers + data sets averaged per lambda."""
    lin_lambda_min: PosFloat = 1e-3
    """Smallest lambda of the log-spaced sweep (lambda = 0 is always measured too)."""
    lin_lambda_max: PosFloat = 1e2
    """Largest lambda of the sweep."""
    lin_points: Annotated[int, Range(ge=3)] = 21
    """Number of lambdas in the sweep (21 over 5 decades: a quarter-decade grid)."""
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    """Images of experiment A: MNIST (the claims') or Fashion-MNIST (same 28x28 grey format)."""

    def validate(self) -> None:
        if not self.lin_lambda_min < self.lin_lambda_max:
            raise SeminalError("need lin_lambda_min < lin_lambda_max (the sweep runs from min to max)")


PRESETS = {
    "quick": Config(),
    "full": Config(hidden=800, epochs=300, eval_every=10, lin_inputs=200, lin_trials=400, lin_points=41),
}

_CLAIMS = [
    # A: direction only. The paper has no MNIST figure, and the label noise was added after clean labels
    # showed no gain (notes, deviation 1): these two say which way decay moves a nonlinear net in the
    # paper's noisy-target setting, paired (same weights, same minibatches), nothing more.
    Claim("MNIST, 1,000 images, 20% random labels: decay lowers the test error (direction only)",
          "mnist/test_error_reduction", ">", 0.0, "decay improves generalization (no MNIST figure)",
          "Krogh & Hertz 1991, abstract and §4 (static target noise); condition chosen after clean labels "
          "showed no gain", aggregate="all", bar="sanity", paired=("mnist/plain_test_error", "mnist/decay_test_error")),
    Claim("MNIST, 1,000 images, 20% random labels: decay shrinks the train-test gap (direction only)",
          "mnist/gap_reduction", ">", 0.0, "decay suppresses fitting of noise (no MNIST figure)",
          "Krogh & Hertz 1991, §4 (noisy targets), §5; condition chosen after clean labels showed no gain",
          aggregate="all", bar="sanity", paired=("mnist/plain_gap", "mnist/decay_gap")),
    # B: the paper's own analysis.
    Claim("linear teacher: best lambda of the sweep is interior", "linear/best_is_interior", ">=", 1.0,
          "F(lambda) has a minimum at lambda_opt > 0", "Krogh & Hertz 1991, §4", aggregate="all",
          bar="paper"),
    Claim("linear teacher: F at the best lambda is below F at lambda = 0", "linear/best_over_zero", "<", 1.0,
          "optimal decay beats no decay", "Krogh & Hertz 1991, §4", bar="sanity"),
    Claim("linear teacher: best lambda within half a decade of sigma^2/s^2", "linear/log10_best_over_opt",
          "<=", 0.5, "lambda_opt = sigma^2 / s^2", "Krogh & Hertz 1991, §4; half a decade is our tolerance",
          bar="sanity"),
    Claim("linear teacher: measured F(lambda) within 5% of the closed form across the sweep",
          "linear/max_rel_dev_from_theory", "<=", 0.05,
          "F = sigma^2 G + lambda (sigma^2 - lambda) dG/dlambda (N -> inf)",
          "Krogh & Hertz 1991, §4 formula; 5% is our finite-N tolerance (N = 100), a sanity bar",
          aggregate="all", bar="sanity"),
]
CLAIMS = {"quick": _CLAIMS, "full": _CLAIMS}


# ---- the decay term: Eqs. (1)-(2) ----------------------------------------------------------------------
def l2_penalty(weights: list[torch.Tensor], lam: float) -> torch.Tensor:
    """lambda/2 * sum of squared weights, the term Eq. (1) adds to the error."""
    return 0.5 * lam * sum((w * w).sum() for w in weights)  # Eq. (1)


@torch.no_grad()
def add_decay_grad(weights: list[torch.Tensor], lam: float) -> None:
    """Add d/dw of the penalty, lambda * w, to each weight's .grad (in place). Eq. (2)."""
    for w in weights:
        w.grad.add_(w, alpha=lam)  # Eq. (2): -dE/dw = -dE_0/dw - lambda w


@torch.no_grad()
def sgd_step(params: list[torch.Tensor], velocity: list[torch.Tensor], lr: float, momentum: float) -> None:
    """v <- momentum v + grad; w <- w - lr v (the discrete form of Eq. 2, with momentum)."""
    for p, v in zip(params, velocity):
        v.mul_(momentum).add_(p.grad)
        p.sub_(lr * v)


# ---- the linear network of §3-4 --------------------------------------------------------------------------
def linear_task(rng: np.random.Generator, n: int, p: int, sigma2: float, s2: float, trials: int):
    """`trials` teachers u ~ N(0, s2 I) and p examples each: xi ~ N(0, I), zeta = u.xi/sqrt(N) + noise."""
    u = rng.normal(0.0, np.sqrt(s2), (trials, n))  # (T, N)
    xi = rng.normal(0.0, 1.0, (trials, p, n))  # (T, p, N)
    eta = rng.normal(0.0, np.sqrt(sigma2), (trials, p))  # (T, p) static noise on the targets
    zeta = np.einsum("tpn,tn->tp", xi, u) / np.sqrt(n) + eta  # §3, noisy teacher outputs
    return u, xi, zeta


def _one_blas_thread():
    """A scoped limit of NumPy's BLAS/LAPACK to one thread (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def normal_equations(xi: np.ndarray, zeta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A = (1/N) sum_mu xi xi^T (..., N, N) and b = (1/sqrt N) sum_mu zeta xi (..., N): dE_0/dw = A w - b."""
    n = xi.shape[-1]
    return np.swapaxes(xi, -1, -2) @ xi / n, (np.swapaxes(xi, -1, -2) @ zeta[..., None])[..., 0] / np.sqrt(n)


def ridge_solution(xi: np.ndarray, zeta: np.ndarray, lam: float) -> np.ndarray:
    """The minimum of E = E_0 + lambda/2 |w|^2 for the linear student: (A + lambda I) w = b (§4).

    It is also the fixed point of the gradient flow of Eq. (2): dw/dt = -(A + lambda) w + b.
    """
    A, b = normal_equations(xi, zeta)
    with _one_blas_thread():
        return np.linalg.solve(A + lam * np.eye(A.shape[-1]), b[..., None])[..., 0]


def ridge_path(xi: np.ndarray, zeta: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """`ridge_solution` for many lambdas at once via A = V diag(a) V^T: w = V (V^T b / (a + lambda)).

    Returns (L, ..., N). Equal to `ridge_solution` (a test checks it), with one eigendecomposition.
    """
    with _one_blas_thread():  # many small matrices: BLAS threads only add overhead
        A, b = normal_equations(xi, zeta)
        a, V = np.linalg.eigh(A)  # (..., N), (..., N, N)
    Vb = (np.swapaxes(V, -1, -2) @ b[..., None])[..., 0]  # (..., N)
    return np.stack([(V @ (Vb / (a + lam))[..., None])[..., 0] for lam in lams])


def gen_error(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """F = <(u.xi - w.xi)^2>/N over a fresh input xi ~ N(0, I): exactly |w - u|^2 / N (§3)."""
    return ((w - u) ** 2).sum(axis=-1) / w.shape[-1]


def mp_G(alpha: float, lam: np.ndarray) -> np.ndarray:
    """G = lim (1/N) tr (A + lambda)^-1 for N -> inf at fixed alpha = p/N (§4; a Marchenko-Pastur law).

    The paper's [1 - alpha - lambda + S] / (2 lambda), S = sqrt((1 - alpha - lambda)^2 + 4 lambda),
    written as 2 / (S + alpha + lambda - 1) so that it stays exact as lambda -> 0 when alpha > 1.
    """
    S = np.sqrt((1 - alpha - lam) ** 2 + 4 * lam)
    return 2.0 / (S + alpha + lam - 1)


def mp_dG(alpha: float, lam: np.ndarray) -> np.ndarray:
    """dG/dlambda of `mp_G`, analytically."""
    S = np.sqrt((1 - alpha - lam) ** 2 + 4 * lam)
    dS = (1 + alpha + lam) / S
    return -2.0 * (dS + 1) / (S + alpha + lam - 1) ** 2


def theory_gen_error(alpha: float, lam: np.ndarray, sigma2: float, s2: float = 1.0) -> np.ndarray:
    """Average F for N -> inf: s2 lambda^2 <tr (A+lambda)^-2>/N + sigma2 <tr A (A+lambda)^-2>/N,
    i.e. sigma2 G + lambda (sigma2 - s2 lambda) dG/dlambda (the paper's formula with s2 = 1)."""
    lam = np.asarray(lam, dtype=np.float64)
    return sigma2 * mp_G(alpha, lam) + lam * (sigma2 - s2 * lam) * mp_dG(alpha, lam)  # §4


def optimal_lambda(sigma2: float, s2: float = 1.0) -> float:
    """d F / d lambda is proportional to (sigma2 - s2 lambda): the optimum is lambda = sigma2 / s2 (§4)."""
    return sigma2 / s2


def linear_experiment(cfg: Config, rng: np.random.Generator) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    n, p = cfg.lin_inputs, max(1, round(cfg.lin_alpha * cfg.lin_inputs))
    alpha = p / n
    u, xi, zeta = linear_task(rng, n, p, cfg.lin_noise, cfg.lin_teacher_var, cfg.lin_trials)
    lams = np.geomspace(cfg.lin_lambda_min, cfg.lin_lambda_max, cfg.lin_points)
    F_all = gen_error(ridge_path(xi, zeta, np.r_[0.0, lams]), u).mean(axis=-1)  # measured, per lambda: (1+L,)
    F0, F = (float(F_all[0]) if p > n else float("nan")), F_all[1:]  # lambda = 0 is ill-posed for p <= N
    best = int(np.argmin(F))
    lam_opt = optimal_lambda(cfg.lin_noise, cfg.lin_teacher_var)
    F_opt_theory = float(theory_gen_error(alpha, lam_opt, cfg.lin_noise, cfg.lin_teacher_var))
    metrics = {
        "linear/best_lambda": float(lams[best]),
        "linear/theory_lambda": lam_opt,
        "linear/best_is_interior": float(0 < best < len(lams) - 1),
        "linear/gen_error_best": float(F[best]),
        "linear/gen_error_zero": F0,
        "linear/best_over_zero": float(F[best] / F0),
        "linear/log10_best_over_opt": float(abs(np.log10(lams[best] / lam_opt))),
        "linear/theory_gen_error_opt": F_opt_theory,
        "linear/theory_gen_error_zero": float(theory_gen_error(alpha, 0.0, cfg.lin_noise, cfg.lin_teacher_var)),
        "linear/max_rel_dev_from_theory": float(np.max(np.abs(F / theory_gen_error(alpha, lams, cfg.lin_noise,
                                                                                   cfg.lin_teacher_var) - 1))),
    }
    return metrics, lams, F


# ---- experiment A: MNIST -----------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 784) -> (B, 10)
        return self.fc2(torch.tanh(self.fc1(x)))

    def weights(self) -> list[torch.Tensor]:
        """The decayed parameters: weight matrices only (deviation 2)."""
        return [self.fc1.weight, self.fc2.weight]


@torch.no_grad()
def _evaluate(model: MLP, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, error rate) over the whole set, in chunks."""
    loss, wrong = 0.0, 0
    for i in range(0, len(x), 2000):
        logits = model(x[i : i + 2000])
        loss += float(nn.functional.cross_entropy(logits, y[i : i + 2000], reduction="sum"))
        wrong += int((logits.argmax(1) != y[i : i + 2000]).sum())
    return loss / len(x), wrong / len(x)


def train_epoch(model: MLP, velocity: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, cfg: Config,
                lam: float, order: list[np.ndarray], epoch: int = 0, first: int = 0, total: float = 0.0,
                after_step: Callable[[int, float], None] | None = None) -> float:
    """One pass over (x, y) in the given minibatch order; the decay enters only through `add_decay_grad`.

    A resumed pass starts at batch `first` with the loss sum `total` of the batches before it;
    `after_step(batches done, loss sum)` runs after every step (the mid-epoch checkpoint)."""
    params = list(model.parameters())
    total_steps = cfg.epochs * len(order)
    for k, idx in enumerate(order[first:], first):
        step = epoch * len(order) + k
        lr = cfg.lr * (1 - step / total_steps) if cfg.anneal else cfg.lr
        model.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])  # E_0 for this minibatch
        loss.backward()
        add_decay_grad(model.weights(), lam)  # Eq. (2)
        sgd_step(params, velocity, lr, cfg.momentum)
        total += float(loss.detach()) * len(idx)
        if after_step is not None:
            after_step(k + 1, total)
    return total / len(x)


def noisy_labels(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of y with each label, with probability `fraction`, replaced by a uniform draw from 0..9."""
    y = y.copy()
    hit = rng.random(len(y)) < fraction
    y[hit] = rng.integers(0, 10, int(hit.sum()))
    return y


def _mnist_tensors(cfg: Config, device: torch.device, seed: int = 0):
    xtr, ytr = load_images(cfg.dataset, "train")
    xte, yte = load_images(cfg.dataset, "test")
    xtr, ytr, xte, yte = xtr[: cfg.mnist_train], ytr[: cfg.mnist_train], xte[: cfg.mnist_test], yte[: cfg.mnist_test]
    ytr = noisy_labels(ytr, cfg.label_noise, np.random.default_rng([seed, 5]))  # §4: static noise on the targets
    def to_x(a):
        return torch.tensor(a.reshape(len(a), -1), dtype=torch.float32, device=device) / 255.0
    return to_x(xtr), torch.tensor(ytr, device=device), to_x(xte), torch.tensor(yte, device=device)


def mnist_experiment(cfg: Config, run: Run, state: dict | None) -> dict[str, float]:
    xtr, ytr, xte, yte = _mnist_tensors(cfg, run.device, run.seed)
    arms = {"plain": 0.0, "decay": cfg.decay}
    models = {a: MLP(cfg.hidden).to(run.device) for a in arms}
    models["decay"].load_state_dict(copy.deepcopy(models["plain"].state_dict()))  # same initial weights
    velocity = {a: [torch.zeros_like(p) for p in models[a].parameters()] for a in arms}
    start = 0
    if state is not None:
        start = state["epoch"]
        for a in arms:
            models[a].load_state_dict(state["models"][a])
            velocity[a] = [v.to(run.device) for v in state["velocity"][a]]
    final: dict[str, float] = dict(state.get("final", {})) if state is not None else {}
    mid = state if state is not None and "arm" in state else None  # a mid-epoch checkpoint: where it stopped

    def snapshot(epoch: int, **extra) -> dict:
        return {"epoch": epoch, "models": {a: m.state_dict() for a, m in models.items()}, "velocity": velocity,
                "final": final, **extra}

    for epoch in run.progress(range(start, cfg.epochs), total=cfg.epochs, desc="weight-decay mnist"):
        order = list(batches(len(xtr), cfg.batch, epoch_rng(run.seed, epoch)))  # shared by both arms
        resuming = mid is not None and epoch == start
        row = dict(mid["row"]) if resuming else {}
        for i, (a, lam) in enumerate(arms.items()):
            if resuming and i < mid["arm"]:
                continue  # this arm's epoch was done before the checkpoint; its row entries came back
            first, total = (mid["batch"], mid["total"]) if resuming and i == mid["arm"] else (0, 0.0)

            def after_step(done: int, total: float, i: int = i, row: dict = row, epoch: int = epoch,
                           n: int = len(order)) -> None:
                if run.due() and done < n:  # Ctrl-C or checkpoint_seconds: a mid-epoch checkpoint
                    run.checkpoint(snapshot(epoch, arm=i, batch=done, total=total, row=row))

            loss = train_epoch(models[a], velocity[a], xtr, ytr, cfg, lam, order, epoch, first, total, after_step)
            row[f"{a}/train_loss"] = run.check_finite(loss, epoch, hint="lr")
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                tr_loss, tr_err = _evaluate(models[a], xtr, ytr)
                te_loss, te_err = _evaluate(models[a], xte, yte)
                row.update({f"{a}/train_error": tr_err, f"{a}/test_error": te_err, f"{a}/test_loss": te_loss,
                            f"{a}/weight_norm": float(l2_penalty(models[a].weights(), 2.0).detach()) ** 0.5})
                final.update({f"mnist/{a}_train_error": tr_err, f"mnist/{a}_test_error": te_err})
        run.log(row, step=epoch + 1)
        run.checkpoint(snapshot(epoch + 1))
    if not final:  # resumed after the last epoch of a run that never evaluated: evaluate the restored nets
        for a in arms:
            final[f"mnist/{a}_train_error"] = _evaluate(models[a], xtr, ytr)[1]
            final[f"mnist/{a}_test_error"] = _evaluate(models[a], xte, yte)[1]
    gap = {a: final[f"mnist/{a}_test_error"] - final[f"mnist/{a}_train_error"] for a in arms}
    final.update({
        "mnist/plain_gap": gap["plain"], "mnist/decay_gap": gap["decay"],
        "mnist/gap_reduction": gap["plain"] - gap["decay"],
        "mnist/test_error_reduction": final["mnist/plain_test_error"] - final["mnist/decay_test_error"],
    })
    return final


def train(cfg: Config, run: Run) -> dict[str, float]:
    cfg.validate()
    state = run.restore()  # MNIST checkpoints every epoch
    # B first: seconds of NumPy, recomputed on resume from its own generator (logged once).
    lin, lams, F = linear_experiment(cfg, np.random.default_rng([run.seed, 1991]))
    if state is None:
        run.log(lin, step=0)
    alpha = max(1, round(cfg.lin_alpha * cfg.lin_inputs)) / cfg.lin_inputs
    fine = np.geomspace(cfg.lin_lambda_min, cfg.lin_lambda_max, 200)
    series = {"measured (mean over trials)": (lams, F),
              f"theory, N -> inf (alpha={alpha:.2f})": (fine, theory_gen_error(alpha, fine, cfg.lin_noise,
                                                                               cfg.lin_teacher_var))}
    _plot_sweep(run, series, lin)

    metrics = dict(lin)
    metrics.update(mnist_experiment(cfg, run, state))
    curves = {}
    for a in ("plain", "decay"):
        for split in ("train", "test"):
            curves[f"{a} {split}"] = run.history(f"{a}/{split}_error")
    line_plot(run.plots_dir / "mnist_error.png", curves, xlabel="epoch", ylabel="error rate",
              title=f"MNIST, {cfg.mnist_train} images, {cfg.label_noise:.0%} random labels: "
              f"lambda=0 vs {cfg.decay:g}")
    line_plot(run.plots_dir / "mnist_test_loss.png",
              {a: run.history(f"{a}/test_loss") for a in ("plain", "decay")},
              xlabel="epoch", ylabel="test cross-entropy", title="Test loss with and without decay")
    return metrics


def _plot_sweep(run: Run, series: dict, lin: dict[str, float]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if "measured" in label else None, ms=3, label=label)
    ax.axhline(lin["linear/gen_error_zero"], color="gray", ls=":", label="measured, lambda = 0")
    ax.axvline(lin["linear/theory_lambda"], color="red", ls="--", lw=1, label="sigma^2 / s^2 (theory optimum)")
    ax.set_xscale("log")
    ax.set_xlabel("weight decay lambda")
    ax.set_ylabel("generalization error F")
    ax.set_title("Linear student, linear teacher, noisy targets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    run.savefig(fig, "linear_gen_error_vs_lambda")
