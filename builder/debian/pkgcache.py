"""The Debian package cache: every .deb a build downloaded, shared by all builds and both Debian methods.

CACHE/packages/deb/NAME_VERSION_ARCH.deb, named as apt and debootstrap name them. A file enters the cache only
when its sha256 and size match the mirror's Packages index, under a temp name then renamed; on the way out to a
build it is checked against the index again, and one that no longer matches is removed and downloaded anew,
never used. The build sees only the files the current index lists, hard-linked (or copied) into its work
directory, so the cache itself is never written by apt, dpkg or debootstrap.

(EL packages have their own verified caches: rpm-native's under CACHE/el/rpms, named by checksum; dnf's and
yum's keepcache directories under CACHE/el/, which those tools verify themselves.)

Builds share the cache (builder/core/locks.py): a build holds CACHE/packages/.lock shared while it takes files from
the cache or adds to it (its temps are .part-PID-... names, renamed when whole), so builds run side by side;
removing packages (`fit` after a build, `imgbuild cache prune --packages`) holds it exclusively: prune waits
for the builds using the cache (and says for which), fit leaves the cache as it is for this time.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from builder.build.bootcache import parse_size
from builder.core import locks
from builder.core.net import file_digest, temp_beside
from builder.core.outputs import file_mode
from builder.core.paths import cache_dir
from builder.debian.apt import deb_checksums

if TYPE_CHECKING:
    from builder.debian.apt import Index

log = logging.getLogger("imgbuild")


def deb_dir() -> Path:
    return cache_dir() / "packages" / "deb"


def _lock(shared: bool) -> locks.Lock:
    return locks.Lock(deb_dir().parent / ".lock", shared=shared, what="removing packages from the package cache")


@contextlib.contextmanager
def using() -> Iterator[None]:
    """Hold the package cache for reading and adding (shared with other builds; removal waits)."""
    with _lock(shared=True):
        yield


def good(path: Path, want: tuple[str, int]) -> bool:
    try:
        return path.stat().st_size == want[1] and file_digest(path) == want[0]
    except OSError:
        return False


def link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


@dataclass
class Stats:
    files: int = 0
    bytes: int = 0
    damaged: int = 0


def stage_in(checksums: dict[str, tuple[str, int]], dest: Path) -> Stats:
    """Put the cached .debs the index lists into dest (created), each checked first; damaged ones are dropped."""
    dest.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    src = deb_dir()
    if not src.is_dir():
        return stats
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        want = checksums.get(entry.name)
        if want is None or not entry.is_file(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if not good(path, want):
            log.warning("package cache: %s is damaged (checksum differs from the index); downloading it again",
                        entry.name)
            with contextlib.suppress(OSError):
                path.unlink()
            stats.damaged += 1
            continue
        used(path)
        link_or_copy(path, dest / entry.name)
        stats.files += 1
        stats.bytes += want[1]
    return stats


def temp_in(d: Path, name: str) -> Path:
    """A temp name in d for name, unique to this writer (.part-PID-RANDOM-NAME: builds in separate pid
    namespaces can share a pid; net.download's temps too). Renamed into place when whole; a killed run's go with
    fit and prune."""
    return temp_beside(d / name)


def store(checksums: dict[str, tuple[str, int]], src: Path) -> Stats:
    """Keep the .debs in src that the cache lacks and the index vouches for; returns what was added."""
    stats = Stats()
    if not src.is_dir():
        return stats
    dest = deb_dir()
    for path in sorted(src.glob("*.deb")):
        want = checksums.get(path.name)
        final = dest / path.name
        if final.exists() or want is None:
            continue
        if not good(path, want):
            log.warning("package cache: not keeping %s: its checksum differs from the index", path.name)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        tmp = temp_in(dest, path.name)
        try:
            link_or_copy(path, tmp)
            os.chmod(tmp, file_mode())     # a public package: as the umask says
            os.rename(tmp, final)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            log.debug("package cache: cannot keep %s: %s", path.name, e)
            continue
        stats.files += 1
        stats.bytes += want[1]
    return stats


def prepared_dir() -> Path:
    """Prepared forms of the cached .debs (builder/debian/prepared.py), each with a NAME.deb.sha256 beside it."""
    return deb_dir().parent / "deb-prepared"


def size() -> tuple[int, int]:
    """(files, bytes) in the package cache (the .debs; their prepared forms are counted in the bytes)."""
    files = total = 0
    for d in (deb_dir(), prepared_dir()):
        with contextlib.suppress(OSError):
            for e in os.scandir(d):
                if e.name.endswith(".deb"):
                    files += d == deb_dir()
                    total += e.stat(follow_symlinks=False).st_size
    return files, total


DEFAULT_MAX = 2 << 30


def max_size() -> int:
    """The package cache's bound: $IMGBUILD_PACKAGES_MAX (500M, 4G ...), default 2G."""
    v = os.environ.get("IMGBUILD_PACKAGES_MAX")
    return parse_size(v) if v else DEFAULT_MAX


def used(path: Path) -> None:
    """Mark a cache file as just used (its mtime; the least recently used go first when the cache is full)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def fit(limit: int, keep: set[str] = frozenset()) -> tuple[int, int]:
    """Remove the least recently used packages (each .deb with its prepared copy) until the cache fits limit;
    the packages named in keep (those of the build that just ran) stay. Returns (packages, bytes) removed.
    While another build uses the cache, nothing is removed (the next build trims it)."""
    if not deb_dir().parent.is_dir():
        return 0, 0
    lock = _lock(shared=False)
    if not lock.acquire(wait=False):
        log.debug("package cache: in use by another imgbuild (%s); not trimmed now",
                  locks.describe(lock.holders(), lock.path))
        return 0, 0
    try:
        return _fit(limit, keep)
    finally:
        lock.release()


def _fit(limit: int, keep: set[str]) -> tuple[int, int]:
    groups: dict[str, list[tuple[Path, os.stat_result]]] = {}
    for d in (deb_dir(), prepared_dir()):
        with contextlib.suppress(OSError):
            for e in os.scandir(d):
                if e.name.startswith(".part-"):     # we hold the cache alone: a temp of a killed run
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)
                    continue
                if e.name.startswith("."):
                    continue
                name = e.name[:-len(".sha256")] if e.name.endswith(".deb.sha256") else e.name
                groups.setdefault(name, []).append((Path(e.path), e.stat(follow_symlinks=False)))
    total = sum(st.st_size for g in groups.values() for _, st in g)
    gone = freed = 0
    for name, g in sorted(groups.items(), key=lambda kv: max(st.st_mtime for _, st in kv[1])):
        if total <= limit:
            break
        if name.split("_", 1)[0] in keep:
            continue
        for path, st in g:
            with contextlib.suppress(OSError):
                path.unlink()
                total -= st.st_size
                freed += st.st_size
        gone += 1
    if gone:
        log.info("package cache: removed %d least recently used packages (%.1f MB) to stay under %.1f MB", gone,
                 freed / 1e6, limit / 1e6)
    return gone, freed


def prune() -> tuple[int, int]:
    """Empty the package cache; returns (files, bytes) removed. Waits (and says so) while builds use it."""
    if not deb_dir().parent.is_dir():
        return 0, 0
    lock = _lock(shared=False)
    lock.wait("package cache: in use by a running imgbuild")
    try:
        files, total = size()
        shutil.rmtree(deb_dir(), ignore_errors=True)
        shutil.rmtree(prepared_dir(), ignore_errors=True)
    finally:
        lock.release()
    return files, total


@contextlib.contextmanager
def for_build(index: "Index | None", work: Path) -> Iterator[Path]:
    """The directory of cached .debs for one Debian bootstrap; what the bootstrap adds to it (or leaves in
    WORK/debs-out) is kept in the cache afterwards, if the bootstrap succeeded."""
    sums = deb_checksums(index) if index is not None else {}
    din = work / "debs-in"
    with using():
        got = stage_in(sums, din)
    if got.files:
        log.info("package cache: %d packages (%.1f MB) verified and taken from the cache", got.files,
                 got.bytes / 1e6)
    yield din
    out = work / "debs-out"
    with using():
        kept = store(sums, din)
        kept2 = store(sums, out)
    if kept.files + kept2.files:
        log.info("package cache: kept %d new packages (%.1f MB)", kept.files + kept2.files,
                 (kept.bytes + kept2.bytes) / 1e6)
    shutil.rmtree(din, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
