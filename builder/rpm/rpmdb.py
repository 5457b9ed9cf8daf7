"""The root's rpm database, in the format the root's own rpm reads.

Debian's rpm (4.18) writes sqlite and, unless told otherwise, puts it under ~/.rpmdb; the rpm of EL5-EL8
(< 4.16) reads only Berkeley DB. So:
  - the host's rpm/dnf always run with HOME pointing at a .rpmmacros that sets %_dbpath /var/lib/rpm;
  - when the root has its own rpm older than 4.16, its database is made again by that rpm, in a chroot:
    `rpm --initdb`, the release's keys imported, then every package registered (--justdb after dnf/yum,
    which already ran the scriptlets; a full `rpm -U --force` after rpm-native, which ran none);
  - a root without an rpm of its own keeps the host rpm's database at /var/lib/rpm (said in the log).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core import proc as runner
from builder.core.errors import CommandError
from builder.core.mounts import chroot_mounts

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")
DBPATH = "/var/lib/rpm"
SQLITE_SINCE = (4, 16)
STAGE = "/var/tmp/imgbuild-rpms"


def host_env(ctx: "Context") -> dict[str, str]:
    """Environment for the host's rpm/dnf/yum: a HOME whose .rpmmacros puts the database at /var/lib/rpm."""
    home = ctx.work / "rpm-home"
    home.mkdir(exist_ok=True)
    (home / ".rpmmacros").write_text(f"%_dbpath {DBPATH}\n")
    return dict(os.environ, HOME=str(home))


def target_rpm(ctx: "Context") -> str | None:
    for p in ("/usr/bin/rpm", "/bin/rpm"):
        if ctx.root.exists(p):
            return p
    return None


def target_version(ctx: "Context", rpm: str) -> tuple[int, ...] | None:
    try:
        out = runner.output(["chroot", str(ctx.root.path), rpm, "--version"])
    except CommandError:
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


def _chroot(ctx: "Context", *argv: str) -> None:
    runner.run(["chroot", str(ctx.root.path), *argv], env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                          "HOME": "/root", "LANG": "C"}, reap_group=True)


def register(ctx: "Context", rpms: list[Path], keys: tuple[str, ...], scripts_ran: bool) -> str:
    """Make the root's rpm database right for the root's own rpm; returns how (for the manifest/log)."""
    rpm = target_rpm(ctx)
    if rpm is None:
        if not scripts_ran:
            env = host_env(ctx)
            runner.run(["rpm", "--root", str(ctx.root.path), "--dbpath", DBPATH, "-U", "--force", "--nodeps",
                        "--replacepkgs", *map(str, rpms)], env=env)
        log.info("rpmdb: the root has no rpm of its own; its database is the host rpm's at %s", DBPATH)
        return "host"
    version = target_version(ctx, rpm)
    if scripts_ran and version is not None and version >= SQLITE_SINCE:
        log.info("rpmdb: the root's rpm %s reads the host's sqlite database", ".".join(map(str, version)))
        return "host-sqlite"
    # the packages copied in through RootFS (a link the tree has at that path is replaced, never written through)
    ctx.root.remove(STAGE, tree=True)
    ctx.root.mkdir(STAGE, 0o700)
    try:
        names = []
        for p in rpms:
            ctx.root.copy_in(p, f"{STAGE}/{p.name}", 0o644)
            names.append(f"{STAGE}/{p.name}")
        ctx.root.remove(DBPATH, tree=True)    # the database itself (a link there goes, not what it points to)
        ctx.root.mkdir(DBPATH)
        db = ("--dbpath", DBPATH)   # EL's default; said anyway, for rpms built with another default
        with chroot_mounts(ctx.root):
            _chroot(ctx, rpm, *db, "--initdb")
            if keys:
                _chroot(ctx, rpm, *db, "--import", *keys)
            if scripts_ran:
                _chroot(ctx, rpm, *db, "-i", "--justdb", "--nodeps", "--noscripts", "--notriggers", "--force",
                        *names)
            else:
                _chroot(ctx, rpm, *db, "-U", "--force", "--nodeps", "--replacepkgs", *names)
    finally:
        with contextlib.suppress(OSError):
            ctx.root.remove(STAGE, tree=True)
    log.info("rpmdb: registered %d packages with the root's own rpm (%s)", len(rpms),
             ".".join(map(str, version or ())) or "version unknown")
    return "target"
