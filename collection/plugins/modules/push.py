#!/usr/bin/python
# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
from __future__ import annotations

DOCUMENTATION = r"""
module: push
short_description: Push an OS tree to a directory on a host (migrate push)
version_added: "0.1.0"
description:
  - Sends the OS tree at I(source) on the controller to I(dest) on the host with C(migrate push), that is rsync
    C(-aHAXS --numeric-ids) over your ssh, safe for a running host (live filesystems, per-host files and mounts
    left alone; system directories refused).
  - Idempotent. The task is C(changed) when the push created, changed or deleted a path on the host; a second
    identical push reports C(changed=false).
  - In check mode, C(migrate push --dry-run --json) lists every path that would be created, changed or deleted,
    and nothing is changed (not even known_hosts). In diff mode that listing is the diff.
options:
  dest:
    description:
      - The directory on the host to push into (absolute). As for C(migrate push), never C(/) or inside the
        running system's own directories unless I(force).
    type: str
    required: true
  source:
    description:
      - The root of the tree on the controller.
    type: path
    required: true
  delete:
    description:
      - Delete files under I(dest) that the source does not have (C(--delete)).
    type: bool
    default: false
  exclude:
    description:
      - rsync exclude patterns (C(--exclude)).
    type: list
    elements: str
    default: []
  protect:
    description:
      - More paths to keep on the receiver (not sent, not deleted) (C(--protect)).
    type: list
    elements: str
    default: []
  unprotect:
    description:
      - Default-protected paths to send anyway (C(--unprotect)).
    type: list
    elements: str
    default: []
  profile:
    description:
      - A named set of rsync filter rules (C(core), C(os), a file in C(/etc/imgbuild/profiles/NAME.rules), or a
        path) (C(--profile)).
    type: str
  files_from:
    description:
      - Push only the paths listed in this file on the controller (C(--files-from)).
    type: path
  bwlimit:
    description:
      - Bandwidth limit in KB/s (C(--bwlimit)).
    type: int
  verify:
    description:
      - After the push, compare every file by checksum; a difference fails the task (C(--verify)).
    type: bool
    default: false
  force:
    description:
      - Allow I(dest) C(/) or a system directory, I(delete) through a symlink, or I(delete) into a directory no
        earlier push filled (C(--force)).
    type: bool
    default: false
  rsync_path:
    description:
      - rsync on the host, e.g. C(sudo rsync) (C(--rsync-path)).
    type: str
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
    details: The diff is the list of paths created, changed (and in what) or deleted.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
seealso:
  - module: imgbuild.guests.chroot
author:
  - imgbuild authors
"""

EXAMPLES = r"""
- name: What would change on each host (nothing is changed)
  imgbuild.guests.push:
    source: /srv/trees/newos
    dest: /srv/os
  check_mode: true
  diff: true

- name: Push the tree, removing what the source no longer has
  imgbuild.guests.push:
    source: /srv/trees/newos
    dest: /srv/os
    delete: true
    exclude: ["/var/cache/apt/archives/*.deb"]
    bin_dir: /opt/imgbuild/.venv/bin
"""

RETURN = r"""
created:
  description: How many paths were (in check mode, would be) created.
  returned: success
  type: int
  sample: 7758
changed_paths:
  description: How many paths changed (content, mode, owner ...).
  returned: success
  type: int
  sample: 1
deleted:
  description: How many paths were deleted (only with I(delete)).
  returned: success
  type: int
  sample: 0
bytes:
  description: Bytes of file data sent (would be sent).
  returned: success
  type: int
  sample: 181800000
paths:
  description: Every path created, changed (with what changed) and deleted, relative to I(dest).
  returned: success
  type: dict
  sample: {"create": ["/etc/app.conf"], "change": [{"path": "/etc/motd", "what": "content"}], "delete": []}
not_sent:
  description: Protected files the source has and the host lacks (C(imgbuild.guests.chroot) gives them).
  returned: success
  type: list
  elements: str
host:
  description: The ssh destination pushed to.
  returned: success
  type: str
  sample: root@web1
msg:
  description: One line; on failure imgbuild's C(error:) and C(hint:) lines.
  returned: always
  type: str
"""

from ansible_collections.imgbuild.guests.plugins.module_utils.controller_only import refuse  # noqa: E402


def main():
    refuse("push")


if __name__ == "__main__":
    main()
