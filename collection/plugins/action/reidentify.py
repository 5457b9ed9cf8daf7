# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""imgbuild.guests.reidentify: `migrate reidentify TARGET ...` on the controller (a guest of the controller:
an LXC container, a Xen config, an image, a root tree)."""
from __future__ import annotations

from ansible_collections.imgbuild.guests.plugins.plugin_utils.imgbuild import ImgbuildAction, repeat, set_args

SPEC = dict(
    target=dict(type="str", required=True),
    hostname=dict(type="str"),
    ips=dict(type="list", elements="str", default=[]),
    macs=dict(type="list", elements="str", default=[]),
    variables=dict(type="dict", default={}),
    files=dict(type="list", elements="str", default=[]),
    force=dict(type="bool", default=False),
    inventory=dict(type="path"),
    lxcpath=dict(type="path"),
    xen_dir=dict(type="path"),
    vz_dir=dict(type="path"),
    local_mac=dict(type="bool", default=False),
    loop=dict(type="bool", default=False),
)


def reidentify_argv(migrate: str, args: dict, dry_run: bool) -> list[str]:
    argv = [migrate, "reidentify"]
    if args.get("hostname"):
        argv += ["--hostname", args["hostname"]]
    argv += repeat("--ip", args.get("ips"))
    argv += repeat("--mac", args.get("macs"))
    argv += set_args(args.get("variables"))
    argv += repeat("--file", args.get("files"))
    for opt, flag in (("inventory", "--inventory"), ("lxcpath", "--lxcpath"), ("xen_dir", "--xen-dir"),
                      ("vz_dir", "--vz-dir")):
        if args.get(opt):
            argv += [flag, args[opt]]
    for opt, flag in (("force", "--force"), ("local_mac", "--local-mac"), ("loop", "--loop")):
        if args.get(opt):
            argv.append(flag)
    if dry_run:
        argv.append("--dry-run")
    return [*argv, "--", args["target"]]


class ActionModule(ImgbuildAction):
    SPEC = SPEC
    COMMAND = "migrate"

    def act(self, args, task_vars, work):
        migrate = self.executable(args)
        # the dry run first: its unified diff is every change the run would make (none: nothing to do)
        r = self.run_cli(reidentify_argv(migrate, args, True), args)
        diff = r.stdout
        out = {"changed": bool(diff.strip()), "target": args["target"]}
        if self.diff_mode and out["changed"]:
            out["diff"] = {"prepared": diff}
        if not out["changed"]:
            out["msg"] = f"{args['target']}: already so; nothing to change"
            return out
        if self.check_mode:
            out["msg"] = f"{args['target']}: would change (dry run)"
            return out
        r = self.run_cli(reidentify_argv(migrate, args, False), args)
        out["path"] = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else args["target"]
        said = [ln for ln in r.stderr.splitlines() if "changed;" in ln]
        out["msg"] = said[-1] if said else f"{args['target']}: reidentified"
        return out
