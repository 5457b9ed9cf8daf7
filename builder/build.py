"""The build, top to bottom: check -> bootstrap -> steps -> hooks -> cleanup -> targets -> manifest -> publish.

Everything that can be checked without building is checked before anything is written. The tree is built in a
work directory and the outputs in a stage directory; only a complete build is moved to OUTPUT/NAME, in one step.
On any failure or Ctrl-C, mounts are taken down and the work and stage directories removed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import apt, bootstrap, hooks, inventory, manifest, mounts, pkgcache
from .context import Context
from .errors import InputError, Interrupted, Problem, RecipeError
from .families import family_of
from .outputs import publish
from .recipe import Loaded
from .rootfs import RootFS
from .steps import basefiles, cleanup, devices, files, init, network, password, templates
from . import bcache, cluster, outputs, unpriv, uptodate
from .targets import TARGETS, enabled

log = logging.getLogger("imgbuild")


@contextlib.contextmanager
def phase(ctx: Context, name: str, detail: str = "") -> Iterator[None]:
    log.info("==> %s%s", name, f" ({detail})" if detail else "")
    t = time.monotonic()
    try:
        yield
    finally:
        ctx.timings[name] = round(time.monotonic() - t, 3)
        log.debug("    %s took %.1f s", name, ctx.timings[name])


@dataclass
class Preflight:
    method: bootstrap.Method
    mirror: str
    epoch: int
    index: apt.Index | None = None    # Debian: the mirror's index
    plan: object = None               # EL: repos, release package, resolved packages (builder.rpm.seed.Plan)


def preflight(loaded: Loaded) -> Preflight:
    """Everything checked before the build writes anything: method, mirror, packages, epoch."""
    r = loaded.recipe
    family = family_of(r.distro)
    method = bootstrap.choose(r, family.name)
    if unpriv.active() and method.name != "mmdebstrap":
        raise InputError(f"bootstrap.method: {method.name} needs root; an unprivileged build runs Debian recipes "
                         "with mmdebstrap", "build as root, or set bootstrap.method: mmdebstrap (Debian recipes)")
    mirror = r.bootstrap.mirror
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    epoch = r.epoch if r.epoch is not None else int(env_epoch) if env_epoch.isdigit() else None
    if family.name == "rhel":
        from .rpm import seed

        plan = seed.plan(loaded, apt.cache_dir() / "el")
        stamps = [x.timestamp for x in plan.repodata if x.timestamp]   # the repos' own age, like Debian's Date
        return Preflight(method, mirror, epoch if epoch is not None else max(stamps, default=int(time.time())),
                         plan=plan)
    if mirror == "auto":
        mirror = apt.host_mirror(r.release)
    index = None
    if family.name == "debian":
        try:
            index = apt.fetch_index(mirror, r.release, r.arch, r.bootstrap.components,
                                    unsigned=r.bootstrap.unsigned)
        except apt.UnknownSuite as e:
            raise RecipeError([Problem(str(loaded.path), e.key, e.message)], e.hint) from None
        missing = index.missing(list(r.bootstrap.packages))
        if missing:
            problems = []
            for i, p in enumerate(r.bootstrap.packages):
                if p in missing:
                    close = f"; close: {', '.join(missing[p])}" if missing[p] else ""
                    problems.append(Problem(str(loaded.path), f"bootstrap.packages[{i}]",
                                            f"no package {p!r} in {r.release}/{r.arch} ({', '.join(r.bootstrap.components)}){close}"))
            raise RecipeError(problems, "check the spelling, the release and bootstrap.components")
    if epoch is None:
        epoch = index.date if index else int(time.time())
    return Preflight(method, mirror, epoch, index=index)


def _clean_leftovers(output: Path, name: str) -> None:
    """Unmount and remove what a killed run of this recipe left behind."""
    work = output / ".work"
    mounts.clean_stale(work)
    for d in list(work.glob(f"{name}-*")) + list(output.glob(f".{name}.partial-*")):
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            log.info("removing %s, left by an interrupted run", d)
            shutil.rmtree(d, ignore_errors=True)


def build(loaded: Loaded, output: Path, keep_tree: bool = False, use_cache: bool = True, force: bool = False) -> Path:
    """Build the recipe; returns OUTPUT/NAME. Raises BuilderError (or Interrupted) with nothing left behind.

    Unless force, no_cache or keep_tree: an OUTPUT/NAME built from the same inputs, its outputs intact, is kept
    as it is (builder/uptodate.py)."""
    r = loaded.recipe
    t0 = time.monotonic()
    pre = preflight(loaded)
    method = pre.method
    output = Path(output).resolve()
    build_key = uptodate.key(loaded, pre)
    if build_key and use_cache and not (force or keep_tree) and uptodate.current(output / r.name, build_key):
        log.info("%s is up to date: the recipe, its files, the bootstrap inputs and the mirror index are "
                 "unchanged and every output matches its sha256 (--force builds it again)", output / r.name)
        return output / r.name

    if unpriv.active() and (output == Path("/dev/shm") or Path("/dev/shm") in output.parents):
        raise InputError(f"{output}: an unprivileged build cannot work under /dev/shm (mmdebstrap bind-mounts "
                         "the host's /dev/shm into the tree)", "choose another output directory with -o")
    output.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(output, r.name)
    work = output / ".work" / f"{r.name}-{os.getpid()}"
    stage = output / f".{r.name}.partial-{os.getpid()}"
    work.mkdir(parents=True, mode=0o700)    # the tree: its /etc/shadow, its secrets
    stage.mkdir(mode=0o700)                 # opened up as the umask says at the end, unless it holds a secret
    ctx = Context(recipe=r, source=loaded.path.resolve(), root=RootFS(work / "rootfs"), work=work, stage=stage,
                  epoch=pre.epoch, family=family_of(r.distro), mirror=pre.mirror, index=pre.index,
                  method=method.name, plan=pre.plan, build_key=build_key)
    ctx.timings["preflight"] = round(time.monotonic() - t0, 3)
    final = output / r.name
    try:
        with phase(ctx, "bootstrap", f"{method.name} {r.distro} {r.release} {r.arch}"):
            key_inputs = bcache.inputs(r, pre)
            entry = bcache.lookup(key_inputs, r.name) if use_cache else None
            if entry is not None:
                bcache.restore(entry, work / "rootfs")
                ctx.cache = f"hit {entry.key}"
            else:
                method.bootstrap(ctx)
                saved = bcache.save(key_inputs, r.name, work / "rootfs") if use_cache else None
                ctx.cache = f"miss, kept as {saved.key}" if saved else "off" if not use_cache else "miss"
            ctx.root = RootFS(work / "rootfs")
            if unpriv.active():
                devices.run(ctx, devices.MMDEBSTRAP)   # what mmdebstrap makes in /dev when it can mknod
            ctx.packages = inventory.installed(ctx.root, ctx.family.package_db)
            if ctx.family.name == "debian":
                pkgcache.fit(pkgcache.max_size(), keep=set(ctx.packages))   # never the packages just used
        with phase(ctx, "hooks post-bootstrap"):
            hooks.run_phase(ctx, "post-bootstrap")
        with phase(ctx, "steps"):
            devices.run(ctx, r.devices)
            basefiles.run(ctx)
            network.run(ctx)
            password.run(ctx, r.root_password)
            init.run(ctx, r.init)
            files.run(ctx, r.files)
            cluster.run(ctx)
            templates.run(ctx, r.templates)
        with phase(ctx, "hooks post-files"):
            hooks.run_phase(ctx, "post-files")
        with phase(ctx, "hooks pre-pack"):
            hooks.run_phase(ctx, "pre-pack")
        with phase(ctx, "cleanup"):
            cleanup.run(ctx)
        for name, opts in enabled(r.targets):
            with phase(ctx, f"target {name}"):
                ctx.artifacts.update(TARGETS[name].produce(ctx, opts))
        ctx.timings["total"] = round(time.monotonic() - t0, 3)
        manifest.write(ctx, loaded)
        publish(stage, final)
        if keep_tree:
            kept = output / f"{r.name}.rootfs"
            outputs.keep_tree(ctx.root.path, kept)   # replaces only a tree an earlier --keep-tree left
            log.info("kept the tree at %s", kept)
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        mounts.clean_stale(work)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(OSError):
            (output / ".work").rmdir()
    log.info("built %s in %.1f s", final, time.monotonic() - t0)
    return final
