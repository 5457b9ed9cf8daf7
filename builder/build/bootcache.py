"""The bootstrap cache: the tree right after the bootstrap, kept under a key made from every input that shapes it.

Inputs: the method, distro, release, arch, mirror, variant, components, the sorted package list (EL: groups,
release package, repos, extra repos, gpgcheck), SOURCE_DATE_EPOCH, and the mirror index's own identity (the
sha256 of each Debian Packages index; each EL repo's primary checksum), so a new package version on the
mirror is a new key. A rebuild that changes only files, hooks, templates, targets or identity starts from the
cached tree. A miss says which input changed against the newest entry of the same recipe
(`cache miss: packages (+vim)`).

An entry is CACHE/bootstrap/KEY/{tree/, listing.json, meta.json, frames/}: the tree itself, as the bootstrap left
it, its seal (builder/build/sealed.py: every file's path, type, mode, owner, size, mtime, ctime and sha256), and
the zstd frames of the last tarball built on it (builder/core/zstdframes.py), which the next build reuses. A cold
build bootstraps in its work directory and then moves the tree into the cache (a rename; a copy only when the cache
is on another file system), seals it and goes on above it; a rebuild checks the entry against its listing
(metadata only, a fraction of a second) and goes on above it too: builder/build/layered.py mounts an overlay with
the entry as its read-only lower layer, so no rebuild creates the tree again. An entry that does not match its
listing (or is not a 0700 directory of ours) is named with its first differences, removed and rebootstrapped,
never used; `imgbuild cache verify` also compares every file's contents. Entries of older formats are never used
(the format is part of the key) and go with the next prune. The cache is bounded ($IMGBUILD_CACHE_MAX, default
4G): the least recently used entries go first.

Builds share the cache (builder/core/locks.py): a build holds its entry shared (CACHE/bootstrap/.KEY.lock) from
its check to the end of the build, while the overlay stands on it; removing an entry (prune, a damaged entry)
needs it unheld, and an entry in use is left alone and said so. A new entry is made in a temp directory its
build claims, then renamed into place (the first of two builds keeping one key wins; the other builds on its own
temp and removes it at its end); prune removes only temps whose build is dead.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.build import sealed
from builder.build import unprivileged as unpriv
from builder.core import locks, mounts, treecopy
from builder.core import proc as runner
from builder.core.errors import BuilderError, CommandError, InputError
from builder.core.paths import cache_dir
from builder.core.sizes import human

if TYPE_CHECKING:
    from builder.build.pipeline import Preflight
    from builder.build.recipe import Recipe

log = logging.getLogger("imgbuild")

FORMAT = 3
TREE = "tree"
LISTING = "listing.json"
META = "meta.json"
DEFAULT_MAX = 4 << 30


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
    def tree(self) -> Path:
        return self.path / TREE

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


def problems(e: Entry) -> list[str]:
    """Why the entry cannot be used ([] when it can): a directory of ours (0700, owned by this uid) whose
    tree matches its listing, metadata only."""
    try:
        st = os.lstat(e.path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
            return [f"{e.path}: not a 0700 directory of uid {os.geteuid()}"]
        listing = sealed.load(e.path / LISTING)
    except (OSError, ValueError) as err:
        return [f"{getattr(err, 'filename', None) or e.path / LISTING}: {getattr(err, 'strerror', None) or err}"]
    return sealed.check(e.tree, listing)


def open_entry(data: dict[str, Any], name: str, held: contextlib.ExitStack) -> Entry | None:
    """The entry for these inputs, checked against its listing and held (shared: no prune removes it) until
    `held` closes; None on a miss (the reason logged). A damaged entry is said, removed (unless another build
    holds it) and not used."""
    key = key_of(data)
    d = root_dir() / key
    if not os.path.lexists(d / META):
        log.info("cache miss: %s", explain(data, name))
        return None
    with contextlib.ExitStack() as hold:
        hold.callback(_drop_lock, d)
        hold.enter_context(locks.using(d))
        try:
            meta = json.loads((d / META).read_text())
        except (OSError, ValueError):
            meta = {}
        e = Entry(key, d, meta)
        bad = problems(e)
        if not bad:
            meta["last_used"] = time.time()
            with contextlib.suppress(OSError):     # a read-only cache is still a cache
                _write_meta(d, meta)
            log.info("cache hit: bootstrap %s (%s, %d files checked)", key, human(e.size), meta.get("files", 0))
            held.push(hold.pop_all())
            return e
    log.warning("bootstrap cache entry %s is damaged (%s): removed, bootstrapping again", key, "; ".join(bad))
    _remove_damaged(d)
    return None


def _remove_damaged(d: Path) -> None:
    with locks.removable(d) as free:
        if free:
            _rmtree(d)
        else:
            log.info("bootstrap cache: %s is in use by another imgbuild (%s); not removed now", d.name,
                     locks.owner(d))


def _write_meta(d: Path, meta: dict) -> None:
    tmp = d / f".{META}.{os.getpid()}.tmp"     # builds reading the same entry update it side by side
    try:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, d / META)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@dataclass
class Kept:
    """What keep() did: the entry the build goes on above, and whether the build's own tree went into it
    (False: the cache is on another file system, it holds a copy and the build goes on in its own tree)."""

    entry: Entry
    moved: bool


def keep(data: dict[str, Any], name: str, tree: Path, held: contextlib.ExitStack) -> Kept | None:
    """Make the freshly bootstrapped tree an entry: moved into the cache (copied when the cache is on another
    file system), sealed, renamed to its key, held until `held` closes. When another build kept the same key
    meanwhile, this build's entry stays a temp of its own, removed when `held` closes. A failure to cache is a
    warning (None; the tree is back where it was): the build itself goes on."""
    base = root_dir()
    key = key_of(data)
    final = base / key
    tmp = base / f".{key}.{os.getpid()}.tmp"
    moved = False
    with contextlib.ExitStack() as hold, contextlib.ExitStack() as temp:
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(base, 0o700)      # entries are whole trees (their /etc/shadow ...): root's (or yours) only
            temp.enter_context(locks.claim(tmp, what=f"keeping bootstrap {key}", leftover=_rmtree))
            temp.callback(_rmtree, tmp)          # gone at the end unless renamed to its key
            os.chmod(tmp, 0o700)
            moved = _move_or_copy(tree, tmp / TREE)
            listing = sealed.seal(tmp / TREE)
            (tmp / LISTING).write_text(json.dumps(listing, separators=(",", ":")) + "\n")
            meta = {"name": name, "inputs": data, "created": time.time(), "last_used": time.time(),
                    "size": sealed.size(listing), "files": len(listing)}
            _write_meta(tmp, meta)
            hold.callback(_drop_lock, final)
            hold.enter_context(locks.using(final))    # held before it exists: no prune takes it from us
            try:
                os.rename(tmp, final)
                entry = Entry(key, final, meta)
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                log.info("bootstrap cache: %s was kept meanwhile by another build; this build uses its own", key)
                entry = Entry(key, tmp, meta)
                hold.push(temp.pop_all())        # ours until the build ends, then removed
        except (OSError, CommandError, BuilderError) as err:
            if runner.interrupted():
                raise
            if moved:
                os.rename(tmp / TREE, tree)
            log.warning("could not keep the bootstrap in the cache (%s); the build goes on", err)
            return None
        held.push(hold.pop_all())
    log.info("bootstrap kept in the cache as %s (%s, %d files)", key, human(entry.size), len(listing))
    prune(max_size(), keep={key})
    return Kept(entry, moved)


def _move_or_copy(tree: Path, dest: Path) -> bool:
    """Rename tree to dest (True); on another file system, copy it there, every attribute kept (False)."""
    if not os.path.ismount(tree):          # (a tree in RAM is a mount of its own)
        try:
            os.rename(tree, dest)
            return True
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
    treecopy.copy_tree(tree, dest)
    return False


def _drop_lock(d: Path) -> None:
    """The lock file of an entry nobody holds any more: gone (another build's hold keeps it)."""
    with locks.removable(d):
        pass


def _rmtree(d: Path) -> None:
    mounts.remove_tree(d)


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
        old = e.meta.get("inputs", {}).get("format") != FORMAT     # an older imgbuild's: never used again
        if everything or old or (limit is not None and total > limit):
            with locks.removable(e.path) as free:
                if not free:
                    log.info("bootstrap cache: kept %s (%s): in use by a running imgbuild (%s)", e.key,
                             e.meta.get("name", "?"), locks.owner(e.path))
                    continue
                _rmtree(e.path)
            total -= e.size
            gone.append(e)
    if base.is_dir():
        for d in [*base.glob(".*.tmp"), *base.glob(".*.old-*")]:
            if d.is_dir() and not d.is_symlink():
                with locks.removable(d) as dead:
                    if dead:                      # left by a killed run; a running build's stays
                        _rmtree(d)
        locks.clean_orphan_locks(base)
    return gone


def select(names: list[str]) -> list[Entry]:
    """The entries named: each NAME is a recipe name (every entry of it) or a key (or a unique prefix of one, at
    least 6 characters, as `cache list` shows them); no names: every entry. InputError when a NAME matches
    nothing."""
    es = entries()
    if not names:
        return es
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
    return list(chosen.values())


def verify(e: Entry) -> list[str]:
    """The full check of an entry: every file's metadata and contents against its listing ([]: intact). An
    entry of an older format is not checked: ["older format ..."]."""
    if e.meta.get("inputs", {}).get("format") != FORMAT:
        return [f"an older imgbuild's format {e.meta.get('inputs', {}).get('format')}: never used, "
                "removed by the next prune"]
    try:
        with locks.using(e.path):
            bad = problems(e)
            if bad and bad[0].startswith(str(e.path)):
                return bad
            try:
                listing = sealed.load(e.path / LISTING)
            except (OSError, ValueError) as err:
                return [f"{e.path / LISTING}: {err}"]
            return sealed.verify(e.tree, listing)
    finally:
        _drop_lock(e.path)


def remove(names: list[str]) -> list[Entry]:
    """Remove the entries named (see select). Nothing is removed unless every NAME matches and no matched entry
    is in use by a running build."""
    chosen = {e.key: e for e in select(names)}
    with contextlib.ExitStack() as stack:
        for e in chosen.values():
            if not stack.enter_context(locks.removable(e.path)):
                raise BuilderError(f"bootstrap cache: {e.key} ({e.meta.get('name', '?')}) is in use by a running "
                                   f"imgbuild ({locks.owner(e.path)}); nothing removed",
                                   "wait for that build to finish, then run this again")
        for e in chosen.values():
            _rmtree(e.path)
    return list(chosen.values())


def describe(e: Entry) -> str:
    i = e.meta.get("inputs", {})
    age = time.time() - e.meta.get("last_used", 0)
    old = "" if i.get("format") == FORMAT else f"[older format {i.get('format')}, never used]  "
    return (f"{e.key}  {e.meta.get('name', '?'):<20} {human(e.size):>9}  used {age / 3600:.1f} h ago  {old}"
            f"{i.get('method')} {i.get('distro')} {i.get('release')} {i.get('arch')} "
            f"packages: {', '.join(i.get('packages', [])) or '-'}")
