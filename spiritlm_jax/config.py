"""The one config system: dataclasses are the schema, YAML files fill them, `key=value` overrides them.

    cfg = load_config(TrainConfig, "configs/tiny.yaml", ["model.num_layers=4", "optim.lr=1e-3"])
    cfg = parse_cli(TrainConfig, sys.argv[1:], prog="python -m spiritlm_jax.train")  # every CLI

Every CLI goes through `parse_cli`: `--config FILE.yaml`, then `key=value` (or `--key value`,
`--key=value`, `--flag` / `--no-flag` for booleans; dashes read as underscores; a list field given
as `--key v` several times collects the values in order), and `--help` lists every key with its
type, default and one-line doc (the field's `# comment` in the schema, or `help` metadata).

Every key is checked against the schema; an unknown key or a value of the wrong type raises
`ConfigError` naming the dotted key, before anything expensive happens. Values in overrides are
parsed as YAML scalars/lists (`x=3` is an int, `x=[1,2]` a list, `x=null` None).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, missing or has a value of the wrong type."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` checked (and minimally converted) against type annotation `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) mapping; unspecified fields keep their defaults."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} (valid keys under "
            f"{prefix.rstrip('.') or cls.__name__}: {', '.join(sorted(names))})"
        )
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    kwargs = {}
    for k, v in data.items():
        # a partial section updates that field's default (e.g. the tiny demo model), not the schema's
        if isinstance(v, dict) and dataclasses.is_dataclass(defaults.get(k)):
            v = merge(to_dict(defaults[k]), v)
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    try:  # schemas validate themselves in __post_init__ (ValueError); TypeError: a missing field
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(_keyed_message(cls, prefix, str(e))) from None


_KEY_AT_START = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(.*)", re.S)


def _keyed_message(cls: type, prefix: str, msg: str) -> str:
    """A schema's own error with its key written out in full: "every must be >= 1" raised by the
    `checkpoint` section reads "checkpoint.every must be >= 1", the key as a user types it."""
    m = _KEY_AT_START.fullmatch(msg)
    if m and _field_type(cls, m.group(1)) is not None:
        return f"{prefix}{m.group(1)}{m.group(2)}"
    return f"{prefix.rstrip('.')}: {msg}" if prefix else msg


def _as_typed(msg: str, typed: dict[str, str]) -> str:
    """`msg` with the dotted key it starts with spelled as the user typed it (e.g. `--max-new-tokens`)."""
    for key in sorted(typed, key=len, reverse=True):
        if msg.startswith(key) and not msg[len(key) : len(key) + 1].replace("_", "a").isalnum():
            return typed[key] + msg[len(key) :]
    return msg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) that `from_dict` reads back and YAML can store."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`["a.b=3", "c=[1,2]"]` -> `{"a": {"b": 3}, "c": [1, 2]}` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from None
        _set_dotted(tree, key, value)
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls`, then the YAML file at `path`, then `key=value` overrides."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# Command lines: one parser for every CLI of the project.


class HelpRequested(Exception):
    """`--help` was given; the message is the full help text."""


_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*#\s*(.+?)\s*$")


def field_docs(cls: type) -> dict[str, str]:
    """{field: one-line doc}: the field's `help` metadata, else the `# comment` on its line."""
    docs: dict[str, str] = {}
    try:
        for line in inspect.getsource(cls).splitlines():
            m = _COMMENT.match(line)
            if m:
                docs.setdefault(m.group(1), m.group(2))
    except (OSError, TypeError):
        pass
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = f.metadata["help"]
    return docs


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def describe_keys(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, str, str]]:
    """[(dotted key, type, default, doc)] for every leaf field of schema `cls` (nested sections
    expanded, with the defaults the section's own default gives them)."""
    rows = []
    hints = _hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default_of(f)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe_keys(tp, prefix + f.name + ".", default if dataclasses.is_dataclass(default) else None)
            continue
        shown = "(required)" if default is dataclasses.MISSING else json.dumps(to_dict(default))
        rows.append((prefix + f.name, _pretty_type(tp), shown, docs.get(f.name, "")))
    return rows


def _pretty_type(tp: Any) -> str:
    """`Optional[int]`, `Literal['a', 'b']`, `tuple[int, int]`: what --help shows."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return re.sub(r"\btyping\.|\bbuiltins\.", "", str(tp)).replace("NoneType", "None")


def help_text(cls: type, prog: str, description: str = "") -> str:
    """Usage, the description, and every key with its type, default and doc."""
    rows = describe_keys(cls)
    width = max([len(r[0]) for r in rows] + [10])
    lines = [f"usage: {prog} [--config FILE.yaml] [key=value | --key value ...]", ""]
    if description:
        lines += [description.strip(), ""]
    lines.append("keys (type, default):")
    for key, tp, default, doc in rows:
        lines.append(f"  {key:<{width}}  {tp} = {default}" + (f"\n  {'':<{width}}  {doc}" if doc else ""))
    return "\n".join(lines)


def _field_type(cls: type, dotted: str) -> Any:
    """Annotation of dotted key `dotted` in schema `cls` (None when there is no such key)."""
    tp: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = _hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _is_list_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_is_list_type(a) for a in typing.get_args(tp) if a is not type(None))
    return origin in (list, tuple) or tp in (list, tuple)


def _is_bool_type(tp: Any) -> bool:
    if tp is bool:
        return True
    origin = typing.get_origin(tp)
    return origin in (Union, types.UnionType) and bool in typing.get_args(tp)


def parse_cli(cls: type[T], argv: Sequence[str], prog: str, description: str = "", config_flag: bool = True) -> T:
    """Schema `cls` from a command line (see the module docstring). Raises `HelpRequested` for
    `--help` and `ConfigError` naming the key for anything unknown or ill-typed."""
    argv = list(argv)
    config_path = None
    overrides: list[str] = []
    typed: dict[str, str] = {}  # schema key -> the option as typed, when it is spelled otherwise
    lists: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            raise HelpRequested(help_text(cls, prog, description))
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            key = name.replace("-", "_")
            if name != key:
                typed[key] = f"--{name}"
            if config_flag and key == "config":
                if not eq:
                    if i >= len(argv):
                        raise ConfigError("--config needs a YAML file")
                    value, i = argv[i], i + 1
                config_path = value
                continue
            tp = _field_type(cls, key)
            if tp is None and key.startswith("no_") and _is_bool_type(_field_type(cls, key[3:])) and not eq:
                overrides.append(f"{key[3:]}=false")
                continue
            if tp is None:
                raise ConfigError(f"unknown option --{name} (see --help for the keys of {prog})")
            if not eq:
                if _is_bool_type(tp) and (i >= len(argv) or argv[i].startswith("--") or "=" in argv[i]):
                    overrides.append(f"{key}=true")
                    continue
                if i >= len(argv):
                    raise ConfigError(f"option --{name} needs a value")
                value, i = argv[i], i + 1
            if _is_list_type(tp) and (_is_str_type(_list_item_type(tp)) or not value.lstrip().startswith("[")):
                lists.setdefault(key, []).append(value)
                continue
            overrides.append(f"{key}={value}")
        elif "=" in arg:
            overrides.append(arg)
        else:
            raise ConfigError(f"unexpected argument {arg!r}: give key=value or --key value (see --help)")
    data: dict[str, Any] = read_yaml(config_path) if config_path is not None else {}
    raw = [o for o in overrides if _is_str_type(_field_type(cls, o.split("=", 1)[0].strip()))]
    data = merge(data, parse_overrides([o for o in overrides if o not in raw]))
    for item in raw:  # a string field keeps its text as typed ("[Text]hi", "a: b", "007")
        key, value = item.split("=", 1)
        _set_dotted(
            data, key.strip(), None if value == "null" and _is_optional(_field_type(cls, key.strip())) else value
        )
    for key, values in lists.items():
        item_tp = _list_item_type(_field_type(cls, key))
        _set_dotted(data, key, [v if _is_str_type(item_tp) else _scalar(v) for v in values])
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(_as_typed(str(e), typed)) from None


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _is_str_type(tp: Any) -> bool:
    """`str` or `Optional[str]` (a field whose command-line value is taken verbatim)."""
    if tp is str:
        return True
    if _is_optional(tp):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        return rest == [str]
    return False


def _list_item_type(tp: Any) -> Any:
    if _is_optional(tp):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    args = typing.get_args(tp)
    return args[0] if args else Any


def _scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def run_cli(
    cls: type[T],
    argv: Optional[Sequence[str]],
    prog: str,
    work: typing.Callable[[T], int],
    description: str = "",
    parse: Optional[typing.Callable[[Sequence[str]], T]] = None,
) -> int:
    """The `main` of every CLI: parse `argv` into `cls`, run `work(cfg)`, map errors to exit codes
    (help: 0, config error: 2 with one line on stderr). `parse` replaces `parse_cli` for a CLI that
    pre-processes its arguments (it must raise HelpRequested / ConfigError the same way)."""
    try:
        argv = sys.argv[1:] if argv is None else argv
        cfg = parse(argv) if parse is not None else parse_cli(cls, argv, prog, description)
    except HelpRequested as e:
        print(e)
        return 0
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    return work(cfg)
