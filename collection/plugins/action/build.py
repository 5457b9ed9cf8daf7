# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""imgbuild.guests.build: `imgbuild build RECIPE [-o OUTPUT] ...` on the controller."""
from __future__ import annotations

import os

from ansible_collections.imgbuild.guests.plugins.plugin_utils.imgbuild import ImgbuildAction, read_json, set_args

SPEC = dict(
    recipe=dict(type="path", required=True),
    output=dict(type="path"),
    set=dict(type="dict", default={}),
    keep_tree=dict(type="bool", default=False),
    no_cache=dict(type="bool", default=False),
    force=dict(type="bool", default=False),
)


def build_argv(imgbuild: str, args: dict, dry_run: bool, result: str) -> list[str]:
    argv = [imgbuild, "build"]
    if args.get("output"):
        argv += ["--output", args["output"]]
    argv += set_args(args.get("set"))
    for opt in ("keep_tree", "no_cache", "force"):
        if args.get(opt):
            argv.append("--" + opt.replace("_", "-"))
    if dry_run:
        argv.append("--dry-run")
    return [*argv, "--result-json", result, "--", args["recipe"]]


class ActionModule(ImgbuildAction):
    SPEC = SPEC
    COMMAND = "imgbuild"

    def act(self, args, task_vars, work):
        result_file = os.path.join(work, "build.json")
        self.run_cli(build_argv(self.executable(args), args, self.check_mode, result_file), args)
        data = read_json(result_file, "imgbuild build")
        changed, output = bool(data.get("changed")), str(data.get("output", ""))
        out = {"changed": changed, "output": output}
        if self.check_mode:
            out["msg"] = f"would build {output}" if changed else f"{output} is up to date"
        else:
            out["msg"] = f"built {output}" if changed else f"{output} is up to date: nothing built"
        if self.diff_mode and changed:
            out["diff"] = {"prepared": f"{'would build' if self.check_mode else 'built'} {output}\n"}
        return out
