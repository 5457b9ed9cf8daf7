"""Recipes: YAML -> one frozen, validated Recipe.

load() reads the file (and the files it `extends:`), applies `--set KEY=VALUE` overrides, checks everything and
raises RecipeError listing *every* problem with file and key path. Nothing runs before a recipe is whole.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import checks, schema
from .bootstrap import AUTO, METHODS, MethodName
from .checks import Epoch, Hostname, IfName, IPAddress, Name
from .errors import InputError, Problem, RecipeError
from .families import DistroName, family_of
from .hooks import PHASES, Hooks
from .schema import opt
from .steps.devices import Device, Preset
from .steps.files import FileSpec
from .steps.init import SHIMS, ShimName
from .steps.network import Interface
from .steps.password import RootPassword
from .targets import Targets, tarball

PROJECT = Path(__file__).resolve().parent.parent
SHIPPED_HOOKS = PROJECT / "hooks"


@dataclass(frozen=True)
class Bootstrap:
    """How the base system is made."""

    method: MethodName = opt("auto", doc="bootstrap method; auto picks the best one installed for the distro")
    mirror: str = opt("auto", doc="package mirror URL; auto: the mirror the host's own apt uses")
    variant: str = opt("minbase", doc="package set size (minbase, required, important, standard, buildd ...; "
                                      "what each method supports)")
    packages: tuple[str, ...] = opt((), doc="extra packages to install")
    components: tuple[str, ...] = opt(("main",), doc="archive components (Debian: main, contrib, non-free ...)")


@dataclass(frozen=True)
class Recipe:
    """A recipe: what to build and what to produce from it."""

    name: Name = opt(doc="name of the build; outputs go to OUTPUT/NAME/")
    distro: DistroName = opt(doc="distribution")
    release: str = opt(doc="release (Debian: bookworm, trixie ...)")
    arch: str = opt("amd64", doc="architecture, as the distro spells it")
    bootstrap: Bootstrap = opt(factory=Bootstrap, doc="base system")
    hostname: Hostname | None = opt(None, doc="host name (default: name)")
    domain: Hostname | None = opt(None, doc="DNS domain; adds the FQDN to /etc/hosts")
    network: dict[IfName, Interface] = opt(factory=dict, doc="network interfaces by name")
    dns: tuple[IPAddress, ...] = opt((), doc="name servers for /etc/resolv.conf")
    search: tuple[Hostname, ...] = opt((), doc="DNS search domains")
    root_password: RootPassword = opt(RootPassword(lock=True), doc="root's password (default: locked)")
    devices: Preset | tuple[Device, ...] = opt("container", doc="device nodes: a preset name or a list")
    init: ShimName | None = opt(None, doc="init shim (default: the distro family's)")
    files: tuple[FileSpec, ...] = opt((), doc="files to place in the root")
    hooks: Hooks = opt(factory=Hooks, doc="commands at fixed points of the build")
    targets: Targets = opt(factory=lambda: Targets(tarball=tarball.TarballOptions()), doc="outputs (default: a tarball)")
    epoch: Epoch | None = opt(None, doc="SOURCE_DATE_EPOCH for the build (default: $SOURCE_DATE_EPOCH, else the "
                                        "mirror's Release date, so rebuilds are byte-identical)")
    extends: str | None = opt(None, doc="a recipe this one is based on (path relative to this file); mappings "
                                        "merge key by key, everything else is replaced")

    def __post_init__(self) -> None:
        if self.hostname is None:
            try:
                object.__setattr__(self, "hostname", checks.hostname(self.name))
            except ValueError:
                raise ValueError(f"name {self.name!r} is not a valid host name; set hostname") from None
        if self.init is None:
            object.__setattr__(self, "init", family_of(self.distro).default_init)


# ------------------------------------------------------------------ reading YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read the recipe: {e.strerror}", "check the path") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e)
        raise RecipeError([Problem(str(path), where, f"YAML syntax: {what}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([Problem(str(path), "", "a recipe must be a YAML mapping (key: value lines)")])
    return data


def _absolute(data: dict, base: Path) -> None:
    """Make the file paths of one recipe file absolute, relative to that file's directory."""
    def fix(value: Any, shipped: bool = False) -> Any:
        if not isinstance(value, str) or value.startswith("/"):
            return value
        p = base / value
        if shipped and not p.exists() and (SHIPPED_HOOKS / value).exists():
            p = SHIPPED_HOOKS / value
        return str(p)

    for phase in PHASES:
        hooks = (data.get("hooks") or {}).get(phase) if isinstance(data.get("hooks"), dict) else None
        for h in hooks if isinstance(hooks, list) else ():
            if isinstance(h, dict) and "script" in h:
                h["script"] = fix(h["script"], shipped=True)
    for f in data.get("files") if isinstance(data.get("files"), list) else ():
        if isinstance(f, dict) and "source" in f:
            f["source"] = fix(f["source"])
    rp = data.get("root_password")
    if isinstance(rp, dict) and "from_file" in rp:
        rp["from_file"] = fix(rp["from_file"])


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError([Problem(str(chain[-1]), "extends", f"recipes extend each other in a cycle: {cycle}")])
    data = _read(path)
    _absolute(data, path.parent)
    parent = data.get("extends")
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError([Problem(str(path), "extends", "expected a path to another recipe")])
    base_path = (path.parent / parent)
    if not base_path.exists():
        raise RecipeError([Problem(str(path), "extends", f"{parent}: no such recipe (looked in {base_path})")])
    merged = _merge(_resolve(base_path, (*chain, path)), data)
    merged["extends"] = str(base_path.resolve())
    return merged


_SET_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*|\[\d+\])*$")


def apply_set(data: dict, assignment: str) -> None:
    """Apply one `--set KEY=VALUE` (KEY dotted, lists by [n]; VALUE read as YAML) to the raw recipe."""
    if "=" not in assignment:
        raise InputError(f"--set {assignment}: expected KEY=VALUE", "e.g. --set hostname=vm1 "
                         "--set bootstrap.packages=[vim,less]")
    key, text = assignment.split("=", 1)
    if not _SET_PATH.match(key):
        raise InputError(f"--set {key}: not a key path", "use dots and [n], e.g. targets.lxc.bridge or files[0].mode")
    try:
        value = yaml.load(text, Loader=_Loader) if text else ""
    except yaml.YAMLError:
        value = text
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    cur: Any = data
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if p.startswith("["):
            n = int(p[1:-1])
            if not isinstance(cur, list) or n >= len(cur):
                raise InputError(f"--set {key}: there is no item {p} there")
            if last:
                cur[n] = value
            else:
                cur = cur[n]
        else:
            if not isinstance(cur, dict):
                raise InputError(f"--set {key}: {p!r} is inside something that is not a mapping")
            if last:
                cur[p] = value
            else:
                nxt = parts[i + 1]
                cur = cur.setdefault(p, [] if nxt.startswith("[") else {})


# ------------------------------------------------------------------ checks beyond types


def _semantics(r: Recipe, file: str) -> list[Problem]:
    out = []

    def bad(path: str, msg: str) -> None:
        out.append(Problem(file, path, msg))

    fam = family_of(r.distro)
    if r.arch not in fam.archs:
        bad("arch", f"{r.arch!r} is not a {fam.name} architecture ({', '.join(fam.archs)})")
    b = r.bootstrap
    methods = [METHODS[b.method]] if b.method != "auto" else [METHODS[m] for m in AUTO.get(fam.name, ())]
    if b.method != "auto" and fam.name not in methods[0].families:
        bad("bootstrap.method", f"{b.method} cannot bootstrap {r.distro}")
    elif methods and not any(b.variant in m.variants for m in methods):
        variants = sorted({v for m in methods for v in m.variants})
        bad("bootstrap.variant", f"{b.variant!r} is not a variant of {'/'.join(m.name for m in methods)} "
                                 f"({', '.join(variants)})")
    for i, p in enumerate(b.packages):
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?([=/][A-Za-z0-9.+~:-]+)?", p):
            bad(f"bootstrap.packages[{i}]", f"{p!r} is not a package name")
    if fam.name not in SHIMS[r.init].families:
        bad("init", f"{r.init} is not for {r.distro}")
    macs: dict[str, str] = {}
    for ifname, iface in r.network.items():
        if iface.mac and iface.mac in macs:
            bad(f"network.{ifname}.mac", f"{iface.mac} is also the MAC of {macs[iface.mac]}")
        if iface.mac:
            macs[iface.mac] = ifname
    for phase in PHASES:
        for i, h in enumerate(r.hooks.phase(phase)):
            if h.script is not None and not Path(h.script).is_file():
                bad(f"hooks.{phase}[{i}].script", f"{h.script}: no such file")
    for i, f in enumerate(r.files):
        if f.source is not None and not Path(f.source).is_file():
            bad(f"files[{i}].source", f"{f.source}: no such file")
    if r.root_password.from_file is not None and not Path(r.root_password.from_file).is_file():
        bad("root_password.from_file", f"{r.root_password.from_file}: no such file")
    return out


# ------------------------------------------------------------------ entry points


@dataclass(frozen=True)
class Loaded:
    recipe: Recipe
    path: Path
    sha256: str       # of the resolved recipe (after extends and --set)


def load(path: str | Path, overrides: tuple[str, ...] = ()) -> Loaded:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such recipe", "give the path of a .yml recipe, e.g. recipes/debian12.yml")
    data = _resolve(path)
    for s in overrides:
        apply_set(data, s)
    loader = schema.Loader(str(path))
    recipe = loader.load(Recipe, data, "")
    problems = loader.problems
    if recipe is not schema.INVALID:
        problems += _semantics(recipe, str(path))
    if problems:
        raise RecipeError(problems, "see docs/recipes.md for every key; `imgbuild schema` for editors")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return Loaded(recipe, path, digest)


def json_schema() -> dict:
    return schema.json_schema(Recipe, "imgbuild recipe")


def markdown() -> str:
    return schema.markdown(Recipe)
