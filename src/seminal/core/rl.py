"""RL plumbing shared by the RL papers: making environments with clear errors, and evaluation.

Nothing of an algorithm lives here: returns, advantages, targets and losses stay in the paper modules.
Gymnasium is the `rl` extra; Box2D comes with it; MuJoCo and Atari are the `mujoco` and `atari` extras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seminal.core.errors import SeminalError

_EXTRA_HINTS = {
    "box2d": "pip install 'seminal[rl]' (Box2D, for LunarLander and BipedalWalker)",
    "mujoco": "pip install 'seminal[mujoco]' (MuJoCo; headless rendering needs MUJOCO_GL=egl)",
    "ale": "pip install 'seminal[atari]' (ale-py, which ships the Atari ROMs)",
}


def gym() -> Any:
    """The gymnasium module, or a SeminalError naming the extra to install."""
    try:
        import gymnasium
    except ImportError as e:
        raise SeminalError("RL papers need gymnasium: pip install 'seminal[rl]'") from e
    return gymnasium


def _extra_for(env_id: str, message: str) -> str | None:
    text = f"{env_id} {message}".lower()
    if "box2d" in text or "lunarlander" in text or "bipedal" in text or "carracing" in text:
        return _EXTRA_HINTS["box2d"]
    if "mujoco" in text or any(n in text for n in ("halfcheetah", "hopper", "walker2d", "ant-", "humanoid")):
        return _EXTRA_HINTS["mujoco"]
    if "ale" in text or "atari" in text or "noframeskip" in text:
        return _EXTRA_HINTS["ale"]
    return None


def make_env(env_id: str, seed: int | None = None, **kwargs: Any) -> Any:
    """`gymnasium.make(env_id)` with one-line errors for unknown ids and missing extras; seeded if asked."""
    gymnasium = gym()
    if env_id.startswith("ALE/"):
        try:
            import ale_py

            gymnasium.register_envs(ale_py)
        except ImportError as e:
            raise SeminalError(f"{env_id} needs Atari: {_EXTRA_HINTS['ale']}") from e
    try:
        env = gymnasium.make(env_id, **kwargs)
    except gymnasium.error.DependencyNotInstalled as e:
        hint = _extra_for(env_id, str(e)) or f"install what it names ({e})"
        raise SeminalError(f"{env_id} needs an optional dependency: {hint}") from e
    except (gymnasium.error.NameNotFound, gymnasium.error.VersionNotFound, gymnasium.error.NamespaceNotFound,
            gymnasium.error.UnregisteredEnv) as e:
        hint = _extra_for(env_id, str(e))
        raise SeminalError(
            f"unknown env id '{env_id}' ({e}); " + (hint if hint else "use a registered id such as CartPole-v1")
        ) from e
    except ImportError as e:
        hint = _extra_for(env_id, str(e)) or "pip install 'seminal[rl]'"
        raise SeminalError(f"{env_id} cannot be made ({e}): {hint}") from e
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def require_discrete(env: Any, env_id: str, algorithm: str) -> int:
    """Number of actions, or an error: `algorithm` needs a Discrete action space."""
    space = env.action_space
    if type(space).__name__ != "Discrete":
        raise SeminalError(f"{algorithm} needs discrete actions, but {env_id} has {type(space).__name__} "
                           f"actions {getattr(space, 'shape', '')}; try CartPole-v1 or LunarLander-v3")
    return int(space.n)


def require_box(env: Any, env_id: str, algorithm: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a continuous Box action space, or an error naming a suitable env."""
    space = env.action_space
    if type(space).__name__ != "Box":
        raise SeminalError(f"{algorithm} needs continuous (Box) actions, but {env_id} has "
                           f"{type(space).__name__} actions; try Pendulum-v1 or LunarLanderContinuous-v3")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise SeminalError(f"{algorithm} needs bounded actions; {env_id}'s action bounds are infinite")
    return space.low.astype(np.float64), space.high.astype(np.float64)


def evaluate(act: Callable[[np.ndarray], Any], env_id: str, episodes: int = 10, seed: int = 10_000,
             env: Any | None = None, **env_kwargs: Any) -> list[float]:
    """Undiscounted returns of `act` (obs -> action, deterministic) over `episodes` episodes.

    Evaluation episodes use seeds seed, seed+1, ... so that every algorithm is scored on the same starts.
    """
    env = env or make_env(env_id, **env_kwargs)
    returns = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns
