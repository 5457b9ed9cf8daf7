"""dnf and yum: the host's own tool with --installroot, repos from the seeded root, groups and packages.

The seeded repo files stay in the root as the guest will use them; the host tool reads a copy whose gpgkey
paths point into the root (dnf and yum read key files from the host's file system). Downloaded packages are
kept in imgbuild's cache, which also lets the root's own rpm re-register them in its own database format.
"""
from __future__ import annotations

import configparser
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core import proc as runner
from builder.core.paths import cache_dir
from builder.rpm import rpmdb, seed

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")


def _key(ctx: "Context", plan: seed.Plan, url: str, keydir: Path) -> str:
    """A gpgkey URL for the host tool. The release's keys are read from imgbuild's own copy outside the root
    (a package installed meanwhile may replace the root's file by a link to anywhere); others from the root."""
    if not url.startswith("file://"):
        return url
    inside = url[len("file://"):]
    data = plan.files.get(inside)
    if data is None:
        return "file://" + str(ctx.root.resolve(inside))
    keydir.mkdir(exist_ok=True)
    copy = keydir / inside.strip("/").replace("/", "_")
    copy.write_bytes(data)
    return "file://" + str(copy)


def host_repos(ctx: "Context", plan: seed.Plan, dest: Path) -> Path:
    """A reposdir for the host tool: the enabled repos, keys as host files outside the root."""
    dest.mkdir(parents=True, exist_ok=True)
    cp = configparser.RawConfigParser(interpolation=None)
    for r in plan.repos:
        keys = [_key(ctx, plan, k, dest.parent / "keys") for k in r.gpgkeys]
        cp[r.id] = {"name": r.name, "baseurl": r.baseurl, "enabled": "1",
                    "gpgcheck": "1" if ctx.recipe.bootstrap.gpgcheck and r.gpgcheck else "0",
                    "gpgkey": " ".join(keys)}
    with open(dest / "imgbuild.repo", "w") as f:
        cp.write(f)
    return dest


def _progress(line: str) -> None:
    if re.match(r"^(Transaction Summary|Install +\d+ Packages?|Total download|Complete!)", line.strip()):
        log.info("  %s", line.strip())


class HostTool:
    """`dnf` or `yum` of the host, with --installroot."""

    families = ("rhel",)
    variants: tuple[str, ...] = ()

    def __init__(self, name: str):
        self.name = self.program = name
        self.doc = f"{name} (EL family): the host's {name} --installroot with the release's repos"

    def available(self) -> bool:
        return runner.which(self.program) is not None

    def bootstrap(self, ctx: "Context") -> None:
        b, r, plan = ctx.recipe.bootstrap, ctx.recipe, ctx.plan.seed
        seed.apply(ctx, plan)
        reposdir = host_repos(ctx, plan, ctx.work / "repos.d")
        pkgcache = cache_dir() / "el" / self.name
        # dnf takes the target arch as an option; yum takes it from the personality (setarch i386 yum ...)
        foreign = r.arch != os.uname().machine
        prefix = ["setarch", r.arch] if foreign and self.name == "yum" else []
        arch = [f"--forcearch={r.arch}"] if self.name == "dnf" else []
        argv = [*prefix, self.program, "-y", f"--installroot={ctx.root.path}", f"--releasever={plan.releasever}",
                f"--setopt=reposdir={reposdir}", f"--setopt=cachedir={pkgcache}", "--setopt=keepcache=1", *arch]
        if self.name == "dnf":
            argv.append("--setopt=install_weak_deps=0")
        if not b.gpgcheck:
            argv.append("--nogpgcheck")
        argv += ["install", *dict.fromkeys([*b.packages, plan.release.name]), *(f"@{g}" for g in b.groups)]
        env = rpmdb.host_env(ctx)
        runner.run(argv, env=env, on_line=_progress, hint=f"run with -v to see {self.name}'s full output")
        installed = set(runner.output(["rpm", "--root", str(ctx.root.path), "--dbpath", rpmdb.DBPATH, "-qa",
                                       "--qf", "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm\\n"], env=env).split())
        rpms = sorted(p for p in pkgcache.glob("**/packages/*.rpm") if p.name in installed)
        rpmdb.register(ctx, rpms, plan.keys, scripts_ran=True)
        seed.point_repos(ctx, plan)


DNF = HostTool("dnf")
YUM = HostTool("yum")
