"""Adam: A Method for Stochastic Optimization — Kingma & Ba, ICLR 2015, arXiv:1412.6980.

Adam keeps two exponential moving averages per parameter: m_t of the gradient (first moment) and v_t of
the squared gradient (uncentred second moment). Both start at zero, so early on they are biased towards
zero; dividing by (1 - beta^t) removes that bias. The update is the bias-corrected mean over the square
root of the bias-corrected second moment: a per-coordinate step of size about alpha, invariant to the
gradient's scale. We write Adam and the four optimizers the paper compares it with (SGD, SGD with
(Nesterov) momentum, AdaGrad, RMSProp) and race them on MNIST logistic regression (paper Fig. 1) and an
MLP with two hidden ReLU layers (Fig. 2), each optimizer from the same initial weights and over the same
minibatches. A third experiment switches the bias correction off (§6.4, Fig. 4): with beta2 near 1 the
uncorrected v_t is tiny for the first ~1/(1 - beta2) steps, so the early steps are far too large.

Equation map (Algorithm 1 of the paper, line by line):
  m_t = beta1 m_{t-1} + (1 - beta1) g_t                  -> `adam_update`, "Alg. 1 m_t"
  v_t = beta2 v_{t-1} + (1 - beta2) g_t^2                -> `adam_update`, "Alg. 1 v_t"
  m_hat_t = m_t / (1 - beta1^t)                          -> `adam_update`, "Alg. 1 m_hat" (§3)
  v_hat_t = v_t / (1 - beta2^t)                          -> `adam_update`, "Alg. 1 v_hat" (§3)
  theta_t = theta_{t-1} - alpha m_hat_t / (sqrt(v_hat_t) + eps)   -> `adam_update`, "Alg. 1 theta_t"
  §5 baselines: SGD, momentum / Nesterov, AdaGrad (Duchi et al. 2011), RMSProp (Tieleman & Hinton 2012)
                                                         -> `SGD`, `AdaGrad`, `RMSProp`

Deviations (numbered as in docs/papers/05-adam.md): 1. constant step sizes, no 1/sqrt(t) decay and no L2
term for logistic regression; 2. the MLP has no dropout (the paper's Fig. 2b setting, deterministic cost);
3. default step sizes fixed a priori, searched over a small grid (x0.1, x1, x10) for logistic regression
only, not the paper's dense grid for every model; 4. the quick preset shrinks the MLP to 2x256 and trains on
10,000 images for 3-4 epochs; 5. the ablation runs on the MLP instead of the paper's VAE; 6. loss curves are
minibatch-loss window means, not full training-set costs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seminal.core.claims import Claim
from seminal.core.config import NonNegInt, PosFloat, PosInt, Range
from seminal.core.plots import line_plot
from seminal.core.run import Run, batches, epoch_rng
from seminal.data import images_flat

Decay = Annotated[float, Range(ge=0, lt=1)]
"""A moving-average or momentum coefficient, in [0, 1)."""
Scales = Annotated[tuple[float, ...], Range(gt=0, nonempty=True)]

OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


@dataclass(frozen=True)
class Config:
    train_limit: NonNegInt = 0
    """Use only the first N training images (0: all 60,000)."""
    batch_size: PosInt = 128
    """Minibatch size (the paper: 128 for both Fig. 1 and Fig. 2)."""
    logreg_epochs: PosInt = 45
    """Passes through the training set for logistic regression (Fig. 1 shows 45)."""
    mlp_epochs: PosInt = 200
    """Passes for the MLP (Fig. 2 shows 200)."""
    mlp_hidden: PosInt = 1000
    """Units in each of the MLP's two hidden ReLU layers (the paper: 1000)."""
    lr_sgd: PosFloat = 0.1
    """Step size of plain SGD."""
    lr_momentum: PosFloat = 0.01
    """Step size of SGD with Nesterov momentum (the paper's SGDNesterov)."""
    momentum: Decay = 0.9
    """Momentum coefficient mu of SGDNesterov."""
    lr_adagrad: PosFloat = 0.01
    """Step size of AdaGrad."""
    lr_rmsprop: PosFloat = 1e-3
    """Step size of RMSProp."""
    rmsprop_decay: Decay = 0.99
    """RMSProp's moving-average decay rho for g^2."""
    alpha: PosFloat = 1e-3
    """Adam's step size alpha (the paper's default, Alg. 1)."""
    beta1: Decay = 0.9
    """Adam's first-moment decay beta1 (paper default)."""
    beta2: Decay = 0.999
    """Adam's second-moment decay beta2 (paper default)."""
    eps: PosFloat = 1e-8
    """Adam's epsilon (paper default)."""
    logreg_target: PosFloat = 0.35
    """Training loss (nats) to reach for logistic regression: the middle of Fig. 1's 0.2-0.7 range (fixed a priori)."""
    mlp_target: PosFloat = 0.1
    """Training loss (nats) to reach for the MLP: 10^-1 on Fig. 2's log scale (fixed a priori)."""
    ablation_epochs: PosInt = 100
    """Passes for the bias-correction ablation (Fig. 4 reports the loss after 10 and after 100 epochs)."""
    ablation_alpha: PosFloat = 1e-2
    """Step size of the bias-correction ablation (log10 alpha = -2, inside Fig. 4's sweep)."""
    ablation_beta2: Decay = 0.9999
    """beta2 of the ablation: near 1, where the paper says the correction matters most (§6.4)."""
    logreg_lr_grid: Scales = (0.1, 1.0, 10.0)
    """Multipliers of each optimizer's step size tried on logistic regression; the best (lowest mean training
    loss) is reported, as the paper searched a grid for every optimizer (§6)."""
    mlp_lr_grid: Scales = (1.0,)
    """The same grid for the MLP (1.0 only: the base step sizes, to keep the MLP affordable)."""
    log_every: PosInt = 20
    """Minibatches per logged training-loss point (the mean over that window)."""
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    """Images: MNIST (the paper's, and the claims') or Fashion-MNIST (same 28x28 grey format)."""


PRESETS = {
    "quick": Config(train_limit=10_000, logreg_epochs=3, mlp_epochs=4, ablation_epochs=2, mlp_hidden=256, log_every=10,
                    logreg_target=0.4, mlp_target=0.2),
    "full": Config(),
}

CLAIMS = {
    preset: [
        # Paired, every seed, on a continuous metric (the mean training loss over the run: the area under
        # the curves of Figs. 1-2), so that ties of a steps-to-target count cannot pass on the mean.
        Claim("Logistic regression: Adam converges faster than AdaGrad (lower mean training loss), every seed",
              "logreg/adagrad_over_adam_mean_loss", ">", 1.0,
              "'Adam yields similar convergence as SGD with momentum and both converge faster than Adagrad'",
              "§6.1, Fig. 1 (MNIST logistic regression)", aggregate="all", bar="sanity",
              paired=("logreg/adagrad/mean_loss", "logreg/adam/mean_loss")),
        Claim("MLP: Adam converges faster than SGDNesterov (lower mean training loss), every seed",
              "mlp/momentum_over_adam_mean_loss", ">", 1.0,
              "Adam converges faster than the other methods on the 2x1000 ReLU MLP",
              "§6.2, Fig. 2 (MNIST multilayer network)", aggregate="all", bar="sanity",
              paired=("mlp/momentum/mean_loss", "mlp/adam/mean_loss")),
        Claim("Without bias correction (beta2=0.9999) training is worse: higher mean loss, every seed",
              "ablation/loss_ratio_uncorrected", ">", 1.0,
              "no bias correction -> instabilities for beta2 near 1", "§6.4, Fig. 4", aggregate="all", bar="sanity",
              paired=("ablation/adam_uncorrected/mean_loss", "ablation/adam_corrected/mean_loss")),
    ]
    for preset in ("quick", "full")
}


# ---- the paper's math: one update per rule, on one tensor ----------------------------------------------
def adam_update(g: Tensor, m: Tensor, v: Tensor, t: int, alpha: float, beta1: float, beta2: float,
                eps: float, bias_correction: bool = True) -> Tensor:
    """Algorithm 1, one step: updates m, v in place; returns the step to subtract from theta."""
    m.mul_(beta1).add_(g, alpha=1 - beta1)  # Alg. 1 m_t
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # Alg. 1 v_t
    if bias_correction:
        m_hat = m / (1 - beta1**t)  # Alg. 1 m_hat (§3)
        v_hat = v / (1 - beta2**t)  # Alg. 1 v_hat (§3)
    else:  # the ablation of §6.4: the raw, zero-biased moments
        m_hat, v_hat = m, v
    return alpha * m_hat / (v_hat.sqrt() + eps)  # Alg. 1 theta_t = theta_{t-1} - this


class Adam(torch.optim.Optimizer):
    """Algorithm 1 (with `bias_correction=False`: the uncorrected variant of §6.4)."""

    def __init__(self, params, alpha: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 bias_correction: bool = True):
        super().__init__(params, dict(alpha=alpha, beta1=beta1, beta2=beta2, eps=eps, bias_correction=bias_correction))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for theta in group["params"]:
                if theta.grad is None:
                    continue
                state = self.state[theta]
                if not state:  # Alg. 1: m_0 = 0, v_0 = 0, t = 0
                    state.update(t=0, m=torch.zeros_like(theta), v=torch.zeros_like(theta))
                state["t"] += 1
                theta.sub_(adam_update(theta.grad, state["m"], state["v"], state["t"], group["alpha"],
                                       group["beta1"], group["beta2"], group["eps"], group["bias_correction"]))


class SGD(torch.optim.Optimizer):
    """theta -= lr * g; with momentum mu: b = mu b + g, step lr * b (or lr * (g + mu b), Nesterov)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            mu = group["momentum"]
            for theta in group["params"]:
                if theta.grad is None:
                    continue
                g = theta.grad
                if mu:
                    state = self.state[theta]
                    b = state.setdefault("b", torch.zeros_like(theta))
                    b.mul_(mu).add_(g)  # velocity
                    g = g + mu * b if group["nesterov"] else b  # Nesterov looks one step ahead
                theta.sub_(group["lr"] * g)


class AdaGrad(torch.optim.Optimizer):
    """theta -= lr * g / (sqrt(sum_t g^2) + eps): step sizes shrink with the accumulated squared gradient."""

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-10):
        super().__init__(params, dict(lr=lr, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for theta in group["params"]:
                if theta.grad is None:
                    continue
                G = self.state[theta].setdefault("G", torch.zeros_like(theta))
                G.addcmul_(theta.grad, theta.grad)
                theta.sub_(group["lr"] * theta.grad / (G.sqrt() + group["eps"]))


class RMSProp(torch.optim.Optimizer):
    """theta -= lr * g / (sqrt(r) + eps) with r = rho r + (1 - rho) g^2: AdaGrad with a forgetting average."""

    def __init__(self, params, lr: float = 1e-3, rho: float = 0.99, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for theta in group["params"]:
                if theta.grad is None:
                    continue
                r = self.state[theta].setdefault("r", torch.zeros_like(theta))
                r.mul_(group["rho"]).addcmul_(theta.grad, theta.grad, value=1 - group["rho"])
                theta.sub_(group["lr"] * theta.grad / (r.sqrt() + group["eps"]))


def base_lr(name: str, cfg: Config) -> float:
    return {"sgd": cfg.lr_sgd, "momentum": cfg.lr_momentum, "adagrad": cfg.lr_adagrad, "rmsprop": cfg.lr_rmsprop,
            "adam": cfg.alpha}.get(name, cfg.ablation_alpha)


def make_optimizer(name: str, params, cfg: Config, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    lr = base_lr(name, cfg) * lr_scale
    if name == "sgd":
        return SGD(params, lr)
    if name == "momentum":
        return SGD(params, lr, momentum=cfg.momentum, nesterov=True)
    if name == "adagrad":
        return AdaGrad(params, lr)
    if name == "rmsprop":
        return RMSProp(params, lr, rho=cfg.rmsprop_decay)
    if name == "adam":
        return Adam(params, lr, cfg.beta1, cfg.beta2, cfg.eps)
    if name in ("adam_corrected", "adam_uncorrected"):  # the ablation pair
        return Adam(params, cfg.ablation_alpha, cfg.beta1, cfg.ablation_beta2, cfg.eps,
                    bias_correction=name == "adam_corrected")
    raise ValueError(f"unknown optimizer {name}")


def steps_to_target(steps: list[int], losses: list[float], target: float, never: int) -> int:
    """The first logged step whose window-mean loss is <= target; `never` if none is."""
    return next((s for s, v in zip(steps, losses) if v <= target), never)


# ---- models --------------------------------------------------------------------------------------------
def make_model(kind: str, hidden: int) -> nn.Module:
    if kind == "logreg":
        return nn.Linear(784, 10)  # (B, 784) -> (B, 10) logits
    return nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))  # (B, 784) -> (B, H) -> (B, H) -> (B, 10)


# ---- training ------------------------------------------------------------------------------------------
def _arms(cfg: Config) -> list[tuple[str, str, float, int]]:
    """(model, optimizer, step-size multiplier, epochs); every arm of one model starts from the same weights."""
    arms = [("logreg", o, s, cfg.logreg_epochs) for o in OPTIMIZERS for s in cfg.logreg_lr_grid]
    arms += [("mlp", o, s, cfg.mlp_epochs) for o in OPTIMIZERS for s in cfg.mlp_lr_grid]
    return arms + [("ablation", o, 1.0, cfg.ablation_epochs) for o in ("adam_corrected", "adam_uncorrected")]


def _name(k: str, o: str, s: float) -> str:
    return f"{k}/{o}" if k == "ablation" else f"{k}/{o}@{s:g}"


def train(cfg: Config, run: Run) -> dict[str, float]:
    dev = run.device
    xtr, ytr = images_flat(cfg.dataset, "train", cfg.train_limit, dev)  # (N, 784) in [0, 1], (N,)
    xte, yte = images_flat(cfg.dataset, "test", 0, dev)

    arms = _arms(cfg)
    init = {k: make_model(k, cfg.mlp_hidden).to(dev) for k in ("logreg", "mlp")}
    init["ablation"] = init["mlp"]
    nets = {_name(k, o, s): copy.deepcopy(init[k]) for k, o, s, _ in arms}
    opts = {_name(k, o, s): make_optimizer(o, nets[_name(k, o, s)].parameters(), cfg, s) for k, o, s, _ in arms}

    state = run.restore() or {}
    start, diverged = state.get("epoch", 0), state.get("diverged", [])  # diverged: grid arms stopped, ranked last
    arm0, batch0 = state.get("arm", 0), state.get("batch", 0)  # where a mid-epoch checkpoint stopped
    for name in nets if state else ():
        nets[name].load_state_dict(state["nets"][name])
        opts[name].load_state_dict(state["opts"][name])

    def snapshot(epoch: int, **extra) -> dict:
        return {"epoch": epoch, "diverged": diverged, "nets": {n: net.state_dict() for n, net in nets.items()},
                "opts": {n: opt.state_dict() for n, opt in opts.items()}, **extra}

    steps_per_epoch = math.ceil(len(xtr) / cfg.batch_size)
    last = max(e for *_, e in arms)
    for epoch in run.progress(range(start, last), total=last, desc="adam"):
        order = [torch.as_tensor(i, device=dev) for i in batches(len(xtr), cfg.batch_size, epoch_rng(run.seed, epoch))]
        resuming = epoch == start and (arm0, batch0) != (0, 0)
        for a, (k, o, s, epochs) in enumerate(arms):
            name = _name(k, o, s)
            if epoch >= epochs or name in diverged or (resuming and a < arm0):
                continue
            net, opt = nets[name], opts[name]
            skip = batch0 if resuming and a == arm0 else 0
            window = state["window"].to(dev) if skip else torch.zeros((), device=dev)
            for i, idx in enumerate(order):  # the same minibatches, in the same order, for every arm
                if i < skip:
                    continue  # done before the checkpoint (the epoch's order depends only on seed and epoch)
                loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                window += loss.detach()
                if (i + 1) % cfg.log_every == 0:
                    step = epoch * steps_per_epoch + i + 1
                    mean = float(window / cfg.log_every)
                    if not math.isfinite(mean):
                        if s == 1.0:  # a base step size diverging is an error the user should see
                            run.check_finite(mean, step, hint=_lr_key(o))
                        diverged.append(name)
                        break
                    run.log({f"{name}/train_loss": mean}, step=step)
                    window.zero_()
                if run.due() and i + 1 < len(order):  # Ctrl-C or checkpoint_seconds: a mid-epoch checkpoint
                    run.checkpoint(snapshot(epoch, arm=a, batch=i + 1, window=window.cpu()))
        run.checkpoint(snapshot(epoch + 1))

    metrics: dict[str, float] = {}
    best: dict[str, str] = {}  # "logreg/adam" -> the grid arm with the lowest mean training loss
    for k, o, s, epochs in arms:
        name = _name(k, o, s)
        steps, losses = run.history(f"{name}/train_loss")
        mean_loss = float(np.mean(losses)) if losses and name not in diverged else math.inf
        key = f"{k}/{o}"
        if key not in best or mean_loss < metrics[f"{key}/mean_loss"]:  # a diverged arm (inf) never wins
            best[key] = name
            with torch.no_grad():
                metrics[f"{key}/test_error"] = (nets[name](xte).argmax(1) != yte).float().mean().item()
            metrics[f"{key}/mean_loss"] = mean_loss
            metrics[f"{key}/final_loss"] = float(np.mean(losses[-max(1, len(losses) // 10):]))
            metrics[f"{key}/lr"] = base_lr(o, cfg) * s
            if k != "ablation":
                target = cfg.logreg_target if k == "logreg" else cfg.mlp_target
                never = epochs * steps_per_epoch + 1  # "did not reach": counted as one step past the end
                metrics[f"{key}/steps_to_target"] = steps_to_target(steps, losses, target, never)
    for k in ("logreg", "mlp"):
        metrics[f"{k}/adam_speedup_vs_sgd"] = metrics[f"{k}/sgd/steps_to_target"] / metrics[f"{k}/adam/steps_to_target"]
        for o in ("sgd", "momentum", "adagrad", "rmsprop"):
            metrics[f"{k}/{o}_over_adam_mean_loss"] = metrics[f"{k}/{o}/mean_loss"] / metrics[f"{k}/adam/mean_loss"]
    metrics["ablation/loss_ratio_uncorrected"] = (metrics["ablation/adam_uncorrected/mean_loss"]
                                                  / metrics["ablation/adam_corrected/mean_loss"])
    _plots(cfg, run, best)
    return metrics


def _lr_key(opt: str) -> str:
    return {"sgd": "lr_sgd", "momentum": "lr_momentum", "adagrad": "lr_adagrad", "rmsprop": "lr_rmsprop",
            "adam": "alpha"}.get(opt, "ablation_alpha")


def _plots(cfg: Config, run: Run, best: dict[str, str]) -> None:
    for k, title, target in (("logreg", "MNIST logistic regression (Fig. 1)", cfg.logreg_target),
                             ("mlp", f"MNIST MLP 2x{cfg.mlp_hidden} ReLU (Fig. 2)", cfg.mlp_target)):
        series = {best[f"{k}/{o}"].split("/")[1].replace("@", " lr x"): run.history(f"{best[f'{k}/{o}']}/train_loss")
                  for o in OPTIMIZERS}
        line_plot(run.plots_dir / f"{k}_train_loss.png", series, xlabel="iteration (minibatch)",
                  ylabel="training loss (nats)", title=title, logy=True, hline=target)
    line_plot(run.plots_dir / "ablation_bias_correction.png",
              {"with bias correction": run.history("ablation/adam_corrected/train_loss"),
               "without": run.history("ablation/adam_uncorrected/train_loss")},
              xlabel="iteration (minibatch)", ylabel="training loss (nats)", logy=True,
              title=f"Adam, alpha={cfg.ablation_alpha:g}, beta2={cfg.ablation_beta2:g} (§6.4)")
