"""First boot: the recipe's `firstboot:` commands and scripts, run once at the guest's first boot, then removed.

What the guest gets:
  /var/lib/imgbuild/firstboot/      0700: `run` (the runner) and one file per entry (00, 01 ...), 0700 each
  systemd guests:   /etc/systemd/system/imgbuild-firstboot.service (oneshot, enabled for multi-user.target, only
                    while the runner exists)
  guests without systemd (EL5/EL6, Debian with sysvinit): a marked block in rc.local that calls the runner

The runner first renames its directory aside, so no later boot can run anything again - also after a failing
script or a power cut in the middle (at most once, never twice). It runs the entries in order (a failing one is
logged, the next still runs), writes their output to /var/log/imgbuild-firstboot.log (0600: commands may handle
secrets), then removes the directory, the unit and the rc.local block. Values written into the runner are quoted
with shlex.quote; nothing of the guest runs on the build host.
"""
from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core.errors import InputError
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context

log = logging.getLogger("imgbuild")

DIR = "/var/lib/imgbuild/firstboot"
RUNNER = f"{DIR}/run"
DONE = "/var/lib/imgbuild/firstboot.running"      # where the runner moves DIR before anything runs
LOG = "/var/log/imgbuild-firstboot.log"
UNIT_NAME = "imgbuild-firstboot.service"
UNIT = f"/etc/systemd/system/{UNIT_NAME}"
WANTS = f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
BEGIN = "# BEGIN imgbuild firstboot"
END = "# END imgbuild firstboot"

UNIT_TEXT = f"""# written by imgbuild: the recipe's first-boot commands; runs once, then removes itself
[Unit]
Description=imgbuild first-boot commands (run once)
ConditionPathExists={RUNNER}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={RUNNER}
TimeoutStartSec=0

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class FirstBoot:
    """A command or script run once, as root, at the guest's first boot."""

    ONE_OF = ("run", "script")
    run: str | None = opt(None, doc="shell command run in the guest (/bin/sh -c)")
    script: str | None = opt(None, doc="local script copied into the guest and run there (relative to the recipe); "
                                       "run directly if it starts with #!, else with /bin/sh")
    args: tuple[str, ...] = opt((), doc="arguments for script")

    def __post_init__(self) -> None:
        if self.args and self.script is None:
            raise ValueError("args are for script (put a run command's arguments in the command)")


def uses_systemd(ctx: "Context") -> bool:
    """Whether the guest boots with systemd: the recipe's init shim says; with `init: none`, what /sbin/init is."""
    init = ctx.recipe.init
    if init == "systemd-container":
        return True
    if init in ("upstart-lxc", "sysvinit-container"):
        return False
    for path in ("/sbin/init", "/usr/sbin/init"):
        target = ctx.root.readlink(path)
        if target is not None:
            return "systemd" in target
    return ctx.root.exists("/lib/systemd/systemd") and not ctx.root.exists("/etc/inittab")


def rc_local(ctx: "Context") -> str:
    """The guest's rc.local: EL's is /etc/rc.d/rc.local (/etc/rc.local links to it), Debian's /etc/rc.local."""
    return "/etc/rc.d/rc.local" if ctx.root.is_dir("/etc/rc.d") else "/etc/rc.local"


def runner(entries: list[tuple[str, tuple[str, ...], bool]], rc_local_path: str | None) -> str:
    """The runner script; entries are (file name in DIR, args, run with /bin/sh)."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# written by imgbuild: runs the recipe's first-boot commands once, then removes them",
        f"[ -d {q(DIR)} ] || exit 0",
        "umask 077",
        f"rm -rf {q(DONE)}",
        f"mv {q(DIR)} {q(DONE)} || exit 1      # before anything runs: no second boot runs it again",
        "status=0",
        "{",
        '  echo "imgbuild first boot: $(date)"',
    ]
    for name, args, with_sh in entries:
        argv = " ".join(q(a) for a in (["/bin/sh"] if with_sh else []) + [f"{DONE}/{name}", *args])
        lines += [f"  echo {q('--- ' + name)}",
                  f"  {argv} </dev/null",
                  f'  rc=$?; [ $rc -eq 0 ] || {{ echo {q(name)}": exit status $rc"; status=1; }}']
    lines += ['  echo "imgbuild first boot: done (status $status)"', f"}} >>{q(LOG)} 2>&1"]
    if rc_local_path is None:
        lines.append(f"rm -f {q(WANTS)} {q(UNIT)}")
    else:
        lines.append(f"sed -i {q(f'/^{BEGIN}$/,/^{END}$/d')} {q(rc_local_path)}")
    lines += [f"rm -rf {q(DONE)}", "exit $status", ""]
    return "\n".join(lines)


def with_block(text: str) -> str:
    """rc.local with the block that calls the runner, before a final `exit 0` (unchanged if it is there)."""
    if BEGIN in text:
        return text
    block = f"{BEGIN}\n[ -x {shlex.quote(RUNNER)} ] && {shlex.quote(RUNNER)} || true\n{END}\n"
    if not text.strip():
        return "#!/bin/sh\n" + block + "exit 0\n"
    lines = text.rstrip("\n").split("\n")
    if lines[-1].strip() == "exit 0":
        return "\n".join(lines[:-1]) + "\n" + block + lines[-1] + "\n"
    return text.rstrip("\n") + "\n" + block


def run(ctx: "Context", entries: tuple[FirstBoot, ...]) -> None:
    if not entries:
        return
    root = ctx.root
    root.remove(DIR, tree=True)
    root.mkdir("/var/lib/imgbuild", 0o755)
    root.mkdir(DIR, 0o700)
    files: list[tuple[str, tuple[str, ...], bool]] = []
    for n, e in enumerate(entries):
        name = f"{n:02d}"
        if e.run is not None:
            data = f"#!/bin/sh\n{e.run}\n".encode()
        else:
            try:
                data = Path(e.script).read_bytes()
            except OSError as err:
                raise InputError(f"{ctx.source}: firstboot[{n}].script: cannot read {e.script}: {err.strerror}",
                                 "give a readable file (relative to the recipe)") from None
        root.write(f"{DIR}/{name}", data, 0o700)
        files.append((name, e.args, data[:2] != b"#!"))
    systemd = uses_systemd(ctx)
    rc = None if systemd else rc_local(ctx)
    root.write(RUNNER, runner(files, rc), 0o700)
    if systemd:
        root.write(UNIT, UNIT_TEXT, 0o644)
        root.symlink(UNIT, WANTS)
    else:
        root.write(rc, with_block(root.read_text(rc) or ""), 0o755)
    log.info("firstboot: %d command(s), run once at the first boot (%s)", len(entries),
             UNIT_NAME if systemd else rc)
