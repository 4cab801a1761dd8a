"""Typed configs: presets, `--set key=value` overrides and field documentation.

A paper's `Config` is a frozen dataclass. Each field carries a docstring (a string literal on the line
after it), which `field_docs` reads from the source so that `seminal show` can print it, and, where not
every value of its type is meaningful, its valid range, declared once beside the type:

    epochs: PosInt = 20               # Annotated[int, Range(gt=0)]
    lr: PosFloat = 1e-3
    p_hidden: Annotated[float, Range(gt=0, le=1)] = 0.5
    hidden: Sizes = (64, 64)          # a non-empty tuple of positive ints

`check_ranges` checks every field of a config in one place: presets, `--set` overrides and resumed
configs all pass through it, so a meaningless value is one line naming the field and its range.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import textwrap
import types
import typing
from typing import Annotated, Any, Literal, Union

from seminal.core.errors import SeminalError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of a number (or of each number of a tuple), declared with `Annotated[T, Range(...)]`."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    nonempty: bool = False
    """For tuples: at least one element."""

    def __str__(self) -> str:
        lo = f"({self.gt:g}" if self.gt is not None else f"[{self.ge:g}" if self.ge is not None else None
        hi = f"{self.lt:g})" if self.lt is not None else f"{self.le:g}]" if self.le is not None else None
        if lo and hi:
            text = f"in {lo}, {hi}"
        elif lo:
            text = (">" if lo[0] == "(" else ">=") + f" {lo[1:]}"
        elif hi:
            text = ("<" if hi[-1] == ")" else "<=") + f" {hi[:-1]}"
        else:
            text = "any"
        return f"non-empty, each {text}" if self.nonempty else text

    def contains(self, x: float) -> bool:
        try:
            x = float(x)
        except (TypeError, ValueError):
            return False
        return not (x != x or (self.gt is not None and not x > self.gt) or (self.ge is not None and not x >= self.ge)
                    or (self.lt is not None and not x < self.lt) or (self.le is not None and not x <= self.le))

    def problem(self, value: Any) -> str | None:
        """None when `value` is valid, else what is wrong with it."""
        if value is None:  # an Optional field's None is checked by its type, not its range
            return None
        if isinstance(value, (tuple, list)):
            if self.nonempty and not value:
                return "must not be empty"
            bad = [v for v in value if not self.contains(v)]
            return f"every value must be {str(self).removeprefix('non-empty, each ')}; {bad[0]!r} is not" if bad \
                else None
        return None if self.contains(value) else f"must be {self}"


PosInt = Annotated[int, Range(gt=0)]
NonNegInt = Annotated[int, Range(ge=0)]
PosFloat = Annotated[float, Range(gt=0)]
NonNegFloat = Annotated[float, Range(ge=0)]
Prob = Annotated[float, Range(ge=0, le=1)]
"""A probability or a fraction, in [0, 1] (discounts, lambdas, retain probabilities...)."""
Sizes = Annotated[tuple[int, ...], Range(gt=0, nonempty=True)]
"""Layer widths: a non-empty tuple of positive ints."""


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _strip(typ: Any) -> Any:
    return typing.get_args(typ)[0] if typing.get_origin(typ) is Annotated else typ


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (without their `Range` annotations)."""
    return {k: _strip(v) for k, v in _hints(cls).items()}


def field_ranges(cls: type) -> dict[str, Range]:
    """The declared `Range` of each field that has one."""
    out = {}
    for key, typ in _hints(cls).items():
        if typing.get_origin(typ) is Annotated:
            ranges = [a for a in typing.get_args(typ)[1:] if isinstance(a, Range)]
            if ranges:
                out[key] = ranges[0]
    return out


def check_ranges(cfg: Any) -> Any:
    """Raise a one-line SeminalError for the first field outside its declared range; then the config's own
    `validate()` (checks across fields), if it has one. Returns `cfg`."""
    for key, rng in field_ranges(type(cfg)).items():
        problem = rng.problem(getattr(cfg, key))
        if problem:
            raise SeminalError(f"{key}={getattr(cfg, key)!r}: {problem} (`seminal show` lists every key's range)")
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def coerce(text: str, typ: Any, key: str = "value") -> Any:
    """Parse `text` as a value of type `typ`, or raise SeminalError naming the expected type."""
    typ = _strip(typ)
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    try:
        if typ is bool:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if typ is int:
            number = float(text)  # accepts 1e5 and 100_000
            if not number.is_integer():
                raise ValueError
            return int(number)
        if typ in (float, str):
            return typ(text)
        if origin is Literal:
            for option in args:
                if str(option) == text:
                    return option
            raise SeminalError(f"{key}={text!r}: expected one of {', '.join(map(str, args))}")
        if origin in (Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            if type(None) in args and text.strip().lower() in {"none", "null", ""}:
                return None
            for option in non_none:
                try:
                    return coerce(text, option, key)
                except SeminalError:
                    continue
            raise ValueError
        if origin in (tuple, list):
            parts = [p for p in text.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",")]
            parts = [p.strip() for p in parts if p.strip()]
            if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
                item_types = [args[0]] * len(parts)
            elif origin is tuple:
                if len(parts) != len(args):
                    raise SeminalError(f"{key}={text!r}: expected {len(args)} comma-separated values")
                item_types = list(args)
            else:
                item_types = [args[0] if args else str] * len(parts)
            values = [coerce(p, t, key) for p, t in zip(parts, item_types)]
            return tuple(values) if origin is tuple else values
    except SeminalError:
        raise
    except (ValueError, TypeError):
        pass
    else:
        if origin is None and typ not in (bool, int, float, str):
            raise SeminalError(f"{key}: this field's type {typ!r} cannot be set from the command line")
    name = getattr(typ, "__name__", None) or str(typ).replace("typing.", "")
    raise SeminalError(f"{key}={text!r}: expected a value of type {name}")


def apply_overrides(cfg: Any, pairs: list[str] | None) -> Any:
    """Return a copy of the frozen dataclass `cfg` with `key=value` pairs applied (typed, checked)."""
    if not pairs:
        return cfg
    types_ = field_types(type(cfg))
    changes: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SeminalError(f"--set {pair!r}: write it as key=value, e.g. --set lr=0.01")
        key, text = pair.split("=", 1)
        key = key.strip()
        if key not in types_:
            close = difflib.get_close_matches(key, list(types_), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SeminalError(
                f"unknown config key '{key}'{hint}; valid keys: {', '.join(types_)}"
            )
        changes[key] = coerce(text, types_[key], key)
    return check_ranges(dataclasses.replace(cfg, **changes))


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config from `to_dict` output, restoring tuples; unknown keys are an error."""
    types_ = field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise SeminalError(f"config.json has keys this version does not know: {sorted(unknown)}")
    values = {}
    for key, value in data.items():
        if isinstance(value, list) and typing.get_origin(types_[key]) is tuple:
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[key] = value
    return check_ranges(cls(**values))


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source ("" where there is none).

    Fields inherited from a base dataclass (a paper's Config extending an earlier paper's) keep the
    base's docstrings unless the subclass documents them again.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update({k: v for k, v in _own_field_docs(klass).items() if v or k not in docs})
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                doc = " ".join(nxt.value.value.split())
            docs[node.target.id] = doc
    return docs
