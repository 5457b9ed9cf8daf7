"""Cleanup: nothing of the build host or the build run ships in the output.

Package caches and lists, logs, temp files and caches that differ from run to run go; /etc/machine-id is left
empty (systemd fills it on first boot); ssh host keys go and are generated on the guest's first boot.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import Context
    from ..rootfs import RootFS

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
    host = root.resolve(d)
    if not host.is_dir() or host.is_symlink():
        return
    keep = KEEP.get(d, ())
    for entry in os.scandir(host):
        if entry.name in keep:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def ssh_keys(root: "RootFS") -> None:
    etc_ssh = root.resolve("/etc/ssh")
    if etc_ssh.is_dir():
        for entry in os.scandir(etc_ssh):
            if entry.name.startswith("ssh_host_"):
                os.unlink(entry.path)
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
        if root.lexists(f) and not root.resolve(f, follow_last=False).is_dir():
            root.remove(f)
    for f in TRUNCATE:
        host = root.resolve(f, follow_last=False)
        if host.is_file() and not host.is_symlink():
            os.truncate(host, 0)
    if root.exists("/etc") and (root.lexists("/etc/machine-id") or root.exists("/lib/systemd/systemd")):
        root.write("/etc/machine-id", "", 0o444)
    ssh_keys(root)
