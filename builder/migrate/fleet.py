"""One `migrate` command across many hosts: `--hosts a,b,@hosts.txt -j 3`.

Each host runs as a `migrate` child process of its own (the same command for one host, so one host's failure,
hang or Ctrl-C handling never touches another's), at most `jobs` at a time. Its output goes to a log file per
host under the log directory; it leaves a small JSON result (what changed) for the summary. One failing host
never stops the others unless fail_fast. Nothing is retried: an unreachable host is reported with ssh's error.

Host names: a comma-separated list of ssh destinations (an alias from ssh_config, `host`, `user@host`), `@FILE`
for one per line (`#` comments), and `@INVENTORY[:GROUP]` for an Ansible inventory (INI or YAML; read by
ansible-core's own `ansible-inventory`, with ansible_host, ansible_user and ansible_port honoured). Every name is
checked before any host is contacted.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from builder.core import checks
from builder.core import proc as runner
from builder.core.errors import InputError
from builder.core.sizes import human
from builder.core.untrusted import load_json, read_file

# what ssh takes as a destination and cannot mistake for an option: [user@]host, an alias, an IPv4/6 address
_HOST = checks.SSH_DEST
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")
MAX_HOSTS = 1000
INVENTORY_SUFFIXES = (".yml", ".yaml", ".ini")


@dataclass(frozen=True)
class Target:
    """One host of a set: the name shown and logged, the ssh destination, and its own ssh port if it has one."""

    name: str
    dest: str
    port: int | None = None


def parse_hosts(spec: str) -> list[Target]:
    """The hosts of a --hosts value, in order, each once; InputError naming a bad one."""
    found: list[tuple[Target, str]] = []           # (target, where it was given)
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        if item.startswith("@"):
            found += _from_file(item[1:])
        else:
            found.append((Target(item, item), "--hosts"))
    hosts: list[Target] = []
    for t, where in found:
        for v in (t.name, t.dest):
            if not _HOST.fullmatch(v):
                raise InputError(f"{where}: {v!r} is not a host name (an ssh alias, host or user@host)",
                                 "one host per item; no spaces, options or paths")
        if t.port is not None and not 0 < t.port < 65536:
            raise InputError(f"{where}: host {t.name}: port {t.port} is not a port", "fix ansible_port there")
        if t.name not in {h.name for h in hosts}:
            hosts.append(t)
    if not hosts:
        raise InputError("--hosts names no host", "give host names separated by commas, @FILE, or @INVENTORY:GROUP")
    if len(hosts) > MAX_HOSTS:
        raise InputError(f"--hosts names {len(hosts)} hosts, more than {MAX_HOSTS}", "split the set")
    return hosts


def _from_file(ref: str) -> list[tuple[Target, str]]:
    """@FILE: one host a line; @INVENTORY[:GROUP]: an Ansible inventory (INI or YAML), read by Ansible itself."""
    path, group = ref, None
    if ":" in ref and _GROUP.fullmatch(ref.rsplit(":", 1)[1]):
        path, group = ref.rsplit(":", 1)
    if group is not None or path.endswith(INVENTORY_SUFFIXES):
        return [(t, path) for t in inventory(Path(path), group or "all")]
    text = read_file(Path(path), path, what="a host list", hint="one host per line").decode("utf-8", "replace")
    names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return [(Target(n, n), path) for n in names if n]


def inventory(path: Path, group: str) -> list[Target]:
    """The hosts of `group` (and of its child groups) in an Ansible inventory, as Ansible's own parser reads it
    (ansible-inventory --list, from ansible-core). Only the ini and yaml inventory plugins are enabled: an
    executable inventory script is never run. ansible_host, ansible_user and ansible_port are honoured."""
    read_file(path, str(path), what="an Ansible inventory", hint="an INI or YAML inventory file")  # exists, bounded
    env = {**os.environ, "ANSIBLE_INVENTORY_ENABLED": "ini,yaml", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    r = runner.run(["ansible-inventory", "-i", str(path), "--list"], capture=True, check=False, env=env,
                   max_output=16 << 20)
    if r.returncode != 0:
        why = next((ln for ln in reversed(r.tail) if ln.strip()), f"exit {r.returncode}")
        raise InputError(f"{path}: Ansible cannot read this inventory: {why.strip()}",
                         "check it with: ansible-inventory -i FILE --graph")
    data = load_json(r.stdout, str(path), what="ansible-inventory's answer")
    if group not in data:
        groups = sorted(k for k in data if k != "_meta")
        raise InputError(f"{path}: no group {group!r} (it has: {', '.join(groups)})", "name one of those after ':'")
    names: list[str] = []
    todo, seen = [group], set()
    while todo:
        g = todo.pop(0)
        if g in seen or not isinstance(data.get(g), dict):
            continue
        seen.add(g)
        names += [h for h in data[g].get("hosts", []) if isinstance(h, str) and h not in names]
        todo += [c for c in data[g].get("children", []) if isinstance(c, str)]
    hostvars = data.get("_meta", {}).get("hostvars", {}) if isinstance(data.get("_meta"), dict) else {}
    out = []
    for n in names:
        v = hostvars.get(n, {}) if isinstance(hostvars.get(n), dict) else {}
        dest = str(v.get("ansible_host", n))
        if v.get("ansible_user"):
            dest = f"{v['ansible_user']}@{dest}"
        port = v.get("ansible_port")
        try:
            port = int(port) if port is not None else None
        except (TypeError, ValueError):
            raise InputError(f"{path}: host {n}: ansible_port {port!r} is not a number", "fix it there") from None
        out.append(Target(n, dest, port))
    return out


def log_name(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", host)


@dataclass
class Job:
    host: str
    log: Path
    result: Path
    proc: object = None
    started: float = 0.0
    seconds: float = 0.0
    status: str = "waiting"          # waiting, running, ok, failed, stopped
    error: str = ""
    outcome: dict = field(default_factory=dict)
    target: Target | None = None

    def last_line(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def finish(self, rc: int) -> None:
        self.seconds = time.monotonic() - self.started
        self.status = "ok" if rc == 0 else "failed"
        try:
            self.outcome = json.loads(self.result.read_text()) if self.result.is_file() else {}
        except (OSError, ValueError):
            self.outcome = {}
        if rc != 0:
            errors = [ln for ln in _tail(self.log) if ln.startswith("error:")]
            self.error = errors[-1][len("error:"):].strip() if errors else (self.last_line() or f"exit {rc}")
            self.error = self.error.removeprefix(f"{self.host}: ")       # the host is named once, by us


def _tail(path: Path) -> list[str]:
    try:
        return path.read_bytes()[-16384:].decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def run(hosts: list[Target], argv_for: Callable[[Target, Path], list[str]], jobs: int, log_dir: Path,
        fail_fast: bool = False, show: Callable[[list[Job]], None] | None = None) -> list[Job]:
    """Run argv_for(host, result_file) for every host, at most `jobs` at once; returns the jobs, finished."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    todo = [Job(h.name, log_dir / f"{stamp}-{log_name(h.name)}.log", log_dir / f".{stamp}-{log_name(h.name)}.json",
                target=h) for h in hosts]
    waiting, running = list(todo), []
    stopping = False
    try:
        while waiting or running:
            while waiting and len(running) < jobs and not stopping:
                j = waiting.pop(0)
                j.result.unlink(missing_ok=True)
                j.started = time.monotonic()
                j.proc = runner.start(argv_for(j.target, j.result), output=j.log)
                j.status = "running"
                running.append(j)
            for j in list(running):
                rc = j.proc.poll()
                if rc is not None:
                    running.remove(j)
                    j.finish(rc)
                    if j.status == "failed" and fail_fast:
                        stopping = True
            if stopping:
                for j in running:
                    runner.stop(j.proc)
                    j.finish(-1)
                    j.status, j.error = "stopped", "stopped by --fail-fast"
                running = []
                for j in waiting:
                    j.status, j.error = "not started", "--fail-fast: another host failed"
                waiting = []
            if show:
                show(todo)
            if running:
                time.sleep(0.2)
    finally:
        for j in running:
            runner.stop(j.proc)
        for j in todo:
            j.result.unlink(missing_ok=True)
    return todo


def table(jobs: list[Job]) -> list[str]:
    rows = [("host", "result", "bytes", "seconds", "changed")]
    for j in jobs:
        o = j.outcome
        changed = (str(o["summary"]) if "summary" in o else
                   f"{len(o.get('create', []))} created, {len(o.get('change', []))} changed, "
                   f"{len(o.get('delete', []))} deleted") if o else "-"
        rows.append((j.host, j.status if j.status != "failed" else _short(f"FAILED: {j.error}", 60),
                     human(o["bytes"]) if "bytes" in o else "-", f"{j.seconds:.1f}", changed))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join([*(r[i].ljust(widths[i]) for i in range(4)), r[4]]).rstrip() for r in rows]


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."



class LiveView:
    """One line per host, redrawn in place on a terminal; on anything else a line when a host starts or ends."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.drawn = 0
        self.said: dict[str, str] = {}

    def __call__(self, jobs: list[Job]) -> None:
        if not self.tty:
            for j in jobs:
                if self.said.get(j.host) != j.status and j.status != "waiting":
                    self.said[j.host] = j.status
                    extra = f" in {j.seconds:.1f} s" if j.status in ("ok", "failed") else ""
                    why = f": {j.error}" if j.error else ""
                    self.stream.write(f"{j.host}: {j.status}{extra}{why}\n")
            self.stream.flush()
            return
        width = max(len(j.host) for j in jobs)
        lines = []
        for j in jobs:
            secs = (time.monotonic() - j.started) if j.status == "running" else j.seconds
            detail = j.last_line() if j.status == "running" else j.error
            lines.append(f"{j.host.ljust(width)}  {j.status:<11} {secs:6.1f} s  {detail}"[:120])
        out = (f"\x1b[{self.drawn}F" if self.drawn else "") + "".join(f"\x1b[2K{ln}\n" for ln in lines)
        self.stream.write(out)
        self.stream.flush()
        self.drawn = len(lines)
