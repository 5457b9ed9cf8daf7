#!/usr/bin/python
# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
from __future__ import annotations

DOCUMENTATION = r"""
module: install_lxc
short_description: Install a built output as an LXC container on the controller (imgbuild install-lxc)
version_added: "0.1.0"
description:
  - Runs C(imgbuild install-lxc OUTPUT) on the controller, which unpacks the output's tarball as
    LXCPATH/NAME/rootfs, writes its config, gives it new ssh host keys, a machine-id and host name NAME, checks
    its MAC, IP and host name against every guest imgbuild knows of and records it in the inventory.
  - Idempotent. imgbuild records in LXCPATH/NAME/imgbuild-source.json the sha256 of the manifest.json the
    container was installed from. A container installed from the output as it is now is C(changed=false); one
    installed from another output (or not by imgbuild) is refused unless I(force), which replaces it when imgbuild
    installed it and it is not running.
  - In check mode that comparison alone says whether it would install; nothing is unpacked.
  - Controller only, the container is installed where the task's imgbuild runs. Cluster outputs (several nodes)
    are installed with C(imgbuild install-lxc) itself.
options:
  output:
    description:
      - The built output directory (OUTPUT/NAME, holding manifest.json).
    type: path
    required: true
  name:
    description:
      - The container's name and host name (C(--name)). Default, the recipe's name.
    type: str
  lxcpath:
    description:
      - LXC's container directory (C(--lxcpath)).
    type: path
    default: /var/lib/lxc
  inventory:
    description:
      - imgbuild's inventory of guests (C(--inventory)).
    type: path
  force:
    description:
      - Replace a container of that name installed from another output, if imgbuild installed it and it is not
        running (C(--force)). With I(force) it is always installed again.
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
    support: partial
    details: Names the container that is (would be) installed or replaced.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
seealso:
  - module: imgbuild.guests.build
author:
  - imgbuild authors
"""

EXAMPLES = r"""
- name: Install the build as container web1
  imgbuild.guests.install_lxc:
    output: /srv/images/debian12
    name: web1
  delegate_to: localhost
"""

RETURN = r"""
name:
  description: The container's name.
  returned: success
  type: str
path:
  description: LXCPATH/NAME.
  returned: success
  type: str
  sample: /var/lib/lxc/web1
msg:
  description: One line; on failure imgbuild's C(error:) and C(hint:) lines.
  returned: always
  type: str
"""

from ansible_collections.imgbuild.guests.plugins.module_utils.controller_only import refuse  # noqa: E402


def main():
    refuse("install_lxc")


if __name__ == "__main__":
    main()
