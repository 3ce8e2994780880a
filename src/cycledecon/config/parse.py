"""The one config parser: a plain YAML mapping to a frozen dataclass, naming the key of any problem.

Every section of config.yaml is parsed with it, by the Snakefile, the CLI and the library alike, so
they reject the same mistakes with the same dotted key (e.g. ``train.optim.steps: expected an
integer, got 'many'``).
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from cycledecon.errors import CycledeconError


def deep_update(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested mappings key by key (neither input is changed): how a
    few settings are changed in a config without restating its sections."""
    out = dict(base)
    for key, value in extra.items():
        both_mappings = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = deep_update(out[key], value) if both_mappings else value
    return out


def odd_sizes(sizes: Sequence[int]) -> bool:
    """Whether every size is odd and positive, as a box centred on a voxel needs (PSFs, kernels)."""
    return all(int(s) >= 1 and int(s) % 2 == 1 for s in sizes)


def plain(value: Any) -> Any:
    """A dataclass's fields as nested dicts and lists (tuples as lists), as YAML would write them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def parse_section(cls: type, values: Any, prefix: str) -> Any:
    """Build the (frozen) dataclass `cls` from a plain config mapping, filling defaults.

    Supports fields typed bool, int, float, str, Literal, ``X | None``, fixed-length tuples,
    ``tuple[X, ...]`` and nested dataclasses. Lists become tuples and ints become floats where a
    float is expected; an unknown key or a wrong type raises CycledeconError naming the dotted key.
    """
    if not isinstance(values, Mapping):
        raise CycledeconError(f"{prefix}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise CycledeconError(f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(names)})")
    return cls(**{k: _convert(hints[k], v, f"{prefix}.{k}") for k, v in values.items()})


def _convert(hint: Any, value: Any, path: str) -> Any:
    """Check `value` against a type hint (see parse_section)."""
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, value, path)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path)
    if origin is Literal:
        if value not in args:
            raise CycledeconError(f"{path}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        variable = len(args) == 2 and args[1] is Ellipsis
        if not isinstance(value, (list, tuple)) or not (variable or len(value) == len(args)):
            raise CycledeconError(f"{path}: expected a list of {'values' if variable else len(args)}, got {value!r}")
        item_hints = [args[0]] * len(value) if variable else args
        return tuple(_convert(h, v, path) for h, v in zip(item_hints, value))
    expected = {bool: (bool, "true or false"), int: (int, "an integer"),
                float: ((int, float), "a number"), str: (str, "a string")}  # fmt: skip
    if hint not in expected:
        raise TypeError(f"unsupported config type {hint} at {path}")
    types_ok, words = expected[hint]
    if not isinstance(value, types_ok) or (hint is not bool and isinstance(value, bool)):
        raise CycledeconError(f"{path}: expected {words}, got {value!r}")
    return float(value) if hint is float else value


def check_ranges(config: Any, prefix: str, checks: list[tuple[str, bool]]) -> None:
    """Raise for the first (dotted key, is valid) pair that is not valid, naming key and value."""
    for key, ok in checks:
        if not ok:
            raise CycledeconError(f"{prefix}.{key}: invalid value {operator.attrgetter(key)(config)!r}")
