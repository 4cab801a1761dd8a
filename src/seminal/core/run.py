"""One call for a run's boilerplate: seeding, the run folder, logs, progress bars, Ctrl-C and checkpoints.

A paper's `train(cfg, run)` uses a `Run` like this::

    state = run.restore() or {"epoch": 0, "batch": 0, "model": model.state_dict()}  # resume if a checkpoint exists
    bar = run.progress(total=cfg.epochs * n_batches, initial=state["epoch"] * n_batches + state["batch"],
                       unit="step")                                          # steps (or images), with an ETA
    for epoch in range(state["epoch"], cfg.epochs):
        for b in range(state["batch"] if epoch == state["epoch"] else 0, n_batches):
            loss = ...
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)              # the quantity that moves
            if run.due():                                                    # Ctrl-C, or checkpoint_seconds passed
                run.checkpoint({"epoch": epoch, "batch": b + 1, "model": model.state_dict()})
        run.log({"train/loss": loss}, step=epoch)
        run.checkpoint({"epoch": epoch + 1, "batch": 0, "model": model.state_dict()})  # also a Ctrl-C stop point
    bar.close()

`run.due()` is cheap (a clock read): call it once per inner step. It is True once Ctrl-C was pressed, or
when `checkpoint_seconds` (default 60, `SEMINAL_CHECKPOINT_SECONDS`, `seminal run --checkpoint-seconds`)
have passed since the last checkpoint, so a run stops within one step of a Ctrl-C whatever the machine's
load, and a crash loses at most that much work. A mid-epoch state must hold everything the rest of the
epoch needs (position in the epoch, the epoch's shuffling or its generator), so that resuming from it gives
the numbers of an uninterrupted run. A resume of a run that stopped at its *last* checkpoint skips every
loop: what follows the loops must not depend on loop variables.

The first Ctrl-C asks the run to stop at the next `checkpoint` call (the state is saved, then the run
raises `Interrupted`); a second Ctrl-C stops at once, keeping the previous checkpoint. The random state of
`random`, NumPy's global generator and torch (CPU and CUDA) is saved with every checkpoint and restored on
resume, so a resumed run ends with the same numbers as an uninterrupted one. `run.elapsed` is the training
time of the run over all its sessions up to now (the time lost after an interrupted session's last
checkpoint is not counted).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminal.core.errors import Interrupted, SeminalError

CHECKPOINT = "checkpoint.pt"
DEFAULT_CHECKPOINT_SECONDS = 60.0


def checkpoint_seconds_from_env() -> float:
    """$SEMINAL_CHECKPOINT_SECONDS (a positive number of seconds), else 60."""
    text = os.environ.get("SEMINAL_CHECKPOINT_SECONDS", "").strip()
    if not text:
        return DEFAULT_CHECKPOINT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise SeminalError(f"SEMINAL_CHECKPOINT_SECONDS={text!r}: must be a positive number of seconds, e.g. 60")
    return value


def _quiet_from_env() -> bool:
    return os.environ.get("SEMINAL_QUIET", "").strip().lower() in ("1", "true", "yes")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global generator and torch; ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _to_safe(obj: Any) -> Any:
    """Make `obj` loadable with torch.load(weights_only=True): NumPy arrays and scalars become tensors."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_safe(v) for v in obj)
    return obj


def _from_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__ndarray__"}:
            return obj["__ndarray__"].numpy()
        return {k: _from_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_safe(v) for v in obj)
    return obj


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys, pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Run:
    """A run folder `runs/<slug>/<time>-s<seed>/` with its logs and checkpoint."""

    def __init__(
        self,
        directory: Path,
        paper: str,
        seed: int,
        cfg: Any,
        *,
        progress: bool | None = None,
        tensorboard: bool = True,
        stop_after_checkpoints: int | None = None,
        checkpoint_seconds: float | None = None,
    ):
        self.dir = Path(directory)
        self.paper = paper
        self.seed = seed
        self.cfg = cfg
        self.plots_dir = self.dir / "plots"
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        self._progress = progress
        self._metrics_path = self.dir / "metrics.jsonl"
        self._log_lines = 0
        self._stop_requested = False
        self._stop_after = stop_after_checkpoints  # tests: simulate a Ctrl-C after N checkpoints
        self.checkpoints = 0
        """Checkpoints written in this session (tests count them to interrupt at the last one)."""
        if checkpoint_seconds is not None and not checkpoint_seconds > 0:
            raise SeminalError(f"--checkpoint-seconds {checkpoint_seconds:g}: must be a positive number of seconds")
        self.checkpoint_seconds = checkpoint_seconds if checkpoint_seconds is not None else \
            checkpoint_seconds_from_env()
        """`due()` turns True this many seconds after the last checkpoint (or the start)."""
        self._last_checkpoint = self._started = time.monotonic()
        self._elapsed_before = 0.0  # training time of earlier sessions of a resumed run
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.dir / "tb"), flush_secs=30)
            except ImportError:  # tensorboard is a dependency, but a run does not need it
                self._tb = None
        self._old_handler = None
        self.resumed = False
        self.device = torch.device("cpu")
        """Where tensors go: set by the runner (cuda when present, unless SEMINAL_DEVICE=cpu)."""

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        if hasattr(signal, "SIGINT") and _in_main_thread():
            self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)
        self.close()

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:  # second Ctrl-C: stop now, the last checkpoint stays
            raise KeyboardInterrupt
        self._stop_requested = True
        print("\nCtrl-C: stopping at the next checkpoint (press again to stop at once)", flush=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None

    @property
    def elapsed(self) -> float:
        """Seconds of training over every session of this run, up to now."""
        return self._elapsed_before + time.monotonic() - self._started

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def due(self) -> bool:
        """True when the loop should call `checkpoint` now: Ctrl-C was pressed, or `checkpoint_seconds` passed
        since the last checkpoint. Cheap enough to call every step."""
        return self._stop_requested or time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds

    # -- logging -----------------------------------------------------------------------------------
    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append namespaced scalars (`train/loss`, `eval/return`) at `step` to metrics.jsonl and TensorBoard."""
        row = {"step": int(step)}
        for key, value in metrics.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else str(value)
            if self._tb is not None and math.isfinite(value):
                self._tb.add_scalar(key, value, int(step))
        with self._metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._log_lines += 1

    def history(self, key: str) -> tuple[list[int], list[float]]:
        """All logged (step, value) pairs of one metric key, in order."""
        steps, values = [], []
        if self._metrics_path.exists():
            for line in self._metrics_path.read_text().splitlines():
                row = json.loads(line)
                if key in row and isinstance(row[key], (int, float)):
                    steps.append(row["step"])
                    values.append(row[key])
        return steps, values

    def progress(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, **postfix: Any) -> Any:
        """A tqdm progress bar with rate and ETA, hidden when output is not a terminal, with --quiet or
        SEMINAL_QUIET=1.

        Count what moves (`unit="step"`, `"img"`, `"env step"`), not epochs: pass `total` in those units,
        `initial` where a resumed run starts, and call `bar.update(n)`; show the current loss or return with
        `bar.set_postfix(loss=..., refresh=False)` (or give it here as keywords).
        """
        from tqdm.auto import tqdm

        disable = (True if _quiet_from_env() else None) if self._progress is None else not self._progress
        bar = tqdm(iterable, total=total, desc=desc or self.paper, disable=disable, leave=False, dynamic_ncols=True,
                   unit=unit, unit_scale=True, initial=initial, mininterval=0.5)
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        return bar

    @staticmethod
    def check_finite(value: float, step: int, what: str = "loss", hint: str = "lr") -> float:
        """Stop with a one-line message if a loss turns NaN or infinite."""
        value = float(value)
        if not math.isfinite(value):
            raise SeminalError(
                f"{what} became {value} at step {step}: training diverged, most likely a learning rate "
                f"that is too high; lower it, e.g. --set {hint}=<smaller value>"
            )
        return value

    def savefig(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as plots/<name>.png and close it."""
        import matplotlib.pyplot as plt

        path = self.plots_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path

    # -- checkpoints -------------------------------------------------------------------------------
    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save `state` (tensors, NumPy arrays, numbers, strings, nested dicts/lists) with the RNG state.

        Called at safe points (end of an epoch, every N updates, and whenever `due()` says so). If Ctrl-C was
        pressed, the run stops here, after saving, by raising `Interrupted`.
        """
        payload = {
            "state": _to_safe(state),
            "rng": _to_safe(_rng_state()),
            "log_lines": self._log_lines,
            "time": time.time(),
            "elapsed": self.elapsed,
        }
        tmp = self.dir / (CHECKPOINT + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.dir / CHECKPOINT)
        self.checkpoints += 1
        self._last_checkpoint = time.monotonic()
        if self._stop_after is not None and self.checkpoints >= self._stop_after:
            self._stop_requested = True
        if self._stop_requested:
            self.close()
            raise Interrupted(str(self.dir), self.paper)

    def restore(self) -> dict[str, Any] | None:
        """The state of the last checkpoint (and the RNG state restored), or None for a fresh run."""
        path = self.dir / CHECKPOINT
        if not path.exists():
            return None
        try:
            # Tensors come back on the CPU; load_state_dict moves them to where the model lives, so a run
            # checkpointed on a GPU can resume on a CPU and the other way round.
            payload = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
            raise SeminalError(f"checkpoint {path} cannot be read ({type(e).__name__}); delete it to start over") from e
        _set_rng_state(_from_safe(payload["rng"]))
        self._truncate_log(payload["log_lines"])
        self._elapsed_before = float(payload.get("elapsed", 0.0))
        self._started = self._last_checkpoint = time.monotonic()
        self.resumed = True
        return _from_safe(payload["state"])

    def _truncate_log(self, lines: int) -> None:
        """Drop metrics logged after the checkpoint, so a resumed run's log has no duplicated steps."""
        if not self._metrics_path.exists():
            self._log_lines = 0
            return
        kept = self._metrics_path.read_text().splitlines()[:lines]
        self._metrics_path.write_text("".join(line + "\n" for line in kept))
        self._log_lines = len(kept)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Index batches over range(n): shuffled when `rng` is given, the last partial batch kept."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """A generator for one epoch's shuffling that depends only on (seed, epoch): resumes replay exactly."""
    return np.random.default_rng([seed, epoch])
