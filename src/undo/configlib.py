"""The config machinery, independent of any schema: errors, checks, typed loading.

A leaf of the package (it imports nothing of undo): every layer raises `ConfigError` and
validates with `check`, and `from_dict` builds any config dataclass from a plain mapping,
checking each value against the field's annotation. The schemas are in `undo.config`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A user error in a config file or override: the message says what to fix."""


class RegistryError(KeyError):
    """An unknown name asked of a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def check(cond: bool, key: str, value: Any, valid: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': got {value!r}; valid: {valid}")


def type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} fields"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        valid = " or ".join(type_name(a) for a in args)
        raise ConfigError(f"config key '{key}': got {value!r}; valid: {valid}")
    if origin is Literal:
        check(value in get_args(tp), key, value, type_name(tp))
        return value
    if dataclasses.is_dataclass(tp):
        check(isinstance(value, dict), key, value, type_name(tp))
        return build(tp, value, key)
    if origin is list:
        check(isinstance(value, list), key, value, "a list")
        (item,) = get_args(tp) or (Any,)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        check(isinstance(value, dict), key, value, "a mapping")
        kt, vt = get_args(tp) or (Any, Any)
        return {coerce(k, kt, key): coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        check(isinstance(value, bool), key, value, "true or false")
        return value
    if tp is int:
        check(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        return value
    if tp is float:
        check(isinstance(value, (int, float)) and not isinstance(value, bool), key, value,
               "a number")
        return float(value)
    if tp is str:
        # YAML reads `+` as a string but `1e-3` as a string too in YAML 1.1: accept numbers
        # only where a string is meant if the user quoted them.
        check(isinstance(value, str), key, value, "a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module


def build(cls: type, raw: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            valid = ", ".join(sorted(fields)) or "none (this takes no options)"
            raise ConfigError(f"unknown config key '{key}'; valid keys here: {valid}")
        select = fields[k].metadata.get("select")
        if select is not None:  # a section whose class depends on its content
            check(isinstance(v, dict), key, v, "a mapping")
            kwargs[k] = build(select(v, key), v, key)
        else:
            kwargs[k] = coerce(v, hints[k], key)
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def from_dict(raw: dict, cls: type) -> Any:
    """Build and validate a config dataclass from a plain mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of keys, got {type(raw).__name__}")
    return build(cls, raw, "")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# A field with this metadata enters cache keys only when it differs from its default, so
# adding an option to a section leaves every existing stage folder where it was.
KEYED_IF_SET = {"key": "if_set"}


def key_of(section: Any) -> dict:
    """A config section as a stage's cache key holds it: `to_dict`, less the fields marked
    `KEYED_IF_SET` that hold their default."""
    out = to_dict(section)
    for f in dataclasses.fields(section):
        if f.metadata.get("key") != "if_set":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        if getattr(section, f.name) == default:
            del out[f.name]
    return out


def flatten(obj: Any, prefix: str = "", *, lists: bool = False, sep: str = ".") -> dict[str, Any]:
    """Nested mappings as one level, `a.b.c` -> leaf (with `lists`, list items too, as
    `a[0]`). An empty mapping is a leaf, so a key that holds `{}` still compares."""
    if isinstance(obj, dict) and obj:
        return {k2: v2 for k, v in obj.items()
                for k2, v2 in flatten(v, f"{prefix}{sep}{k}" if prefix else str(k),
                                      lists=lists, sep=sep).items()}
    if lists and isinstance(obj, list) and obj:
        return {k2: v2 for i, v in enumerate(obj)
                for k2, v2 in flatten(v, f"{prefix}[{i}]", lists=lists, sep=sep).items()}
    return {prefix: obj}


ABSENT = "(absent)"  # a key that one of the mappings `differing` compares lacks


def differing(mappings: Sequence[dict], ignore: Collection[str] = ()) -> dict[str, list[Any]]:
    """Flattened keys (`flatten`) whose value is not the same in every mapping -> the
    value in each (`ABSENT` where a mapping lacks the key), in first-seen order; keys in
    `ignore` left out, each with the keys under it."""
    flat = [flatten(m) for m in mappings]
    keys = dict.fromkeys(k for f in flat for k in f
                         if not any(k == i or k.startswith(f"{i}.") for i in ignore))
    return {k: [f.get(k, ABSENT) for f in flat] for k in keys
            if any(f.get(k, ABSENT) != flat[0].get(k, ABSENT) for f in flat[1:])}


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`pretrain.steps=200` -> ("pretrain.steps", 200); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. seed=3)")
    key, _, val = text.partition("=")
    try:
        value = yaml.safe_load(val) if val != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({yaml_error(e)})"
                          ) from None
    if isinstance(value, str) and looks_numeric(value):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string
    return key.strip(), fix_yaml_numbers(value)  # also inside lists: lrs=[1e-4, 5e-5]


def yaml_error(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line (its own text spans several, with a caret drawing)."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    return " ".join(f"{where}{what}{f', {context}' if context else ''}".split())


def looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def fix_yaml_numbers(node: Any) -> Any:
    """PyYAML follows YAML 1.1, where `1e-3` is a string: read such scalars as floats."""
    if isinstance(node, dict):
        return {k: fix_yaml_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [fix_yaml_numbers(v) for v in node]
    if isinstance(node, str) and looks_numeric(node) and any(c in node for c in "eE."):
        return float(node)
    return node


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping (YAML 1.1 numbers fixed); one ConfigError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({yaml_error(e)})") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    return fix_yaml_numbers(loaded)


# The configs shipped inside the package (`undo configs`); a checkout's top-level
# `configs/` links here.
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """Shipped config name ("arithmetic/tiny") -> its file."""
    return {p.relative_to(SHIPPED_CONFIGS).with_suffix("").as_posix(): p
            for p in sorted(SHIPPED_CONFIGS.rglob("*.yaml"))}


def shipped_config(name: str) -> Path | None:
    """The shipped config `name` names: "text/tiny", "text/tiny.yaml" or the README's
    "configs/text/tiny.yaml" (so those paths work outside a checkout too); None if none."""
    key = name.removeprefix("./").removeprefix("configs/").removesuffix(".yaml")
    return shipped_configs().get(key.removesuffix(".yml"))


def config_path(path: str | Path) -> Path:
    """A config file, or a shipped config by name; a ConfigError naming both otherwise."""
    p = Path(path)
    if p.is_file():
        return p
    found = shipped_config(str(path))
    if found is None:
        raise ConfigError(f"config file not found: {p}; valid: a YAML file, or a shipped "
                          f"config name (`undo configs` lists them, e.g. arithmetic/tiny)")
    return found
