"""output/NAME/manifest.json: what was built, from what, with what, and how long it took.

Artifacts (path, size, sha256), installed packages with versions, the recipe's sha256, the mirror index's
identity, tool versions and phase timings. Never a secret: the recipe itself is not copied, only its hash.
"""
from __future__ import annotations

import json
import platform
import resource
from typing import TYPE_CHECKING

from . import __version__
from . import run as runner
from .outputs import sha256, write_atomic

if TYPE_CHECKING:
    from .context import Context
    from .recipe import Loaded

COMPRESSORS = ("zstd", "xz", "pigz", "gzip")


def data(ctx: "Context", loaded: "Loaded") -> dict:
    r = ctx.recipe
    artifacts = [_artifact(kind, p) for kind, p in sorted(ctx.artifacts.items())]
    tools = {"imgbuild": __version__, "python": platform.python_version()}
    tools.update(tool_versions([ctx.method, *[c for c in COMPRESSORS if c in _used(ctx)]]))
    return {
        "name": r.name, "distro": r.distro, "release": r.release, "arch": r.arch, "hostname": r.hostname,
        "recipe": {"path": str(loaded.path), "sha256": loaded.sha256},
        "bootstrap": {"method": ctx.method, "mirror": ctx.mirror, "variant": r.bootstrap.variant,
                      "index": list(ctx.index.ids) if ctx.index else [], "cache": ctx.cache},
        "source_date_epoch": ctx.epoch,
        "build_key": ctx.build_key,
        "artifacts": artifacts,
        "packages": ctx.packages,
        "tools": tools,
        "timings": ctx.timings,
        "resources": {"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
    }


def tool_versions(programs: list[str]) -> dict[str, str]:
    """runner.versions, remembered by each program's path, size and mtime in CACHE/tool-versions.json
    (`mmdebstrap --version` alone starts perl: 0.2 s a build)."""
    import os

    from .apt import cache_dir

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


def write(ctx: "Context", loaded: "Loaded") -> None:
    write_atomic(ctx.stage / "manifest.json", json.dumps(data(ctx, loaded), indent=2, sort_keys=True) + "\n")
