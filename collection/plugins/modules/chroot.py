#!/usr/bin/python
# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
from __future__ import annotations

DOCUMENTATION = r"""
module: chroot
short_description: Run a pushed OS tree in a chroot on a host (migrate chroot-*)
version_added: "0.1.0"
description:
  - Brings the OS tree pushed to I(dest) on the host (M(imgbuild.guests.push)) to a I(state) with imgbuild's
    C(migrate chroot-install), C(chroot-start), C(chroot-stop), C(chroot-enable) or C(chroot-disable), in the
    safe order of an OpenVZ VPS without a console (push, installed, started, check by hand, enabled).
  - C(installed) writes the boot script (DEST/usr/local/sbin/imgbuild-chroot) and the escape helper into the tree
    and gives it what a push leaves out (ssh host keys, machine-id, host name, resolv.conf, hosts, fstab).
    C(started) runs it once by hand and checks that its sshd and the host's own sshd answer. C(stopped) stops it.
    C(enabled) starts it at the host's boot (a systemd unit or a block in rc.local); C(disabled) undoes that.
  - Idempotent. C(changed) comes from imgbuild itself (the command's hidden C(--result-json)); a tree that already
    has every file as it would be written, a chroot already running (or already stopped), a unit or rc.local
    block already there (or already gone) give C(changed=false).
  - In check mode the command runs with C(--dry-run) (nothing changed on the host) and says whether it would
    change anything. In diff mode the diff lists the paths in the tree that change (C(installed)) or what the
    command would do.
options:
  dest:
    description:
      - The pushed tree on the host (absolute); never C(/) or inside the running system's own directories.
    type: str
    required: true
  state:
    description:
      - C(installed) (chroot-install), C(started) (chroot-start), C(stopped) (chroot-stop), C(enabled)
        (chroot-enable), C(disabled) (chroot-disable).
    type: str
    default: installed
    choices: [installed, started, stopped, enabled, disabled]
  services:
    description:
      - With C(installed), init scripts of the tree (/etc/init.d/NAME) to start inside, in order
        (C(--service)). Default ssh (or sshd).
    type: list
    elements: str
  hostname:
    description:
      - With C(installed), the new system's host name (C(--hostname)). Default, the host's own where the tree
        has none.
    type: str
  ssh_port:
    description:
      - With C(installed), set Port N in the tree's sshd_config (C(--ssh-port)).
    type: int
  check_ports:
    description:
      - With C(started), more ports the new system will listen on; a port a host process holds is refused
        (C(--check-port)).
    type: list
    elements: int
  wait:
    description:
      - With C(started), seconds to wait for the new sshd to answer (C(--wait)).
    type: float
  via:
    description:
      - With C(enabled), how to start it at boot (C(--via)). Default, a systemd unit if the host runs systemd,
        else rc.local.
    type: str
    choices: [unit, rc.local]
extends_documentation_fragment:
  - imgbuild.guests.imgbuild
  - imgbuild.guests.imgbuild.ssh
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
seealso:
  - module: imgbuild.guests.push
author:
  - imgbuild authors
"""

EXAMPLES = r"""
- name: Give the pushed tree its boot script and per-host files
  imgbuild.guests.chroot:
    dest: /usr/local/newos
    state: installed
    hostname: chiyoda
    ssh_port: 2222

- name: Start it once, by hand (a reboot undoes it)
  imgbuild.guests.chroot:
    dest: /usr/local/newos
    state: started

- name: Only once it works, start it at boot
  imgbuild.guests.chroot:
    dest: /usr/local/newos
    state: enabled
"""

RETURN = r"""
lines:
  description: What the command did (would do), as it said it.
  returned: success
  type: list
  elements: str
paths:
  description: With C(installed), the files in the tree that were (would be) written; empty when none.
  returned: success
  type: list
  elements: str
  sample: ["/usr/local/newos/usr/local/sbin/imgbuild-chroot", "/usr/local/newos/etc/machine-id"]
host:
  description: The ssh destination.
  returned: success
  type: str
msg:
  description: One line; on failure imgbuild's C(error:) and C(hint:) lines.
  returned: always
  type: str
"""

from ansible_collections.imgbuild.guests.plugins.module_utils.controller_only import refuse  # noqa: E402


def main():
    refuse("chroot")


if __name__ == "__main__":
    main()
