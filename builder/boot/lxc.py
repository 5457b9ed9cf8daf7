"""`imgbuild boot --in lxc`: the output's tarball unpacked under the sandbox's own lxcpath, its LXC config pointed
there and at the sandbox's bridge, its console logged to a file, and real `lxc-start` run in the sandbox's network
namespace.

Two LXC details shape the commands: LXC's command socket is an abstract unix socket, and those are per network
namespace, so every lxc-* command runs with the namespace's network; and lxc-start must see the namespace's bridge
in /sys/class/net, so it runs in a private mount namespace with a sysfs of its own, the host's cgroup tree bound
back under it (those mounts live only in that namespace, held by LXC's monitor, and go with it)."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from builder.boot.sandbox import BRIDGE, Sandbox, State
from builder.build.targets.lxc import adapt_cgroup, artifact_files, host_cgroup
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.core.outputs import write_atomic
from builder.core.untrusted import read_file
from builder.guestconf.lxc import config_dir, relocate

CGROUP_ROOT = Path("/sys/fs/cgroup")
_LINK = re.compile(r"^\s*(lxc\.net\.\d+\.link|lxc\.network(?:\.\d+)?\.link)\s*=.*$", re.M)
# lxc-start's output to a file, not our pipe: the daemonized monitor must not hold a pipe of ours open
START = ('mount --rbind /sys/fs/cgroup "$1" && mount -t sysfs sysfs /sys && mount --rbind "$1" /sys/fs/cgroup && '
         'exec lxc-start -P "$2" -n "$3" -d -o "$4" -l INFO >"$5" 2>&1')


def needs(manifest: dict) -> bool:
    kinds = {a["kind"] for a in manifest["artifacts"]}
    return "tarball" in kinds and bool(kinds & {"lxc-config", "lxc-legacy-config"})


def start(output: Path, manifest: dict, sb: Sandbox) -> float:
    """Unpack, configure and lxc-start; returns when the container was started (time.monotonic())."""
    files = artifact_files(output, manifest)
    data = read_file(files["lxc-config"], what="the output's LXC config", hint="build the output again")
    try:
        config = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{files['lxc-config']}: not UTF-8 text; not a config imgbuild wrote",
                         "build the output again") from None
    lxcpath = sb.workdir / "lxc"
    cdir = lxcpath / sb.state.name
    (cdir / "rootfs").mkdir(parents=True)
    runner.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(files["tarball"]),
                "-C", str(cdir / "rootfs")])
    config = relocate(config, config_dir(config, files["lxc-config"]), str(cdir))
    config, _dropped = adapt_cgroup(config, host_cgroup())
    config = _LINK.sub(lambda m: f"{m.group(1)} = {BRIDGE}", config)
    config += f"\n# imgbuild boot\nlxc.console.logfile = {sb.workdir / 'console.log'}\n"
    write_atomic(cdir / "config", config)
    (sb.workdir / "cgs").mkdir()
    out = sb.workdir / "lxc-start.out"
    launched = time.monotonic()
    r = runner.run(["unshare", "--mount", "--propagation", "private",
                    *sb.ns("sh", "-c", START, "sh", sb.workdir / "cgs", lxcpath, sb.state.name, sb.workdir / "lxc.log",
                           out)], check=False)
    if r.returncode != 0:
        said = out.read_text(errors="replace").strip().splitlines()[-3:] if out.exists() else []
        raise BuilderError(f"lxc-start failed (exit {r.returncode}): {' '.join(said) or 'no output'}",
                           f"LXC's own log: {sb.workdir / 'lxc.log'} (kept with --keep)")
    return launched


def run_in(sb: Sandbox, st: State):
    lxcpath = Path(st.workdir) / "lxc"

    def run(cmd: list[str]) -> tuple[int, str]:
        r = runner.run(sb.ns("lxc-attach", "-P", lxcpath, "-n", st.name, "--", *cmd), capture=True, check=False,
                       max_output=1 << 20)
        return r.returncode, r.stdout
    return run


def running(sb: Sandbox, st: State) -> bool:
    r = runner.run(sb.ns("lxc-info", "-P", Path(st.workdir) / "lxc", "-n", st.name, "-s", "-H"), capture=True,
                   check=False)
    return r.stdout.strip() == "RUNNING"


def log_file(st: State) -> Path:
    """LXC's own log: what to show when the console has nothing (an init that never ran)."""
    return Path(st.workdir) / "lxc.log"


def reach(st: State) -> list[str]:
    lxcpath = Path(st.workdir) / "lxc"
    return [f"nsenter --net=/run/netns/{st.netns} lxc-attach -P {lxcpath} -n {st.name}"]


def stop(sb: Sandbox, st: State) -> list[str]:
    """lxc-stop -k, then what LXC left: processes in the container's own cgroups (killed), its cgroups, its lock
    directory. Returns what could not be cleaned."""
    lxcpath = Path(st.workdir) / "lxc"
    problems = []
    runner.run(sb.ns("lxc-stop", "-P", lxcpath, "-n", st.name, "-k"), check=False, capture=True)
    end = time.monotonic() + 15
    while container_pids(st.name) and time.monotonic() < end:
        time.sleep(0.2)
    for pid in container_pids(st.name):            # only processes in this container's own cgroups
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    if container_pids(st.name):
        time.sleep(0.2)
    for top in container_cgroups(st.name):
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
    if container_cgroups(st.name):
        problems.append(f"cgroups of {st.name} left: {', '.join(map(str, container_cgroups(st.name)))}")
    lock = Path("/run/lxc/lock") / str(lxcpath.resolve()).lstrip("/")
    shutil.rmtree(lock, ignore_errors=True)
    for parent in lock.parents:
        if parent == Path("/run/lxc/lock"):
            break
        try:
            parent.rmdir()
        except OSError:
            break
    return problems


def container_cgroups(name: str) -> list[Path]:
    """The cgroup directories LXC made for container NAME (a sandbox's own, random name)."""
    if not CGROUP_ROOT.is_dir():
        return []
    bases = [CGROUP_ROOT] + sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())
    try:
        own = [ln.split(":", 2)[2].strip().lstrip("/") for ln in Path("/proc/self/cgroup").read_text().splitlines()]
    except OSError:
        own = []
    found = []
    for b in bases:
        for parent in [b, *(b / rel for rel in own if rel)]:
            for prefix in ("lxc.payload.", "lxc.monitor."):
                if (parent / f"{prefix}{name}").is_dir():
                    found.append(parent / f"{prefix}{name}")
    return list(dict.fromkeys(found))


def container_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for top in container_cgroups(name):
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    pids |= {int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()}
                except (OSError, ValueError):
                    pass
    return pids
