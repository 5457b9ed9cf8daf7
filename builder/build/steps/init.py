"""Init shims: make the guest's init behave in a container (console getty only, nothing that fails there).

SHIMS is the registry: name -> Shim(families, apply). Recipes name a shim with `init:`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Callable

from builder.build.steps import init_el
from builder.core.errors import InputError
from builder.core.schema import Check

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.core.rootfs import RootFS

UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")

# Units that cannot work in a container (no udev, no kernel modules, no hardware, read-only /sys) and
# would otherwise fail and leave systemd "degraded".
SYSTEMD_MASK = (
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-modules-load.service",
    "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "proc-sys-fs-binfmt_misc.automount", "systemd-binfmt.service",
    "systemd-hwdb-update.service", "systemd-random-seed.service", "systemd-pstore.service",
    "getty@.service", "serial-getty@.service", "getty-static.service", "e2scrub_reap.service",
    "e2scrub_all.timer", "fstrim.timer",
)


@dataclass(frozen=True)
class Shim:
    doc: str
    families: tuple[str, ...]
    apply: Callable[["Context"], None]


def _unit_dir(root: "RootFS") -> str:
    for d in UNIT_DIRS:
        if root.exists(f"{d}/systemd-journald.service"):
            return d
    raise InputError("init: systemd-container, but the root has no systemd",
                     "add systemd-sysv to bootstrap.packages, or choose another init")


def _systemd_container(ctx: "Context") -> None:
    root = ctx.root
    units = _unit_dir(root)
    ctx.family.systemd_container(root)
    for unit in SYSTEMD_MASK:
        root.symlink("/dev/null", f"/etc/systemd/system/{unit}")
    root.remove("/etc/systemd/system/getty.target.wants/getty@tty1.service")
    root.symlink(f"{units}/console-getty.service", "/etc/systemd/system/getty.target.wants/console-getty.service")
    root.symlink(f"{units}/multi-user.target", "/etc/systemd/system/default.target")


INITTAB = """# written by imgbuild: sysvinit in a container, a getty on the console only
id:2:initdefault:
si::sysinit:/etc/init.d/rcS
~:S:wait:/sbin/sulogin --force
l0:0:wait:/etc/init.d/rc 0
l1:1:wait:/etc/init.d/rc 1
l2:2:wait:/etc/init.d/rc 2
l3:3:wait:/etc/init.d/rc 3
l4:4:wait:/etc/init.d/rc 4
l5:5:wait:/etc/init.d/rc 5
l6:6:wait:/etc/init.d/rc 6
z6:6:respawn:/sbin/sulogin --force
p0::powerfail:/sbin/init 0
c:2345:respawn:/sbin/getty --noclear 38400 console
"""


def write_inittab(ctx: "Context") -> None:
    """Debian's sysvinit in a container: the inittab above."""
    root = ctx.root
    if not root.exists("/etc/init.d/rc") or not root.exists("/sbin/init"):
        raise InputError("init: sysvinit-container, but the root has no sysvinit",
                         "add sysvinit-core to bootstrap.packages, or choose another init")
    root.write("/etc/inittab", INITTAB)


def _sysvinit_container(ctx: "Context") -> None:
    ctx.family.sysvinit_container(ctx)


def _none(ctx: "Context") -> None:
    pass


SHIMS: dict[str, Shim] = {
    "systemd-container": Shim("systemd in a container (Debian, EL7+): console getty only, hardware units masked",
                              ("debian", "rhel"), _systemd_container),
    "sysvinit-container": Shim("sysvinit in a container (Debian, EL5): an inittab with a console getty only",
                               ("debian", "rhel"), _sysvinit_container),
    "upstart-lxc": Shim("upstart in LXC (EL6): the console getty and runlevel 3 at startup, shutdown on SIGPWR",
                        ("rhel",), init_el.upstart_lxc),
    "none": Shim("leave the init system as the bootstrap installed it", ("debian", "rhel"), _none),
}

ShimName = Annotated[str, Check(choices=lambda: list(SHIMS))]


def run(ctx: "Context", name: str) -> None:
    SHIMS[name].apply(ctx)
