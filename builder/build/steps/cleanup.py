"""Cleanup: nothing of the build host or the build run ships in the output.

Package caches and lists, logs, temp files and caches that differ from run to run go; /etc/machine-id is left
empty (systemd fills it on first boot); ssh host keys go and are generated on the guest's first boot.
"""
from __future__ import annotations

import logging
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.core.rootfs import RootFS

log = logging.getLogger("imgbuild")

# directories whose contents go (the directories stay)
EMPTY_DIRS = ("/var/cache/apt/archives", "/var/lib/apt/lists", "/var/log/apt", "/var/log/journal", "/tmp",
              "/var/tmp", "/var/cache/yum", "/var/cache/dnf")
# files that go
FILES = ("/var/cache/apt/pkgcache.bin", "/var/cache/apt/srcpkgcache.bin", "/var/cache/ldconfig/aux-cache",
         "/var/lib/systemd/random-seed", "/var/lib/dbus/machine-id", "/var/lib/dpkg/status-old",
         "/var/lib/dpkg/diversions-old", "/var/lib/dpkg/statoverride-old", "/var/cache/debconf/config.dat-old",
         "/var/cache/debconf/templates.dat-old", "/var/cache/debconf/passwords.dat-old", "/etc/.pwd.lock",
         "/root/.bash_history", "/var/log/dpkg.log", "/var/log/alternatives.log", "/var/log/bootstrap.log",
         "/var/log/yum.log", "/var/log/dnf.log", "/var/log/dnf.librepo.log", "/var/log/dnf.rpm.log",
         "/var/log/hawkey.log")
# files that stay but are emptied (programs expect them to exist)
TRUNCATE = ("/var/log/wtmp", "/var/log/btmp", "/var/log/lastlog", "/var/log/faillog")
KEEP = {"/var/lib/apt/lists": ("partial", "lock"), "/var/cache/apt/archives": ("partial", "lock")}

KEYGEN_UNIT = """# written by imgbuild: the image ships without ssh host keys, so every guest makes its own
[Unit]
Description=Generate SSH host keys missing from this guest
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

KEYGEN_SYSV = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          imgbuild-ssh-keygen
# Required-Start:    $local_fs
# Required-Stop:
# X-Start-Before:    ssh sshd
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: Generate SSH host keys missing from this guest (written by imgbuild)
### END INIT INFO
[ "$1" = start ] || exit 0
exec /usr/bin/ssh-keygen -A
"""


def _empty(root: "RootFS", d: str) -> None:
    """Empty a directory of the root (links to it followed inside the root; its entries removed as themselves:
    a link goes, never what it points to)."""
    if not root.is_dir(d):
        return
    keep = KEEP.get(d, ())
    for name in root.listdir(d):
        if name not in keep:
            root.remove(f"{d}/{name}", tree=True)


def ssh_keys(root: "RootFS") -> None:
    for name in root.listdir("/etc/ssh"):
        if name.startswith("ssh_host_"):
            root.remove(f"/etc/ssh/{name}", tree=True)
    if not root.exists("/usr/sbin/sshd") or not root.exists("/usr/bin/ssh-keygen"):
        return
    if root.exists("/lib/systemd/systemd") or root.exists("/usr/lib/systemd/systemd"):
        root.write("/etc/systemd/system/imgbuild-ssh-keygen.service", KEYGEN_UNIT)
        root.symlink("/etc/systemd/system/imgbuild-ssh-keygen.service",
                     "/etc/systemd/system/multi-user.target.wants/imgbuild-ssh-keygen.service")
    elif root.exists("/etc/init.d/rc"):
        root.write("/etc/init.d/imgbuild-ssh-keygen", KEYGEN_SYSV, 0o755)
        for level in "2345":
            root.symlink("../init.d/imgbuild-ssh-keygen", f"/etc/rc{level}.d/S01imgbuild-ssh-keygen")


def run(ctx: "Context", _opts: None = None) -> None:
    root = ctx.root
    for d in EMPTY_DIRS:
        _empty(root, d)
    for f in FILES:
        st = root.lstat(f)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            root.remove(f)
    for f in TRUNCATE:
        root.truncate(f)      # a regular file only, emptied in place; a link or node is left alone
    if root.exists("/etc") and (root.lexists("/etc/machine-id") or root.exists("/lib/systemd/systemd")):
        root.write("/etc/machine-id", "", 0o444)
    ssh_keys(root)
