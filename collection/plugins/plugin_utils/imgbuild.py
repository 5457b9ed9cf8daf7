# Copyright: imgbuild authors
# SPDX-License-Identifier: MIT
"""What every imgbuild.guests action plugin shares: the options, the host a task acts on, and running
imgbuild's own CLI on the controller.

Why the controller: Ansible's python cannot import imgbuild's library (imgbuild lives in its own venv) and the
managed hosts have no imgbuild (and may have no python at all). So each module runs `imgbuild` or `migrate` on
the controller, as a subprocess with an argv list (never a shell), the way ansible's own `synchronize` runs
rsync there. The checks, refusals and exit codes are the CLI's, which are the library's: this file only turns
task options into argv elements and the CLI's answer (its --result-json file, its dry-run output, its `error:`
and `hint:` lines) into a task result.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

# options every module has: where the CLI is
BIN_SPEC = dict(
    bin_dir=dict(type="path"),
    timeout=dict(type="int", default=3600),
)

# options of the modules that reach the host over ssh (push, chroot): imgbuild's ssh options (builder/cli/ssh.py)
SSH_SPEC = dict(
    host=dict(type="str"),
    port=dict(type="int"),
    user=dict(type="str"),
    ssh_config=dict(type="path"),
    identity=dict(type="path"),
    ssh_options=dict(type="list", elements="str", default=[]),
    accept_new_host_key=dict(type="bool", default=False),
)

# what a host name may be before it becomes an argv element: an ssh destination, never an option (fleet.py's rule)
_HOST_RE = re.compile(r"[A-Za-z0-9_.:%\[\]-]{1,253}")
_USER_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}")
_SSH_OPTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*=[^\x00-\x1f\x7f]*")
MAX_LINES = 2000


class ImgbuildAction(ActionBase):
    """Base of the imgbuild.guests action plugins: nothing is sent to the managed host by Ansible (no module,
    no temp dir, no python there); imgbuild's CLI does the work from the controller."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset()       # checked by the argument spec below instead
    SPEC: dict = {}                 # the module's own options (without BIN_SPEC / SSH_SPEC)
    REMOTE = False                  # whether the module reaches the host over ssh (SSH_SPEC)
    COMMAND = "imgbuild"            # the console script it runs: imgbuild or migrate

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._supports_check_mode = True
        self._supports_async = False

    # ------------------------------------------------------------------ options

    def spec(self) -> dict:
        return {**self.SPEC, **BIN_SPEC, **(SSH_SPEC if self.REMOTE else {})}

    def options(self, task_vars: dict) -> dict:
        """The task's options, validated and typed by the module's argument spec (unknown options, wrong types
        and bad choices fail the task naming the option)."""
        validator = ArgumentSpecValidator(self.spec())
        res = validator.validate(dict(self._task.args))
        self._no_log = res._no_log_values
        if res.error_messages:
            raise AnsibleActionFail("invalid options: " + "; ".join(res.error_messages))
        args = res.validated_parameters
        if not args.get("bin_dir") and task_vars.get("imgbuild_bin_dir"):
            args["bin_dir"] = os.path.expanduser(str(self._templar.template(task_vars["imgbuild_bin_dir"])))
        return args

    def executable(self, args: dict, name: str | None = None) -> str:
        """imgbuild's console script NAME: from bin_dir (or the imgbuild_bin_dir variable), else from PATH."""
        name = name or self.COMMAND
        if args.get("bin_dir"):
            path = os.path.join(args["bin_dir"], name)
            if not os.access(path, os.X_OK):
                raise AnsibleActionFail(f"bin_dir: {path} is not an executable on the controller; give the "
                                        "directory that holds imgbuild's `imgbuild` and `migrate` (e.g. its .venv/bin)")
            return path
        found = shutil.which(name)
        if not found:
            raise AnsibleActionFail(f"`{name}` is not on the controller's PATH; install imgbuild there "
                                    "(scripts/setup.sh) or give bin_dir: DIR holding it")
        return found

    # ------------------------------------------------------------------ the host

    def destination(self, args: dict, task_vars: dict) -> tuple[str, list[str]]:
        """The ssh destination ([user@]host) and the ssh options for imgbuild's CLI: the `host`, `port` and
        `user` options, else the inventory's ansible_host (or the inventory name), ansible_port, ansible_user."""
        def var(name):
            value = task_vars.get(name)
            return None if value is None else self._templar.template(value)

        host = args.get("host") or var("ansible_host") or task_vars.get("inventory_hostname")
        user = args.get("user") or var("ansible_user")
        port = args.get("port") or var("ansible_port")
        host = str(host or "")
        if not _HOST_RE.fullmatch(host) or host.startswith("-"):
            raise AnsibleActionFail(f"host {host!r}: not a host name or address (letters, digits, '.', '-', ':' "
                                    "and no leading '-'); set `host:` or the inventory's ansible_host")
        if user:
            user = str(user)
            if not _USER_RE.fullmatch(user):
                raise AnsibleActionFail(f"user {user!r}: not a user name; set `user:` or ansible_user")
            host = f"{user}@{host}"
        opts = []
        if port not in (None, ""):
            try:
                port = int(port)
            except (TypeError, ValueError):
                raise AnsibleActionFail(f"port {port!r}: not a number (the `port` option or ansible_port)") from None
            if not 0 < port < 65536:
                raise AnsibleActionFail(f"port {port}: not a port (1-65535)")
            opts += ["--port", str(port)]
        if args.get("ssh_config"):
            opts += ["--ssh-config", args["ssh_config"]]
        if args.get("identity"):
            opts += ["--identity", args["identity"]]
        for o in args.get("ssh_options") or ():
            if not _SSH_OPTION_RE.fullmatch(o):
                raise AnsibleActionFail(f"ssh_options: {o!r} is not KEY=VALUE (e.g. ConnectTimeout=5)")
            opts += ["--ssh-option", o]
        if args.get("accept_new_host_key"):
            opts.append("--accept-new-host-key")
        return host, opts

    # ------------------------------------------------------------------ running the CLI

    def run_cli(self, argv: list[str], args: dict) -> subprocess.CompletedProcess:
        """Run argv (a list: no shell) on the controller; a failure fails the task with the CLI's own
        `error:`/`hint:` lines."""
        env = dict(os.environ, LC_ALL="C.UTF-8", NO_COLOR="1")
        try:
            r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, errors="replace",
                               stdin=subprocess.DEVNULL, timeout=args.get("timeout") or None, env=env,
                               check=False)
        except subprocess.TimeoutExpired:
            raise AnsibleActionFail(f"{os.path.basename(argv[0])} {argv[1]}: no answer after {args['timeout']} s; "
                                    "stopped (raise `timeout:` for a long run)") from None
        except OSError as e:
            raise AnsibleActionFail(f"cannot run {argv[0]}: {e.strerror}") from None
        if r.returncode != 0:
            raise CliFailed(r)
        return r

    def finish(self, result: dict) -> dict:
        """The result with the value of every option marked no_log masked."""
        return remove_values(result, getattr(self, "_no_log", set()))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        try:
            args = self.options(task_vars)
            with tempfile.TemporaryDirectory(prefix="imgbuild-ansible-") as work:
                result.update(self.act(args, task_vars, work))
        except CliFailed as e:
            result.update(e.result())
        except AnsibleActionFail as e:
            result.update(failed=True, msg=str(e.message))
        return self.finish(result)

    def act(self, args: dict, task_vars: dict, work: str) -> dict:
        raise NotImplementedError

    # helpers for the modules

    @property
    def check_mode(self) -> bool:
        return bool(self._task.check_mode)

    @property
    def diff_mode(self) -> bool:
        return bool(self._task.diff)


def read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AnsibleActionFail(f"{what}: no readable result ({e}); is imgbuild on the controller older than "
                                "this collection?") from None
    if not isinstance(data, dict):
        raise AnsibleActionFail(f"{what}: the result is not a JSON object")
    return data


def set_args(values: dict | None) -> list[str]:
    """--set KEY=VALUE for each item; VALUE as JSON, which imgbuild reads as YAML (a string stays a string)."""
    out = []
    for key, value in (values or {}).items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def repeat(flag: str, values) -> list[str]:
    out = []
    for v in values or ():
        out += [flag, str(v)]
    return out


def lines(text: str) -> list[str]:
    return text.splitlines()[:MAX_LINES]


class CliFailed(Exception):
    """imgbuild's CLI exited non-zero: its `error:` and `hint:` lines become the task's message."""

    def __init__(self, r: subprocess.CompletedProcess):
        super().__init__(r.returncode)
        self.r = r

    def result(self) -> dict:
        err = lines(self.r.stderr)
        said = [ln for ln in err if ln.startswith(("error:", "hint:"))]
        if "Traceback (most recent call last):" in self.r.stderr:
            said = said or ["error: internal error in imgbuild (run the command by hand with --debug)"]
        msg = " ".join(said) if said else (err[-1] if err else f"exit status {self.r.returncode}")
        return {"failed": True, "msg": msg, "rc": self.r.returncode,
                "stderr_lines": [ln for ln in err if not ln.startswith(("Traceback", "  File "))][-50:],
                "stdout_lines": lines(self.r.stdout)[-50:]}
