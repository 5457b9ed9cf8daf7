"""Run a pushed OS inside a chroot on a remote host (seed 001: an OpenVZ VPS without a console).

The order is the seed's, made into commands that cannot skip a step:
1. `chroot-install` writes the boot script (ROOT/usr/local/sbin/imgbuild-chroot) and the escape helper
   (ROOT/usr/local/sbin/chroot-escape) into the pushed tree and gives it what the push protected: ssh host
   keys of its own, a machine-id, the host's name, resolv.conf and hosts.
2. `chroot-start` refuses if a port the new system will listen on is taken by a host process (naming it), runs the
   boot script once by hand (a reboot undoes it), then checks over the network that the new sshd answers AND that
   the host's own sshd (the backdoor the user is connected through) still does.
3. Only `chroot-enable` makes it start at boot: a systemd unit on a systemd host, else a marked block in
   rc.local; `chroot-disable` removes exactly that.
"""
from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BuilderError, InputError
from .remote import Remote, tcp_banner

log = logging.getLogger("imgbuild")

SCRIPTS = Path(__file__).parent / "chroot"
BOOT = "/usr/local/sbin/imgbuild-chroot"
ESCAPE = "/usr/local/sbin/chroot-escape"
BINDS = ("/proc", "/sys", "/dev", "/dev/pts", "/lib/modules")
MARK = "imgbuild chroot"
_SERVICE_RE = re.compile(r"^[A-Za-z0-9_.@+-]+$")


def unit_name(dest: str) -> str:
    return "imgbuild-chroot-" + (dest.strip("/").replace("/", "-") or "root") + ".service"


def boot_script(dest: str, services: list[str]) -> str:
    text = (SCRIPTS / "imgbuild-chroot.sh").read_text()
    return text.replace("@ROOT@", dest).replace("@BINDS@", " ".join(BINDS)).replace("@SERVICES@", " ".join(services))


def escape_script() -> str:
    return (SCRIPTS / "chroot-escape.sh").read_text()


# ------------------------------------------------------------------ what the host looks like


@dataclass
class Listener:
    port: int
    address: str
    process: str          # "sshd (pid 812)" or "unknown process"
    pid: int | None


@dataclass
class HostState:
    real_dest: str = ""
    has_tree: bool = False
    installed: bool = False
    ssh_port: int = 22
    services: list[str] = field(default_factory=list)     # init scripts found in the tree
    listeners: list[Listener] = field(default_factory=list)
    chroot_pids: set[int] = field(default_factory=set)
    systemd: bool = False
    rc_local: str = ""                                     # the real path of rc.local, if the host has one
    ssh_keygen: bool = False


_PROBE = r"""
D=@DEST@
if [ -d "$D/etc" ]; then echo tree=1; fi
R=$(readlink -f "$D" 2>/dev/null || echo "$D"); echo "real=$R"
[ -x "$D@BOOT@" ] && echo installed=1
[ -d /run/systemd/system ] && echo systemd=1
for f in /etc/rc.local /etc/rc.d/rc.local; do
    if [ -e "$f" ]; then echo "rclocal=$(readlink -f "$f")"; break; fi
done
[ -d /etc/rc.d ] && [ ! -e /etc/rc.local ] && echo "rclocal_dir=/etc/rc.d"
[ -x "$D/usr/bin/ssh-keygen" ] && echo keygen=1
for s in ssh sshd; do [ -x "$D/etc/init.d/$s" ] && echo "service=$s"; done
if [ -f "$D/etc/ssh/sshd_config" ]; then
    awk 'tolower($1) == "port" { print "sshport=" $2 }' "$D/etc/ssh/sshd_config"
fi
for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && echo "cpid=${p#/proc/}"
done
if command -v ss >/dev/null 2>&1; then
    ss -Hltnp 2>/dev/null | sed 's/^/ss=/'
elif command -v netstat >/dev/null 2>&1; then
    netstat -ltnp 2>/dev/null | sed 's/^/netstat=/'
else
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | sed 's/^/proc=/'
fi
true
"""


def _listeners(lines: list[tuple[str, str]]) -> list[Listener]:
    out = []
    for kind, line in lines:
        f = line.split()
        if kind == "ss" and len(f) >= 4:
            addr, _, port = f[3].rpartition(":")
            m = re.search(r'\("([^"]+)",pid=(\d+)', line)
            out.append(Listener(int(port), addr, f"{m.group(1)} (pid {m.group(2)})" if m else "unknown process",
                                int(m.group(2)) if m else None))
        elif kind == "netstat" and len(f) >= 6 and f[0].startswith("tcp") and f[5] == "LISTEN":
            addr, _, port = f[3].rpartition(":")
            pp = f[6] if len(f) > 6 else "-"
            pid, _, name = pp.partition("/")
            out.append(Listener(int(port), addr, f"{name} (pid {pid})" if pid.isdigit() else "unknown process",
                                int(pid) if pid.isdigit() else None))
        elif kind == "proc" and len(f) > 3 and f[3] == "0A" and ":" in f[1]:
            out.append(Listener(int(f[1].split(":")[1], 16), f[1].split(":")[0], "unknown process", None))
    return out


def host_state(remote: Remote, dest: str) -> HostState:
    out = remote.sh(_PROBE.replace("@DEST@", shlex.quote(dest)).replace("@BOOT@", BOOT), what=f"looking at {dest}").stdout
    st = HostState()
    raw: list[tuple[str, str]] = []
    for line in out.splitlines():
        k, _, v = line.partition("=")
        if k == "tree":
            st.has_tree = True
        elif k == "real":
            st.real_dest = v
        elif k == "installed":
            st.installed = True
        elif k == "systemd":
            st.systemd = True
        elif k == "rclocal":
            st.rc_local = v
        elif k == "rclocal_dir" and not st.rc_local:
            st.rc_local = "/etc/rc.d/rc.local"
        elif k == "keygen":
            st.ssh_keygen = True
        elif k == "service":
            st.services.append(v)
        elif k == "sshport" and v.isdigit():
            st.ssh_port = int(v)
        elif k == "cpid" and v.isdigit():
            st.chroot_pids.add(int(v))
        elif k in ("ss", "netstat", "proc"):
            raw.append((k, v))
    st.listeners = _listeners(raw)
    return st


# ------------------------------------------------------------------ install


@dataclass(frozen=True)
class InstallRequest:
    dest: str
    services: tuple[str, ...] = ()
    hostname: str | None = None
    ssh_port: int | None = None
    dry_run: bool = False


def _sshd_port_script(port: int) -> str:
    return (f'C="$D/etc/ssh/sshd_config"; if [ -f "$C" ]; then '
            f'if grep -qi "^[[:space:]]*Port[[:space:]]" "$C"; then '
            f'sed -i "s/^[[:space:]]*[Pp]ort[[:space:]].*/Port {port}/" "$C"; else echo "Port {port}" >> "$C"; fi; fi')


def install(remote: Remote, req: InstallRequest) -> list[str]:
    """Write the boot script and the escape helper into the tree on the host; fill in what the push protected.
    Returns what was (or, with dry_run, would be) done."""
    st = host_state(remote, req.dest)
    if not st.has_tree:
        raise InputError(f"{remote.host}:{req.dest} has no OS tree (no etc/); nothing was changed",
                         f"push one first: migrate push {remote.host} --dest {req.dest} --source TREE")
    root = st.real_dest or req.dest
    services = list(req.services) or st.services[:1]
    for s in services:
        if not _SERVICE_RE.match(s):
            raise InputError(f"--service {s}: not an init script name", "e.g. --service ssh --service cron")
    if not services:
        log.warning("%s:%s has no /etc/init.d/ssh or sshd: nothing will be started inside; give --service NAME",
                    remote.host, req.dest)
    done = [f"write {root}{BOOT} (start|stop|status; binds {' '.join(BINDS)}; services: {' '.join(services) or 'none'})",
            f"write {root}{ESCAPE} (runs a command in the host's real root)"]
    script = ["set -e", f"D={shlex.quote(root)}"]
    if req.hostname:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9.-]*$", req.hostname):
            raise InputError(f"--hostname {req.hostname}: not a host name", "e.g. --hostname chiyoda")
        script.append(f"echo {shlex.quote(req.hostname)} > \"$D/etc/hostname\"")
        done.append(f"set {root}/etc/hostname to {req.hostname}")
    else:
        script.append('[ -s "$D/etc/hostname" ] || cp /etc/hostname "$D/etc/hostname" 2>/dev/null || true')
    script += ['for f in resolv.conf hosts; do [ -e "$D/etc/$f" ] || [ -L "$D/etc/$f" ] || cp -L /etc/$f "$D/etc/$f" '
               '2>/dev/null || true; done',
               '[ -s "$D/etc/machine-id" ] || { cat /proc/sys/kernel/random/uuid | tr -d - > "$D/etc/machine-id"; '
               'chmod 444 "$D/etc/machine-id"; }']
    done.append("give it the host's resolv.conf and hosts, a host name and a machine-id where it has none")
    if st.ssh_keygen:
        script.append('ls "$D"/etc/ssh/ssh_host_*_key >/dev/null 2>&1 || chroot "$D" /usr/bin/ssh-keygen -A >/dev/null')
        done.append("make ssh host keys of its own if it has none (ssh-keygen -A inside)")
    if req.ssh_port:
        script.append(_sshd_port_script(req.ssh_port))
        done.append(f"set Port {req.ssh_port} in its sshd_config")
    if req.dry_run:
        return done
    remote.write_text(root + BOOT, boot_script(root, services), 0o755)
    remote.write_text(root + ESCAPE, escape_script(), 0o755)
    remote.sh("\n".join(script), what=f"preparing {root}")
    return done


# ------------------------------------------------------------------ start, stop, status


def ports_to_check(st: HostState, extra: tuple[int, ...]) -> list[int]:
    return sorted({st.ssh_port, *extra})


def conflicts(st: HostState, ports: list[int]) -> list[Listener]:
    return [ln for ln in st.listeners if ln.port in ports and (ln.pid is None or ln.pid not in st.chroot_pids)]


@dataclass
class StartResult:
    already_running: bool
    new_banner: str | None
    backdoor_banner: str | None
    address: str
    new_port: int
    backdoor_port: int
    output: str


def start(remote: Remote, dest: str, extra_ports: tuple[int, ...] = (), dry_run: bool = False,
          wait: float = 15.0) -> StartResult:
    st = host_state(remote, dest)
    if not st.installed:
        raise InputError(f"{remote.host}:{dest}{BOOT} is not there; nothing was started",
                         f"run `migrate chroot-install {remote.host} --dest {dest}` first")
    ports = ports_to_check(st, extra_ports)
    for ln in sorted(st.listeners, key=lambda x: x.port):
        log.info("%s listens on %s:%d: %s%s", remote.host, ln.address or "*", ln.port, ln.process,
                 " (in the chroot)" if ln.pid in st.chroot_pids else "")
    taken = conflicts(st, ports)
    if taken:
        ln = taken[0]
        raise InputError(
            f"{remote.host}: port {ln.port} is already in use by {ln.process} on the host "
            f"({ln.address or '*'}:{ln.port}); the chroot's services would collide with it. Nothing was started",
            f"move the chroot's sshd: `migrate chroot-install {remote.host} --dest {dest} --ssh-port N`, or move "
            "the host's service to another port first (keep the host's sshd as the backdoor)")
    address, backdoor = remote.endpoint()
    running = bool(st.chroot_pids)
    if dry_run:
        return StartResult(running, None, None, address, st.ssh_port, backdoor, "")
    out = remote.sh(f"{shlex.quote(st.real_dest + BOOT)} start", what="the boot script").stdout
    new = tcp_banner(address, st.ssh_port, wait)
    back = tcp_banner(address, backdoor, 5)
    return StartResult(running, new, back, address, st.ssh_port, backdoor, out)


def stop(remote: Remote, dest: str, dry_run: bool = False) -> str:
    st = host_state(remote, dest)
    if not st.installed:
        raise InputError(f"{remote.host}:{dest}{BOOT} is not there", "nothing to stop")
    if dry_run:
        return f"would stop {len(st.chroot_pids)} processes in {st.real_dest} and undo its mounts"
    return remote.sh(f"{shlex.quote(st.real_dest + BOOT)} stop; {shlex.quote(st.real_dest + BOOT)} status || true",
                     what="the boot script").stdout


def status(remote: Remote, dest: str) -> str:
    st = host_state(remote, dest)
    if not st.installed:
        raise InputError(f"{remote.host}:{dest}{BOOT} is not there",
                         f"run `migrate chroot-install {remote.host} --dest {dest}` first")
    return remote.sh(f"{shlex.quote(st.real_dest + BOOT)} status", check=False).stdout


# ------------------------------------------------------------------ enable, disable


def rc_block(boot: str) -> list[str]:
    return [f"# BEGIN {MARK} (migrate chroot-enable; chroot-disable removes this block)",
            f"{boot} start", f"# END {MARK}"]


def rc_enable(text: str | None, boot: str) -> str:
    """rc.local with our block (before a final `exit 0`); unchanged if it is there already."""
    if text is None:
        text = "#!/bin/sh -e\n\nexit 0\n"
    lines = text.splitlines()
    if any(line.startswith(f"# BEGIN {MARK}") for line in lines):
        return text
    idx = len(lines)
    for i in range(len(lines) - 1, -1, -1):
        s = lines[i].strip()
        if not s or s.startswith("#"):
            continue
        if re.match(r"^exit(\s+0)?\s*$", s):
            idx = i
        break
    lines[idx:idx] = rc_block(boot)
    return "\n".join(lines) + "\n"


def rc_disable(text: str) -> str:
    out, skip = [], False
    for line in text.splitlines():
        if line.startswith(f"# BEGIN {MARK}"):
            skip = True
            continue
        if skip and line.startswith(f"# END {MARK}"):
            skip = False
            continue
        if not skip:
            out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def unit_text(dest: str) -> str:
    return (f"[Unit]\nDescription=OS in the chroot {dest} (imgbuild)\n"
            "After=network-online.target local-fs.target\nWants=network-online.target\n\n"
            f"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={dest}{BOOT} start\n"
            f"ExecStop={dest}{BOOT} stop\n\n[Install]\nWantedBy=multi-user.target\n")


def _via(st: HostState, via: str | None) -> str:
    return via or ("unit" if st.systemd else "rc.local")


def enable(remote: Remote, dest: str, via: str | None = None, dry_run: bool = False) -> str:
    st = host_state(remote, dest)
    if not st.installed:
        raise InputError(f"{remote.host}:{dest}{BOOT} is not there; nothing was changed",
                         "run `migrate chroot-install` and `migrate chroot-start` (by hand, once) first")
    how = _via(st, via)
    if how == "unit":
        unit = unit_name(dest)
        path = f"/etc/systemd/system/{unit}"
        if dry_run:
            return f"would write {path} and link it into multi-user.target.wants"
        remote.write_text(path, unit_text(st.real_dest))
        remote.sh(f"set -e; mkdir -p /etc/systemd/system/multi-user.target.wants; "
                  f"ln -sfn {shlex.quote(path)} /etc/systemd/system/multi-user.target.wants/{unit}; "
                  "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi", what="enabling the unit")
        return f"wrote {path}, enabled in multi-user.target"
    rc = st.rc_local or "/etc/rc.local"
    old = remote.read_text(rc)
    new = rc_enable(old, st.real_dest + BOOT)
    if new == old:
        return f"{rc} already starts it"
    if dry_run:
        return f"would add to {rc}:\n  " + "\n  ".join(rc_block(st.real_dest + BOOT))
    remote.write_text(rc, new, 0o755)
    return f"added a start line to {rc}"


def disable(remote: Remote, dest: str, dry_run: bool = False) -> list[str]:
    st = host_state(remote, dest)
    done = []
    unit = unit_name(dest)
    path = f"/etc/systemd/system/{unit}"
    if remote.read_text(path) is not None:
        done.append(f"remove {path} and its multi-user.target.wants link")
        if not dry_run:
            remote.sh(f"rm -f /etc/systemd/system/multi-user.target.wants/{unit} {shlex.quote(path)}; "
                      "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi", what="disabling the unit")
    for rc in dict.fromkeys([st.rc_local, "/etc/rc.local", "/etc/rc.d/rc.local"]):
        if not rc:
            continue
        old = remote.read_text(rc)
        if old is not None and f"# BEGIN {MARK}" in old:
            done.append(f"remove the start block from {rc}")
            if not dry_run:
                remote.write_text(rc, rc_disable(old), 0o755)
    return done


def check_started(r: StartResult, host: str) -> None:
    """After a start: the new system must answer, and the backdoor must still answer."""
    if r.backdoor_banner is None:
        raise BuilderError(f"{host}: the host's own sshd on port {r.backdoor_port} does NOT answer any more",
                           "do not log out; stop the chroot (migrate chroot-stop) or reboot the host from its panel")
    if r.new_banner is None or not r.new_banner.startswith("SSH-"):
        raise BuilderError(f"{host}: the chroot started, but nothing answers ssh on {r.address}:{r.new_port}; "
                           f"the host's sshd on {r.backdoor_port} still answers",
                           "look at the boot script's output above; `migrate chroot-stop` undoes the start, "
                           "a reboot does too (nothing starts it at boot yet)")


def wait_gone(remote: Remote, dest: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not host_state(remote, dest).chroot_pids:
            return True
        time.sleep(0.5)
    return False
