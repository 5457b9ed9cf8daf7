"""mmdebstrap: the fast Debian bootstrap (apt resolves, parallel downloads, reproducible with SOURCE_DATE_EPOCH)."""
from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import shutil
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from builder.core import paths
from builder.core import proc as runner
from builder.core.rootfs import RootFS
from builder.debian import apt, dpkgwatch, localrepo, pkgcache

if TYPE_CHECKING:
    from builder.build.context import Context

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


# mmdebstrap's and debootstrap's stage lines, and the sub-phase of the bootstrap each one starts (manifest.json's
# sub_timings; the breakdown `-v` prints at the end of a build)
STAGES = (("running apt-get update", "apt update"), ("downloading packages", "download"),
          ("extracting archives", "extract"), ("installing essential packages", "install essential"),
          ("installing remaining packages", "install the rest"), ("cleaning package lists", "clean up"),
          ("Resolving dependencies", "resolve"), ("Installing core packages", "install essential"),
          ("Unpacking the base system", "extract"), ("Configuring the base system", "configure"))
_HOOK = re.compile(r"^(I: running --[a-z]+-hook)( in shell)?: ")


def progress(pattern: str, ctx: "Context | None" = None) -> Callable[[str], None]:
    """An on_line callback that shows the bootstrap tool's stage lines (those matching pattern) at INFO and starts
    ctx's sub-phase a stage line names. A line that runs one of imgbuild's hooks shows only the hook's kind (its
    script, long and internal, with -v)."""
    rx = re.compile(pattern)

    def show(line: str) -> None:
        if not rx.match(line):
            return
        if ctx is not None:
            stage = next((name for text, name in STAGES if text in line), None)
            if stage:
                ctx.sub(stage)
        if log.isEnabledFor(logging.DEBUG):
            return                        # -v: the runner shows every line of the tool's output already
        hook = _HOOK.match(line)
        log.info("  %s", hook.group(1) if hook else line)
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

    @staticmethod
    def base(variant: str) -> list[str]:
        """mmdebstrap and the options every build gives it. force-unsafe-io: dpkg skips its fsyncs (the tree is
        scratch space; the outputs are fsynced). SANDBOX: apt's downloads run as root, said up front (see
        SANDBOX); apt_settled() takes it out of the tree afterwards."""
        return ["mmdebstrap", f"--variant={variant}", "--format=directory", "--aptopt=Acquire::Retries \"3\"",
                f"--aptopt={SANDBOX}", "--dpkgopt=force-unsafe-io"]

    def bootstrap(self, ctx: "Context") -> None:
        opts, pos = debian_argv(ctx)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(ctx.epoch))
        base = self.base(ctx.recipe.bootstrap.variant or self.variants[0])
        ctx.sub("prepare packages")
        with localrepo.prepared(ctx) as plan:
            if plan is not None:
                # the local repository of prepared packages (builder/debian/localrepo.py); its files linked into the
                # archive directory, where apt checks them against the repository's index and uses them
                argv = [*base, "--skip=essential/unlink", _link_in(plan.debs, ctx.root.path), plan.essential_hook,
                        *opts, *pos[:2], plan.line]
                ctx.sub("mmdebstrap setup")
                with dpkgwatch.watching(ctx.root.path, plan.total):
                    runner.run(argv, env=env, on_line=progress(r"^[IWE]: ", ctx),
                               hint="run with -v to see mmdebstrap's full output; IMGBUILD_PREPARED=0 makes "
                                    "mmdebstrap download from the mirror itself")
                localrepo.real_sources(ctx)
                apt_settled(ctx.root)
                return
        with pkgcache.for_build(ctx.plan.index, ctx.work) as debs:
            # the package cache: verified .debs linked in before apt runs (apt checks them against the index
            # again), the ones apt used linked out before mmdebstrap's cleanup empties the archive directory
            # (read through RootFS: the tree's packages are in it by then)
            cache = ["--skip=essential/unlink", _link_in(debs, ctx.root.path), _link_out(ctx.work / "debs-out")]
            if ctx.recipe.bootstrap.unsigned:      # the recipe's explicit opt-out: apt takes the mirror unsigned
                pos[2] = localrepo.sources_line(ctx)
            ctx.sub("mmdebstrap setup")
            runner.run([*base, *cache, *opts, *pos], env=env, on_line=progress(r"^[IWE]: ", ctx),
                       hint="run with -v to see mmdebstrap's full output")
        apt_settled(ctx.root)


def _link_in(debs, tree) -> str:
    """A setup hook that links the .debs of a directory into the tree's apt archive directory (copies them when
    the tree is on another file system: in RAM). (It runs before any package is in the tree: nothing there can
    lead elsewhere yet.)"""
    return (f"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives && "
            f"cp {paths.link_flag(debs, tree)} {shlex.quote(str(debs))}/. \"$1\"/var/cache/apt/archives/")


ARCHIVES = "/var/cache/apt/archives"


def _copy_out(dfd: int, name: str, st: os.stat_result, dest: str) -> None:
    """The regular file NAME of directory dfd (the very file st describes, opened without following a link)
    copied to dest, which is written under a temp name and renamed."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        if not os.path.samestat(os.fstat(fd), st):
            return
        tmp = f"{dest}.{os.getpid()}.tmp"
        with open(tmp, "wb") as out, os.fdopen(os.dup(fd), "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)
    finally:
        os.close(fd)


def _link_out(out: Path) -> str:
    """A customize hook (the tree's packages are installed by then) that hard-links the .debs apt left in the
    tree's archive directory into OUT: link_out, run by this very Python."""
    code = "import sys; from builder.build.bootstrap.mmdebstrap import link_out; link_out(sys.argv[1], sys.argv[2])"
    return (f"--customize-hook={shlex.quote(sys.executable)} -c {shlex.quote(code)} \"$1\" "
            f"{shlex.quote(str(out))}")


def link_out(root: str | os.PathLike, out: str | os.PathLike) -> int:
    """Hard-link the .debs in the tree's /var/cache/apt/archives into OUT (made if missing); returns how many.

    The tree holds its packages' files by now, so it is read through RootFS: links on the way to the archive
    directory are resolved inside the tree (never on the host), and only regular files there are linked - a link
    named *.deb is skipped, not followed (it could name any host file)."""
    tree = RootFS(root)
    os.makedirs(out, mode=0o700, exist_ok=True)
    n = 0
    for name in tree.listdir(ARCHIVES):
        if not name.endswith(".deb"):
            continue
        path = f"{ARCHIVES}/{name}"
        st = tree.lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            continue
        d, last = tree.parent_of(path)                   # the archive directory itself, resolved inside the tree
        dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if not os.path.samestat(os.stat(last, dir_fd=dfd, follow_symlinks=False), st):
                continue                                 # not what was looked at: left alone
            try:
                os.link(last, os.path.join(out, last), src_dir_fd=dfd, follow_symlinks=False)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                _copy_out(dfd, last, st, os.path.join(out, last))    # the tree is in RAM, OUT on disk
        except FileExistsError:
            pass
        finally:
            os.close(dfd)
        n += 1
    return n


# apt drops its downloads to the _apt user when _apt can reach the tree. The build's work directory is private
# (0700: no other user reaches a package's setuid files or device nodes while it is built), so it cannot:
# mmdebstrap would find that out, warn and fall back to root. Said up front instead, it is the same download
# without the warning. In the default path apt only copies .debs from imgbuild's own local repository (file://);
# when mmdebstrap downloads from the mirror itself (IMGBUILD_PREPARED=0), apt's http method runs as root, as
# mmdebstrap's fallback had it. Every package apt installs is checked against the mirror's signed index either
# way. (An ACL letting _apt into the work directory was not taken: it would not reach an output under a directory
# _apt cannot search, such as /root, nor an unprivileged build's namespace, and it would let _apt into the tree.)
SANDBOX = 'APT::Sandbox::User "root"'
APT_CONF = "/etc/apt/apt.conf.d/99mmdebstrap"


def apt_settled(root: "RootFS") -> None:
    """After mmdebstrap: the tree's apt as on an installed system (see apt_partial_owner), and the sandbox
    setting of the build taken out of the options mmdebstrap leaves in the tree (the guest's apt keeps its
    sandbox)."""
    text = root.read_text(APT_CONF, follow_last=False)
    if text is not None:
        kept = [line for line in text.splitlines(keepends=True) if line.strip() not in (SANDBOX, SANDBOX + ";")]
        if kept != text.splitlines(keepends=True):
            st = root.lstat(APT_CONF)
            if kept:
                root.write(APT_CONF, "".join(kept), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
                root.utime(APT_CONF, (st.st_atime, st.st_mtime))
            else:
                root.remove(APT_CONF)
    apt_partial_owner(root)


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
