"""output/NAME/manifest.json: what was built, from what, with what, and how long it took.

Artifacts (path, size, sha256), installed packages with versions, the recipe's sha256, the mirror index's
identity and who signed it, tool versions and phase timings. Never a secret: the recipe itself is not copied,
only its hash. It does say which artifacts hold secrets (the tree's password hashes, the cluster's secret files)
and why: those are 0600 in a 0700 output directory; everything else follows the umask.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import resource
from pathlib import Path
from typing import TYPE_CHECKING

from builder import __version__
from builder.build.steps import cloudinit
from builder.core import checks
from builder.core import proc as runner
from builder.core.errors import InputError, UnsafePath
from builder.core.outputs import set_modes, sha256, write_atomic
from builder.core.paths import cache_dir
from builder.core.untrusted import read_json

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Loaded

log = logging.getLogger("imgbuild")

COMPRESSORS = ("zstd", "xz", "pigz", "gzip")
# artifact kinds that are configs written from the recipe, never a copy of the tree; every other kind (tarball,
# image, xen-image, openvz-template, nspawn-tree ...) carries the tree and so whatever secret it holds
CONFIG_KINDS = frozenset({"lxc-config", "lxc-legacy-config", "lxc-fstab", "xen-config", "openvz-config",
                          "nspawn-settings", "nodes", "lxd-metadata", "sbom"})


def _is_hash(field: str) -> bool:
    """A shadow password field that holds a hash (locked or not): not empty, *, !, !! or x."""
    return field.lstrip("!*") not in ("", "x")


def tree_secrets(ctx: "Context") -> list[str]:
    """What in the built tree is a secret, each as `PATH: what` (never the value): password hashes in
    /etc/shadow and /etc/gshadow, the recipe's secret files, ssh private host keys a hook left."""
    found = []
    for db in ("/etc/shadow", "/etc/gshadow"):
        for line in (ctx.root.read_text(db) or "").splitlines():
            f = line.split(":")
            if len(f) > 1 and _is_hash(f[1]):
                found.append(f"{db}: a password hash for {f[0]}")
    for name, spec in sorted(ctx.recipe.secrets.items()):
        found.append(f"{spec.path}: the secret {name}")
    try:
        ssh = ctx.root.resolve("/etc/ssh")
        keys = sorted(e.name for e in os.scandir(ssh) if e.name.startswith("ssh_host_") and e.name.endswith("_key"))
    except (OSError, UnsafePath):     # no /etc/ssh, or it leads out of the tree: nothing of the tree's there
        keys = []
    found += [f"/etc/ssh/{k}: an ssh host private key" for k in keys]
    found += cloudinit.secrets(ctx.recipe)      # cloud_init's user-data (passwords, keys)
    return found


def secret_kinds(ctx: "Context", found: list[str]) -> set[str]:
    return {kind for kind in ctx.artifacts if kind not in CONFIG_KINDS} if found else set()


def _signature(ctx: "Context") -> dict | None:
    index = ctx.plan.index
    if index is None:
        return None
    if not index.signed_by:
        return {"checked": False, "why": "bootstrap.unsigned: true"}
    return {"checked": True, "keyring": index.keyring, "signed_by": list(index.signed_by)}


def data(ctx: "Context", loaded: "Loaded", found: list[str] | None = None) -> dict:
    r = ctx.recipe
    found = tree_secrets(ctx) if found is None else found
    secret = secret_kinds(ctx, found)
    artifacts = [{**_artifact(kind, p), "secret": kind in secret} for kind, p in sorted(ctx.artifacts.items())]
    bootstrap = {"method": ctx.method, "mirror": ctx.mirror, "variant": r.bootstrap.variant,
                 "index": list(ctx.plan.index.ids) if ctx.plan.index else [], "cache": ctx.cache}
    if _signature(ctx) is not None:
        bootstrap["signature"] = _signature(ctx)
    tools = {"imgbuild": __version__, "python": platform.python_version()}
    tools.update(tool_versions([ctx.method, *[c for c in COMPRESSORS if c in _used(ctx)]]))
    return {
        "name": r.name, "distro": r.distro, "release": r.release, "arch": r.arch, "hostname": r.hostname,
        "network": network(r),
        "recipe": {"path": str(loaded.path), "sha256": loaded.sha256},
        "bootstrap": bootstrap,
        "secrets": {"artifacts": sorted(secret), "found": found},
        "source_date_epoch": ctx.epoch,
        "build_key": ctx.build_key,
        "artifacts": artifacts,
        "packages": ctx.packages,
        "tools": tools,
        "timings": ctx.timings,
        "sub_timings": ctx.sub_timings,
        "resources": {"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
    }


def network(r) -> dict[str, dict]:
    """The guest's interfaces as the recipe gives them (address, gateway, MAC, DHCP): what `imgbuild boot` needs
    to reach the guest, without reading the tree."""
    out = {}
    for ifname, i in sorted(r.network.items()):
        d = {"address": i.address, "gateway": i.gateway, "mac": i.mac, "dhcp": i.dhcp or None}
        out[ifname] = {k: str(v) if k != "dhcp" else v for k, v in d.items() if v is not None}
    return out


def tool_versions(programs: list[str]) -> dict[str, str]:
    """runner.versions, remembered by each program's path, size and mtime in CACHE/tool-versions.json
    (`mmdebstrap --version` alone starts perl: 0.2 s a build)."""

    store = cache_dir() / "tool-versions.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict) or not all(isinstance(v, dict) for v in known.values()):
        known = {}
    out, ask = {}, []
    for p in programs:
        path = runner.which(p)
        if not path:
            continue
        st = os.stat(path)
        stamp = f"{os.path.realpath(path)} {st.st_size} {st.st_mtime_ns}"
        if known.get(p, {}).get("stamp") == stamp:
            out[p] = known[p]["version"]
        else:
            ask.append((p, stamp))
    if ask:
        got = runner.versions([p for p, _ in ask])
        for p, stamp in ask:
            if p in got:
                out[p] = got[p]
                known[p] = {"stamp": stamp, "version": got[p]}
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(store, json.dumps(known, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass
    return out


def _artifact(kind: str, p) -> dict:
    if p.is_dir():   # a machine tree (nspawn): its size, not a hash of every file
        size = sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        return {"kind": kind, "path": p.name, "type": "directory", "size": size}
    return {"kind": kind, "path": p.name, "size": p.stat().st_size, "sha256": sha256(p)}


def _used(ctx: "Context") -> set[str]:
    t = ctx.recipe.targets.tarball
    if t is None or t.compression == "none":
        return set()
    return {"zst": {"zstd"}, "zstd": {"zstd"}, "xz": {"xz"},
            "gz": {"pigz" if runner.which("pigz") else "gzip"}}[t.compression]


def write(ctx: "Context", loaded: "Loaded") -> dict:
    """manifest.json, then every output's mode: the artifacts that hold a secret 0600 and the output directory
    0700; the rest as the umask says. Returns what was written."""
    found = tree_secrets(ctx)
    written = data(ctx, loaded, found)
    write_atomic(ctx.stage / "manifest.json", json.dumps(written, indent=2, sort_keys=True) + "\n")
    secret = secret_kinds(ctx, found)
    set_modes(ctx.stage, {**ctx.artifacts, "manifest": ctx.stage / "manifest.json"}, secret)
    if secret:
        log.info("%s hold secrets (%s): mode 0600, in a 0700 directory", ", ".join(sorted(secret)),
                 "; ".join(found[:3]) + (" ..." if len(found) > 3 else ""))
    if ctx.plan.index is not None and not ctx.plan.index.signed_by:
        log.warning("built from an unsigned index (bootstrap.unsigned: true): %s; recorded in manifest.json",
                    ctx.mirror)
    return written


def hashes(m: dict, directory: Path) -> dict[str, str]:
    """What SHA256SUMS lists for an output: every file artifact (the sha256 the manifest has) and manifest.json."""
    out = {a["path"]: a["sha256"] for a in m["artifacts"] if "sha256" in a}
    out["manifest.json"] = sha256(Path(directory) / "manifest.json")
    return out


def read_manifest(output: Path) -> dict:
    """OUTPUT/manifest.json, checked for the shape imgbuild writes (it is a file an earlier run left, so it is
    not trusted): an object with a valid name and artifacts, each a kind and a plain file name in OUTPUT."""
    f = Path(output) / "manifest.json"
    hint = "give the directory a build wrote, e.g. output/debian12 (build again if its manifest.json was changed)"
    if not f.is_file():
        raise InputError(f"{output}: not an imgbuild output (no manifest.json)", hint)
    if f.is_symlink():       # never a host file read (and its values shown or copied) through a link
        raise InputError(f"{f}: a symbolic link, not the manifest a build writes", hint)
    m = read_json(f, what="an imgbuild manifest", hint=hint)
    try:
        checks.name(m.get("name"))
    except ValueError as e:
        raise InputError(f"{f}: name: {e}", hint) from None
    arts = m.get("artifacts")
    if not isinstance(arts, list):
        raise InputError(f"{f}: artifacts: expected a list, found {type(arts).__name__}", hint)
    for i, a in enumerate(arts):
        if not (isinstance(a, dict) and isinstance(a.get("kind"), str) and isinstance(a.get("path"), str)):
            raise InputError(f"{f}: artifacts[{i}]: expected {{kind, path}}, found {a!r:.80}", hint)
        if "/" in a["path"] or "\0" in a["path"] or a["path"] in ("", ".", ".."):
            raise InputError(f"{f}: artifacts[{i}].path: {a['path']!r:.80} is not a file name in {output}", hint)
    return m
