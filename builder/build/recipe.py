"""Recipes: YAML -> one frozen, validated Recipe.

load() reads the file (and the files it `extends:`), applies `--set KEY=VALUE` overrides, checks everything and
raises RecipeError listing *every* problem with file and key path. Nothing runs before a recipe is whole.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.build.bootstrap import METHODS, MethodName
from builder.build.cluster import CLUSTER_BUILTINS, Node, SecretSpec, check_nodes
from builder.build.families import FAMILIES, DistroName, Family, family_of
from builder.build.families.debian import DEBIAN
from builder.build.hooks import PHASES, Hooks
from builder.build.steps.cloudinit import CloudInit
from builder.build.steps.devices import Device, Preset
from builder.build.steps.files import FileSpec
from builder.build.steps.firstboot import FirstBoot
from builder.build.steps.init import SHIMS, ShimName
from builder.build.steps.network import Interface
from builder.build.steps.password import RootPassword
from builder.build.steps.templates import Template
from builder.build.targets import Targets, tarball
from builder.build.targets import checks as target_checks
from builder.core import checks, schema, untrusted
from builder.core.checks import Epoch, Hostname, IfName, IPAddress, Name
from builder.core.errors import InputError, Problem, RecipeError
from builder.core.schema import opt
from builder.core.templating import undefined

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED_HOOKS = PROJECT / "hooks"


@dataclass(frozen=True)
class ExtraRepo:
    """EL: a package repository besides the release's own (Percona, MariaDB, EPEL ...)."""

    baseurl: str = opt(doc="its URL; $releasever and $basearch are expanded")
    gpgkey: str | None = opt(None, doc="its signing key: an http(s) URL, or a file (relative to the recipe); "
                                       "written to /etc/pki/rpm-gpg/imgbuild-ID.key")
    gpgcheck: bool = opt(True, doc="check its packages' signatures with gpgkey")
    name: str | None = opt(None, doc="its description in the .repo file (default: the id)")

    def __post_init__(self) -> None:
        if not re.match(r"^(https?|ftp|file)://", self.baseurl):
            raise ValueError(f"baseurl {self.baseurl!r}: give an http(s), ftp or file URL")
        if self.gpgcheck and not self.gpgkey:
            raise ValueError("gpgcheck needs gpgkey (or gpgcheck: false, which is then a warning)")


@dataclass(frozen=True)
class Bootstrap:
    """How the base system is made."""

    method: MethodName = opt("auto", doc="bootstrap method; auto picks what works on this host for the distro")
    mirror: str = opt("auto", doc="package mirror URL; auto (Debian): the mirror the host's own apt uses. EL: the "
                                  "release's tree, e.g. https://vault.centos.org/6.10")
    variant: str | None = opt(None, doc="Debian: package set size (minbase, required, important, standard, "
                                        "buildd ...; default minbase). EL: not used")
    packages: tuple[str, ...] = opt((), doc="packages to install (EL: besides the groups)")
    components: tuple[str, ...] = opt(("main",), doc="Debian: archive components (main, contrib, non-free ...)")
    groups: tuple[str, ...] = opt((), doc="EL: package groups from the repos' comps (ids or names: core, base ...)")
    release_package: str | None = opt(None, doc="EL: the package whose repo files and GPG keys seed the root "
                                                "(centos-release ...)")
    seed_repo: str = opt("os/$basearch", doc="EL: where, under mirror, the repo holding release_package is")
    repos: tuple[str, ...] = opt((), doc="EL: repo ids of the seeded .repo files to use (default: those enabled "
                                         "there); each points at mirror + its path after $releasever")
    releasever: str | None = opt(None, doc="EL: $releasever (default: release up to its first dot: 6.10 -> 6)")
    gpgcheck: bool = opt(True, doc="EL: check package signatures with the release's keys (false: a warning)")
    extra_repos: dict[str, ExtraRepo] = opt(factory=dict, doc="EL: more repositories by id, written to "
                                                              "/etc/yum.repos.d/imgbuild-ID.repo and used by the "
                                                              "bootstrap (e.g. Percona's for XtraDB Cluster)")
    unsigned: bool = opt(False, doc="Debian: true for a local mirror without a signature: its Release file is "
                                    "read unchecked (a warning at every build, recorded in manifest.json). "
                                    "Default: the mirror's InRelease must carry a good signature by a key in "
                                    "the Debian archive keyring ($IMGBUILD_KEYRING for your own key)")



@dataclass(frozen=True)
class Recipe:
    """A recipe: what to build and what to produce from it."""

    name: Name = opt(doc="name of the build; outputs go to OUTPUT/NAME/")
    distro: DistroName = opt(doc="distribution")
    release: str = opt(doc="release (Debian: bookworm, trixie ...)")
    arch: str | None = opt(None, doc="architecture, as the distro spells it (default: amd64 for Debian, x86_64 "
                                     "for EL)")
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
    vars: dict[str, Any] = opt(factory=dict, doc="variables for templates (per node; clone --set changes them)")
    templates: tuple[Template, ...] = opt((), doc="files rendered from Jinja2 templates with the node's identity "
                                                  "and vars; kept in the guest so clones render them anew")
    nodes: tuple[Node, ...] = opt((), doc="a cluster: each node is a clone of this build with its own name, address, "
                                          "MAC and vars (docs/clusters.md); install them with install-lxc")
    secrets: dict[Name, SecretSpec] = opt(factory=dict, doc="values every node shares (passwords, cookies), each "
                                                           "written to a file only its service can read")
    hooks: Hooks = opt(factory=Hooks, doc="commands at fixed points of the build")
    firstboot: tuple[FirstBoot, ...] = opt((), doc="commands and scripts run once, as root, at the guest's first "
                                                   "boot (a systemd unit, or rc.local without systemd), then removed")
    cloud_init: CloudInit | None = opt(None, doc="a cloud-init NoCloud seed (meta-data, user-data, network-config) "
                                                 "in the guest and as a seed ISO next to the disk; or cloud-init "
                                                 "disabled")
    targets: Targets = opt(factory=lambda: Targets(tarball=tarball.TarballOptions()),
                           doc="outputs (default: a tarball)")
    epoch: Epoch | None = opt(None, doc="SOURCE_DATE_EPOCH for the build (default: $SOURCE_DATE_EPOCH, else the "
                                        "mirror's Release date, so rebuilds are byte-identical)")
    extends: str | None = opt(None, doc="a recipe this one is based on (path relative to this file); mappings "
                                        "merge key by key, everything else is replaced")

    def __post_init__(self) -> None:
        if self.hostname is None:
            try:
                object.__setattr__(self, "hostname", checks.hostname(self.name))
            except ValueError:
                raise schema.FieldError("hostname", f"name {self.name!r} is not a valid host name, so hostname "
                                                    "must be given") from None
        fam = family_of(self.distro)
        if self.init is None:
            object.__setattr__(self, "init", fam.default_init)
        if self.arch is None:
            object.__setattr__(self, "arch", fam.archs[0])


# ------------------------------------------------------------------ reading YAML


def _read(path: Path, shown: str) -> dict:
    data = untrusted.read_file(path, shown, what="a recipe", hint="check the path")
    value = untrusted.load_yaml(data, shown, what="a recipe")
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RecipeError([Problem(shown, "", "a recipe must be a YAML mapping (key: value lines)")],
                          "a recipe is `key: value` lines (name:, distro:, release: ...); see docs/recipes.md")
    return value


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
    for key in ("files", "templates"):
        for f in data.get(key) if isinstance(data.get(key), list) else ():
            if isinstance(f, dict) and "source" in f:
                f["source"] = fix(f["source"], shipped=key == "templates")
    for f in data.get("firstboot") if isinstance(data.get("firstboot"), list) else ():
        if isinstance(f, dict) and "script" in f:
            f["script"] = fix(f["script"])
    ci = data.get("cloud_init")
    if isinstance(ci, dict) and "user_data_file" in ci:
        ci["user_data_file"] = fix(ci["user_data_file"])
    rp = data.get("root_password")
    if isinstance(rp, dict) and "from_file" in rp:
        rp["from_file"] = fix(rp["from_file"])
    b = data.get("bootstrap")
    extra = b.get("extra_repos") if isinstance(b, dict) else None
    for x in extra.values() if isinstance(extra, dict) else ():
        if isinstance(x, dict) and isinstance(x.get("gpgkey"), str) and "://" not in x["gpgkey"]:
            x["gpgkey"] = fix(x["gpgkey"])
    for spec in (data.get("secrets") or {}).values() if isinstance(data.get("secrets"), dict) else ():
        if isinstance(spec, dict) and "from_file" in spec:
            spec["from_file"] = fix(spec["from_file"])


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _record(data: Any, file: str, origins: dict[str, str], prefix: str = "") -> None:
    """Remember which file set each key path (later files overwrite earlier ones, as the merge does)."""
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            origins[key] = file
            _record(v, file, origins, key)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _record(v, file, origins, f"{prefix}[{i}]")


MAX_EXTENDS = 32     # recipes extending each other in a row


def _resolve(path: Path, chain: tuple[Path, ...] = (), origins: dict[str, str] | None = None) -> dict:
    origins = {} if origins is None else origins
    shown = str(path)
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError([Problem(str(chain[-1]), "extends", f"recipes extend each other in a cycle: {cycle}")],
                          "remove one of the extends: lines")
    data = _read(path, shown)
    _absolute(data, path.parent)
    parent = data.get("extends")
    if parent is None:
        _record(data, shown, origins)
        return data
    if not isinstance(parent, str) or not parent or "\0" in parent:
        raise RecipeError([Problem(shown, "extends", "expected a path to another recipe")],
                          "e.g. extends: base/centos.yml (relative to this recipe)")
    if len(chain) >= MAX_EXTENDS:
        raise RecipeError([Problem(shown, "extends", f"more than {MAX_EXTENDS} recipes extend each other in a row")],
                          "base recipes on fewer levels of other recipes")
    base_path = path.parent / parent
    if not base_path.exists():
        raise RecipeError([Problem(shown, "extends", f"{parent}: no such recipe (looked in {base_path})")],
                          "give the path relative to this recipe's directory")
    merged = _merge(_resolve(Path(shown).parent / parent, (*chain, path), origins), data)
    _record(data, shown, origins)
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
    value = untrusted.load_yaml(text, f"--set {key}", what="a value", text_if_not_yaml=True,
                                hint="quote the value as YAML would: --set 'KEY=\"...\"'") if text else ""
    if value == text and text.lstrip()[:1] in ("[", "{"):   # meant as a list or mapping, but not valid YAML
        kind = "list" if text.lstrip()[0] == "[" else "mapping"
        raise InputError(f"--set {assignment}: the value is not a valid YAML {kind} "
                         "(a bracket not closed, or a comma or colon that needs quoting?)",
                         "e.g. --set 'bootstrap.packages=[vim, less]'; quote the whole option for the shell")
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


def _semantics(v: dict[str, Any]) -> list[tuple[str, str]]:
    """Checks that need registries or the file system: (key path, message) pairs.

    `v` maps Recipe field names to loaded values; a field that failed to load is INVALID and its checks are
    skipped, so these problems are reported together with the type problems of other keys.
    """
    ok = lambda *names: all(v.get(n) is not schema.INVALID for n in names)
    fam = family_of(v["distro"]) if ok("distro") else None
    out: list[tuple[str, str]] = []
    if fam and ok("arch") and v["arch"] is not None and v["arch"] not in fam.archs:
        out.append(("arch", f"{v['arch']!r} is not a {fam.name} architecture ({', '.join(fam.archs)})"))
    if fam and ok("bootstrap"):
        out += _bootstrap_checks(v["bootstrap"], v["distro"], fam)
    if ok("bootstrap"):
        out += _package_names(v["bootstrap"], fam)
    if fam and ok("init"):
        init = v["init"] or fam.default_init
        if not fam.takes(SHIMS[init]):
            out.append(("init", f"{init} is not for {v['distro']}"))
    if ok("network"):
        out += _shared_macs(v["network"])
    if ok("targets"):
        out += target_checks(v["targets"])
    if ok("hooks"):
        out += [(f"hooks.{phase}[{i}].script", f"{h.script}: no such file") for phase in PHASES
                for i, h in enumerate(v["hooks"].phase(phase)) if h.script is not None and not Path(h.script).is_file()]
    for key in ("files", "templates"):
        if ok(key):
            out += _sources(v, key, ok("vars", "nodes"))
    if ok("nodes", "network", "name", "hostname"):
        out += check_nodes(v["name"], v["hostname"], v["network"], v["nodes"])
    if ok("secrets"):
        out += [(f"secrets.{name}.from_file", f"{spec.from_file}: no such file") for name, spec in v["secrets"].items()
                if spec.from_file is not None and not Path(spec.from_file).is_file()]
    if ok("firstboot"):
        out += [(f"firstboot[{i}].script", f"{f.script}: no such file") for i, f in enumerate(v["firstboot"])
                if f.script is not None and not Path(f.script).is_file()]
    ci = v.get("cloud_init")
    if ok("cloud_init") and ci is not None and ci.user_data_file is not None and not Path(ci.user_data_file).is_file():
        out.append(("cloud_init.user_data_file", f"{ci.user_data_file}: no such file"))
    rp = v.get("root_password")
    if ok("root_password") and rp.from_file is not None and not Path(rp.from_file).is_file():
        out.append(("root_password.from_file", f"{rp.from_file}: no such file"))
    return out


def _bootstrap_checks(b: Bootstrap, distro: str, fam: Family) -> list[tuple[str, str]]:
    """The bootstrap method and variant fit the family; keys of another family are an error, not ignored."""
    out = []
    methods = [METHODS[b.method]] if b.method != "auto" else [METHODS[m] for m in fam.auto_methods]
    if b.method != "auto" and not fam.takes(methods[0]):
        out.append(("bootstrap.method", f"{b.method} cannot bootstrap {distro}"))
    elif b.variant is not None and methods and not any(b.variant in m.variants for m in methods):
        variants = sorted({x for m in methods for x in m.variants})
        what = ", ".join(variants) if variants else "it takes no variant"
        out.append(("bootstrap.variant", f"{b.variant!r} is not a variant of "
                                         f"{'/'.join(m.name for m in methods)} ({what})"))
    for key in (k for f in FAMILIES.values() for k in f.bootstrap_keys):
        default = getattr(Bootstrap, key) if hasattr(Bootstrap, key) else None
        if key not in fam.bootstrap_keys and getattr(b, key) not in (default, (), {}, None):
            owners = [f.name for f in FAMILIES.values() if key in f.bootstrap_keys]
            out.append((f"bootstrap.{key}", f"is for {' and '.join(owners)} recipes, not {distro}"))
    return out + fam.check_bootstrap(b)


def _package_names(b: Bootstrap, fam: Family | None) -> list[tuple[str, str]]:
    name_re = (fam or DEBIAN).package_name
    return [(f"bootstrap.packages[{i}]", f"{p!r} is not a package name") for i, p in enumerate(b.packages)
            if not re.fullmatch(name_re, p)]


def _shared_macs(network: dict[str, Interface]) -> list[tuple[str, str]]:
    out = []
    macs: dict[str, str] = {}
    for ifname, iface in network.items():
        if iface.mac and iface.mac in macs:
            out.append((f"network.{ifname}.mac", f"{iface.mac} is also the MAC of {macs[iface.mac]}"))
        if iface.mac:
            macs[iface.mac] = ifname
    return out


def _sources(v: dict[str, Any], key: str, scoped: bool) -> list[tuple[str, str]]:
    """Each source file of files or templates exists; a template uses only variables it is given."""
    out = []
    for i, f in enumerate(v[key]):
        if f.source is not None and not Path(f.source).is_file():
            out.append((f"{key}[{i}].source", f"{f.source}: no such file"))
        elif key == "templates" and scoped:
            out += _template_vars(i, f, v)
    return out


def _template_vars(i: int, f: Template, v: dict[str, Any]) -> list[tuple[str, str]]:
    # a cluster's templates see the cluster's variables and each node's vars
    scopes = [({**v["vars"], **n.vars, **dict.fromkeys(CLUSTER_BUILTINS)}, f" (node {n.name})")
              for n in v["nodes"]] or [(v["vars"], "")]
    for scope, who in scopes:
        try:
            missing = undefined(Path(f.source).read_text(errors="replace"), scope)
        except ValueError as e:
            return [(f"templates[{i}].source", f"{f.source}: {e}")]
        if missing:
            return [(f"templates[{i}].source", f"{f.source} uses {', '.join(sorted(missing))}, "
                                               f"which vars does not define{who}")]
    return []


def _fields(data: dict, recipe: Any) -> dict[str, Any]:
    """Recipe field values for _semantics: from the recipe when it loaded, else key by key from the data."""
    if recipe is not schema.INVALID:
        return {f.name: getattr(recipe, f.name) for f, _ in schema.fields_of(Recipe)}
    out = {}
    for f, tp in schema.fields_of(Recipe):
        k = schema.key_of(f)
        if k in data:
            out[f.name] = schema.Loader("").load(tp, data[k], k)  # its problems are already reported
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = schema.INVALID
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
    origins: dict[str, str] = {}
    data = _resolve(path, origins=origins)
    for s in overrides:
        apply_set(data, s)
        key = s.split("=", 1)[0]
        for k in [k for k in origins if k == key or k.startswith((key + ".", key + "["))]:
            del origins[k]        # the file's keys under it are replaced: a problem there is the option's
        origins[key] = f"--set {s}"
    loader = schema.Loader(str(path))
    recipe = loader.load(Recipe, data, "")
    found = [(p.path, p.message) for p in loader.problems] + _semantics(_fields(data, recipe))
    if found:
        problems = [Problem(_origin(origins, key, str(path)), key, msg) for key, msg in found]
        raise RecipeError(problems, "see docs/recipes.md for every key; `imgbuild schema` for editors")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return Loaded(recipe, path, digest)


def _origin(origins: dict[str, str], key: str, default: str) -> str:
    """The file (or --set) a key path came from: its longest known prefix."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    for n in range(len(parts), 0, -1):
        prefix = "".join(p if p.startswith("[") else ("." + p if i else p) for i, p in enumerate(parts[:n]))
        if prefix in origins:
            return origins[prefix]
    return default


def json_schema() -> dict:
    return schema.json_schema(Recipe, "imgbuild recipe")


def markdown() -> str:
    return schema.markdown(Recipe)
