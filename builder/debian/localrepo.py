"""mmdebstrap from a local repository of prepared packages.

1. debresolve names every package mmdebstrap will install (apt's own answer to mmdebstrap's requests), and
   which of them its first (essential) stage installs.
2. The ones the package cache lacks are downloaded in parallel, each checked against the signed index, kept.
3. Each is prepared once (debprep: data.tar uncompressed) and kept beside the original with its own sha256,
   which is checked again before every use (a damaged one is made again from the verified original).
   mmdebstrap starts as soon as the first stage's packages are ready; the second stage's are made ready
   meanwhile (dpkg is single-threaded), and an essential hook links them in and updates apt's lists.
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
import logging
import os
import shlex
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from builder.core import net, paths
from builder.core import proc as runner
from builder.core.errors import MirrorError
from builder.core.outputs import file_mode
from builder.debian import pkgcache
from builder.debian import prepared as debprep
from builder.debian import resolve as debresolve
from builder.debian.apt import archive_name, deb_checksums, give_back_memory
from builder.debian.repoindex import write_index

if TYPE_CHECKING:
    import requests

    from builder.build.context import Context
    from builder.debian.apt import Index

log = logging.getLogger("imgbuild")
WORKERS = 4


# ------------------------------------------------------------------ prepared packages in the package cache


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _check_prepared(path: Path, original: tuple[str, int]) -> tuple[str, int] | None:
    """(sha256, size) of a prepared cache entry that was made from the very .deb the index lists now (the
    original's sha256 is recorded beside it) and matches its own recorded checksum. One made from another
    original (another mirror's package of the same name and version) is made again; a damaged one is removed."""
    try:
        sha, size, made_from = _sidecar(path).read_text().split()
    except (OSError, ValueError):
        made_from = None
    if made_from is None or made_from != original[0]:
        if path.exists() or _sidecar(path).exists():
            log.info("package cache: prepared %s was not made from the package the index lists; making it "
                     "again", path.name)
            for p in (path, _sidecar(path)):
                with contextlib.suppress(OSError):
                    p.unlink()
        return None
    if pkgcache.good(path, (sha, int(size))):
        pkgcache.used(path)
        return sha, int(size)
    log.warning("package cache: prepared %s is damaged (checksum differs); making it again", path.name)
    for p in (path, _sidecar(path)):
        with contextlib.suppress(OSError):
            p.unlink()
    return None


def _keep_prepared(original: Path, name: str, want: tuple[str, int]) -> tuple[str, int]:
    """Prepare original (just checked against the index's want) and keep it with its own checksum and the
    original's sha256 beside it."""
    dest = pkgcache.prepared_dir()
    dest.mkdir(parents=True, exist_ok=True)
    tmp = pkgcache.temp_in(dest, name)
    try:
        sha, size = debprep.prepare_file(original, tmp)
        os.chmod(tmp, file_mode())
        os.rename(tmp, dest / name)
        tmp.write_text(f"{sha} {size} {want[0]}\n")
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
        self.cpus = threading.Semaphore(os.cpu_count() or 1)   # downloads wait on the network, preparing on a CPU

    def _session(self) -> "requests.Session":
        if not hasattr(self.local, "s"):
            self.local.s = net.open_session(1)
        return self.local.s

    def _download(self, filename: str, want: tuple[str, int], name: str) -> None:
        """Into the package cache, verified against the index (net.download: nothing left on a failure)."""
        url = f"{self.index.mirror.rstrip('/')}/{filename}"
        dest = pkgcache.deb_dir()
        dest.mkdir(parents=True, exist_ok=True)
        try:
            size = net.download(url, dest / name, "sha256", want[0], want[1], session=self._session(),
                                mode=file_mode(), on_chunk=_stop_on_interrupt, hint="check the mirror and the network",
                                status_hint="the mirror may be syncing; retry")
        except net.Mismatch:
            raise MirrorError(f"{url}: checksum differs from the index", "the mirror may be syncing; retry") from None
        with self.lock:
            self.downloaded += 1
            self.bytes += size

    def __call__(self, stanza: debresolve.Stanza) -> tuple[str, str, int]:
        if runner.interrupted():    # Ctrl-C: the main thread is on its way out; no more work here
            raise concurrent.futures.CancelledError()
        name = archive_name(stanza.name, stanza.version, stanza.arch)
        want = self.sums.get(name)
        if want is None:
            raise MirrorError(f"{name}: not in the index's checksums", "run with --no-cache, or retry")
        got = _check_prepared(pkgcache.prepared_dir() / name, want)
        if got is None:
            original = pkgcache.deb_dir() / name
            if not pkgcache.good(original, want):
                if original.exists():
                    log.warning("package cache: %s is damaged (checksum differs from the index); downloading it "
                                "again", name)
                    with contextlib.suppress(OSError):
                        original.unlink()
                self._download(stanza.fields["Filename"].decode(), want, name)
            try:
                with self.cpus:
                    got = _keep_prepared(original, name, want)
            except debprep.NotADeb as e:
                raise MirrorError(f"{name}: cannot prepare it ({e}), though it matches the index",
                                  "IMGBUILD_PREPARED=0 builds with mmdebstrap downloading it itself") from None
            with self.lock:
                self.made += 1
        return name, *got


@dataclass
class Plan:
    repo: Path          # the local repository
    debs: Path          # the prepared files of the first stage, named as apt names them, linked in at setup
    line: str           # the sources.list line for mmdebstrap
    essential_hook: str  # links in the second stage's files (waiting for them) and updates apt's lists
    total: int = 0       # how many packages mmdebstrap will install


class _SecondStage(threading.Thread):
    """Makes the second stage's packages ready while mmdebstrap installs the first (dpkg leaves a core idle),
    then lists them in the repository and says so in a marker the essential hook waits for."""

    def __init__(self, futures, stanzas, repo: tuple, out: Path, marker: Path):
        super().__init__(daemon=True)
        self.futures, self.stanzas, self.repo, self.out, self.marker = futures, stanzas, repo, out, marker
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            repo, index, texts, files = self.repo
            self.out.mkdir(parents=True, exist_ok=True)
            for stanza, fut in zip(self.stanzas, self.futures):
                name, sha, size = fut.result()
                pkgcache.link_or_copy(pkgcache.prepared_dir() / name, self.out / name)
                files[stanza.name.encode()] = (f"pool/{name}", sha, size)
            write_index(repo, index, texts, files)
            self.marker.with_suffix(".done").touch()
        except BaseException as e:   # noqa: BLE001 - handed to the main thread, which raises it
            self.error = e
            self.marker.with_suffix(".failed").touch()


@contextlib.contextmanager
def prepared(ctx: "Context") -> Iterator[Plan | None]:
    """The local repository for ctx's bootstrap, or None when this recipe goes the ordinary way."""
    b, index = ctx.recipe.bootstrap, ctx.plan.index
    if index is None or not index.urls or os.environ.get("IMGBUILD_PREPARED") == "0":
        yield None
        return
    try:
        res = debresolve.resolve(index, b.variant or "minbase", list(b.packages))
    except debresolve.Unresolved as e:
        log.info("package set: %s; mmdebstrap downloads from the mirror itself", e)
        yield None
        return
    sums = deb_checksums(index, {archive_name(s.name, s.version, s.arch) for s in res.stanzas})
    with pkgcache.using():   # until both stages' files are linked out: no prune removes them meanwhile
        yield from _prepared(ctx, res, sums)


def _prepared(ctx: "Context", res, sums: dict[str, tuple[str, int]]) -> Iterator[Plan]:
    index = ctx.plan.index
    fetch = _Fetcher(index, sums)
    repo, debs, later = ctx.work / "repo", ctx.work / "debs-prepared", ctx.work / "debs-stage2"
    nxt = ctx.work / "repo-stage2"      # the second stage's index, until the essential hook moves it in
    debs.mkdir(parents=True, exist_ok=True)
    first = [s for s in res.stanzas if s.name in res.first]
    second = [s for s in res.stanzas if s.name not in res.first]
    log.info("package set: %d packages (%d in mmdebstrap's essential stage)", len(res.stanzas), len(first))
    files: dict[bytes, tuple[str, str, int]] = {}
    texts = [s.text for s in res.stanzas]
    bar = _bar(len(res.stanzas))
    pool = concurrent.futures.ThreadPoolExecutor(WORKERS)
    # the first stage's packages first; the second's queue behind them and finish during mmdebstrap's first
    # stage, which needs only its own
    done1 = [pool.submit(fetch, s) for s in first]
    done2 = [pool.submit(fetch, s) for s in second]
    if bar:
        for f in done1 + done2:
            f.add_done_callback(lambda _: bar.update(1))
    try:
        for stanza, fut in zip(first, done1):
            name, sha, size = fut.result()
            pkgcache.link_or_copy(pkgcache.prepared_dir() / name, debs / name)
            files[stanza.name.encode()] = (f"pool/{name}", sha, size)
        # until they are ready, the second stage's packages are listed as the mirror has them (apt's first
        # stage does not fetch them); the essential hook updates the lists once they are
        for s in second:
            name = archive_name(s.name, s.version, s.arch)
            if name not in sums:
                raise MirrorError(f"{name}: not in the index's checksums", "run with --no-cache, or retry")
            files[s.name.encode()] = (f"pool/{name}", *sums[name])
        write_index(repo, index, texts, dict(files))
        marker = ctx.work / "stage2"
        # the second stage's index is written beside the repository, and moved into it by the essential hook:
        # mmdebstrap's first `apt-get update` may still be reading the repository while the second stage is
        # ready (rewriting it in place then gave "Hash Sum mismatch": a new Packages under the old Release)
        stage2 = _SecondStage(done2, second, (nxt, index, texts, files), later, marker)
        stage2.start()
        hook = (f"--essential-hook=i=0; while [ ! -e {q(marker)}.done ] && [ ! -e {q(marker)}.failed ] && "
                f"[ $i -lt 36000 ]; do sleep 0.05; i=$((i+1)); done; [ -e {q(marker)}.done ] || exit 1; "
                f"cp -a {q(nxt)}/dists/. {q(repo)}/dists/ && "
                f"cp {paths.link_flag(later, ctx.root.path)} {q(later)}/. \"$1\"/var/cache/apt/archives/ && "
                "APT_CONFIG=\"$MMDEBSTRAP_APT_CONFIG\" apt-get -qq update")
        try:
            yield Plan(repo, debs, f"deb [trusted=yes] file://{repo} {index.suite} main", hook, len(res.stanzas))
        except BaseException:
            for f in done2:
                f.cancel()
            stage2.join()
            if stage2.error is not None and not isinstance(stage2.error, concurrent.futures.CancelledError):
                raise stage2.error from None      # what made the hook fail is the better message
            raise
        stage2.join()
        if stage2.error is not None:
            raise stage2.error
    finally:
        for f in done1 + done2:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)   # running ones stop at their next block on an interrupt
        give_back_memory()
        if bar:
            bar.close()
        for d in (repo, nxt, debs, later):
            shutil.rmtree(d, ignore_errors=True)
    if fetch.downloaded:
        log.info("downloaded %d packages (%.1f MB), each checked against the index", fetch.downloaded,
                 fetch.bytes / 1e6)
    log.info("packages: %d prepared now, %d from the cache", fetch.made, len(res.stanzas) - fetch.made)


def _stop_on_interrupt(_: int) -> None:
    """Ctrl-C: a download stops at its next block (the main thread is on its way out)."""
    if runner.interrupted():
        raise concurrent.futures.CancelledError()


def q(p: Path) -> str:
    return shlex.quote(str(p))


def _bar(total: int):
    if not sys.stderr.isatty() or logging.getLogger("imgbuild").getEffectiveLevel() > logging.INFO:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="pkg", desc="prepared", leave=False, file=sys.stderr)


def sources_line(ctx: "Context") -> str:
    """The sources.list line for the real mirror, as mmdebstrap writes it; an unsigned mirror (the recipe's
    bootstrap.unsigned) is marked trusted=yes, as mmdebstrap is given it."""
    comps = " ".join(ctx.recipe.bootstrap.components)
    opt = "[trusted=yes] " if ctx.recipe.bootstrap.unsigned else ""
    return f"deb {opt}{ctx.mirror} {ctx.recipe.release} {comps}"


def real_sources(ctx: "Context") -> None:
    """The sources.list mmdebstrap writes for the real mirror, in place of the local repository's."""
    ctx.root.write("/etc/apt/sources.list", sources_line(ctx) + "\n")
    ctx.root.utime("/etc/apt/sources.list", (ctx.epoch, ctx.epoch))
