# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""Documentation shared by the imgbuild.guests modules."""
from __future__ import annotations


class ModuleDocFragment:

    # every module: where imgbuild's CLI is, and how it runs
    DOCUMENTATION = r"""
options:
  bin_dir:
    description:
      - The directory on the controller holding imgbuild's console scripts C(imgbuild) and C(migrate),
        e.g. C(/opt/imgbuild/.venv/bin).
      - Default, the variable C(imgbuild_bin_dir) when it is set, else C(imgbuild) and C(migrate) from the
        controller's C(PATH).
    type: path
  timeout:
    description:
      - Seconds the command may run before it is stopped and the task fails.
    type: int
    default: 3600
notes:
  - Runs on the controller, through the module's action plugin (as C(ansible.builtin.synchronize) does);
    imgbuild's CLI is started there as a subprocess with an argument list, never through a shell. Ansible's own
    python cannot import imgbuild's library and the managed hosts have no imgbuild (nor need python), so the
    module is a thin wrapper over imgbuild's CLI, whose checks, refusals and exit codes are the library's.
  - A failing command fails the task with imgbuild's own C(error:) and C(hint:) lines as C(msg).
requirements:
  - imgbuild installed on the controller (its C(scripts/setup.sh)), as root for what needs root.
"""

    # the modules that reach a host over ssh
    SSH = r"""
options:
  host:
    description:
      - The host to act on, as ssh names it (an alias of your ssh_config, a name or an address).
      - Default, the inventory's C(ansible_host), else the inventory name of the host the task runs for.
    type: str
  port:
    description:
      - The host's ssh port. Default, the inventory's C(ansible_port), else your ssh config's (22).
    type: int
  user:
    description:
      - The user to log in as (C(user@host)). Default, the inventory's C(ansible_user), else your ssh config's.
    type: str
  ssh_config:
    description:
      - An ssh config file to use instead of C(~/.ssh/config) (C(--ssh-config), ssh C(-F)).
    type: path
  identity:
    description:
      - A private key to log in with (C(--identity), ssh C(-i)).
    type: path
  ssh_options:
    description:
      - Extra ssh C(-o) options, each C(KEY=VALUE) (C(--ssh-option)).
    type: list
    elements: str
    default: []
  accept_new_host_key:
    description:
      - Accept and record the key of a host not yet in known_hosts (a changed key is still refused).
        Without it an unknown host is refused.
    type: bool
    default: false
notes:
  - The host is reached by imgbuild's C(migrate) with your own ssh (config, keys, known_hosts), not by Ansible's
    connection; Ansible never logs in to the host for this module, so the host needs no python.
"""
