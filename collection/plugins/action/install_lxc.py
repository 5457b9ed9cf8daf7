# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""imgbuild.guests.install_lxc: `imgbuild install-lxc OUTPUT [--name N] [--lxcpath P]` on the controller."""
from __future__ import annotations

import hashlib
import json
import os

from ansible.errors import AnsibleActionFail
from ansible_collections.imgbuild.guests.plugins.plugin_utils.imgbuild import ImgbuildAction

SOURCE_FILE = "imgbuild-source.json"      # builder.build.install_lxc.SOURCE_FILE
MAX_JSON = 1 << 20

SPEC = dict(
    output=dict(type="path", required=True),
    name=dict(type="str"),
    lxcpath=dict(type="path", default="/var/lib/lxc"),
    inventory=dict(type="path"),
    force=dict(type="bool", default=False),
)


def install_argv(imgbuild: str, args: dict, force: bool) -> list[str]:
    argv = [imgbuild, "install-lxc", "--lxcpath", args["lxcpath"]]
    if args.get("name"):
        argv += ["--name", args["name"]]
    if args.get("inventory"):
        argv += ["--inventory", args["inventory"]]
    if force:
        argv.append("--force")
    return [*argv, "--", args["output"]]


def _json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_JSON).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sha256(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class ActionModule(ImgbuildAction):
    SPEC = SPEC
    COMMAND = "imgbuild"

    def act(self, args, task_vars, work):
        output = args["output"]
        manifest = os.path.join(output, "manifest.json")
        m = _json(manifest)
        if m is None and self.check_mode and not os.path.exists(manifest):
            # check mode after a build that ran in check mode too: the real run builds it first
            return {"changed": True, "output": output, "msg": f"would install {output} (not built yet)"}
        if m is None:
            raise AnsibleActionFail(f"{manifest}: not there or not readable: not a built output "
                                    "(build it first: imgbuild.guests.build)")
        if os.path.exists(os.path.join(output, "nodes.json")):
            raise AnsibleActionFail(f"{output} is a cluster build: install its nodes with `imgbuild install-lxc` "
                                    "(this module installs one container)")
        name = args.get("name") or str(m.get("name") or "")
        if not name or "/" in name or name in (".", ".."):
            raise AnsibleActionFail(f"{manifest}: no usable name; give name:")
        cdir = os.path.join(args["lxcpath"], name)
        out = {"name": name, "path": cdir, "output": output}
        exists = os.path.lexists(cdir)
        if exists:
            rec = _json(os.path.join(cdir, SOURCE_FILE)) or {}
            same = rec.get("manifest_sha256") and rec.get("manifest_sha256") == _sha256(manifest)
            if same and not args["force"]:
                out.update(changed=False, msg=f"{cdir} is installed from this output already")
                return out
            if not args["force"]:
                raise AnsibleActionFail(f"{cdir} exists and was not installed from {output} as it is now; "
                                        "nothing was changed (force: true replaces it if imgbuild installed it "
                                        "and it is not running)")
        out["changed"] = True
        if self.diff_mode:
            out["diff"] = {"prepared": f"{'replace' if exists else 'install'} {cdir} from {output}\n"}
        if self.check_mode:
            out["msg"] = f"would install {output} as {cdir}"
            return out
        r = self.run_cli(install_argv(self.executable(args), args, exists), args)
        out["path"] = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else cdir
        out["msg"] = f"installed {output} as {out['path']}"
        return out
