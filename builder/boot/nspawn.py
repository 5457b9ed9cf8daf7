"""`imgbuild boot --in nspawn`: the output's tree (its tarball unpacked, or a copy of its nspawn tree: a boot
writes into the tree, never into the output) booted by real `systemd-nspawn --boot` in the sandbox's network
namespace. Each interface of the recipe is a veth (--network-veth-extra) whose guest end carries the recipe's name
(eth0, not nspawn's host0), so the guest's own network config comes up as written; its other end joins the
sandbox's bridge. (--network-interface would keep the recipe's MAC too, but nspawn refuses an interface udev has
not initialized, and on a host without udev none is.)

systemd-nspawn runs with `--register=no --keep-unit` (no system D-Bus or machined is needed); commands reach the
guest through its init process (nspawn's child in a pid namespace of its own) with nsenter. nspawn leaves its
payload/supervisor cgroups behind when it runs outside a systemd unit: those a boot made are removed again."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from builder.boot import sandbox
from builder.boot.sandbox import BRIDGE, Sandbox, State
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError


def needs(manifest: dict) -> bool:
    return bool({a["kind"] for a in manifest["artifacts"]} & {"tarball", "nspawn-tree"})


def _source(output: Path, manifest: dict) -> tuple[str, Path]:
    files = {a["kind"]: Path(output) / a["path"] for a in manifest["artifacts"]}
    for kind in ("tarball", "nspawn-tree"):
        f = files.get(kind)
        if f is not None:
            if f.is_symlink() or not (f.is_file() if kind == "tarball" else f.is_dir()):
                raise InputError(f"{f}: the output's {kind} is missing or not what a build writes", "build again")
            return kind, f
    raise InputError(f"{output}: no tarball or nspawn tree to boot", "add targets: {tarball: {}} and build again")


def start(output: Path, manifest: dict, sb: Sandbox) -> float:
    """Unpack (or copy) the tree and start nspawn; returns when nspawn was started (time.monotonic())."""
    kind, src = _source(output, manifest)
    root = sb.workdir / "root"
    if kind == "tarball":
        root.mkdir()
        runner.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(src), "-C", str(root)])
    else:
        runner.run(["cp", "-a", "--reflink=auto", str(src), str(root)])
    peers = {f"ibv{i}": ifname for i, ifname in enumerate(sorted(manifest.get("network") or {}))}
    net = [f"--network-veth-extra={peer}:{ifname}" for peer, ifname in peers.items()]
    cgroups = _own_cgroups()
    hostname = manifest.get("hostname") or manifest["name"]
    launched = time.monotonic()
    proc = runner.start(sb.ns("systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", root,
                              f"--machine={sb.state.name}", f"--hostname={hostname}",
                              *(net or ["--private-network"]), "--boot"), output=sb.workdir / "console.log")
    sb.state.pid = proc.pid
    sb.state.extra["cgroups_before"] = ",".join(sorted(map(str, cgroups)))
    end = time.monotonic() + 20
    while time.monotonic() < end and proc.poll() is None:
        init = _init(proc.pid)
        if init:
            sb.state.extra["init"] = str(init)
            for peer in peers:      # nspawn made the pair: its host end joins the bridge
                _wait_link(sb, peer)
                runner.run(["ip", "-n", sb.netns, "link", "set", peer, "master", BRIDGE, "up"])
            return launched
        time.sleep(0.1)
    how = f"ended (exit {proc.returncode})" if proc.poll() is not None else "started"
    raise BuilderError(f"systemd-nspawn {how} without a container init",
                       f"its output: {sb.workdir / 'console.log'} (kept with --keep)")


def _wait_link(sb: Sandbox, name: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if runner.run(["ip", "-n", sb.netns, "link", "show", name], check=False, capture=True).returncode == 0:
            return
        time.sleep(0.1)


def _init(nspawn_pid: int) -> int | None:
    """The container's init: nspawn's child in another pid namespace."""
    mine = os.readlink("/proc/self/ns/pid")
    for kid in _children(nspawn_pid):
        try:
            if os.readlink(f"/proc/{kid}/ns/pid") != mine:
                return kid
        except OSError:
            pass
    return None


def _children(ppid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(") ", 1)[1].split()[1]) == ppid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def run_in(sb: Sandbox, st: State):
    def run(cmd: list[str]) -> tuple[int, str]:
        r = runner.run(["nsenter", "-t", st.extra["init"], "-a", *cmd], capture=True, check=False,
                       max_output=1 << 20)
        return r.returncode, r.stdout
    return run


def running(sb: Sandbox, st: State) -> bool:
    sandbox.reap(st.pid)
    return bool(st.pid) and _ours(st)


def log_file(st: State) -> Path:
    return Path(st.workdir) / "console.log"


def reach(st: State) -> list[str]:
    return [f"nsenter -t {st.extra['init']} -a /bin/sh    (the machine's init is pid {st.extra['init']})"]


def _ours(st: State) -> bool:
    """Whether st.pid is still the nspawn this boot started (not a pid reused since)."""
    return sandbox.ours(st.pid, "systemd-nspawn", f"--machine={st.name}")


def stop(sb: Sandbox, st: State) -> list[str]:
    """SIGTERM to nspawn (it halts the machine), SIGKILL to the machine's init if it is not gone in 30 s; then the
    cgroups nspawn left."""
    problems = []
    if not sandbox.end(st.pid, lambda: _ours(st), signal.SIGTERM, 30):
        init = int(st.extra.get("init", "0") or 0)
        if init > 1 and _ours(st):
            try:
                os.kill(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not sandbox.end(st.pid, lambda: _ours(st), signal.SIGKILL, 5):
            problems.append(f"systemd-nspawn {st.pid} did not end")
    before = set(filter(None, st.extra.get("cgroups_before", "").split(",")))
    for cg in sorted(set(map(str, _own_cgroups())) - before, key=len, reverse=True):
        for dirpath, _dirs, _files in os.walk(cg, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    return problems


def _own_cgroups() -> set[Path]:
    """payload/ and supervisor/ under this process's cgroups: what nspawn makes outside a systemd unit."""
    out = set()
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _id, ctrl, rel = line.split(":", 2)
        name = ctrl.replace("name=", "") if ctrl else "unified"
        for base in (Path("/sys/fs/cgroup") / name, Path("/sys/fs/cgroup")):
            d = base / rel.lstrip("/")
            if (d / "cgroup.procs").exists():
                out |= {d / n for n in ("payload", "supervisor") if (d / n).is_dir()}
                break
    return out

