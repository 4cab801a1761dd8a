from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from seminal.core.config import PosFloat, Prob, apply_overrides, check_ranges, coerce, field_docs, from_dict, to_dict
from seminal.core.errors import SeminalError


@dataclass(frozen=True)
class Toy:
    lr: float = 0.1
    """Learning rate."""
    epochs: int = 3
    """Passes."""
    act: Literal["relu", "tanh"] = "relu"
    sizes: tuple[int, ...] = (4, 4)
    flag: bool = False
    limit: int | None = None


def test_coerce_types():
    assert coerce("0.5", float) == 0.5
    assert coerce("1e5", int) == 100000 and isinstance(coerce("1e5", int), int)
    assert coerce("100_000", int) == 100000
    assert coerce("true", bool) is True and coerce("0", bool) is False
    assert all(coerce(t, bool) is True for t in ("1", "true", "True", "yes", "on"))  # every spelling `show` allows
    assert all(coerce(t, bool) is False for t in ("0", "false", "False", "no", "off"))
    assert coerce("tanh", Literal["relu", "tanh"]) == "tanh"
    assert coerce("8,16,32", tuple[int, ...]) == (8, 16, 32)
    assert coerce("none", int | None) is None and coerce("7", int | None) == 7


@pytest.mark.parametrize("text,typ", [("abc", float), ("2.5", int), ("maybe", bool), ("gelu", Literal["relu", "tanh"]),
                                      ("1,x", tuple[int, ...])])
def test_coerce_rejects_bad_values(text, typ):
    with pytest.raises(SeminalError):
        coerce(text, typ)


def test_overrides_apply_and_keep_original():
    base = Toy()
    new = apply_overrides(base, ["lr=0.01", "sizes=1,2,3", "flag=yes"])
    assert (new.lr, new.sizes, new.flag) == (0.01, (1, 2, 3), True)
    assert base.lr == 0.1  # frozen original untouched


def test_unknown_key_suggests_closest():
    with pytest.raises(SeminalError, match="did you mean 'epochs'"):
        apply_overrides(Toy(), ["epoch=3"])


def test_override_needs_equals():
    with pytest.raises(SeminalError, match="key=value"):
        apply_overrides(Toy(), ["lr"])


def test_dict_round_trip_restores_tuples():
    cfg = Toy(sizes=(1, 2))
    assert from_dict(Toy, to_dict(cfg)) == cfg


def test_field_docs_read_from_source():
    docs = field_docs(Toy)
    assert docs["lr"] == "Learning rate." and docs["epochs"] == "Passes." and docs["act"] == ""


@dataclass(frozen=True)
class ToyChild(Toy):
    extra: int = 1
    """Only in the child."""


def test_field_docs_inherit_from_base_config():
    docs = field_docs(ToyChild)
    assert docs["lr"] == "Learning rate." and docs["extra"] == "Only in the child."


@dataclass(frozen=True)
class Bounded:
    p: Prob = 0.5
    """A probability, in [0, 1]."""
    lr: PosFloat = 0.1
    warmup: int = 1
    steps: int = 4

    def validate(self) -> None:
        if self.warmup > self.steps:
            raise SeminalError(f"warmup={self.warmup} must be <= steps={self.steps}")


@pytest.mark.parametrize("pair,pattern", [("p=1.5", r"p=1.5: must be in \[0, 1\]"), ("p=-0.1", "must be in"),
                                          ("lr=nan", "lr=nan: must be > 0"), ("p=nan", "must be in")])
def test_ranges_check_both_ends_and_refuse_nan(pair, pattern):
    with pytest.raises(SeminalError, match=pattern):
        apply_overrides(Bounded(), [pair])
    assert apply_overrides(Bounded(), ["p=1", "p=0"]).p == 0.0  # both ends of [0, 1] are in


def test_cross_field_validate_runs_for_overrides_presets_and_resumed_configs():
    with pytest.raises(SeminalError, match="warmup=5 must be <= steps=4"):
        apply_overrides(Bounded(), ["warmup=5"])
    with pytest.raises(SeminalError, match="warmup=9"):
        check_ranges(Bounded(warmup=9))
    with pytest.raises(SeminalError, match="warmup=9"):
        from_dict(Bounded, {"warmup": 9})


def test_a_resumed_config_json_is_range_checked_too():
    with pytest.raises(SeminalError, match="p=3: must be in"):
        from_dict(Bounded, {"p": 3})
    with pytest.raises(SeminalError, match="lr=-1: must be > 0"):
        from_dict(Bounded, {"lr": -1})
