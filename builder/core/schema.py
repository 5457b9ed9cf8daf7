"""Typed, frozen dataclasses as the one schema source.

A recipe class is a frozen dataclass whose fields are declared with `opt(...)`. From it this module
  - loads plain YAML data into instances, collecting *every* problem with its key path (`load`),
  - renders a JSON Schema for editors (`json_schema`),
  - renders the reference tables of docs/recipes.md (`markdown`).

Supported field types: str, int, bool, float, Secret, Literal[...], list[T], dict[str, T], T | None, unions of
differently shaped types (a string or a list, a string or a mapping), nested dataclasses, and
Annotated[T, Check(...)] for validation/conversion.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Annotated, Any, Callable, Literal, Union, get_args, get_origin

from builder.core.errors import Problem
from builder.core.proc import Secret

INVALID = object()


@dataclass(frozen=True, eq=False)
class Check:
    """Validation (and optional conversion) of an already type-checked value.

    parse(value) returns the value to store or raises ValueError(message). json is merged into the JSON Schema;
    choices, if given, is called to list the valid values (registries stay the only list of names).
    """

    parse: Callable[[Any], Any] | None = None
    json: dict = dataclasses.field(default_factory=dict)
    choices: Callable[[], list[str]] | None = None
    describe: str = ""
    show: Callable[[Any], Any] | None = None   # how a stored default is written in YAML (docs, JSON Schema)
    raw: bool = False   # parse() gets the YAML value as it is (no coercion of numbers to strings)


class FieldError(ValueError):
    """Raised by a dataclass's __post_init__ for a problem that belongs to one of its keys."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def opt(default: Any = MISSING, *, doc: str, key: str | None = None, factory: Any = MISSING, example: Any = None):
    """Declare a recipe field: its documentation, YAML key (if not the field name) and default."""
    md = {"doc": doc, "key": key, "example": example}
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def one_of(cls: type) -> tuple[str, ...]:
    """Keys of which exactly one must be given (class attribute ONE_OF)."""
    return getattr(cls, "ONE_OF", ())


# ---------------------------------------------------------------- loading


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _expects(tp: Any) -> set[str]:
    """Which YAML kinds a type accepts (used to pick a union member and to word errors)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _expects(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_expects(a) for a in get_args(tp)))
    if origin is Literal:
        return {_kind(a) for a in get_args(tp)}
    if origin in (list, tuple):
        return {"list"}
    if origin is dict or dataclasses.is_dataclass(tp):
        return {"mapping"}
    return {
        str: {"string", "integer"}, Secret: {"string"}, bool: {"boolean"}, int: {"integer"},
        float: {"number", "integer"}, type(None): {"null"}, Any: {"string", "integer", "number", "boolean",
                                                                  "list", "mapping", "null"},
    }.get(tp, {"string"})


_WORDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
          "list": "a list", "mapping": "a mapping", "null": "nothing"}


def _want(tp: Any) -> str:
    kinds = _expects(tp)
    if kinds >= {"string", "integer"} and "list" not in kinds and "mapping" not in kinds:
        kinds = kinds - {"integer"}
    return " or ".join(_WORDS.get(k, k) for k in sorted(kinds))


class Loader:
    """Turns plain data into dataclass instances; every problem goes to self.problems."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str) -> object:
        self.problems.append(Problem(self.file, path, message))
        return INVALID

    def load(self, tp: Any, value: Any, path: str) -> Any:
        origin = get_origin(tp)
        if origin is Annotated:
            base, *extra = get_args(tp)
            raw = any(isinstance(c, Check) and c.raw for c in extra)
            v = value if raw else self.load(base, value, path)
            if v is INVALID:
                return v
            for check in extra:
                if isinstance(check, Check):
                    if check.choices is not None and v not in check.choices():
                        return self._bad_choice(path, v, check.choices())
                    if check.parse is not None:
                        try:
                            v = check.parse(v)
                        except ValueError as e:
                            return self.problem(path, str(e))
            return v
        if origin in (Union, types.UnionType):
            members = get_args(tp)
            if value is None and type(None) in members:
                return None
            kind = _kind(value)
            for m in members:
                if m is not type(None) and kind in _expects(m):
                    return self.load(m, value, path)
            return self.problem(path, f"expected {_want(tp)}, got {_WORDS.get(kind, kind)}")
        if origin is Literal:
            choices = list(get_args(tp))
            if value not in choices:
                return self._bad_choice(path, value, choices)
            return value
        if origin in (list, tuple):
            if not isinstance(value, list):
                return self.problem(path, f"expected a list, got {_WORDS.get(_kind(value))}")
            item = get_args(tp)[0]
            out = [self.load(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return INVALID if any(v is INVALID for v in out) else tuple(out)
        if origin is dict:
            if not isinstance(value, dict):
                return self.problem(path, f"expected a mapping, got {_WORDS.get(_kind(value))}")
            ktp, vtp = get_args(tp)
            out, bad = {}, False
            for k, v in value.items():
                sub = _join(path, k)
                kk = self.load(ktp, k, sub)
                vv = self.load(vtp, v, sub)
                bad = bad or kk is INVALID or vv is INVALID
                out[kk] = vv
            return INVALID if bad else types.MappingProxyType(out)
        if dataclasses.is_dataclass(tp):
            return self._load_dataclass(tp, value, path)
        return self._load_scalar(tp, value, path)

    def _bad_choice(self, path: str, value: Any, choices: list) -> object:
        names = ", ".join(str(c) for c in choices)
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        extra = f" (did you mean {close[0]}?)" if close else ""
        return self.problem(path, f"{value!r} is not one of: {names}{extra}")

    def _load_scalar(self, tp: Any, value: Any, path: str) -> Any:
        kind = _kind(value)
        if tp is Any:
            return value
        if tp is str and kind in ("string", "integer"):
            return str(value)
        if tp is Secret and kind == "string":
            return Secret(value)
        if tp is bool and kind == "boolean":
            return value
        if tp is int and kind == "integer":
            return value
        if tp is float and kind in ("integer", "number"):
            return float(value)
        return self.problem(path, f"expected {_want(tp)}, got {_WORDS.get(kind, kind)}")

    def _load_dataclass(self, cls: type, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            return self.problem(path, f"expected a mapping, got {_WORDS.get(_kind(value))}")
        fl = fields_of(cls)
        known = {key_of(f): (f, tp) for f, tp in fl}
        before = len(self.problems)
        for k in value:
            if k not in known:
                close = difflib.get_close_matches(str(k), list(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else f"; valid keys: {', '.join(known)}"
                self.problem(_join(path, k), f"unknown key{hint}")
        exclusive = one_of(cls)
        if exclusive:
            given = [k for k in exclusive if k in value]
            if len(given) != 1:
                what = "none" if not given else " and ".join(given)
                self.problem(path, f"give exactly one of {', '.join(exclusive)} (got {what})")
        kwargs = {}
        for k, (f, tp) in known.items():
            if k in value:
                kwargs[f.name] = self.load(tp, value[k], _join(path, k))
            elif f.default is MISSING and f.default_factory is MISSING:
                self.problem(_join(path, k), "missing required key")
        if len(self.problems) > before or any(v is INVALID for v in kwargs.values()):
            return INVALID
        try:
            return cls(**kwargs)
        except FieldError as e:  # cross-field checks in __post_init__, about one key
            return self.problem(_join(path, e.field), str(e))
        except ValueError as e:  # cross-field checks about the whole mapping
            return self.problem(path, str(e))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------- JSON Schema


def json_schema(root: type, title: str) -> dict:
    defs: dict[str, dict] = {}
    top = _js(root, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **top, "$defs": defs}


def _js(tp: Any, defs: dict) -> dict:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        out = dict(_js(base, defs))
        for c in extra:
            if isinstance(c, Check):
                out.update(c.json)
                if c.choices is not None:
                    out["enum"] = list(c.choices())
        return out
    if origin in (Union, types.UnionType):
        return {"anyOf": [_js(a, defs) for a in get_args(tp)]}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (list, tuple):
        return {"type": "array", "items": _js(get_args(tp)[0], defs)}
    if origin is dict:
        k, v = get_args(tp)
        out = {"type": "object", "additionalProperties": _js(v, defs)}
        kp = _js(k, defs)
        if "pattern" in kp:
            out["propertyNames"] = {"pattern": kp["pattern"]}
        return out
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            props, required = {}, []
            for f, ftp in fields_of(tp):
                p = dict(_js(ftp, defs))
                p["description"] = f.metadata.get("doc", "")
                if f.default is not MISSING and not isinstance(f.default, Secret):
                    p["default"] = _show(ftp, f.default)
                props[key_of(f)] = p
                if f.default is MISSING and f.default_factory is MISSING:
                    required.append(key_of(f))
            d = {"type": "object", "description": (tp.__doc__ or "").strip().split("\n\n")[0],
                 "properties": props, "additionalProperties": False}
            if required:
                d["required"] = required
            if one_of(tp):
                d["oneOf"] = [{"required": [k]} for k in one_of(tp)]
            defs[name] = d
        return {"$ref": f"#/$defs/{name}"}
    return {str: {"type": "string"}, Secret: {"type": "string"}, int: {"type": "integer"},
            bool: {"type": "boolean"}, float: {"type": "number"}, type(None): {"type": "null"}}.get(tp, {})


def _show(tp: Any, v: Any) -> Any:
    """A field's default as a user would write it in YAML."""
    if get_origin(tp) is Annotated:
        for c in get_args(tp)[1:]:
            if isinstance(c, Check) and c.show is not None and v is not None:
                return c.show(v)
    return _plain(v)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, types.MappingProxyType):
        return {k: _plain(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v):
        return {key_of(f): _show(t, getattr(v, f.name)) for f, t in fields_of(type(v))
                if getattr(v, f.name) is not None}
    return v


# ---------------------------------------------------------------- Markdown reference


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        for c in extra:
            if isinstance(c, Check) and c.describe:
                return c.describe
            if isinstance(c, Check) and c.choices is not None:
                return " \\| ".join(f"`{x}`" for x in c.choices())
        return type_name(base)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if origin in (list, tuple):
        return f"list of {type_name(get_args(tp)[0])}"
    if origin is dict:
        k, v = get_args(tp)
        return f"map of {type_name(k)} to {type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return {str: "string", Secret: "string (secret)", int: "integer", bool: "boolean", float: "number"}.get(
        tp, str(tp))


def markdown(root: type) -> str:
    seen: list[type] = []

    def collect(tp: Any) -> None:
        origin = get_origin(tp)
        if origin is Annotated:
            collect(get_args(tp)[0])
        elif origin is not None:
            for a in get_args(tp):
                collect(a)
        elif dataclasses.is_dataclass(tp) and tp not in seen:
            seen.append(tp)
            for _, ftp in fields_of(tp):
                collect(ftp)

    collect(root)
    out = []
    for cls in seen:
        out.append(f"### {cls.__name__}\n")
        doc = (cls.__doc__ or "").strip()
        if doc:
            out.append(doc + "\n")
        if one_of(cls):
            out.append("Give exactly one of: " + ", ".join(f"`{k}`" for k in one_of(cls)) + ".\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        for f, ftp in fields_of(cls):
            if f.default is not MISSING:
                d = "" if f.default is None else "`" + json.dumps(_show(ftp, f.default)).replace("|", "\\|") + "`"
            elif f.default_factory is not MISSING:
                d = "(empty)"
            else:
                d = "**required**"
            doc = f.metadata.get("doc", "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{key_of(f)}` | {type_name(ftp)} | {d} | {doc} |")
        out.append("")
    return "\n".join(out)
