#!/usr/bin/python
# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
from __future__ import annotations

DOCUMENTATION = r"""
module: build
short_description: Build a recipe into an output directory on the controller (imgbuild build)
version_added: "0.1.0"
description:
  - Runs C(imgbuild build RECIPE) on the controller, which builds OUTPUT/NAME/ (tarball, guest configs, images,
    manifest.json).
  - Idempotent. imgbuild itself skips a build whose inputs (the recipe, its files, the bootstrap inputs, the
    mirror's index, imgbuild's code) are unchanged and whose outputs still match their sha256; the task is then
    C(changed=false) (the output's manifest.json is the same file). Recipes with secrets are always built.
  - In check mode C(imgbuild build --dry-run) says whether the output is up to date or would be built (the recipe
    is checked and the mirror's index read); nothing is built.
options:
  recipe:
    description:
      - The recipe file on the controller.
    type: path
    required: true
  output:
    description:
      - The directory for outputs (C(--output)); the build lands in OUTPUT/NAME/. imgbuild's default is
        C(output) in the directory ansible-playbook runs in.
    type: path
  set:
    description:
      - Recipe keys to override (C(--set KEY=VALUE), each value given as JSON), e.g. C(hostname=web1) as a mapping.
    type: dict
    default: {}
  keep_tree:
    description:
      - Also keep the root tree as OUTPUT/NAME.rootfs/ (C(--keep-tree)); always builds.
    type: bool
    default: false
  no_cache:
    description:
      - Bootstrap afresh (C(--no-cache)); always builds.
    type: bool
    default: false
  force:
    description:
      - Build even when the output is up to date (C(--force)).
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
    details: Names the output that is (would be) built.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
seealso:
  - module: imgbuild.guests.install_lxc
author:
  - imgbuild authors
"""

EXAMPLES = r"""
- name: Build the web image (nothing to do when it is up to date)
  imgbuild.guests.build:
    recipe: /srv/imgbuild/recipes/debian12.yml
    output: /srv/images
    set:
      hostname: web1
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
output:
  description: OUTPUT/NAME, the build's directory.
  returned: success
  type: str
  sample: /srv/images/debian12
msg:
  description: One line; on failure imgbuild's C(error:) and C(hint:) lines.
  returned: always
  type: str
"""

from ansible_collections.imgbuild.guests.plugins.module_utils.controller_only import refuse  # noqa: E402


def main():
    refuse("build")


if __name__ == "__main__":
    main()
