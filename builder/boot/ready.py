"""Is the guest up? Asked inside the guest, the same way for every runtime (a `run` that executes a command in it):
systemd's own answer (`is-system-running`: running, or degraded with the failed units named), or for sysvinit and
upstart the runlevel reached. A guest that answers nothing yet is still starting; one in maintenance (a failed
boot) or stopping is down."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from builder.core.untrusted import shown

Run = Callable[[list[str]], tuple[int, str]]     # a command inside the guest -> (exit status, output)

PROBE = ("if [ -d /run/systemd/system ]; then echo init=systemd; systemctl is-system-running 2>&1; "
         "else echo init=sysv; runlevel 2>&1; fi; [ -x /usr/sbin/sshd ] && echo sshd=yes; true")
UP = {"running", "degraded"}
DOWN = {"maintenance", "stopping", "offline"}


@dataclass
class InitState:
    up: bool | None              # True up, False down for good, None still starting
    text: str                    # "systemd running", "systemd degraded (failed: a.service)", "runlevel 3" ...
    has_sshd: bool = False


def parse(output: str) -> InitState:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    has_sshd = "sshd=yes" in lines
    lines = [ln for ln in lines if ln != "sshd=yes"]
    if not lines or not lines[0].startswith("init="):
        return InitState(None, "no answer yet", has_sshd)
    init, rest = lines[0][5:], lines[1:]
    if init == "systemd":
        state = rest[0] if rest else ""
        if state in UP:
            return InitState(True, f"systemd {state}", has_sshd)
        if state in DOWN:
            return InitState(False, f"systemd {state}", has_sshd)
        return InitState(None, f"systemd {state or 'not answering'}"[:120], has_sshd)
    words = rest[0].split() if rest else []
    if len(words) == 2 and words[1] in {"2", "3", "4", "5"}:
        return InitState(True, f"runlevel {words[1]}", has_sshd)
    if len(words) == 2 and words[1] in {"0", "6"}:
        return InitState(False, f"runlevel {words[1]}", has_sshd)
    return InitState(None, "no runlevel yet", has_sshd)


def wait(run: Run, timeout: float, alive: Callable[[], bool] = lambda: True) -> InitState:
    """Ask until the guest is up or down, `timeout` passes or `alive()` says the runtime ended."""
    end = time.monotonic() + timeout
    state = InitState(None, "no answer yet")
    while time.monotonic() < end and alive():
        _rc, out = run(["sh", "-c", PROBE])
        state = parse(out)
        if state.up is not None:
            break
        time.sleep(0.3)
    if state.text.startswith("systemd degraded"):
        _rc, out = run(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"])
        failed = [shown(ln.split()[0], 80) for ln in out.splitlines() if ln.strip()][:10]   # the guest's words
        if failed:
            state.text += f" (failed: {', '.join(failed)})"
    return state
