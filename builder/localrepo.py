"""mmdebstrap from a local repository of prepared packages.

1. debresolve names every package mmdebstrap will install (apt's own answer to mmdebstrap's requests).
2. The ones the package cache lacks are downloaded in parallel, each checked against the signed index, kept.
3. Each is prepared once (debprep: data.tar uncompressed) and kept beside the original with its own sha256,
   which is checked again before every use (a damaged one is made again from the verified original).
4. A repository in the work directory lists exactly those packages: the mirror's stanzas with the prepared
   files' Filename, Size and SHA256, and a Release with the mirror's Origin, Label, Suite and Codename (apt
   patterns select by them). It is trusted because each of its files is traced to the signed InRelease here.
   The prepared files are linked into the tree's apt archive directory, so apt only checks them.
5. After mmdebstrap, /etc/apt/sources.list gets the line mmdebstrap writes for the real mirror.

Anything this path does not model (a variant such as extract or custom, a file or pattern in the package list,
an index without its stanzas) goes the ordinary way: mmdebstrap downloading from the mirror itself.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import requests

from . import debprep, debresolve, pkgcache
from .apt import archive_name
from .errors import MirrorError

if TYPE_CHECKING:
    from .apt import Index
    from .context import Context

log = logging.getLogger("imgbuild")
WORKERS = 4
_STRIP = (b"Filename:", b"Size:", b"MD5sum:", b"SHA1:", b"SHA256:", b"SHA512:")


def write_index(repo: Path, index: "Index", texts: list[bytes], files: dict[bytes, tuple[str, str, int]] | None = None
                ) -> None:
    """A repository's dists/SUITE/{Release, main/binary-ARCH/Packages} for the stanzas given; files maps a
    package name to (Filename, sha256, size) to put in its stanza."""
    rel = repo / "dists" / index.suite
    pdir = rel / "main" / f"binary-{index.arch}"
    pdir.mkdir(parents=True, exist_ok=True)
    out = []
    for text in texts:
        lines = text.split(b"\n")
        if files is not None:
            lines = [ln for ln in lines if not ln.startswith(_STRIP)]
            name = lines[0].split(b":", 1)[1].strip()
            fn, sha, size = files[name]
            lines += [f"Filename: {fn}".encode(), f"Size: {size}".encode(), f"SHA256: {sha}".encode()]
        out.append(b"\n".join(lines) + b"\n")
    packages = b"\n".join(out)
    (pdir / "Packages").write_bytes(packages)
    head = "".join(f"{k}: {v}\n" for k, v in index.release)
    (rel / "Release").write_text(
        f"{head}Architectures: {index.arch}\nComponents: main\nSHA256:\n"
        f" {hashlib.sha256(packages).hexdigest()} {len(packages)} main/binary-{index.arch}/Packages\n")


# ------------------------------------------------------------------ prepared packages in the package cache


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _check_prepared(path: Path) -> tuple[str, int] | None:
    """(sha256, size) of a prepared cache entry that matches its recorded checksum; a damaged one is removed."""
    try:
        sha, size = _sidecar(path).read_text().split()
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if len(data) == int(size) and hashlib.sha256(data).hexdigest() == sha:
        return sha, int(size)
    log.warning("package cache: prepared %s is damaged (checksum differs); making it again", path.name)
    for p in (path, _sidecar(path)):
        with contextlib.suppress(OSError):
            p.unlink()
    return None


def _keep_prepared(original: Path, name: str) -> tuple[str, int]:
    dest = pkgcache.prepared_dir()
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".part-{os.getpid()}-{threading.get_ident()}-{name}"
    try:
        sha, size = debprep.prepare_file(original, tmp)
        os.chmod(tmp, 0o644)
        os.rename(tmp, dest / name)
        tmp.write_text(f"{sha} {size}\n")
        os.rename(tmp, _sidecar(dest / name))
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return sha, size


class _Fetcher:
    """One .deb made ready: prepared entry, else original in the cache, else downloaded (then kept)."""

    def __init__(self, index: "Index", sums: dict[str, tuple[str, int]]):
        self.index, self.sums = index, sums
        self.local = threading.local()
        self.downloaded = self.bytes = self.made = 0
        self.lock = threading.Lock()

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
        return self.local.s

    def _download(self, filename: str, want: tuple[str, int]) -> bytes:
        url = f"{self.index.mirror.rstrip('/')}/{filename}"
        try:
            r = self._session().get(url, timeout=60)
        except requests.RequestException as e:
            raise MirrorError(f"cannot download {url}: {e.__class__.__name__}", "check the mirror and the network")
        if r.status_code != 200:
            raise MirrorError(f"{url}: HTTP {r.status_code}", "the mirror may be syncing; retry")
        if len(r.content) != want[1] or hashlib.sha256(r.content).hexdigest() != want[0]:
            raise MirrorError(f"{url}: checksum differs from the index", "the mirror may be syncing; retry")
        with self.lock:
            self.downloaded += 1
            self.bytes += want[1]
        return r.content

    def __call__(self, stanza: debresolve.Stanza) -> tuple[str, str, int]:
        name = archive_name(stanza.name, stanza.version, stanza.arch)
        got = _check_prepared(pkgcache.prepared_dir() / name)
        if got is None:
            want = self.sums.get(name)
            if want is None:
                raise MirrorError(f"{name}: not in the index's checksums", "run with --no-cache, or retry")
            original = pkgcache.deb_dir() / name
            if not pkgcache.good(original, want):
                if original.exists():
                    log.warning("package cache: %s is damaged (checksum differs from the index); downloading it "
                                "again", name)
                    with contextlib.suppress(OSError):
                        original.unlink()
                pkgcache.keep(name, self._download(stanza.fields["Filename"].decode(), want))
            got = _keep_prepared(original, name)
            with self.lock:
                self.made += 1
        return name, *got


@dataclass
class Plan:
    repo: Path          # the local repository
    debs: Path          # the prepared files, named as apt names them, to link into the archive directory
    line: str           # the sources.list line for mmdebstrap


@contextlib.contextmanager
def prepared(ctx: "Context") -> Iterator[Plan | None]:
    """The local repository for ctx's bootstrap, or None when this recipe goes the ordinary way."""
    b = ctx.recipe.bootstrap
    if ctx.index is None or not ctx.index.urls or os.environ.get("IMGBUILD_PREPARED") == "0":
        yield None
        return
    try:
        chosen = debresolve.resolve(ctx.index, b.variant or "required", list(b.packages))
    except debresolve.Unresolved as e:
        log.info("package set: %s; mmdebstrap downloads from the mirror itself", e)
        yield None
        return
    from .apt import deb_checksums

    fetch = _Fetcher(ctx.index, deb_checksums(ctx.index))
    repo, debs = ctx.work / "repo", ctx.work / "debs-prepared"
    debs.mkdir(parents=True, exist_ok=True)
    files: dict[bytes, tuple[str, str, int]] = {}
    bar = _bar(len(chosen))
    try:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            for stanza, (name, sha, size) in zip(chosen, pool.map(fetch, chosen)):
                pkgcache.link_or_copy(pkgcache.prepared_dir() / name, debs / name)
                files[stanza.name.encode()] = (f"pool/{name}", sha, size)
                if bar:
                    bar.update(1)
    finally:
        if bar:
            bar.close()
    if fetch.downloaded:
        log.info("downloaded %d packages (%.1f MB), each checked against the index", fetch.downloaded,
                 fetch.bytes / 1e6)
    log.info("package set: %d packages (%d prepared now, %d from the cache)", len(chosen), fetch.made,
             len(chosen) - fetch.made)
    write_index(repo, ctx.index, [s.text for s in chosen], files)
    yield Plan(repo, debs, f"deb [trusted=yes] file://{repo} {ctx.index.suite} main")
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(debs, ignore_errors=True)


def _bar(total: int):
    if not sys.stderr.isatty() or logging.getLogger("imgbuild").getEffectiveLevel() > logging.INFO:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="pkg", desc="packages", leave=False, file=sys.stderr)


def real_sources(ctx: "Context") -> None:
    """The sources.list mmdebstrap writes for the real mirror, in place of the local repository's."""
    comps = " ".join(ctx.recipe.bootstrap.components)
    path = ctx.root.resolve("/etc/apt/sources.list")
    path.write_text(f"deb {ctx.mirror} {ctx.recipe.release} {comps}\n")
    os.utime(path, (ctx.epoch, ctx.epoch), follow_symlinks=False)
