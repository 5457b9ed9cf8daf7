"""The Debian family: mmdebstrap or debootstrap from a mirror whose signed index is read first."""
from __future__ import annotations

from typing import TYPE_CHECKING

from builder.build.families.base import Family, Plan
from builder.build.steps import init, network
from builder.core.errors import Problem, RecipeError
from builder.debian import apt, pkgcache

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Loaded

# Debian releases before bullseye (11) make SHA-512 hashes and their libc reads no yescrypt
SHA512_RELEASES = frozenset({"etch", "lenny", "squeeze", "wheezy", "jessie", "stretch", "buster",
                             "4", "5", "6", "7", "8", "9", "10"})
XEN_FLAVOURS = {"amd64": "amd64", "i386": "686-pae", "arm64": "arm64"}


class Debian(Family):
    name = "debian"
    vm_packages = {"kernel": "linux-image-amd64", "bios": "grub-pc-bin", "uefi": "grub-efi-amd64-bin"}
    archs = ("amd64", "arm64", "armhf", "armel", "i386", "mips64el", "ppc64el", "riscv64", "s390x")
    package_db = "dpkg"
    auto_methods = ("mmdebstrap", "debootstrap")
    bootstrap_keys = ("components",)
    # lower case, with :arch, =version or /release
    package_name = r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9]+)?([=/][A-Za-z0-9.+~:-]+)?"

    def preflight(self, loaded: "Loaded", epoch: int | None) -> tuple[str, int, Plan]:
        r = loaded.recipe
        mirror = apt.host_mirror(r.release) if r.bootstrap.mirror == "auto" else r.bootstrap.mirror
        try:
            index = apt.fetch_index(mirror, r.release, r.arch, r.bootstrap.components,
                                    unsigned=r.bootstrap.unsigned)
        except apt.UnknownSuite as e:
            raise RecipeError([Problem(str(loaded.path), e.key, e.message)], e.hint) from None
        _check_packages(loaded, index)
        return mirror, epoch if epoch is not None else index.date, Plan(index=index)

    def after_bootstrap(self, ctx: "Context") -> None:
        pkgcache.fit(pkgcache.max_size(), keep=set(ctx.packages))   # never the packages just used

    def write_network(self, ctx: "Context") -> None:
        if ctx.recipe.network:
            network.write_interfaces(ctx)

    def dhcp_eth0(self) -> tuple[str, str]:
        return "/etc/network/interfaces", network.debian_interfaces({"eth0": network.Interface(dhcp=True)})

    def sysvinit_container(self, ctx: "Context") -> None:
        init.write_inittab(ctx)

    def password_scheme(self, release: str) -> str:
        return "sha512" if release.split(".")[0] in SHA512_RELEASES else "yescrypt"

    def xen_kernel_hint(self, arch: str) -> str:
        return (f"add a kernel to bootstrap.packages (linux-image-{XEN_FLAVOURS.get(arch, arch)}, which brings "
                "initramfs-tools), or set targets.xen.boot: kernel with a kernel on the Xen host")


def _check_packages(loaded: "Loaded", index: apt.Index) -> None:
    """Every bootstrap package is in the index, or the recipe's error naming each one missing."""
    r = loaded.recipe
    missing = index.missing(list(r.bootstrap.packages))
    if not missing:
        return
    problems = []
    for i, p in enumerate(r.bootstrap.packages):
        if p in missing:
            close = f"; close: {', '.join(missing[p])}" if missing[p] else ""
            problems.append(Problem(str(loaded.path), f"bootstrap.packages[{i}]",
                                    f"no package {p!r} in {r.release}/{r.arch} "
                                    f"({', '.join(r.bootstrap.components)}){close}"))
    raise RecipeError(problems, "check the spelling, the release and bootstrap.components")


DEBIAN = Debian()
