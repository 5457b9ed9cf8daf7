"""Run a pushed OS inside a chroot on a remote host (an OpenVZ VPS without a console, where
one wrong step locks you out). The safe order, made into commands that cannot skip a step:
1. `chroot-install` writes the boot script (ROOT/usr/local/sbin/imgbuild-chroot) and the escape helper
   (ROOT/usr/local/sbin/chroot-escape) into the pushed tree and gives it what the push protected: ssh host
   keys of its own, a machine-id, the host's name, resolv.conf and hosts, and (where it has none) an fstab and a
   loopback-only network config: the host mounts and runs the network.
2. `chroot-start` refuses if a port the new system will listen on is taken by a host process (naming it), runs the
   boot script once by hand (a reboot undoes it), then checks over the network that the new sshd answers AND that
   the host's own sshd (the backdoor the user is connected through) still does.
3. Only `chroot-enable` makes it start at boot: a systemd unit on a systemd host, else a marked block in
   rc.local; `chroot-disable` removes exactly that.

What the host answers is untrusted: the destination's resolved path is checked again with push's rules (a
destination that resolves to `/` or into the running system is refused before anything runs), the answer is
parsed into known keys with bounds, and every value that enters a script (the boot script, rc.local, a unit)
is quoted. Writes into the pushed tree never go through a symlink of the tree.
"""
from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from builder.core.errors import BuilderError, InputError
from builder.migrate.push import check_resolved
from builder.migrate.remote import Remote, shown, tcp_banner

log = logging.getLogger("imgbuild")

SCRIPTS = Path(__file__).parent / "scripts"
BOOT = "/usr/local/sbin/imgbuild-chroot"
ESCAPE = "/usr/local/sbin/chroot-escape"
BINDS = ("/proc", "/sys", "/dev", "/dev/pts", "/lib/modules")
MARK = "imgbuild chroot"
# per-host files a push leaves out (push.DEFAULT_PROTECT) that a chroot needs and the host cannot lend: each
# written only where the tree's directory exists and the file does not (the host mounts and runs the network)
CHROOT_FILES = (
    ("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
     "localhost only: the host had none to lend"),
    ("/etc/fstab", "# This OS runs in a chroot (migrate chroot-install): the host mounts its filesystems;\n"
                   "# imgbuild-chroot binds /proc /sys /dev /dev/pts /lib/modules into it.\n",
     "empty: the host mounts"),
    ("/etc/network/interfaces", "# This OS runs in a chroot and shares the host's network; only loopback here.\n"
                                "auto lo\niface lo inet loopback\n", "loopback only: the host's network"),
    ("/etc/sysconfig/network", "NETWORKING=yes\n", "NETWORKING=yes: the host's network"),
)
RC_LOCALS = ("/etc/rc.local", "/etc/rc.d/rc.local")
WANTS = "/etc/systemd/system/multi-user.target.wants/"
MAX_LINES = 20000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SERVICE_RE = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*")


def unit_name(dest: str) -> str:
    """imgbuild-chroot-PATH.service: the path's '/' as '-', other characters systemd gives a meaning to in a unit
    name (@ starts an instance) escaped as \\xNN, as systemd-escape does."""
    body = dest.strip("/").replace("/", "-") or "root"
    body = re.sub(r"[^A-Za-z0-9:_.-]", lambda m: f"\\x{ord(m.group()):02x}", body)
    return f"imgbuild-chroot-{body}.service"


def boot_script(dest: str, services: list[str]) -> str:
    text = (SCRIPTS / "imgbuild-chroot.sh").read_text()
    return (text.replace("@ROOT@", shlex.quote(dest)).replace("@BINDS@", shlex.quote(" ".join(BINDS)))
            .replace("@SERVICES@", shlex.quote(" ".join(services))))


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


def _number(text: str, digits: int = 9) -> int | None:
    return int(text) if re.fullmatch(f"[0-9]{{1,{digits}}}", text) else None


def _port(text: str) -> int | None:
    n = _number(text, 5)
    return n if n is not None and 0 < n < 65536 else None


def _listeners(lines: list[tuple[str, str]]) -> list[Listener]:
    """Listening TCP sockets from ss, netstat or /proc/net/tcp lines; a line that does not parse is skipped."""
    out = []
    for kind, line in lines:
        try:
            ln = _listener(kind, line)
        except (ValueError, IndexError):
            continue
        if ln is not None:
            out.append(ln)
    return out


def _listener(kind: str, line: str) -> Listener | None:
    f = line.split()
    if kind == "ss" and len(f) >= 4:
        addr, _, port = f[3].rpartition(":")
        m = re.search(r'\("([^"]{1,64})",pid=([0-9]{1,9})', line)
        if _port(port) is None:
            return None
        return Listener(_port(port), shown(addr, 64), f"{shown(m.group(1), 64)} (pid {m.group(2)})" if m
                        else "unknown process", int(m.group(2)) if m else None)
    if kind == "netstat" and len(f) >= 6 and f[0].startswith("tcp") and f[5] == "LISTEN":
        addr, _, port = f[3].rpartition(":")
        pp = f[6] if len(f) > 6 else "-"
        pid, _, name = pp.partition("/")
        ok = _number(pid) is not None
        if _port(port) is None:
            return None
        return Listener(_port(port), shown(addr, 64), f"{shown(name, 64)} (pid {pid})" if ok else "unknown process",
                        int(pid) if ok else None)
    if kind == "proc" and len(f) > 3 and f[3] == "0A" and ":" in f[1]:
        port = int(f[1].split(":")[1], 16)
        return Listener(port, shown(f[1].split(":")[0], 64), "unknown process", None) if 0 < port < 65536 else None
    return None


def parse_state(out: str) -> HostState:
    """The probe's answer (the remote host's: untrusted): known keys only, at most MAX_LINES lines, values that
    are not what their key holds dropped."""
    st = HostState()
    raw: list[tuple[str, str]] = []
    for line in out.splitlines()[:MAX_LINES]:
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
        elif k == "service" and _SERVICE_RE.fullmatch(v):
            st.services.append(v)
        elif k == "sshport" and _port(v) is not None:
            st.ssh_port = _port(v)
        elif k == "cpid" and _number(v) is not None:
            st.chroot_pids.add(_number(v))
        elif k in ("ss", "netstat", "proc"):
            raw.append((k, v))
    st.listeners = _listeners(raw)
    return st


def host_state(remote: Remote, dest: str) -> HostState:
    """What the host looks like, with the destination's resolved path checked again (push's rules: not `/`, not
    the running system's own directories): a tree that resolves there is refused before anything runs."""
    out = remote.sh(_PROBE.replace("@DEST@", shlex.quote(dest)).replace("@BOOT@", BOOT), what=f"looking at {dest}",
                    max_output=4 << 20).stdout
    st = parse_state(out)
    if not st.real_dest:
        raise BuilderError(f"{remote.host}:{dest}: the host did not say where it resolves to; nothing was done",
                           "log in and check the path (readlink -f)")
    st.real_dest = check_resolved(remote.host, dest, st.real_dest, force=False, can_force=False)
    return st


# ------------------------------------------------------------------ install


@dataclass(frozen=True)
class InstallRequest:
    dest: str
    services: tuple[str, ...] = ()
    hostname: str | None = None
    ssh_port: int | None = None
    dry_run: bool = False


def check_install(req: InstallRequest) -> None:
    """The request's own values, before any connection."""
    for svc in req.services:
        if not _SERVICE_RE.fullmatch(svc):
            raise InputError(f"--service {shown(svc)!r}: not an init script name", "e.g. --service ssh --service cron")
    if req.hostname is not None and (len(req.hostname) > 253 or not _HOSTNAME_RE.fullmatch(req.hostname)):
        raise InputError(f"--hostname {shown(req.hostname)!r}: not a host name", "e.g. --hostname chiyoda")


def _no_links(rel: str) -> list[str]:
    """sh lines: refuse (exit 3) when any component of $D/REL is a symlink: the tree's own links must not lead
    a write out of it (an absolute link resolves on the host, not in the tree). REL is one of our constants."""
    parts = rel.strip("/").split("/")
    return [f'if [ -L "$D/{"/".join(parts[:i])}" ]; then echo "$D/{"/".join(parts[:i])} is a symlink: not written '
            'through it" >&2; exit 3; fi' for i in range(1, len(parts) + 1)]


def _tree_file_script(root: str, rel: str, mode: int) -> str:
    """sh: stdin into ROOT/REL, atomically, never through a symlink of the tree (a link in REL's place is replaced
    by the rename, its target untouched)."""
    d, name = rel.rsplit("/", 1)
    return "\n".join(["set -e", f"D={shlex.quote(root)}", *_no_links(d), f'mkdir -p "$D{d}"',
                      f'T="$D{d}/.{name}.imgbuild-tmp"', 'rm -f "$T"', "umask 077", 'cat > "$T"',
                      f'chmod {mode:o} "$T"', f'mv -f "$T" "$D{rel}"'])


def _sshd_port_script(port: int) -> str:
    """sh: Port N in the tree's sshd_config (every Port line becomes it, or one is added); says `changed=` when it
    was not so already; with $DRY set, only says so."""
    return (f'C="$D/etc/ssh/sshd_config"; if [ -L "$D/etc/ssh" ] || [ -L "$C" ]; then '
            f'echo "$C is a symlink: Port {port} not set" >&2; exit 3; elif [ -f "$C" ]; then '
            f'if grep -qi "^[[:space:]]*Port[[:space:]]" "$C"; then '
            f'if grep -i "^[[:space:]]*Port[[:space:]]" "$C" | grep -qvx "Port {port}"; then '
            f'echo changed=/etc/ssh/sshd_config; [ -n "$DRY" ] || '
            f'sed -i "s/^[[:space:]]*[Pp]ort[[:space:]].*/Port {port}/" "$C"; fi; '
            f'else echo changed=/etc/ssh/sshd_config; [ -n "$DRY" ] || echo "Port {port}" >> "$C"; fi; fi')


def _when(cond: str, action: str, what: str) -> str:
    """sh: if COND, say `changed=WHAT` and (unless $DRY is set) do ACTION."""
    return f'if {cond}; then echo {shlex.quote("changed=" + what)}; if [ -z "$DRY" ]; then {action}; fi; fi'


def _read_script(path: str) -> str:
    """sh: `yes` and the file's text when PATH is an executable regular file (not a link), else `no`."""
    q = shlex.quote(path)
    return f"if [ -f {q} ] && [ ! -L {q} ] && [ -x {q} ]; then echo yes; cat {q}; else echo no; fi"


# the tree's directories chroot-install writes into: their times are kept, so that the next push of the same
# tree finds nothing to change in them
KEEP_TIMES = ("etc", "etc/ssh", "etc/network", "etc/sysconfig", "usr/local/sbin", "usr/local", "usr")


def _keeping_times(writers: list[str], texts: list[str], script: str, root: str) -> str:
    """sh: each writer script fed its text (stdin holds the texts one after the other, each ending in a newline),
    then SCRIPT; the tree's directories it writes into (KEEP_TIMES) keep the times they had before."""
    keep = " ".join(KEEP_TIMES)
    out = ["set -e", f"D={shlex.quote(root)}", 'R=$(mktemp -d)', "trap 'rm -rf \"$R\"' EXIT",
           f'for d in {keep}; do if [ -d "$D/$d" ] && [ ! -L "$D/$d" ]; then '
           'touch -r "$D/$d" "$R/t-$(printf %s "$d" | tr / _)"; fi; done', *(['cat > "$R/in"'] if writers else [])]
    first = 1
    for i, (writer, text) in enumerate(zip(writers, texts)):
        if not text.endswith("\n"):
            raise ValueError("a script written into the tree must end with a newline")
        last = first + text.count("\n") - 1
        out += [f'sed -n "{first},{last}p" "$R/in" > "$R/w{i}"', f'( {writer}\n) < "$R/w{i}"']
        first = last + 1
    out += [f"( {script}\n)",
            f'for d in {keep}; do t="$R/t-$(printf %s "$d" | tr / _)"; '
            'if [ -e "$t" ] && [ -d "$D/$d" ] && [ ! -L "$D/$d" ]; then touch -r "$t" "$D/$d"; fi; done']
    return "\n".join(out)


def install(remote: Remote, req: InstallRequest) -> list[str]:
    """Write the boot script and the escape helper into the tree on the host; fill in what the push protected.
    Returns what was (or, with dry_run, would be) done."""
    return install_changes(remote, req)[0]


def install_changes(remote: Remote, req: InstallRequest) -> tuple[list[str], list[str]]:
    """install(), and the paths in the tree it changed (with dry_run: would change): none when the tree had all
    of it already, so a second install with the same request changes nothing (the boot script and the escape
    helper are written only when they differ; every other file only where it is missing or different)."""
    check_install(req)
    st = host_state(remote, req.dest)
    if not st.has_tree:
        raise InputError(f"{remote.host}:{req.dest} has no OS tree (no etc/); nothing was changed",
                         f"push one first: migrate push {remote.host} --dest {req.dest} --source TREE")
    root = st.real_dest
    services = list(req.services) or st.services[:1]
    if not services:
        log.warning("%s:%s has no /etc/init.d/ssh or sshd: nothing will be started inside; give --service NAME",
                    remote.host, req.dest)
    done = [f"write {root}{BOOT} (start|stop|status; binds {' '.join(BINDS)}; "
            f"services: {' '.join(services) or 'none'})",
            f"write {root}{ESCAPE} (runs a command in the host's real root)"]
    # nothing here writes through a symlink of the tree: etc/ is checked, files are replaced by rename; each
    # step says `changed=PATH` when it changes (with $DRY: would change) something
    script = ["set -e", f"D={shlex.quote(root)}", *_no_links("/etc")]
    if req.hostname:
        script.append(_when(f'[ -L "$D/etc/hostname" ] || [ "$(cat "$D/etc/hostname" 2>/dev/null)" != '
                            f'{shlex.quote(req.hostname)} ]',
                            'rm -f "$D/etc/.hostname.imgbuild-tmp"; '
                            f'printf "%s\\n" {shlex.quote(req.hostname)} > "$D/etc/.hostname.imgbuild-tmp"; '
                            'mv -f "$D/etc/.hostname.imgbuild-tmp" "$D/etc/hostname"', "/etc/hostname"))
        done.append(f"set {root}/etc/hostname to {req.hostname}")
    else:
        script.append(_when('[ ! -L "$D/etc/hostname" ] && [ ! -s "$D/etc/hostname" ] && [ -f /etc/hostname ]',
                            'rm -f "$D/etc/.hostname.imgbuild-tmp"; cat /etc/hostname > '
                            '"$D/etc/.hostname.imgbuild-tmp"; mv -f "$D/etc/.hostname.imgbuild-tmp" "$D/etc/hostname"',
                            "/etc/hostname"))
    script += ['for f in resolv.conf hosts; do if [ ! -e "$D/etc/$f" ] && [ ! -L "$D/etc/$f" ] && [ -e /etc/$f ]; '
               'then echo "changed=/etc/$f"; [ -n "$DRY" ] || cp -L /etc/$f "$D/etc/$f" 2>/dev/null || true; fi; done',
               _when('[ ! -L "$D/etc/machine-id" ] && [ ! -s "$D/etc/machine-id" ]',
                     'rm -f "$D/etc/.machine-id.imgbuild-tmp"; '
                     'tr -d - < /proc/sys/kernel/random/uuid > "$D/etc/.machine-id.imgbuild-tmp"; '
                     'chmod 444 "$D/etc/.machine-id.imgbuild-tmp"; '
                     'mv -f "$D/etc/.machine-id.imgbuild-tmp" "$D/etc/machine-id"', "/etc/machine-id")]
    done.append("give it the host's resolv.conf and hosts, a host name and a machine-id where it has none")
    for rel, text, why in CHROOT_FILES:
        d = rel.rsplit("/", 1)[0]
        tmp = f'"$D{rel}.imgbuild-tmp"'
        script.append(_when(f'[ -d "$D{d}" ] && [ ! -L "$D{d}" ] && [ ! -e "$D{rel}" ] && [ ! -L "$D{rel}" ]',
                            f'rm -f {tmp}; printf %s {shlex.quote(text)} > {tmp}; mv -f {tmp} "$D{rel}"', rel))
        done.append(f"write {rel} if the tree has {d}/ but no {rel.rsplit('/', 1)[1]} ({why})")
    if st.ssh_keygen:
        script.append(_when('! ls "$D"/etc/ssh/ssh_host_*_key >/dev/null 2>&1',
                            'chroot "$D" /usr/bin/ssh-keygen -A >/dev/null', "/etc/ssh/ssh_host_*_key"))
        done.append("make ssh host keys of its own if it has none (ssh-keygen -A inside)")
    if req.ssh_port:
        script.append(_sshd_port_script(int(req.ssh_port)))
        done.append(f"set Port {req.ssh_port} in its sshd_config")
    writes = [(BOOT, boot_script(root, services)), (ESCAPE, escape_script())]
    changed = []
    for rel, text in writes:
        head, _, old = remote.sh(_read_script(root + rel), what=f"reading {root}{rel}").stdout.partition("\n")
        if head != "yes" or old != text:
            changed.append(rel)
    if req.dry_run:
        out = remote.sh("DRY=1\n" + "\n".join(script), what=f"looking at {root}").stdout
    else:
        texts = [text for rel, text in writes if rel in changed]
        out = remote.sh(_keeping_times([_tree_file_script(root, rel, 0o755) for rel, _ in writes if rel in changed],
                                       texts, "DRY=\n" + "\n".join(script), root),
                        input="".join(texts) or None, what=f"preparing {root}").stdout
    changed += [line[8:] for line in out.splitlines()[:100] if line.startswith("changed=/")]
    return done, [f"{root}{rel}" for rel in dict.fromkeys(changed)]


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
    return stop_changes(remote, dest, dry_run)[0]


def stop_changes(remote: Remote, dest: str, dry_run: bool = False) -> tuple[str, bool]:
    """stop(), and whether anything was (with dry_run: is) there to stop: a process in the chroot or a mount
    below it."""
    st = host_state(remote, dest)
    if not st.installed:
        raise InputError(f"{remote.host}:{dest}{BOOT} is not there", "nothing to stop")
    boot = shlex.quote(st.real_dest + BOOT)
    before = remote.sh(f"{boot} status", check=False, what="the boot script").stdout.splitlines()
    up = bool(st.chroot_pids) or not {"mounts: none", "processes: none"} <= set(before)
    if dry_run:
        return f"would stop {len(st.chroot_pids)} processes in {st.real_dest} and undo its mounts", up
    return remote.sh(f"{boot} stop; {boot} status || true", what="the boot script").stdout, up


def status(remote: Remote, dest: str) -> str:
    st = host_state(remote, dest)
    if not st.installed:
        raise InputError(f"{remote.host}:{dest}{BOOT} is not there",
                         f"run `migrate chroot-install {remote.host} --dest {dest}` first")
    return remote.sh(f"{shlex.quote(st.real_dest + BOOT)} status", check=False).stdout


# ------------------------------------------------------------------ enable, disable


def rc_block(boot: str) -> list[str]:
    return [f"# BEGIN {MARK} (migrate chroot-enable; chroot-disable removes this block)",
            f"{shlex.quote(boot)} start", f"# END {MARK}"]


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


def _unit_word(word: str) -> str:
    """One word of a systemd command line, quoted (systemd's own rules: \\ and " escaped, % doubled)."""
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def unit_text(dest: str) -> str:
    if _CONTROL.search(dest):
        raise InputError(f"{shown(dest)}: a path with a control character cannot go into a unit file",
                         "give a plain path as --dest")
    return (f"[Unit]\nDescription=OS in the chroot {dest.replace('%', '%%')} (imgbuild)\n"
            "After=network-online.target local-fs.target\nWants=network-online.target\n\n"
            f"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={_unit_word(dest + BOOT)} start\n"
            f"ExecStop={_unit_word(dest + BOOT)} stop\n\n[Install]\nWantedBy=multi-user.target\n")


def _rc_local(remote: Remote, st: HostState) -> str:
    """The host's rc.local: /etc/rc.local or /etc/rc.d/rc.local (where the host's answer says the first one
    resolves to); anywhere else is refused (a block is never written into some other file)."""
    rc = st.rc_local or RC_LOCALS[0]
    if rc not in RC_LOCALS:
        raise InputError(f"{remote.host}: /etc/rc.local resolves to {shown(rc)}, not to {' or '.join(RC_LOCALS)}; "
                         "nothing was changed", "use --via unit, or start it from your own boot script")
    return rc


def _via(st: HostState, via: str | None) -> str:
    return via or ("unit" if st.systemd else "rc.local")


def enable(remote: Remote, dest: str, via: str | None = None, dry_run: bool = False) -> str:
    return enable_changes(remote, dest, via, dry_run)[0]


def enable_changes(remote: Remote, dest: str, via: str | None = None, dry_run: bool = False) -> tuple[str, bool]:
    """enable(), and whether it changed (with dry_run: would change) anything: a unit already written as it
    would be and linked, or an rc.local that already has the block, is left as it is."""
    st = host_state(remote, dest)
    if not st.installed:
        raise InputError(f"{remote.host}:{dest}{BOOT} is not there; nothing was changed",
                         "run `migrate chroot-install` and `migrate chroot-start` (by hand, once) first")
    how = _via(st, via)
    if how == "unit":
        unit = unit_name(dest)
        path = f"/etc/systemd/system/{unit}"
        text = unit_text(st.real_dest)
        linked = remote.sh(f"if [ -L {shlex.quote(WANTS + unit)} ]; then echo yes; fi", what="looking at the unit")
        if remote.read_text(path) == text and linked.stdout.strip() == "yes":
            return f"{path} already starts it", False
        if dry_run:
            return f"would write {path} and link it into multi-user.target.wants", True
        remote.write_text(path, text)
        remote.sh(f"set -e; mkdir -p /etc/systemd/system/multi-user.target.wants; "
                  f"ln -sfn {shlex.quote(path)} {shlex.quote(WANTS + unit)}; "
                  "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi", what="enabling the unit")
        return f"wrote {path}, enabled in multi-user.target", True
    rc = _rc_local(remote, st)
    old = remote.read_text(rc)
    new = rc_enable(old, st.real_dest + BOOT)
    if new == old:
        return f"{rc} already starts it", False
    if dry_run:
        return f"would add to {rc}:\n  " + "\n  ".join(rc_block(st.real_dest + BOOT)), True
    remote.write_text(rc, new, 0o755)
    return f"added a start line to {rc}", True


def disable(remote: Remote, dest: str, dry_run: bool = False) -> list[str]:
    st = host_state(remote, dest)
    done = []
    unit = unit_name(dest)
    path = f"/etc/systemd/system/{unit}"
    if remote.read_text(path) is not None:
        done.append(f"remove {path} and its multi-user.target.wants link")
        if not dry_run:
            remote.sh(f"rm -f {shlex.quote(WANTS + unit)} {shlex.quote(path)}; "
                      "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi", what="disabling the unit")
    # the file /etc/rc.local resolves to first (writing the other name would replace a symlink with a file)
    for rc in dict.fromkeys([st.rc_local if st.rc_local in RC_LOCALS else RC_LOCALS[0], *RC_LOCALS]):
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
