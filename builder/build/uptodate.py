"""The no-change rebuild: a build whose every input is unchanged, and whose outputs are intact, is not redone.

make's rule, with content instead of mtimes. The build key is the sha256 of: the resolved recipe (after extends
and --set), the bootstrap cache's key inputs (method, mirror, release, packages, SOURCE_DATE_EPOCH and the
mirror index's identity, so a new package version on the mirror is a change), the contents of every local file
the recipe names (hook scripts, file and template sources, password files, EL repository keys) and imgbuild's
own code, and the signing keys. It is written into manifest.json; the next build with the same key finds
OUTPUT/NAME/manifest.json, checks every artifact against its sha256 (and that SHA256SUMS is there), and stops
there. --force, --no-cache and --keep-tree always build.

Not covered (and so always built): recipes with secrets (their values are kept out of every hash), and what a
hook fetches from the network by itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from builder import __version__
from builder.build import bootcache
from builder.build import unprivileged as unpriv
from builder.core.outputs import CHECKSUM_FILES, sha256

if TYPE_CHECKING:
    from builder.build.pipeline import Preflight
    from builder.build.recipe import Loaded, Recipe
    from builder.core.sums import Signing

log = logging.getLogger("imgbuild")
FORMAT = 1
SUMS = CHECKSUM_FILES[0]
CODE = Path(__file__).resolve().parents[1]   # the whole builder package


def local_files(r: "Recipe") -> list[str]:
    """Every file on this host the recipe reads."""
    out = [h.script for phase in ("post-bootstrap", "post-files", "pre-pack") for h in r.hooks.phase(phase)
           if h.script]
    out += [f.source for f in (*r.files, *r.templates) if f.source]
    if r.root_password.from_file:
        out.append(r.root_password.from_file)
    out += [x.gpgkey for x in r.bootstrap.extra_repos.values() if x.gpgkey and "://" not in x.gpgkey]
    out += [f.script for f in r.firstboot if f.script]
    if r.cloud_init is not None and r.cloud_init.user_data_file:
        out.append(r.cloud_init.user_data_file)
    return sorted(set(out))


def _code_id() -> str:
    """imgbuild's version and its code and shipped files (names, sizes, mtimes: a changed file changes it)."""
    h = hashlib.sha256(__version__.encode())
    for top in (CODE, CODE.parent / "hooks"):
        for p in sorted(top.rglob("*")) if top.is_dir() else ():
            if p.is_file() and "__pycache__" not in p.parts:
                st = p.stat()
                h.update(f"{p.relative_to(top.parent)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _file_sha(path: str) -> str:
    try:
        return sha256(Path(path))
    except OSError:
        return "unreadable"


def key(loaded: "Loaded", pre: "Preflight", signing: "Signing | None" = None) -> str | None:
    """The build key, or None when this recipe is always built (it has secrets). Signing with another key (or
    none) is another build."""
    r = loaded.recipe
    if r.secrets:
        return None
    data = {"format": FORMAT, "recipe": loaded.sha256, "bootstrap": bootcache.inputs(r, pre),
            "files": {p: _file_sha(p) for p in local_files(r)}, "code": _code_id(),
            "unprivileged": unpriv.active(), "signing": signing.describe() if signing else {}}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def current(final: Path, build_key: str) -> bool:
    """True when final's manifest has this key and every artifact still matches its sha256."""
    try:
        m = json.loads((final / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(m, dict) or m.get("build_key") != build_key:
        return False
    arts = m.get("artifacts")
    if not isinstance(arts, list) or not arts:
        return False
    if not (final / SUMS).is_file():
        log.info("%s is missing; building again", final / SUMS)
        return False
    for a in arts:
        if not isinstance(a, dict) or not isinstance(a.get("path"), str):
            return False
        path = final / a["path"]
        if "sha256" not in a:
            return False     # a directory artifact (nspawn tree) is not hashed: build it again
        with contextlib.suppress(OSError):
            if path.stat().st_size == a.get("size") and sha256(path) == a["sha256"]:
                continue
        log.info("%s changed since it was built; building again", path)
        return False
    return True
