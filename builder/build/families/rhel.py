"""The EL family (CentOS, RHEL, Rocky, Alma ...): yum, dnf or rpm-native from the release's own repos."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from builder.build.families.base import Family, Plan
from builder.build.steps import init_el, network
from builder.core.paths import cache_dir
from builder.rpm import seed

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Bootstrap, Loaded
    from builder.core.rootfs import RootFS


class Rhel(Family):
    name = "rhel"
    vm_packages = {"kernel": "kernel (and a generic initramfs: dracut --no-hostonly)",
                   "bios": "grub2-tools and grub2-pc-modules", "uefi": "grub2-tools and grub2-efi-x64-modules"}
    archs = ("x86_64", "i386", "i686", "aarch64", "ppc64le", "s390x")
    package_db = "rpm"
    auto_methods = ("yum", "dnf", "rpm-native")
    # EL5's repodata ("sha" checksums) and packages (MD5/SHA1 digests, V3 signatures) predate what a current
    # host dnf/yum reads
    auto_native_up_to = 5
    skel_to_root = True
    bootstrap_keys = ("groups", "release_package", "seed_repo", "repos", "releasever", "gpgcheck", "extra_repos")
    package_name = r"[A-Za-z0-9_][A-Za-z0-9_+.-]*"      # RPM names may have capitals and _

    def check_bootstrap(self, b: "Bootstrap") -> list[tuple[str, str]]:
        out = []
        if b.mirror == "auto":
            out.append(("bootstrap.mirror", "EL recipes need the mirror's URL (the release's tree, e.g. "
                                            "https://vault.centos.org/6.10)"))
        if not b.release_package:
            out.append(("bootstrap.release_package", "EL recipes name their release package (e.g. centos-release)"))
        return out

    def preflight(self, loaded: "Loaded", epoch: int | None) -> tuple[str, int, Plan]:
        plan = seed.plan(loaded, cache_dir() / "el")
        stamps = [x.timestamp for x in plan.repodata if x.timestamp]   # the repos' own age, like Debian's Date
        return (loaded.recipe.bootstrap.mirror, epoch if epoch is not None else max(stamps, default=int(time.time())),
                Plan(seed=plan))

    def write_network(self, ctx: "Context") -> None:
        network.write_sysconfig(ctx)      # always: EL's sysconfig/network also carries the hostname

    def dhcp_eth0(self) -> tuple[str, str]:
        return ("/etc/sysconfig/network-scripts/ifcfg-eth0",
                network.rhel_ifcfg("eth0", network.Interface(dhcp=True)))

    def systemd_container(self, root: "RootFS") -> None:
        init_el.container_fixes(root)

    def sysvinit_container(self, ctx: "Context") -> None:
        init_el.sysvinit_container(ctx)

    def xen_kernel_hint(self, arch: str) -> str:
        return ("add a kernel to bootstrap.packages (EL5: kernel-xen; EL6 and later: kernel), or set "
                "targets.xen.boot: kernel with a kernel on the Xen host")


RHEL = Rhel()
