"""The build, top to bottom: check -> bootstrap -> steps -> hooks -> cleanup -> targets -> manifest -> publish.

Everything that can be checked without building is checked before anything is written. The tree is built in a
work directory (OUTPUT/.work/NAME-PID, with the outputs staged in its stage/); only a complete build is moved to
OUTPUT/NAME, in one step. On any failure or Ctrl-C, mounts are taken down and the work directory removed.
A build holds the lock of OUTPUT/NAME for its whole run and the lock of its work directory (builder/core/locks.py):
what it finds in OUTPUT/.work unheld was left by a dead run and is unmounted and removed; what another running
build holds is never touched.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from builder.build import bootcache, bootstrap, hooks, layered, manifest, packages, sbom, uptodate
from builder.build import unprivileged as unpriv
from builder.build.context import Context
from builder.build.families import Plan, family_of
from builder.build.recipe import Loaded
from builder.build.steps import (
    basefiles,
    cleanup,
    cloudinit,
    cluster,
    devices,
    files,
    firstboot,
    init,
    network,
    password,
    templates,
)
from builder.build.targets import TARGETS, enabled
from builder.core import locks, mounts, outputs, sums
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError, Interrupted
from builder.core.outputs import publish
from builder.core.rootfs import RootFS

log = logging.getLogger("imgbuild")


@contextlib.contextmanager
def phase(ctx: Context, name: str, detail: str = "") -> Iterator[None]:
    runner.check_interrupt()      # an interrupt that reached us while no child ran stops the build here
    log.info("==> %s%s", name, f" ({detail})" if detail else "")
    t = time.monotonic()
    ctx.phase = name
    try:
        yield
    finally:
        ctx.sub(None)
        ctx.phase = ""
        ctx.timings[name] = round(time.monotonic() - t, 3)
        log.debug("    %s took %.1f s", name, ctx.timings[name])


@dataclass
class Preflight:
    method: bootstrap.Method
    mirror: str
    epoch: int
    plan: Plan = field(default_factory=Plan)   # the family's: Debian's index, EL's repos and packages


def preflight(loaded: Loaded) -> Preflight:
    """Everything checked before the build writes anything: method, mirror, packages, epoch."""
    r = loaded.recipe
    family = family_of(r.distro)
    method = bootstrap.choose(r, family)
    if unpriv.active() and method.name != "mmdebstrap":
        raise InputError(f"bootstrap.method: {method.name} needs root; an unprivileged build runs Debian recipes "
                         "with mmdebstrap", "build as root, or set bootstrap.method: mmdebstrap (Debian recipes)")
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    epoch = r.epoch if r.epoch is not None else int(env_epoch) if env_epoch.isdigit() else None
    mirror, epoch, plan = family.preflight(loaded, epoch)
    return Preflight(method, mirror, epoch, plan)


@dataclass(frozen=True)
class Step:
    """One build step: its module's run(ctx, opts), with opts the recipe's value for `option` (None: no options)."""

    name: str
    run: Callable[[Context, Any], None]
    option: str | None = None


# The steps, in the order they run ("==> steps"): each is builder/build/steps/NAME.py.
STEPS: tuple[Step, ...] = (
    Step("devices", devices.run, "devices"),
    Step("basefiles", basefiles.run),
    Step("network", network.run),
    Step("password", password.run, "root_password"),
    Step("init", init.run, "init"),
    Step("files", files.run, "files"),
    Step("cluster", cluster.run),
    Step("templates", templates.run, "templates"),
    Step("firstboot", firstboot.run, "firstboot"),
    Step("cloudinit", cloudinit.run, "cloud_init"),
)


def run_steps(ctx: Context) -> None:
    for step in STEPS:
        step.run(ctx, getattr(ctx.recipe, step.option) if step.option else None)


def _take_down(d: Path) -> None:
    """Unmount what is mounted under d, then remove d; never removes through a mount that stayed."""
    mounts.clean_stale(d)
    left = mounts.mounted_under(d)
    if left:
        raise BuilderError(f"{d}: {left[0]} is still mounted under it, so it is not removed",
                           f"unmount it (umount -l {left[0]}); the next build removes {d}")
    shutil.rmtree(d, ignore_errors=True)


def _remove_dead_dir(d: Path) -> None:
    """A directory of a dead run (we hold its lock, or the lock of the output it belongs to)."""
    log.info("removing %s, left by an interrupted run", d)
    _take_down(d)


def _clean_leftovers(output: Path, name: str) -> None:
    """Unmount and remove what killed runs left in OUTPUT: work directories that no live process holds (of
    any recipe; a running build holds its own, see builder/core/locks.py), and this recipe's stage and old-output
    directories (made only by builds of OUTPUT/NAME, which hold its lock; we hold it now)."""
    work = output / ".work"
    if work.is_dir():
        for d in sorted(work.iterdir()):
            if d.name.startswith(".") or not d.is_dir() or d.is_symlink():
                continue
            with locks.removable(d) as dead:
                if dead:
                    _remove_dead_dir(d)
        locks.clean_orphan_locks(work)
    for pattern in (f".{name}.partial-*", f".{name}.old-*"):
        for d in output.glob(pattern):
            if d.is_dir() and not d.is_symlink():
                _remove_dead_dir(d)


def build(loaded: Loaded, output: Path, keep_tree: bool = False, use_cache: bool = True, force: bool = False,
          signing: sums.Signing = sums.UNSIGNED) -> Path:
    """Build the recipe; returns OUTPUT/NAME. Raises BuilderError (or Interrupted) with nothing left behind.

    Unless force, no_cache or keep_tree: an OUTPUT/NAME built from the same inputs, its outputs intact, is kept
    as it is (builder/build/uptodate.py).

    One build of OUTPUT/NAME at a time: the build holds OUTPUT/.NAME.lock from before the up-to-date check to
    the end; another build of the same OUTPUT/NAME meanwhile stops at once (exit 1) naming the running one's
    pid. Builds of other recipes, or into other directories, run side by side.

    Every output gets SHA256SUMS (the manifest and every file artifact), signed as `signing` says."""
    r = loaded.recipe
    t0 = time.monotonic()
    pre = preflight(loaded)
    output = Path(output).resolve()
    if unpriv.active() and (output == Path("/dev/shm") or Path("/dev/shm") in output.parents):
        raise InputError(f"{output}: an unprivileged build cannot work under /dev/shm (mmdebstrap bind-mounts "
                         "the host's /dev/shm into the tree)", "choose another output directory with -o")
    final = output / r.name
    output.mkdir(parents=True, exist_ok=True)
    lock = locks.Lock(locks.lock_path(final), what=f"building {final}", remove=True)
    if not lock.acquire(wait=False):
        raise locks.Busy(f"another imgbuild ({locks.describe(lock.holders(), lock.path)}) is building {final}",
                         "wait for it to finish (or stop it), then build again; a build into another directory "
                         "(-o) can run meanwhile")
    try:
        return _build_locked(loaded, pre, output, t0, keep_tree, use_cache, force, signing)
    finally:
        lock.release()


def up_to_date(loaded: Loaded, output: Path, keep_tree: bool = False, use_cache: bool = True,
               force: bool = False, signing: sums.Signing = sums.UNSIGNED) -> bool:
    """Whether build() would find OUTPUT/NAME up to date and do nothing (the same check, after the same
    preflight: the mirror's index is read); builds nothing."""
    if force or keep_tree or not use_cache:
        return False
    build_key = uptodate.key(loaded, preflight(loaded), signing)
    return bool(build_key) and uptodate.current(Path(output).resolve() / loaded.recipe.name, build_key)


def _build_locked(loaded: Loaded, pre: Preflight, output: Path, t0: float, keep_tree: bool, use_cache: bool,
                  force: bool, signing: sums.Signing) -> Path:
    r = loaded.recipe
    final = output / r.name
    build_key = uptodate.key(loaded, pre, signing)
    if build_key and use_cache and not (force or keep_tree) and uptodate.current(final, build_key):
        log.info("%s is up to date: the recipe, its files, the bootstrap inputs and the mirror index are "
                 "unchanged and every output matches its sha256 (--force builds it again)", final)
        return final
    _clean_leftovers(output, r.name)
    try:
        with locks.claim(output / ".work" / f"{r.name}-{os.getpid()}", what=f"building {final}",
                         leftover=_remove_dead_dir) as work:
            try:
                with contextlib.ExitStack() as held:     # the cache entry and the overlay above it
                    ctx = _run(loaded, pre, output, work, t0, keep_tree, use_cache, build_key, held, signing)
            except BaseException as e:
                if isinstance(e, KeyboardInterrupt) or (runner.interrupted() and not isinstance(e, Interrupted)):
                    raise Interrupted() from None
                raise
            finally:
                with runner.cleanup():     # a Ctrl-C now waits until the mounts and the work dir are gone
                    try:
                        _take_down(work)
                    except BuilderError as e:
                        log.warning("%s (hint: %s)", e.message, e.hint)
    finally:
        with contextlib.suppress(OSError):
            (output / ".work").rmdir()     # fails while another build works there
    runner.check_interrupt()
    log.info("built %s in %.1f s: %s", final, time.monotonic() - t0, breakdown(ctx.timings))
    for phase, subs in ctx.sub_timings.items():
        log.debug("    %s: %s", phase, breakdown(subs))
    return final


def breakdown(timings: dict[str, float], least: float = 0.1) -> str:
    """'bootstrap 12.1 s, steps 0.3 s, ...': where the time went, in the order it was spent; the short ones
    (under `least` seconds) summed up as "the rest"."""
    shown = [f"{k} {v:.1f} s" for k, v in timings.items() if k != "total" and v >= least]
    rest = sum(v for k, v in timings.items() if k != "total" and v < least)
    return ", ".join(shown + ([f"the rest {rest:.1f} s"] if rest >= 0.05 else [])) or "nothing measured"


def _bootstrap(ctx: Context, method: bootstrap.Method, key_inputs: dict, use_cache: bool,
               held: contextlib.ExitStack) -> None:
    """WORK/rootfs: above the cache entry of these inputs (checked), or bootstrapped, kept in the cache and then
    above it (builder/build/bootcache.py, builder/build/layered.py); without the cache, just bootstrapped."""
    rootfs = ctx.work / "rootfs"
    entry = None
    if use_cache:
        ctx.sub("check the cache entry")
        entry = bootcache.open_entry(key_inputs, ctx.recipe.name, held)
        ctx.cache = f"hit {entry.key}" if entry else "miss"
    if entry is None:
        ctx.sub(None)
        if method.name == "mmdebstrap":
            ram = layered.in_ram(rootfs, held)
            if ram:
                log.info("bootstrapping in RAM (a tmpfs of up to %s; %s=0 keeps it on the disk)", ram,
                         layered.RAM_ENV)
        method.bootstrap(ctx)
        runner.check_interrupt()
        if not use_cache:
            ctx.cache = "off"
            return
        ctx.sub("seal the cache entry")
        kept = bootcache.keep(key_inputs, ctx.recipe.name, rootfs, held)
        if kept is None:
            return
        entry = kept.entry
        ctx.cache = f"miss, kept as {entry.key}"
        if not kept.moved:
            ctx.cache += " (copied into the cache; the build goes on in its own tree)"
            return
    ctx.sub("tree over the cache entry")
    ctx.cache += f" ({layered.tree_over(entry.tree, ctx.work, held)})"
    ctx.frames = entry.path / "frames"      # the tarball's frames, reused by the next build on this entry
    ctx.sub(None)


def _run(loaded: Loaded, pre: Preflight, output: Path, work: Path, t0: float, keep_tree: bool, use_cache: bool,
         build_key, held: contextlib.ExitStack, signing: sums.Signing) -> Context:
    r = loaded.recipe
    method = pre.method
    final = output / r.name
    os.chmod(work, 0o700)       # the tree: its /etc/shadow, its secrets
    stage = work / "stage"      # the outputs; in the work directory, so the work directory's lock covers it
    stage.mkdir(mode=0o700)     # opened up as the umask says at the end, unless it holds a secret
    ctx = Context(recipe=r, source=loaded.path.resolve(), root=RootFS(work / "rootfs"), work=work, stage=stage,
                  epoch=pre.epoch, family=family_of(r.distro), mirror=pre.mirror, plan=pre.plan,
                  method=method.name, build_key=build_key)
    ctx.timings["preflight"] = round(time.monotonic() - t0, 3)
    with phase(ctx, "bootstrap", f"{method.name} {r.distro} {r.release} {r.arch}"):
        _bootstrap(ctx, method, bootcache.inputs(r, pre), use_cache, held)
        ctx.root = RootFS(work / "rootfs")
        if unpriv.active():
            devices.run(ctx, devices.MMDEBSTRAP)   # what mmdebstrap makes in /dev when it can mknod
        ctx.packages = packages.installed(ctx.root, ctx.family.package_db)   # read again for the SBOM, at the end
        ctx.family.after_bootstrap(ctx)
    with phase(ctx, "hooks post-bootstrap"):
        hooks.run_phase(ctx, "post-bootstrap")
    with phase(ctx, "steps"):
        run_steps(ctx)
    with phase(ctx, "hooks post-files"):
        hooks.run_phase(ctx, "post-files")
    with phase(ctx, "hooks pre-pack"):
        hooks.run_phase(ctx, "pre-pack")
    with phase(ctx, "cleanup"):
        cleanup.run(ctx)
    for name, opts in enabled(r.targets):
        with phase(ctx, f"target {name}"):
            ctx.artifacts.update(TARGETS[name].produce(ctx, opts))
    with phase(ctx, "sbom"):      # the packages as the finished tree has them: manifest.json's list too
        ctx.artifacts[sbom.KIND] = sbom.write(ctx, loaded)
    ctx.timings["total"] = round(time.monotonic() - t0, 3)
    written = manifest.write(ctx, loaded)
    sums.write(stage, manifest.hashes(written, stage), signing)
    runner.check_interrupt()
    with runner.cleanup():      # not cut in two by a Ctrl-C: the previous output or the new one, whole
        publish(stage, final)
        if keep_tree:
            kept = output / f"{r.name}.rootfs"
            tree = ctx.root.path
            if os.path.ismount(tree):     # an overlay, a tmpfs: what it holds is copied out
                tree = work / "kept"
                layered.copy_out(ctx.root.path, tree)
            outputs.keep_tree(tree, kept)   # replaces only a tree an earlier --keep-tree left
            log.info("kept the tree at %s", kept)
    return ctx
