"""Init shims for the EL family (CentOS/RHEL 5, 6, 7) in containers.

What the lxc-centos template and a hand-made CentOS root for LXC do, as data: an upstart job that starts the console
getty and runlevel 3 (EL6), an inittab with a console getty only (EL5), a clean shutdown on SIGPWR (what
lxc-stop sends to init), and the boot-time pieces that fail in a container switched off (udev start,
SELinux, pam_loginuid).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from builder.core.errors import InputError

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.core.rootfs import RootFS

SHM_LINE = "none\t/dev/shm\ttmpfs\tnosuid,nodev\t0 0\n"

UPSTART_SYSINIT = """# written by imgbuild: upstart in an LXC container (EL6), as lxc-centos sets it up
start on startup
env container

pre-start script
        if [ "x$container" != "xlxc" -a "x$container" != "xlibvirt" ]; then
                stop;
        fi
        rm -f /var/lock/subsys/*
        rm -f /var/run/*.pid
        [ -e /etc/mtab ] || ln -s /proc/mounts /etc/mtab
        mkdir -p /dev/shm
        grep -q " /dev/shm " /proc/mounts || mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
        initctl start tty TTY=console
        telinit 3
        exit 0;
end script
"""

UPSTART_POWER = """# written by imgbuild: lxc-stop sends SIGPWR to init; shut down cleanly
start on power-status-changed

exec /sbin/shutdown -h now "SIGPWR received"
"""

EL_INITTAB = """# written by imgbuild: sysvinit in a container (EL5), a getty on the console only
id:3:initdefault:
si::sysinit:/etc/rc.d/rc.sysinit
l0:0:wait:/etc/rc.d/rc 0
l1:1:wait:/etc/rc.d/rc 1
l2:2:wait:/etc/rc.d/rc 2
l3:3:wait:/etc/rc.d/rc 3
l4:4:wait:/etc/rc.d/rc 4
l5:5:wait:/etc/rc.d/rc 5
l6:6:wait:/etc/rc.d/rc 6
# lxc-stop sends SIGPWR: shut down cleanly
pf::powerfail:/sbin/shutdown -f -h now "SIGPWR received"
1:2345:respawn:/sbin/mingetty console
"""


def _edit(root: "RootFS", path: str, fn) -> None:
    text = root.read_text(path)
    if text is None:
        return
    new = fn(text)
    if new != text:
        st = root.stat(path)
        root.write(path, new, st.st_mode & 0o7777, st.st_uid, st.st_gid)


def container_fixes(root: "RootFS") -> None:
    """What fails in an EL container at boot, switched off."""
    _edit(root, "/etc/selinux/config", lambda t: re.sub(r"(?m)^SELINUX=.*$", "SELINUX=disabled", t))
    for pam in ("/etc/pam.d/login", "/etc/pam.d/sshd", "/etc/pam.d/crond", "/etc/pam.d/remote"):
        _edit(root, pam, lambda t: re.sub(r"(?m)^(session\s+required\s+pam_loginuid\.so)", r"#\1", t))
    _edit(root, "/etc/rc.d/rc.sysinit", lambda t: re.sub(r"(?m)^(\s*)(/sbin/start_udev)", r"\1: # \2", t))
    # start-ttys would start getties on tty1-6; the console getty is started by the shim
    _edit(root, "/etc/sysconfig/init", lambda t: re.sub(r"(?m)^ACTIVE_CONSOLES=.*$", "ACTIVE_CONSOLES=", t))


def _need_shm_in_fstab(root: "RootFS") -> None:
    fstab = root.read_text("/etc/fstab") or ""
    entries = [line.split() for line in fstab.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not any(len(e) > 1 and e[1] == "/dev/shm" for e in entries):
        root.write("/etc/fstab", fstab + SHM_LINE)


def upstart_lxc(ctx: "Context") -> None:
    root = ctx.root
    if not root.exists("/sbin/initctl"):
        raise InputError("init: upstart-lxc, but the root has no upstart (/sbin/initctl)",
                         "upstart-lxc is for EL6; use sysvinit-container for EL5, systemd-container for EL7")
    root.write("/etc/init/lxc-sysinit.conf", UPSTART_SYSINIT)
    root.write("/etc/init/power-status-changed.conf", UPSTART_POWER)
    container_fixes(root)
    _need_shm_in_fstab(root)


def sysvinit_container(ctx: "Context") -> None:
    root = ctx.root
    if not root.exists("/etc/rc.d/rc") or not root.exists("/sbin/init"):
        raise InputError("init: sysvinit-container, but the root has no SysV init (/etc/rc.d/rc)",
                         "sysvinit-container is for EL5; use upstart-lxc for EL6, systemd-container for EL7")
    root.write("/etc/inittab", EL_INITTAB)
    container_fixes(root)
    _need_shm_in_fstab(root)
