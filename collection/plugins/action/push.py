# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""imgbuild.guests.push: `migrate push HOST --dest D --source S ...` on the controller."""
from __future__ import annotations

import json
import os

from ansible_collections.imgbuild.guests.plugins.plugin_utils.imgbuild import (
    ImgbuildAction,
    lines,
    read_json,
    repeat,
)

SPEC = dict(
    dest=dict(type="str", required=True),
    source=dict(type="path", required=True),
    delete=dict(type="bool", default=False),
    exclude=dict(type="list", elements="str", default=[]),
    protect=dict(type="list", elements="str", default=[]),
    unprotect=dict(type="list", elements="str", default=[]),
    profile=dict(type="str"),
    files_from=dict(type="path"),
    bwlimit=dict(type="int"),
    verify=dict(type="bool", default=False),
    force=dict(type="bool", default=False),
    rsync_path=dict(type="str"),
)


def push_argv(migrate: str, host: str, ssh: list[str], args: dict, dry_run: bool, result: str | None) -> list[str]:
    """The `migrate push` command line for these options (every value its own argv element; HOST last,
    after `--`)."""
    argv = [migrate, "push", "--dest", args["dest"], "--source", args["source"]]
    if args.get("files_from"):
        argv += ["--files-from", args["files_from"]]
    if args.get("profile"):
        argv += ["--profile", args["profile"]]
    argv += repeat("--exclude", args.get("exclude"))
    argv += repeat("--protect", args.get("protect"))
    argv += repeat("--unprotect", args.get("unprotect"))
    if args.get("bwlimit") is not None:
        argv += ["--bwlimit", str(args["bwlimit"])]
    for flag in ("delete", "force"):
        if args.get(flag):
            argv.append(f"--{flag}")
    if args.get("rsync_path"):
        argv += ["--rsync-path", args["rsync_path"]]
    if dry_run:
        argv += ["--dry-run", "--json"]
    else:
        if args.get("verify"):
            argv.append("--verify")
        argv += ["--result-json", result]
    return [*argv, *ssh, "--", host]


def summary(data: dict) -> dict:
    """push's JSON (builder.migrate.push.as_json) as the task's result."""
    create, change, delete = data.get("create") or [], data.get("change") or [], data.get("delete") or []
    return {"changed": bool(create or change or delete), "created": len(create), "changed_paths": len(change),
            "deleted": len(delete), "bytes": data.get("bytes", 0), "not_sent": data.get("not_sent") or [],
            "paths": {"create": create, "change": change, "delete": delete}}


def listing(data: dict) -> str:
    """The diff-mode text: every path created, changed (and in what) or deleted, one a line."""
    out = [f"create {p}" for p in data.get("create") or []]
    out += [f"change {c.get('what', '?')} {c.get('path')}" for c in data.get("change") or [] if isinstance(c, dict)]
    out += [f"delete {p}" for p in data.get("delete") or []]
    return "".join(f"{line}\n" for line in out)


class ActionModule(ImgbuildAction):
    SPEC = SPEC
    REMOTE = True
    COMMAND = "migrate"

    def act(self, args, task_vars, work):
        host, ssh = self.destination(args, task_vars)
        result_file = os.path.join(work, "push.json")
        argv = push_argv(self.executable(args), host, ssh, args, self.check_mode, result_file)
        r = self.run_cli(argv, args)
        if self.check_mode:
            try:
                data = json.loads(r.stdout)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                return {"failed": True, "msg": "migrate push --dry-run --json gave no JSON object",
                        "stdout_lines": lines(r.stdout)[-50:]}
        else:
            data = read_json(result_file, "migrate push")
        out = summary(data)
        out.update(host=host, dest=args["dest"], source=args["source"],
                   msg=f"{host}:{args['dest']}: {out['created']} created, {out['changed_paths']} changed, "
                       f"{out['deleted']} deleted{' (dry run)' if self.check_mode else ''}")
        if self.diff_mode and out["changed"]:
            out["diff"] = {"before_header": f"{host}:{args['dest']}", "after_header": args["source"],
                           "prepared": listing(data)}
        return out
