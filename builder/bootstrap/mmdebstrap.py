"""mmdebstrap: the fast Debian bootstrap (apt resolves, parallel downloads, reproducible with SOURCE_DATE_EPOCH)."""
from __future__ import annotations

import logging
import os
import re
import shlex
import stat
from typing import TYPE_CHECKING, Callable

from .. import apt, localrepo, pkgcache, run as runner

if TYPE_CHECKING:
    from ..context import Context
    from ..rootfs import RootFS

log = logging.getLogger("imgbuild")


def debian_argv(ctx: "Context") -> tuple[list[str], list[str]]:
    """The options both Debian methods share: (options, positional release/target/mirror)."""
    b = ctx.recipe.bootstrap
    opts = [f"--arch={ctx.recipe.arch}", f"--components={','.join(b.components)}"]
    if b.packages:
        opts.append("--include=" + ",".join(b.packages))
    if os.environ.get(apt.KEYRING_ENV) and not b.unsigned:
        opts.append(f"--keyring={apt.keyring()}")      # the keyring imgbuild checked the index with
    return opts, [ctx.recipe.release, str(ctx.root.path), ctx.mirror]


def progress(pattern: str) -> Callable[[str], None]:
    """An on_line callback that shows the bootstrap tool's stage lines (those matching pattern) at INFO."""
    rx = re.compile(pattern)

    def show(line: str) -> None:
        if rx.match(line):
            log.info("  %s", line)
    return show


class Mmdebstrap:
    name = "mmdebstrap"
    doc = "mmdebstrap (Debian family): apt-based, fast, reproducible"
    program = "mmdebstrap"
    families = ("debian",)
    variants = ("minbase", "required", "important", "standard", "buildd", "essential", "apt", "debootstrap",
                "extract", "custom")

    def available(self) -> bool:
        return runner.which(self.program) is not None

    def bootstrap(self, ctx: "Context") -> None:
        opts, pos = debian_argv(ctx)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(ctx.epoch))
        # force-unsafe-io: dpkg skips its fsyncs; the tree is scratch space (the outputs are fsynced).
        base = ["mmdebstrap", f"--variant={ctx.recipe.bootstrap.variant or self.variants[0]}",
                "--format=directory", "--aptopt=Acquire::Retries \"3\"", "--dpkgopt=force-unsafe-io"]
        with localrepo.prepared(ctx) as plan:
            if plan is not None:
                # the local repository of prepared packages (builder/localrepo.py); its files linked into the
                # archive directory, where apt checks them against the repository's index and uses them
                argv = [*base, "--skip=essential/unlink", _link_in(plan.debs), plan.essential_hook, *opts, *pos[:2],
                        plan.line]
                runner.run(argv, env=env, on_line=progress(r"^[IWE]: "),
                           hint="run with -v to see mmdebstrap's full output; IMGBUILD_PREPARED=0 makes "
                                "mmdebstrap download from the mirror itself")
                localrepo.real_sources(ctx)
                apt_partial_owner(ctx.root)
                return
        with pkgcache.for_build(ctx.index, ctx.work) as debs:
            out = shlex.quote(str(ctx.work / "debs-out"))
            # the package cache: verified .debs linked in before apt runs (apt checks them against the index
            # again), the ones apt used linked out before mmdebstrap's cleanup empties the archive directory
            cache = ["--skip=essential/unlink", _link_in(debs),
                     f"--customize-hook=mkdir -p {out} && find \"$1\"/var/cache/apt/archives -maxdepth 1 "
                     f"-name '*.deb' -exec cp -l -t {out} {{}} +"]
            if ctx.recipe.bootstrap.unsigned:      # the recipe's explicit opt-out: apt takes the mirror unsigned
                pos[2] = localrepo.sources_line(ctx)
            runner.run([*base, *cache, *opts, *pos], env=env, on_line=progress(r"^[IWE]: "),
                       hint="run with -v to see mmdebstrap's full output")
        apt_partial_owner(ctx.root)


def _link_in(debs) -> str:
    """A setup hook that links the .debs of a directory into the tree's apt archive directory."""
    return (f"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives && "
            f"cp -al {shlex.quote(str(debs))}/. \"$1\"/var/cache/apt/archives/")


def apt_partial_owner(root: "RootFS") -> None:
    """apt gives its partial directories to _apt only when _apt can reach the tree (every parent directory of
    the output searchable), else leaves them root's: made _apt's always, as on an installed system, so the
    tarball does not depend on where it was built."""
    try:
        uid = root.uid("_apt")
    except KeyError:
        return
    for d in ("/var/cache/apt/archives/partial", "/var/lib/apt/lists/partial"):
        st = root.lstat(d)
        if st is not None and stat.S_ISDIR(st.st_mode):
            root.chown(d, uid, 0)


METHOD = Mmdebstrap()
