# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""imgbuild.guests.chroot: `migrate chroot-install|start|stop|enable|disable HOST --dest D` on the controller."""
from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible_collections.imgbuild.guests.plugins.plugin_utils.imgbuild import (
    CliFailed,
    ImgbuildAction,
    read_json,
    repeat,
)

BOOT = "/usr/local/sbin/imgbuild-chroot"       # builder.migrate.chroot.BOOT

COMMANDS = {"installed": "chroot-install", "started": "chroot-start", "stopped": "chroot-stop",
            "enabled": "chroot-enable", "disabled": "chroot-disable"}
# which options go with which state (anything else given is refused, naming the state it belongs to)
STATE_OPTIONS = {"services": "installed", "hostname": "installed", "ssh_port": "installed",
                 "check_ports": "started", "wait": "started", "via": "enabled"}

SPEC = dict(
    dest=dict(type="str", required=True),
    state=dict(type="str", default="installed", choices=list(COMMANDS)),
    services=dict(type="list", elements="str"),
    hostname=dict(type="str"),
    ssh_port=dict(type="int"),
    check_ports=dict(type="list", elements="int"),
    wait=dict(type="float"),
    via=dict(type="str", choices=["unit", "rc.local"]),
)


def chroot_argv(migrate: str, host: str, ssh: list[str], args: dict, dry_run: bool, result: str) -> list[str]:
    state = args["state"]
    for opt, where in STATE_OPTIONS.items():
        if args.get(opt) not in (None, []) and where != state:
            raise AnsibleActionFail(f"{opt}: goes with state={where}, not state={state}")
    argv = [migrate, COMMANDS[state], "--dest", args["dest"]]
    argv += repeat("--service", args.get("services"))
    if args.get("hostname"):
        argv += ["--hostname", args["hostname"]]
    if args.get("ssh_port") is not None:
        argv += ["--ssh-port", str(args["ssh_port"])]
    argv += repeat("--check-port", args.get("check_ports"))
    if args.get("wait") is not None:
        argv += ["--wait", str(args["wait"])]
    if args.get("via"):
        argv += ["--via", args["via"]]
    if dry_run:
        argv.append("--dry-run")
    return [*argv, "--result-json", result, *ssh, "--", host]


class ActionModule(ImgbuildAction):
    SPEC = SPEC
    REMOTE = True
    COMMAND = "migrate"

    def act(self, args, task_vars, work):
        host, ssh = self.destination(args, task_vars)
        result_file = os.path.join(work, "chroot.json")
        argv = chroot_argv(self.executable(args), host, ssh, args, self.check_mode, result_file)
        try:
            self.run_cli(argv, args)
        except CliFailed as e:
            # check mode after a push that ran in check mode too: the tree (or its boot script) is not there
            # yet, so the real run would do the whole step
            missing = [ln for ln in e.r.stderr.splitlines() if ln.startswith("error:") and any(
                w in ln for w in ("has no OS tree", f"{BOOT} is not there"))]
            if not (self.check_mode and e.r.returncode == 2 and missing and args["state"] != "stopped"):
                raise
            return {"changed": True, "host": host, "dest": args["dest"], "state": args["state"], "lines": [],
                    "paths": [], "msg": f"{host}:{args['dest']}: would be {args['state']} (dry run; "
                                        f"{missing[0][len('error: '):]}: an earlier step makes it)"}
        data = read_json(result_file, f"migrate {COMMANDS[args['state']]}")
        changed = bool(data.get("changed"))
        said = [str(x) for x in data.get("lines") or []]
        paths = [str(x) for x in data.get("paths") or []]
        out = {"changed": changed, "host": host, "dest": args["dest"], "state": args["state"], "lines": said,
               "paths": paths,
               "msg": f"{host}:{args['dest']}: {args['state']}" + ("" if changed else " already")
                      + (" (dry run)" if self.check_mode else "")}
        if self.diff_mode and changed:
            out["diff"] = {"before_header": f"{host}:{args['dest']}", "after_header": f"state={args['state']}",
                           "prepared": "".join(f"{p}\n" for p in (paths or said))}
        return out
