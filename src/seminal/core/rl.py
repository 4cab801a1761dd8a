"""RL plumbing shared by the RL papers: making environments with clear errors, and evaluation.

Nothing of an algorithm lives here: returns, advantages, targets and losses stay in the paper modules.
Gymnasium is the `rl` extra; Box2D comes with it; MuJoCo and Atari are the `mujoco` and `atari` extras.
"""

from __future__ import annotations

import json
from collections import deque
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


# ---- saving an env's state, so that a resumed run continues exactly ----------------------------------------
_NUMBER = (bool, int, float, np.integer, np.floating, np.bool_)


def _plain(v: Any) -> Any:
    """A checkpointable copy of a simple value (numbers, arrays, generators, deques, dicts and tuples of
    those), or the marker _SKIP for anything else (spaces, specs, the wrapped env, simulator handles)."""
    if v is None or isinstance(v, (*_NUMBER, str)):
        return v
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, np.random.Generator):
        return {"__generator__": json.dumps(v.bit_generator.state)}
    if isinstance(v, deque):
        items = [_plain(x) for x in v]
        return _SKIP if any(x is _SKIP for x in items) else {"__deque__": items, "maxlen": v.maxlen}
    if isinstance(v, (tuple, list)):
        items = [_plain(x) for x in v]
        return _SKIP if any(x is _SKIP for x in items) else {"__seq__": items, "tuple": isinstance(v, tuple)}
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        items = {k: _plain(x) for k, x in v.items()}
        return _SKIP if any(x is _SKIP for x in items.values()) else {"__dict__": items}
    return _SKIP


_SKIP = object()


def _unplain(v: Any, current: Any) -> Any:
    if isinstance(v, dict) and "__generator__" in v:
        gen = current if isinstance(current, np.random.Generator) else np.random.default_rng()
        gen.bit_generator.state = json.loads(v["__generator__"])
        return gen
    if isinstance(v, dict) and "__deque__" in v:
        return deque([_unplain(x, None) for x in v["__deque__"]], maxlen=v["maxlen"])
    if isinstance(v, dict) and "__seq__" in v:
        items = [_unplain(x, None) for x in v["__seq__"]]
        return tuple(items) if v["tuple"] else items
    if isinstance(v, dict) and "__dict__" in v:
        return {k: _unplain(x, None) for k, x in v["__dict__"].items()}
    return v.copy() if isinstance(v, np.ndarray) else v


def _layers(env: Any) -> list[Any]:
    out = [env]
    while hasattr(out[-1], "env"):
        out.append(out[-1].env)
    return out


def _simulator_handle(env: Any) -> bool:
    """Envs whose state lives in a C simulator (Box2D worlds, MuJoCo data, the ALE) cannot be saved here."""
    return any(hasattr(env.unwrapped, k) for k in ("world", "data", "ale"))


def env_state(env: Any) -> list | None:
    """The state of an env (or of each env of a SyncVectorEnv), its wrappers' counters included, as plain
    values a checkpoint holds; None for envs simulated in C (Box2D, MuJoCo, Atari), which restart on resume."""
    members = getattr(env, "envs", None) or [env]
    if any(_simulator_handle(e) for e in members):
        return None
    state = []
    for member in members:
        layers = []
        for layer in _layers(member):
            values = {k: _plain(v) for k, v in vars(layer).items()}
            layers.append({k: v for k, v in values.items() if v is not _SKIP})
        state.append(layers)
    return state


def set_env_state(env: Any, state: list | None) -> bool:
    """Put back what `env_state` saved; False (nothing changed) when there is nothing usable to restore."""
    members = getattr(env, "envs", None) or [env]
    if state is None or len(state) != len(members) or any(len(_layers(m)) != len(s) for m, s in zip(members, state)):
        return False
    for member, layers in zip(members, state):
        for layer, values in zip(_layers(member), layers):
            for key, value in values.items():
                setattr(layer, key, _unplain(value, getattr(layer, key, None)))
    return True
