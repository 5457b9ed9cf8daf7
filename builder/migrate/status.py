"""`migrate status`: what imgbuild's work looks like on a host, read only: the host itself (name, OS, kernel,
uptime, free space), each pushed tree asked about (there, pushed by imgbuild and when, its chroot installed,
running, started at boot), and the guests the host carries (LXC containers, Xen guest configs, running or not).

One probe script over the user's ssh; it changes nothing. The answer is the host's (untrusted): parsed line by
line into known keys, each value checked against what that key holds (a name, a number), everything printed
through shown(); a tree is named by the index of the --dest it answers for, never by what the host says.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field

from builder.migrate.chroot import BOOT, MARK, unit_name
from builder.migrate.push import MARKER
from builder.migrate.remote import Remote, shown

MAX_LINES = 5000
MAX_GUESTS = 500
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
_NUMBER = re.compile(r"[0-9]{1,15}")

_PROBE = r"""
echo "hostname=$(hostname 2>/dev/null || cat /etc/hostname)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${PRETTY_NAME:-$NAME $VERSION_ID}"; fi
echo "kernel=$(uname -r)"
awk '{ printf "uptime=%d\n", $1 }' /proc/uptime 2>/dev/null
df -Pk / 2>/dev/null | awk 'NR == 2 { print "free_kb=" $4 }'
@TREES@
L=@LXCPATH@
for c in "$L"/*/config; do
    [ -f "$c" ] || continue
    n=${c%/config}; n=${n##*/}
    s=unknown
    if command -v lxc-info >/dev/null 2>&1; then s=$(lxc-info -P "$L" -n "$n" -sH 2>/dev/null || echo unknown); fi
    echo "lxc=$n $s"
done
X=@XENDIR@
for c in "$X"/*.cfg; do [ -f "$c" ] && { n=${c##*/}; echo "xencfg=${n%.cfg}"; }; done
if command -v xl >/dev/null 2>&1; then xl list 2>/dev/null | awk 'NR > 1 { print "xenrun=" $1 }'; fi
true
"""


@dataclass
class Tree:
    dest: str
    tree: bool = False
    pushed: int | None = None         # the push marker's mtime (seconds since the epoch)
    chroot_installed: bool = False
    chroot_processes: int = 0
    enabled: str = ""                 # "unit", "rc.local" or ""


@dataclass
class HostStatus:
    host: str
    hostname: str = ""
    os: str = ""
    kernel: str = ""
    uptime: int | None = None
    free_bytes: int | None = None
    trees: list[Tree] = field(default_factory=list)
    lxc: dict[str, str] = field(default_factory=dict)       # name -> RUNNING, STOPPED, unknown ...
    xen: dict[str, bool] = field(default_factory=dict)      # name -> running

    def as_dict(self) -> dict:
        return asdict(self)


_TREE = r"""
i=@I@; D=@DEST@; U=@UNIT@
R=$(readlink -f "$D" 2>/dev/null || echo "$D")
[ -d "$D/etc" ] && echo "tree.$i=1"
[ -f "$D/@MARKER@" ] && [ ! -L "$D/@MARKER@" ] && echo "pushed.$i=$(stat -c %Y "$D/@MARKER@")"
[ -x "$D@BOOT@" ] && echo "installed.$i=1"
n=0; for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && n=$((n+1)); done
echo "procs.$i=$n"
[ -f "/etc/systemd/system/$U" ] && echo "enabled.$i=unit"
for rc in /etc/rc.local /etc/rc.d/rc.local; do
    [ -f "$rc" ] && grep -qF "# BEGIN @MARK@" "$rc" && grep -qF "$R@BOOT@" "$rc" && echo "enabled.$i=rc.local"
done
"""


def _fill(template: str, values: dict[str, str]) -> str:
    """@KEY@ placeholders replaced in one pass: a value (a path the user gave) is never scanned for another."""
    return re.sub(r"@([A-Z]+)@", lambda m: values[m.group(1)], template)


def probe(dests: list[str], lxcpath: str, xen_dir: str) -> str:
    """The script: one block per --dest (its index, path and unit name quoted), then the guests; every value
    quoted."""
    fixed = {"MARKER": MARKER, "BOOT": BOOT, "MARK": MARK}
    trees = "".join(_fill(_TREE, {**fixed, "I": str(i), "DEST": shlex.quote(d), "UNIT": shlex.quote(unit_name(d))})
                    for i, d in enumerate(dests))
    return _fill(_PROBE, {**fixed, "TREES": trees, "LXCPATH": shlex.quote(lxcpath), "XENDIR": shlex.quote(xen_dir)})


def _text(v: str, n: int = 120) -> str:
    return shown(v.strip(), n)


def parse(host: str, dests: list[str], out: str) -> HostStatus:
    """The probe's answer: known keys only, values checked; trees by the index we gave, within range."""
    st = HostStatus(host, trees=[Tree(d) for d in dests])
    for line in out.splitlines()[:MAX_LINES]:
        key, eq, v = line.partition("=")
        if not eq:
            continue
        base, _, idx = key.partition(".")
        if idx:
            if not _NUMBER.fullmatch(idx) or int(idx) >= len(dests):
                continue
            t = st.trees[int(idx)]
            if base == "tree":
                t.tree = True
            elif base == "pushed" and _NUMBER.fullmatch(v):
                t.pushed = int(v)
            elif base == "installed":
                t.chroot_installed = True
            elif base == "procs" and _NUMBER.fullmatch(v):
                t.chroot_processes = int(v)
            elif base == "enabled" and v in ("unit", "rc.local"):
                t.enabled = v
        elif key == "hostname":
            st.hostname = _text(v, 64)
        elif key == "os":
            st.os = _text(v)
        elif key == "kernel":
            st.kernel = _text(v, 64)
        elif key == "uptime" and _NUMBER.fullmatch(v):
            st.uptime = int(v)
        elif key == "free_kb" and _NUMBER.fullmatch(v):
            st.free_bytes = int(v) * 1024
        elif key == "lxc" and len(st.lxc) < MAX_GUESTS:
            name, _, state = v.partition(" ")
            if _NAME.fullmatch(name):
                st.lxc[name] = state if re.fullmatch(r"[A-Z]{1,16}|unknown", state) else "unknown"
        elif key == "xencfg" and _NAME.fullmatch(v) and len(st.xen) < MAX_GUESTS:
            st.xen.setdefault(v, False)
        elif key == "xenrun" and _NAME.fullmatch(v) and v != "Domain-0" and len(st.xen) < MAX_GUESTS:
            st.xen[v] = True
    return st


def status(remote: Remote, dests: list[str], lxcpath: str, xen_dir: str) -> HostStatus:
    out = remote.sh(probe(dests, lxcpath, xen_dir), what="reading its status", max_output=1 << 20).stdout
    st = parse(remote.host, dests, out)
    if not st.kernel:
        st.kernel = "?"
    return st


def _age(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds // n} {unit}"
    return f"{seconds} s"


def tree_line(t: Tree, now: float) -> str:
    if not t.tree:
        return f"{t.dest}: no OS tree"
    words = [f"pushed {_age(int(now - t.pushed))} ago" if t.pushed is not None else "not pushed by imgbuild"]
    if t.chroot_installed:
        words.append(f"chroot running ({t.chroot_processes} processes)" if t.chroot_processes else "chroot stopped")
        words.append(f"starts at boot ({t.enabled})" if t.enabled else "not started at boot")
    return f"{t.dest}: " + ", ".join(words)


def lines(st: HostStatus, now: float) -> list[str]:
    from builder.core.sizes import human

    head = [st.hostname or st.host, st.os or "unknown OS", f"kernel {st.kernel}"]
    if st.uptime is not None:
        head.append(f"up {_age(st.uptime)}")
    if st.free_bytes is not None:
        head.append(f"{human(st.free_bytes)} free on /")
    out = [f"{st.host}: " + ", ".join(head)]
    out += [f"  {tree_line(t, now)}" for t in st.trees]
    running = sum(1 for s in st.lxc.values() if s == "RUNNING")
    out.append(f"  lxc: {len(st.lxc)} containers ({running} running)" + (": " + ", ".join(
        f"{n} {s.lower()}" for n, s in sorted(st.lxc.items())) if st.lxc else ""))
    out.append(f"  xen: {len(st.xen)} guests ({sum(st.xen.values())} running)" + (": " + ", ".join(
        f"{n} {'running' if r else 'configured'}" for n, r in sorted(st.xen.items())) if st.xen else ""))
    return out


def summary(st: HostStatus, now: float) -> str:
    """One line for the fleet table."""
    parts = [st.os or "unknown OS"]
    parts += [tree_line(t, now) for t in st.trees]
    parts.append(f"{len(st.lxc)} lxc, {len(st.xen)} xen")
    return "; ".join(parts)
