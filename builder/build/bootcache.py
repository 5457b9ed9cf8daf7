"""The bootstrap cache: the tree right after the bootstrap, kept under a key made from every input that shapes it.

Inputs: the method, distro, release, arch, mirror, variant, components, the sorted package list (EL: groups,
release package, repos, extra repos, gpgcheck), SOURCE_DATE_EPOCH, and the mirror index's own identity (the
sha256 of each Debian Packages index; each EL repo's primary checksum), so a new package version on the
mirror is a new key. A rebuild that changes only files, hooks, templates, targets or identity starts from the
cached tree. A miss says which input changed against the newest entry of the same recipe
(`cache miss: packages (+vim)`).

An entry is CACHE/bootstrap/KEY/{tree.tar.zst, meta.json}: the tree as GNU tar keeps it (numeric owners, exact
mtimes, xattrs, ACLs, devices, hardlinks), and its sha256. An entry whose archive does not match its sha256 is
reported, removed and rebuilt, never used. The cache is bounded ($IMGBUILD_CACHE_MAX, default 4G): the
least recently used entries go first.

Builds share the cache (builder/core/locks.py): a build reading an entry holds it shared (CACHE/bootstrap/.KEY.lock)
from the check of its sha256 to the end of the restore; removing an entry (prune, a damaged entry, replacing
one) needs it unheld, and an entry in use is left alone and said so. A new entry is written in a temp
directory its build claims, then renamed into place (the first of two builds saving one key wins); prune
removes only temps whose build is dead.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.build import unprivileged as unpriv
from builder.core import locks
from builder.core import proc as runner
from builder.core.errors import BuilderError, CommandError, InputError
from builder.core.outputs import sha256 as _sha256
from builder.core.paths import cache_dir
from builder.core.sizes import human

if TYPE_CHECKING:
    from builder.build.pipeline import Preflight
    from builder.build.recipe import Recipe

log = logging.getLogger("imgbuild")

FORMAT = 2
ARCHIVE = "tree.tar.zst"
META = "meta.json"
DEFAULT_MAX = 4 << 30
TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]


def root_dir() -> Path:
    return cache_dir() / "bootstrap"


def inputs(r: "Recipe", pre: "Preflight") -> dict[str, Any]:
    b = r.bootstrap
    data: dict[str, Any] = {
        "format": FORMAT, "method": pre.method.name, "distro": r.distro, "release": r.release, "arch": r.arch,
        "mirror": pre.mirror, "variant": b.variant, "components": list(b.components),
        "packages": sorted(b.packages), "epoch": pre.epoch,
    }
    if pre.plan.index is not None:
        data["index"] = list(pre.plan.index.ids)
    if unpriv.active():
        data["unprivileged"] = True     # no device nodes in the tree: not the tree a root build caches
    if pre.plan.seed is not None:
        data.update({"groups": sorted(b.groups), "release_package": b.release_package, "seed_repo": b.seed_repo,
                     "repos": sorted(b.repos), "releasever": b.releasever, "gpgcheck": b.gpgcheck,
                     "extra_repos": {k: [x.baseurl, x.gpgkey, x.gpgcheck] for k, x in sorted(b.extra_repos.items())},
                     "index": sorted(f"{x.id}:{x.revision}" for x in pre.plan.seed.repodata)})
    return data


def key_of(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Entry:
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def archive(self) -> Path:
        return self.path / ARCHIVE

    @property
    def size(self) -> int:
        return self.meta.get("size", 0)


def entries(base: Path | None = None) -> list[Entry]:
    base = base or root_dir()
    out = []
    for d in sorted(base.iterdir()) if base.is_dir() else ():
        if d.name.startswith("."):       # lock files, temps
            continue
        try:
            meta = json.loads((d / META).read_text())
        except (OSError, ValueError):
            continue
        out.append(Entry(d.name, d, meta))
    return out


def _show(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def explain(new: dict[str, Any], name: str, base: Path | None = None) -> str:
    """Why there is no entry: the inputs that differ from the newest entry of the same recipe."""
    same = [e for e in entries(base) if e.meta.get("name") == name]
    if not same:
        return f"no earlier bootstrap of {name} in the cache"
    old = max(same, key=lambda e: e.meta.get("created", 0)).meta.get("inputs", {})
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if k == "index":
            parts.append("mirror index (the mirror has other package versions)")
        elif isinstance(a, list) and isinstance(b, list) and k != "index":
            plus = [f"+{x}" for x in b if x not in a]
            minus = [f"-{x}" for x in a if x not in b]
            parts.append(f"{k} ({' '.join(plus + minus) or 'order'})")
        else:
            parts.append(f"{k} ({_show(a)} -> {_show(b)})")
    return ", ".join(parts) or "the cache entry was removed"


class Damaged(Exception):
    """The entry's archive does not match its sha256."""


def lookup(data: dict[str, Any], name: str) -> Entry | None:
    """The entry for these inputs, checked against its sha256; None (with the reason logged) if there is none.
    A damaged entry is removed (unless another build holds it: then it is only not used). Call it holding
    the entry (`locks.using`), as fetch() does, when the entry is to be read afterwards."""
    try:
        return _check(data, name)
    except Damaged:
        _remove_damaged(root_dir() / key_of(data))
        return None


def _check(data: dict[str, Any], name: str) -> Entry | None:
    key = key_of(data)
    d = root_dir() / key
    try:
        meta = json.loads((d / META).read_text())
    except FileNotFoundError:
        log.info("cache miss: %s", explain(data, name))
        return None
    except (OSError, ValueError):
        meta = None
    e = Entry(key, d, meta or {})
    if meta is None or not e.archive.is_file() or _sha256(e.archive) != meta.get("sha256"):
        log.warning("bootstrap cache entry %s is damaged (its archive does not match its sha256): removed, "
                    "bootstrapping again", key)
        raise Damaged(key)
    meta["last_used"] = time.time()
    with contextlib.suppress(OSError):     # a read-only cache is still a cache
        _write_meta(d, meta)
    log.info("cache hit: bootstrap %s (%s)", key, human(e.size))
    return e


def _remove_damaged(d: Path) -> None:
    with locks.removable(d) as free:
        if free:
            shutil.rmtree(d, ignore_errors=True)
        else:
            log.info("bootstrap cache: %s is in use by another imgbuild (%s); not removed now", d.name,
                     locks.owner(d))


def fetch(data: dict[str, Any], name: str, root: Path) -> Entry | None:
    """The tree of the entry for these inputs restored into root, or None on a miss. The entry is held from
    the check of its sha256 to the end of the restore, so no prune removes it meanwhile."""
    d = root_dir() / key_of(data)
    if not (d / META).exists():
        log.info("cache miss: %s", explain(data, name))
        return None
    try:
        with locks.using(d):
            e = _check(data, name)
            if e is not None:
                restore(e, root)
            return e
    except Damaged:
        _remove_damaged(d)
        return None


def _write_meta(d: Path, meta: dict) -> None:
    tmp = d / f".{META}.{os.getpid()}.tmp"     # builds reading the same entry update it side by side
    try:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, d / META)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def restore(e: Entry, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    runner.run(["tar", "--zstd", "-xpf", str(e.archive), "-C", str(root), "--same-owner", *TAR_FLAGS])


def save(data: dict[str, Any], name: str, root: Path) -> Entry | None:
    """Keep the tree under its key (written under a temp name, then renamed). A failure to cache is a warning:
    the build itself goes on."""
    base = root_dir()
    key = key_of(data)
    final = base / key
    tmp = base / f".{key}.{os.getpid()}.tmp"
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(base, 0o700)      # entries are whole trees (their /etc/shadow ...): root's (or yours) only
        with locks.claim(tmp, what=f"saving bootstrap {key}", leftover=_rmtree):
            try:
                os.chmod(tmp, 0o700)
                runner.run(["sh", "-c", f'tar -C "$1" -cpf - {" ".join(TAR_FLAGS)} . | zstd -q -T0 -3 -o "$2"',
                            "sh", str(root), str(tmp / ARCHIVE)])
                os.chmod(tmp / ARCHIVE, 0o600)
                meta = {"name": name, "inputs": data, "created": time.time(), "last_used": time.time(),
                        "size": (tmp / ARCHIVE).stat().st_size, "sha256": _sha256(tmp / ARCHIVE)}
                _write_meta(tmp, meta)
                if not _put(tmp, final):
                    return None
            finally:
                _rmtree(tmp)
    except (OSError, CommandError, BuilderError) as e:
        if runner.interrupted():
            raise
        log.warning("could not keep the bootstrap in the cache (%s); the build goes on", e)
        return None
    log.info("bootstrap kept in the cache as %s (%s)", key, human(meta["size"]))
    prune(max_size(), keep={key})
    return Entry(key, final, meta)


def _rmtree(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)


def _put(tmp: Path, final: Path) -> bool:
    """Rename the finished temp to its key. When another build saved the same key meanwhile (or a damaged entry
    is there), replace it unless a build is reading it: then that one stays and ours goes."""
    try:
        os.rename(tmp, final)
        return True
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    with locks.removable(final) as free:
        if not free:
            log.info("bootstrap cache: %s was saved meanwhile by another build, which is using it", final.name)
            return False
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        _rmtree(old)
    return True


def max_size() -> int:
    v = os.environ.get("IMGBUILD_CACHE_MAX")
    return parse_size(v) if v else DEFAULT_MAX


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not m:
        raise InputError(f"{text!r} is not a size", "e.g. 500M, 4G")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def prune(limit: int | None, keep: set[str] = frozenset(), everything: bool = False) -> list[Entry]:
    """Remove the least recently used entries until the cache fits `limit` (or all with everything=True).
    Entries a running build is reading, and the temps of running builds, stay (said at info level); temps and
    lock files of dead runs go."""
    base = root_dir()
    es = sorted(entries(), key=lambda e: e.meta.get("last_used", 0))
    total = sum(e.size for e in es)
    gone = []
    for e in es:
        if e.key in keep:
            continue
        if everything or (limit is not None and total > limit):
            with locks.removable(e.path) as free:
                if not free:
                    log.info("bootstrap cache: kept %s (%s): in use by a running imgbuild (%s)", e.key,
                             e.meta.get("name", "?"), locks.owner(e.path))
                    continue
                shutil.rmtree(e.path, ignore_errors=True)
            total -= e.size
            gone.append(e)
    if base.is_dir():
        for d in [*base.glob(".*.tmp"), *base.glob(".*.old-*")]:
            if d.is_dir() and not d.is_symlink():
                with locks.removable(d) as dead:
                    if dead:                      # left by a killed run; a running build's stays
                        shutil.rmtree(d, ignore_errors=True)
        locks.clean_orphan_locks(base)
    return gone


def remove(names: list[str]) -> list[Entry]:
    """Remove the entries named: each NAME is a recipe name (every entry of it) or a key (or a unique prefix of
    one, at least 6 characters, as `cache list` shows them). Nothing is removed unless every NAME matches and no
    matched entry is in use by a running build."""
    es = entries()
    chosen: dict[str, Entry] = {}
    for n in names:
        by_name = [e for e in es if e.meta.get("name") == n]
        by_key = [e for e in es if len(n) >= 6 and e.key.startswith(n)]
        if not by_name and not by_key:
            raise InputError(f"bootstrap cache: no entry {n!r} (neither a recipe name nor a key)",
                             "`imgbuild cache list` shows each entry's key and recipe name")
        if not by_name and len(by_key) > 1:
            raise InputError(f"bootstrap cache: {n!r} is the start of {len(by_key)} keys "
                             f"({', '.join(e.key for e in by_key)})", "give more of the key")
        chosen.update((e.key, e) for e in by_name or by_key)
    with contextlib.ExitStack() as stack:
        for e in chosen.values():
            if not stack.enter_context(locks.removable(e.path)):
                raise BuilderError(f"bootstrap cache: {e.key} ({e.meta.get('name', '?')}) is in use by a running "
                                   f"imgbuild ({locks.owner(e.path)}); nothing removed",
                                   "wait for that build to finish, then run this again")
        for e in chosen.values():
            shutil.rmtree(e.path, ignore_errors=True)
    return list(chosen.values())



def describe(e: Entry) -> str:
    i = e.meta.get("inputs", {})
    age = time.time() - e.meta.get("last_used", 0)
    return (f"{e.key}  {e.meta.get('name', '?'):<20} {human(e.size):>9}  used {age / 3600:.1f} h ago  "
            f"{i.get('method')} {i.get('distro')} {i.get('release')} {i.get('arch')} "
            f"packages: {', '.join(i.get('packages', [])) or '-'}")
