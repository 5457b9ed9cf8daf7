"""rpm-native: an EL root on a host without a usable yum/dnf (the approach of Debian's rinse, with real
dependency resolution).

  1. seed the release's repo files and keys, pointed at the mirror
  2. read every enabled repo's repodata; resolve the requested packages and groups (requires, provides,
     file provides, versions, newest across repos) before anything is downloaded
  3. download in parallel into the checksum-verified cache; check signatures with the release's keys
  4. unpack every package with rpmfile (modes, owners, links, devices, setuid)
  5. let the root's own rpm register every package in its own database format and run the scriptlets, in a
     chroot (rpm -U --force); a root without an rpm of its own gets the host's rpm with --root
  6. if the root has yum, let it finish: `yum install` of what was asked, which finds nothing left to do
     unless something was missed
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core import proc as runner
from builder.core.errors import CommandError, MirrorError
from builder.core.mounts import chroot_mounts
from builder.core.paths import cache_dir
from builder.rpm import fetch, rpmdb, seed
from builder.rpm.unpack import Owners, unpack

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")
FIRST = ("filesystem", "setup", "basesystem")   # directories and symlinks (/bin -> usr/bin) before the rest


def check_signatures(ctx: "Context", rpms, keys: tuple[str, ...]) -> None:
    """rpmkeys --checksig with only the release's keys in a throwaway keyring."""
    with tempfile.TemporaryDirectory(prefix="imgbuild-keys-") as db:
        for k in keys:
            runner.run(["rpmkeys", "--dbpath", db, "--import", str(ctx.root.resolve(k))])
        for p in rpms:
            try:
                runner.run(["rpmkeys", "--dbpath", db, "--checksig", str(p)])
            except CommandError as e:
                raise MirrorError(f"{p.name}: signature check failed with the release's keys",
                                  "the package is not signed by the release's key; bootstrap.gpgcheck: false "
                                  "skips the check (not recommended)") from e


class RpmNative:
    name = "rpm-native"
    program = "rpm"
    doc = "rpm-native (EL family): our own resolver and downloader, rpmfile unpacking, the root's rpm registers"
    families = ("rhel",)
    variants: tuple[str, ...] = ()

    def available(self) -> bool:
        return True   # pure Python; the host's rpm is only a fallback for roots without their own

    def bootstrap(self, ctx: "Context") -> None:
        b, plan = ctx.recipe.bootstrap, ctx.plan.seed
        seed.apply(ctx, plan)
        packages = list(plan.packages)
        log.info("%d packages to install", len(packages))
        paths = fetch.download(packages, cache_dir() / "el" / "rpms")
        if b.gpgcheck:
            checked = {r.id for r in plan.repos if r.gpgcheck}     # an extra repo may say gpgcheck: false
            check_signatures(ctx, [paths[p.nevra] for p in packages if p.repo in checked], plan.keys)
        order = sorted(packages, key=lambda p: (p.name not in FIRST, FIRST.index(p.name) if p.name in FIRST
                                                else 0, p.name))
        owners = Owners()
        for p in order:
            unpack(paths[p.nevra], ctx.root, owners)
        owners.apply(ctx.root)
        rpmdb.register(ctx, [paths[p.nevra] for p in order], plan.keys, scripts_ran=False)
        seed.point_repos(ctx, plan)
        wanted = list(dict.fromkeys([*b.packages, plan.release.name]))
        self._yum_finish(ctx, wanted, list(b.groups), [x.id for x in plan.repos])

    def _yum_finish(self, ctx: "Context", packages: list[str], groups: list[str], repos: list[str]) -> None:
        yum = next((p for p in ("/usr/bin/yum", "/usr/bin/dnf") if ctx.root.exists(p)), None)
        if yum is None:
            return
        argv = ["chroot", str(ctx.root.path), yum, "-y", "--disablerepo=*", *(f"--enablerepo={x}" for x in repos),
                "install", *packages, *(f"@{g}" for g in groups)]
        resolv = ctx.root.read_bytes("/etc/resolv.conf")
        host_resolv = Path("/etc/resolv.conf").read_bytes() if Path("/etc/resolv.conf").exists() else b""
        try:
            ctx.root.write("/etc/resolv.conf", host_resolv)
            with chroot_mounts(ctx.root):
                runner.run(argv, reap_group=True)
        except CommandError as e:
            log.warning("the root's own %s could not finish (%s); the packages are installed and registered, "
                        "but run `%s install` in the guest to check", yum, e.tail[-1] if e.tail else e.status, yum)
        finally:
            if resolv is None:
                ctx.root.remove("/etc/resolv.conf")
            else:
                ctx.root.write("/etc/resolv.conf", resolv)


METHOD = RpmNative()
