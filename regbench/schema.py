"""Turn plain YAML data into frozen dataclasses, or fail naming the key path.

Every params section is a dataclass whose field types say what is allowed; a
field may also carry a ``check`` in its metadata for value ranges. The error
message always has the form ``<path> = <value>: <what is allowed>`` so a typo in
``params.yaml`` points straight at the line to fix.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin


class ParamsError(ValueError):
    """A value in params.yaml is unknown, of the wrong type or out of range."""


def check(predicate: Callable[[Any], bool], allowed: str, **kwargs: Any) -> Any:
    """A dataclass field whose value must satisfy ``predicate``; ``allowed`` explains it."""
    metadata = {"check": (predicate, allowed)}
    return dataclasses.field(metadata=metadata, **kwargs)


def fail(path: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ParamsError(f"params.yaml: {path} = {value!r}: {allowed}")


def positive_int(value: int) -> bool:
    return value > 0


# YAML's .inf is a float like any other: a bound that means "a number" must also refuse infinity
# (a learning rate of .inf trains NaNs; a timeout of .inf never times out). NaN fails every comparison.
def non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


# Names become folder names (results/train/<experiment>-<variant>), DVC stage names (train@...), MLflow
# experiment names and dotted claim ids: one pattern keeps each of them a plain name and never a path.
NAME_PATTERN = re.compile(r"[a-z0-9_]+")
NAME_RULE = "a name of lowercase letters, digits and underscores ([a-z0-9_]+)"
SEED_LIMIT = 2**32  # NumPy's and TensorFlow's seeds are 32-bit unsigned: [0, 2**32)


def check_name(path: str, value: Any, source: str = "params.yaml") -> str:
    """An experiment or variant name; anything else (``../x``, ``a-b``, ``A``) fails naming ``path``."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ParamsError(f"{source}: {path} = {value!r}: must be {NAME_RULE}")
    return value


def check_claim_id(path: str, value: Any, source: str = "claims.yaml") -> str:
    """A claim id, ``<experiment>.<name>``, each part a name (``check_name``)."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(NAME_PATTERN.fullmatch(part) for part in parts):
        raise ParamsError(f"{source}: {path} = {value!r}: must be <experiment>.<name>, each part {NAME_RULE}")
    return value


def rate(value: float) -> bool:
    return 0.0 <= value < 1.0


def build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass ``cls`` from ``data``; every error names ``path.<key>``."""
    if not isinstance(data, Mapping):
        fail(path, data, f"must be a mapping with keys {sorted(_field_names(cls))}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        fail(_join(path, key), data[key], f"unknown key; allowed keys here: {sorted(fields)}")
    values = {}
    for name, field in fields.items():
        key_path = _join(path, name)
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                fail(key_path, None, "missing; this key is required")
            continue
        value = convert(hints[name], data[name], key_path)
        if "check" in field.metadata:
            predicate, allowed = field.metadata["check"]
            if value is not None and not predicate(value):
                fail(key_path, data[name], allowed)
        values[name] = value
    try:
        return cls(**values)
    except ParamsError:
        raise
    except ValueError as error:
        # A rule across fields (``__post_init__``): name the section it concerns.
        fail(path, dict(data), str(error))


def convert(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the type ``hint`` and return it in its typed form."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        others = [option for option in options if option is not type(None)]
        if len(others) == 1:
            # ``X | None``: X's own error, which names the key inside a nested section (decay.steps).
            return convert(others[0], value, path)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, value, path)
            except ParamsError as error:
                errors.append(str(error).split(": ", 2)[-1])
        fail(path, value, " or ".join(errors))
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            fail(path, value, f"must be one of {list(allowed)}")
        return value
    if origin is tuple:
        item_type = get_args(hint)[0]
        if not isinstance(value, list | tuple):
            fail(path, value, f"must be a list of {_type_name(item_type)}")
        return tuple(convert(item_type, item, f"{path}[{i}]") for i, item in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or origin is Mapping:
        key_type, item_type = get_args(hint)
        if not isinstance(value, Mapping):
            fail(path, value, f"must be a mapping of names to {_type_name(item_type)}")
        return types.MappingProxyType(
            {
                convert(key_type, key, path): convert(item_type, item, _join(path, str(key)))
                for key, item in value.items()
            }
        )
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            fail(path, value, "must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(path, value, "must be an integer")
        return value
    if hint is float:
        if isinstance(value, str) and _number_text(value):
            # PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent: 1e4 stays text.
            fail(path, value, f"must be a number; YAML reads {value} as text: write {float(value)!r} instead")
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(path, value, "must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            fail(path, value, "must be a string")
        return value
    raise TypeError(f"schema.convert does not know the type {hint!r} (at {path})")


def to_plain(obj: Any) -> Any:
    """The inverse of ``build``: plain dicts, lists and scalars (for JSON and MLflow)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(item) for item in obj]
    return obj


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole (they are one setting)."""
    if not isinstance(data, Mapping):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, _join(prefix, str(key))))
    return flat


def _number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))
