#!/usr/bin/python
# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
from __future__ import annotations

DOCUMENTATION = r"""
module: reidentify
short_description: Give a guest on the controller a new identity (migrate reidentify)
version_added: "0.1.0"
description:
  - Changes a guest's host name, IP addresses and MACs in place with C(migrate reidentify), in the guest's files
    (hostname, hosts, ifcfg, interfaces, networkd, NetworkManager, netplan, udev rules) and in its config (LXC,
    Xen, OpenVZ). A MAC, IP or host name another guest has is refused, naming both.
  - The guest is one of the controller's (where imgbuild runs), as the CLI takes it, an LXC container (a
    directory or C(lxc:NAME)), a Xen C(.cfg), an ext2/3/4 image or a root directory. Run the task on the machine
    that holds the guest (e.g. C(delegate_to) or a play for C(localhost)).
  - Idempotent. The dry run (C(--dry-run)) comes first; its unified diff is every change the run would make. An
    empty diff is C(changed=false) and nothing runs. In check mode only the dry run runs; in diff mode its diff
    is the task's diff.
options:
  target:
    description:
      - The guest, an LXC container directory or C(lxc:NAME), a Xen config, an image, or a root directory.
    type: str
    required: true
  hostname:
    description:
      - The new host name (C(--hostname)).
    type: str
  ips:
    description:
      - Address changes, each C(OLD=NEW[/PREFIX][@GW]) (C(--ip)).
    type: list
    elements: str
    default: []
  macs:
    description:
      - MAC changes, each C(OLD=NEW), C(OLD=auto) or C(auto) (C(--mac)).
    type: list
    elements: str
    default: []
  variables:
    description:
      - Template variables for the guest's imgbuild templates (C(--set VAR=VALUE), each value given as JSON).
        Not masked; in diff mode the diff shows the files they render into.
    type: dict
    default: {}
  files:
    description:
      - More files inside the guest to rewrite (C(--file)).
    type: list
    elements: str
    default: []
  force:
    description:
      - Go on even if a MAC, IP or host name is taken or the guest is in use (C(--force)).
    type: bool
    default: false
  inventory:
    description:
      - imgbuild's inventory of guests (C(--inventory)).
    type: path
  lxcpath:
    description:
      - Where LXC containers are (C(--lxcpath)); imgbuild's default C(/var/lib/lxc).
    type: path
  xen_dir:
    description:
      - Where Xen guest configs are (C(--xen-dir)).
    type: path
  vz_dir:
    description:
      - Where OpenVZ configs are (C(--vz-dir)).
    type: path
  local_mac:
    description:
      - Allocate locally administered MACs (C(--local-mac)).
    type: bool
    default: false
  loop:
    description:
      - Images, loop-mount instead of editing with debugfs (C(--loop)).
    type: bool
    default: false
extends_documentation_fragment:
  - imgbuild.guests.imgbuild
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: full
    details: The unified diff of every file that changes.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - imgbuild authors
"""

EXAMPLES = r"""
- name: A new address and MAC for the LXC container web2
  imgbuild.guests.reidentify:
    target: lxc:web2
    hostname: web2
    ips: ["10.0.3.2=10.0.3.3"]
    macs: [auto]
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: The guest's path, as imgbuild printed it.
  returned: changed and not check mode
  type: str
target:
  description: The target given.
  returned: success
  type: str
msg:
  description: One line; on failure imgbuild's C(error:) and C(hint:) lines.
  returned: always
  type: str
"""

from ansible_collections.imgbuild.guests.plugins.module_utils.controller_only import refuse  # noqa: E402


def main():
    refuse("reidentify")


if __name__ == "__main__":
    main()
