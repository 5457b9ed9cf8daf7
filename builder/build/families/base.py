"""What every distro family answers: one interface, so the build never asks which family it is building."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Bootstrap, Loaded
    from builder.core.rootfs import RootFS
    from builder.debian.apt import Index
    from builder.rpm.seed import Plan as Seed


@dataclass(frozen=True)
class Plan:
    """What the family's preflight worked out before the build writes anything."""

    index: "Index | None" = None    # Debian: the mirror's index (its packages, its signature)
    seed: "Seed | None" = None      # EL: repos, release package, resolved packages


class Family:
    """A distro family: its facts (class attributes) and what the build does differently for it (methods)."""

    name: str
    archs: tuple[str, ...]          # architecture names as the family's package tools spell them; first: default
    default_init: str = "none"      # init shim when the recipe names none
    package_db: str                 # how the manifest lists installed packages
    skel_to_root: bool = False      # copy /etc/skel into /root (EL bootstraps leave /root empty)
    bootstrap_keys: tuple[str, ...] = ()   # recipe bootstrap keys only this family reads
    package_name: str               # a package name in bootstrap.packages, as a regular expression
    auto_methods: tuple[str, ...] = ()     # what bootstrap `auto` tries, in order: the distro's own tool first
    auto_native_up_to: int | None = None   # releases up to this major one are left to rpm-native
    # what the disk target needs in bootstrap.packages, as the family names it: a kernel, GRUB for BIOS, for UEFI
    vm_packages: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    def takes(self, thing: Any) -> bool:
        """Whether a bootstrap method or init shim (anything with `families`) is for this family."""
        return self.name in thing.families

    def check_bootstrap(self, b: "Bootstrap") -> list[tuple[str, str]]:
        """The recipe's bootstrap problems only this family has: (key path, message) pairs."""
        return []

    def preflight(self, loaded: "Loaded", epoch: int | None) -> tuple[str, int, Plan]:
        """The mirror, the epoch (the recipe's, else the mirror's own date) and the plan; checked, nothing written."""
        raise NotImplementedError

    def after_bootstrap(self, ctx: "Context") -> None:
        """What follows a bootstrap (or a cached tree) before the hooks run."""

    def write_network(self, ctx: "Context") -> None:
        """The guest's network files, as the family's own tools read them."""
        raise NotImplementedError

    def dhcp_eth0(self) -> tuple[str, str]:
        """(path, content) of the network file that configures eth0 by DHCP (images for LXD/Incus)."""
        raise NotImplementedError

    def systemd_container(self, root: "RootFS") -> None:
        """Family fixes for systemd in a container, besides the masked units."""

    def sysvinit_container(self, ctx: "Context") -> None:
        """sysvinit in a container: a getty on the console only."""
        raise NotImplementedError

    def password_scheme(self, release: str) -> str:
        """The scheme the release's own tools use for a new password (a key of steps.password.SCHEMES)."""
        return "sha512"

    def xen_kernel_hint(self, arch: str) -> str:
        """What to do when a Xen image has no kernel to boot."""
        raise NotImplementedError
