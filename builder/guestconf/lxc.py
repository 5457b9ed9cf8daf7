"""LXC container configs: convert between the legacy keys of LXC 0.7 to 2.0 (`lxc.network.*`, `lxc.utsname`,
`lxc.rootfs` ...) and the modern keys of LXC 2.1 and later (`lxc.net.N.*`, `lxc.uts.name`, `lxc.rootfs.path` ...).

The conversion works line by line: comments, blank lines, order, indentation and the spacing around `=` are kept,
and the output has exactly as many lines as the input (only network lines may trade places, see below).

legacy -> modern renames every key the way LXC's own `lxc-update-config` (src/lxc/cmd/lxc-update-config.in) does,
numbering networks per `lxc.network.type` line, and also fixes what that script gets wrong or leaves out:

- keys inside comments stay comments: a commented-out `#lxc.network.type` does not count as a network (the
  script counts it and leaves a gap in the numbering), and `# lxc.utsname ...` is not rewritten;
- `lxc.network.N.ipv4` / `.ipv6` (the indexed legacy form) become `lxc.net.N.ipv4.address` (the script leaves
  `lxc.net.N.ipv4`, which LXC 3+ rejects);
- `lxc.limit.NAME` becomes `lxc.prlimit.NAME` (the script only renames a bare `lxc.limit`);
- `lxc.rootfs` is renamed whatever the spacing before `=` (the script misses `lxc.rootfs  = ...`); its value
  gets the backend of `lxc.rootfs.backend` wherever that line is (the script only sees it on the last line),
  keeps a prefix it already has (the script writes `dir:overlayfs:...`), and a block device (`/dev/...`) gets no
  `dir:` (LXC detects the backend itself);
- network keys before the first `lxc.network.type` line (LXC refused those too; the script writes
  `lxc.net.-1.*`), `lxc.pivotdir`, `lxc.kmsg` and `lxc.rootfs.backend` (which the script deletes silently) are
  kept as comments with a warning.

modern -> legacy is the reverse, for hosts with LXC 1.x/2.0 (the keys of LXC 2.0's confile.c): `lxc.net.N.*`
become `lxc.network.*` blocks in N order, each starting with its type line (legacy LXC numbers networks by the
order of their `lxc.network.type` lines); the network lines are redistributed over the places network lines had,
so comments and blank lines between blocks stay where they were.

Keys that have no equivalent in the target form are never dropped: they are kept commented out behind
`# imgbuild: no equivalent in modern|legacy LXC:` and reported as a warning naming the line and the key. Unknown
keys are kept as they are, with a warning.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from builder.core.errors import InputError

FORMS = ("modern", "legacy")
COMMENT_PREFIX = {"modern": "# imgbuild: no equivalent in modern LXC: ",
                  "legacy": "# imgbuild: no equivalent in legacy LXC: "}


@dataclass(frozen=True)
class LxcWarning:
    """A line the conversion could not carry over as it was: where (1-based line of the input), which key, why."""

    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.line}: {self.key}: {self.message}"


Warning = LxcWarning  # the name the API promises (builtins.Warning is not used in this module)


# ------------------------------------------------------------------------------------------------ key tables

# legacy -> modern, as lxc-update-config renames them (plus its network and rootfs handling, done below).
# lxc.syslog and lxc.limit were LXC 2.1's own short-lived names (PR lxc/lxc#1658); the script renames them too.
RENAMED = {
    "lxc.id_map": "lxc.idmap",
    "lxc.pts": "lxc.pty.max",
    "lxc.tty": "lxc.tty.max",
    "lxc.devttydir": "lxc.tty.dir",
    "lxc.aa_profile": "lxc.apparmor.profile",
    "lxc.aa_allow_incomplete": "lxc.apparmor.allow_incomplete",
    "lxc.se_context": "lxc.selinux.context",
    "lxc.mount": "lxc.mount.fstab",
    "lxc.utsname": "lxc.uts.name",
    "lxc.seccomp": "lxc.seccomp.profile",
    "lxc.console": "lxc.console.path",
    "lxc.haltsignal": "lxc.signal.halt",
    "lxc.rebootsignal": "lxc.signal.reboot",
    "lxc.stopsignal": "lxc.signal.stop",
    "lxc.syslog": "lxc.log.syslog",
    "lxc.loglevel": "lxc.log.level",
    "lxc.logfile": "lxc.log.file",
    "lxc.init_cmd": "lxc.init.cmd",
    "lxc.init_uid": "lxc.init.uid",
    "lxc.init_gid": "lxc.init.gid",
    "lxc.limit": "lxc.prlimit",
    "lxc.rootfs": "lxc.rootfs.path",
    "lxc.network": "lxc.net",
}
# keys LXC 2.1 removed without a successor (lxc-update-config deletes these lines)
REMOVED_IN_MODERN = {
    "lxc.pivotdir": "LXC 2.1 removed lxc.pivotdir (the old root is no longer pivoted into a directory)",
    "lxc.kmsg": "LXC 2.1 removed lxc.kmsg (no /dev/kmsg link to the console any more)",
}
# modern -> legacy: the reverse, minus what only LXC 2.1 knew under its old name
TO_LEGACY = {m: legacy for legacy, m in RENAMED.items() if legacy not in ("lxc.syslog", "lxc.limit")}
LXC21_ALIASES = {"lxc.syslog", "lxc.limit"}

# the same key in LXC 2.0 and in LXC 5 (besides lxc.cgroup.<controller>.* and lxc.network/lxc.net.*)
COMMON = {
    "lxc.arch", "lxc.cap.drop", "lxc.cap.keep", "lxc.mount.entry", "lxc.mount.auto", "lxc.rootfs.mount",
    "lxc.rootfs.options", "lxc.autodev", "lxc.console.logfile", "lxc.include", "lxc.start.auto",
    "lxc.start.delay", "lxc.start.order", "lxc.monitor.unshare", "lxc.group", "lxc.environment", "lxc.ephemeral",
    "lxc.cgroup", "lxc.hook", "lxc.hook.pre-start", "lxc.hook.pre-mount", "lxc.hook.mount", "lxc.hook.autodev",
    "lxc.hook.start", "lxc.hook.stop", "lxc.hook.post-stop", "lxc.hook.clone", "lxc.hook.destroy",
}
# keys of LXC 2.1 and later that LXC 2.0 does not have (checked against LXC 5.0's parser)
MODERN_ONLY = {
    "lxc.log.syslog", "lxc.no_new_privs", "lxc.prlimit", "lxc.cgroup2", "lxc.sysctl", "lxc.proc",
    "lxc.apparmor.allow_nesting", "lxc.apparmor.raw", "lxc.seccomp.allow_nesting", "lxc.seccomp.notify.proxy",
    "lxc.seccomp.notify.cookie", "lxc.hook.version", "lxc.hook.start-host", "lxc.rootfs.managed", "lxc.init.cwd",
    "lxc.init.groups", "lxc.keyring.session", "lxc.selinux.context.keyring", "lxc.execute.cmd",
    "lxc.autodev.tmpfs.size", "lxc.console.buffer.size", "lxc.console.size", "lxc.console.rotate",
    "lxc.monitor.signal.pdeath", "lxc.sched.core", "lxc.cgroup.dir", "lxc.cgroup.relative", "lxc.namespace.clone",
    "lxc.namespace.keep", "lxc.time.offset.boot", "lxc.time.offset.monotonic",
}
MODERN_ONLY_PREFIXES = ("lxc.prlimit.", "lxc.cgroup2.", "lxc.sysctl.", "lxc.proc.", "lxc.namespace.share.",
                        "lxc.cgroup.dir.")
MODERN_ONLY_REASONS = (  # (key prefix, why), first match wins
    ("lxc.cgroup2", ("a cgroup v2 rule: LXC 2.0 and older know only cgroup v1 (write it as lxc.cgroup.* if "
                     "the host has that v1 controller)")),
    ("lxc.prlimit", "resource limits arrived in LXC 2.1"),
    ("lxc.limit", "resource limits arrived in LXC 2.1"),
    ("lxc.log.syslog", "logging to syslog arrived in LXC 2.1"),
    ("lxc.syslog", "logging to syslog arrived in LXC 2.1"),
    ("lxc.no_new_privs", "lxc.no_new_privs arrived in LXC 2.1"),
    ("lxc.cgroup.", "a cgroup placement key of LXC 3+, not a cgroup v1 setting"),
)

# network sub-keys: legacy (LXC 2.0's lxc.network.*) and modern (LXC 5's lxc.net.N.*)
LEGACY_NET = {"type", "flags", "link", "name", "macvlan.mode", "veth.pair", "script.up", "script.down", "hwaddr",
              "mtu", "vlan.id", "ipv4", "ipv4.gateway", "ipv6", "ipv6.gateway"}
NET_TO_MODERN = {"ipv4": "ipv4.address", "ipv6": "ipv6.address"}
NET_TO_LEGACY = {v: k for k, v in NET_TO_MODERN.items()}
MODERN_NET = {NET_TO_MODERN.get(s, s) for s in LEGACY_NET} | {
    "veth.mode", "veth.ipv4.route", "veth.ipv6.route", "veth.vlan.id", "veth.vlan.tagged.id", "ipvlan.mode",
    "ipvlan.isolation", "l2proxy"}
LEGACY_NET_TYPES = ("veth", "macvlan", "vlan", "phys", "empty", "none")

# storage backends a rootfs path may name as a prefix (`lvm:/dev/vg/lv`, `overlayfs:/lower:/upper` ...)
ROOTFS_PREFIXES = ("dir", "lvm", "btrfs", "zfs", "overlay", "overlayfs", "aufs", "loop", "nbd", "rbd")


# ------------------------------------------------------------------------------------------------ parsing

MAX_BYTES = 4 << 20     # a container config is a few KB; this much is not one


def _split_key_line(raw: str) -> tuple[str, str, str, str, str] | None:
    """(indent, key, sep, value, tail) of `KEY = VALUE`: the key ends before the first `=` (its trailing blanks
    go to sep), the value's trailing blanks and CR go to tail. None without `=` or key. Plain string operations:
    linear on any line (a regex with lazy groups took quadratic time on long runs of blanks)."""
    body = raw.lstrip(" \t")
    indent = raw[:len(raw) - len(body)]
    left, eq, right = body.partition("=")
    key = left.rstrip(" \t")
    if not eq or not key:
        return None
    after = right.lstrip(" \t")
    value = after.rstrip(" \t\r")
    return indent, key, left[len(key):] + "=" + right[:len(right) - len(after)], value, after[len(value):]


@dataclass
class _Line:
    no: int          # 1-based line number in the input
    raw: str
    indent: str = ""
    key: str = ""    # empty for blank lines and comments
    sep: str = ""
    value: str = ""
    tail: str = ""

    def text(self, key: str | None = None, value: str | None = None) -> str:
        return f"{self.indent}{key or self.key}{self.sep}{self.value if value is None else value}{self.tail}"


def _parse(text: str) -> tuple[list[_Line], bool]:
    hint = "an LXC config has one `lxc.KEY = VALUE` per line (and comments); give a container's config file"
    if len(text) > MAX_BYTES:
        raise InputError(f"not an LXC config: {len(text)} characters, more than a container config has "
                         f"({MAX_BYTES})", hint)
    if "\0" in text:
        raise InputError(f"not an LXC config: line {text.count(chr(10), 0, text.index(chr(0))) + 1} holds a NUL "
                         "byte (a binary file?)", hint)
    pieces = text.split("\n")
    final_newline = text.endswith("\n")
    if final_newline:
        pieces.pop()
    lines: list[_Line] = []
    bad: list[str] = []
    for no, raw in enumerate(pieces, 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            lines.append(_Line(no, raw))
            continue
        parts = _split_key_line(raw)
        if parts is None:
            bad.append(f"line {no}: {s[:60]!r}")
            continue
        lines.append(_Line(no, raw, *parts))
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise InputError("not an LXC config: neither a comment nor `key = value`: " + "; ".join(bad[:3]) + more,
                         hint)
    ours = tuple(COMMENT_PREFIX.values())     # a file of only lines we commented out is still our own output
    if not any(ln.key.startswith("lxc.") or ln.raw.lstrip().startswith(ours) for ln in lines):
        raise InputError("not an LXC config: it has no lxc.* keys", hint)
    return lines, final_newline


# ------------------------------------------------------------------------------------------------ conversion


class _Out:
    def __init__(self, lines: list[_Line], to: str):
        self.lines = lines
        self.to = to
        self.text = {ln.no: ln.raw for ln in lines}
        self.warnings: list[LxcWarning] = []

    def set(self, ln: _Line, key: str | None = None, value: str | None = None) -> None:
        self.text[ln.no] = ln.text(key, value)

    def warn(self, ln: _Line, message: str) -> None:
        self.warnings.append(LxcWarning(ln.no, ln.key, message))

    def comment_out(self, ln: _Line, message: str) -> None:
        self.text[ln.no] = ln.indent + COMMENT_PREFIX[self.to] + ln.raw.lstrip()
        self.warn(ln, message + "; kept as a comment")

    def unknown(self, ln: _Line) -> None:
        self.warn(ln, "not an LXC key imgbuild knows; kept unchanged, check it by hand")

    def include(self, ln: _Line) -> None:
        form = "modern LXC (2.1 and later)" if self.to == "modern" else "LXC 2.0 and older"
        self.warn(ln, f"the included file is not converted: make sure it is written for {form}")


def _is_cgroup_v1(key: str) -> bool:
    return (key.startswith("lxc.cgroup.") and key not in MODERN_ONLY
            and not key.startswith(MODERN_ONLY_PREFIXES))


def _is_modern_only(key: str) -> bool:
    return key in MODERN_ONLY or key.startswith(MODERN_ONLY_PREFIXES)


def _is_modern(key: str) -> bool:
    """Whether LXC 2.1+ knows `key` as it is."""
    if key in COMMON or _is_cgroup_v1(key) or _is_modern_only(key) or key in RENAMED.values():
        return True
    m = re.fullmatch(r"lxc\.net\.\d+\.(.+)", key)
    return bool(m) and m.group(1) in MODERN_NET


def _is_legacy(key: str) -> bool:
    """Whether LXC 2.0 knows `key` as it is."""
    if key in COMMON or _is_cgroup_v1(key) or key in REMOVED_IN_MODERN or key == "lxc.rootfs.backend":
        return True
    if key in RENAMED and key not in LXC21_ALIASES:
        return True
    m = re.fullmatch(r"lxc\.network\.(?:\d+\.)?(.+)", key)
    return bool(m) and m.group(1) in LEGACY_NET


def _rootfs_to_modern(value: str, backend: str | None) -> str:
    if not value.strip():
        return value
    m = re.match(r"([a-z]+):", value)
    if m and m.group(1) in ROOTFS_PREFIXES:
        return value                      # already says its backend
    if backend:
        return f"{backend}:{value}"
    if value.startswith("/dev/"):
        return value                      # a block device: LXC finds out which backend
    return f"dir:{value}"


def _to_modern(out: _Out) -> None:
    keyed = [ln for ln in out.lines if ln.key]
    backends = [ln for ln in keyed if ln.key == "lxc.rootfs.backend"]
    backend = backends[-1].value.strip() if backends else None
    rootfs = [ln for ln in keyed if ln.key == "lxc.rootfs"]
    idx = -1
    for ln in keyed:
        k = ln.key
        if k == "lxc.network.type":
            idx += 1
            out.set(ln, f"lxc.net.{idx}.type")
        elif k.startswith("lxc.network."):
            sub = k[len("lxc.network."):]
            m = re.fullmatch(r"(\d+)\.(.+)", sub)
            if m and m.group(2) in LEGACY_NET:
                out.set(ln, f"lxc.net.{m.group(1)}.{NET_TO_MODERN.get(m.group(2), m.group(2))}")
            elif m or sub not in LEGACY_NET:
                out.unknown(ln)
            elif idx < 0:
                out.comment_out(ln, "comes before the first lxc.network.type line, so it belongs to no network "
                                    "(LXC 2.0 and older refuse it too)")
            else:
                out.set(ln, f"lxc.net.{idx}.{NET_TO_MODERN.get(sub, sub)}")
        elif k == "lxc.rootfs":
            out.set(ln, "lxc.rootfs.path", _rootfs_to_modern(ln.value, backend))
        elif k == "lxc.rootfs.backend":
            if ln is not backends[-1]:
                why = "a later lxc.rootfs.backend line overrides it"
            elif rootfs:
                why = f"its value is now the prefix of lxc.rootfs.path ({backend}:...)"
            else:
                why = "there is no lxc.rootfs line to carry it"
            out.comment_out(ln, f"LXC 2.1 removed lxc.rootfs.backend; {why}")
        elif k in REMOVED_IN_MODERN:
            out.comment_out(ln, REMOVED_IN_MODERN[k])
        elif k in RENAMED:
            out.set(ln, RENAMED[k])
        elif k.startswith("lxc.limit."):
            out.set(ln, "lxc.prlimit." + k[len("lxc.limit."):])
        elif _is_modern(k):
            if k == "lxc.include":
                out.include(ln)
        else:
            out.unknown(ln)


def _to_legacy(out: _Out) -> None:
    keyed = [ln for ln in out.lines if ln.key]
    # networks: group lxc.net.N.* lines by (how many `lxc.net =` resets came before, N)
    nics: dict[tuple[int, int], list[tuple[_Line, str]]] = {}
    epoch = 0
    for ln in keyed:
        if ln.key == "lxc.net":
            epoch += 1
            continue
        m = re.fullmatch(r"lxc\.net\.(\d+)\.(.+)", ln.key)
        if m and m.group(2) not in MODERN_NET:
            out.unknown(ln)                  # kept as it is, whatever its network (also on a second run)
        elif m:
            nics.setdefault((epoch, int(m.group(1))), []).append((ln, m.group(2)))

    blocks: dict[int, list[list[_Line]]] = {}       # epoch -> network blocks in N order, type line first
    for (ep, n), members in sorted(nics.items()):
        types = [ln for ln, sub in members if sub == "type" and ln.value.strip()]
        if not types or types[0].value.strip() not in LEGACY_NET_TYPES:
            why = (f"network lxc.net.{n} has no lxc.net.{n}.type line, and a legacy network block starts with "
                   f"its type" if not types else
                   f"network lxc.net.{n} is of type {types[0].value.strip()!r}, which LXC 2.0 and older do not "
                   f"have ({', '.join(LEGACY_NET_TYPES)})")
            for ln, _sub in members:
                out.comment_out(ln, why)
            continue
        block = [types[0]]
        out.set(types[0], "lxc.network.type")
        for ln, sub in members:
            if ln is types[0]:
                continue
            if sub == "type":
                out.comment_out(ln, f"a second type line for lxc.net.{n} would start a new legacy network")
            elif sub not in NET_TO_LEGACY and sub not in LEGACY_NET:
                out.comment_out(ln, f"LXC 2.0 and older have no network key {sub!r}")
            else:
                block.append(ln)
                out.set(ln, "lxc.network." + NET_TO_LEGACY.get(sub, sub))
        blocks.setdefault(ep, []).append(block)
        pos = len(blocks[ep]) - 1
        if pos != n:
            first = min((ln for ln, _sub in members), key=lambda ln: ln.no)
            indices = ", ".join(str(k[1]) for k in sorted(nics) if k[0] == ep)
            out.warn(first, f"legacy networks have no index, they are numbered in order: lxc.net.{n} becomes "
                            f"network {pos} (lxc.net indices here: {indices})")
    # each epoch's network lines go, in block order, into the places its network lines had in the file
    for bl in blocks.values():
        seq = [ln for block in bl for ln in block]
        slots = sorted(ln.no for ln in seq)
        texts = {ln.no: out.text[ln.no] for ln in seq}
        for slot, ln in zip(slots, seq):
            out.text[slot] = texts[ln.no]

    for ln in keyed:
        k = ln.key
        if re.fullmatch(r"lxc\.net\.\d+\..+", k):
            continue                                   # done above
        if k == "lxc.net":
            out.set(ln, "lxc.network")
        elif k == "lxc.rootfs.path":
            v = ln.value
            out.set(ln, "lxc.rootfs", v.removeprefix("dir:"))
        elif k in TO_LEGACY:
            out.set(ln, TO_LEGACY[k])
            if k == "lxc.apparmor.profile" and ln.value.strip() == "generated":
                out.warn(ln, "'generated' (a profile LXC 3+ writes for each container) means nothing to LXC 2.0 "
                             "and older, which look for a profile of that name: choose one, e.g. "
                             "lxc-container-default")
        elif _is_modern_only(k) or k in LXC21_ALIASES or k.startswith("lxc.limit."):
            why = next((w for p, w in MODERN_ONLY_REASONS if k.startswith(p)),
                       "LXC 2.0 and older have no such key (it arrived in LXC 2.1 or later)")
            out.comment_out(ln, why)
        elif _is_legacy(k):
            if k == "lxc.include":
                out.include(ln)
        else:
            out.unknown(ln)


def convert(text: str, to: str) -> tuple[str, list[LxcWarning]]:
    """Convert the LXC container config `text` to `to` ("modern": LXC 2.1 and later, "legacy": LXC 2.0 and
    older). Returns the converted text and the warnings (sorted by line). Raises InputError if `text` is not an
    LXC config."""
    if to not in FORMS:
        raise InputError(f"unknown target form {to!r}", f"choose one of: {', '.join(FORMS)}")
    lines, final_newline = _parse(text)
    out = _Out(lines, to)
    (_to_modern if to == "modern" else _to_legacy)(out)
    result = "\n".join(out.text[ln.no] for ln in lines) + ("\n" if final_newline else "")
    return result, sorted(out.warnings, key=lambda w: w.line)


# ------------------------------------------------------------------ moving a container


PATH_KEYS = ("lxc.rootfs.path", "lxc.rootfs", "lxc.mount", "lxc.mount.fstab")


def relocate(config: str, old_dir: str, new_dir: str) -> str:
    """The config with its container paths moved from old_dir to new_dir."""
    out = []
    for line in config.splitlines():
        m = re.match(r"^\s*([a-z0-9_.]+)\s*=\s*(.*)$", line)
        if m and m.group(1) in PATH_KEYS:
            line = f"{m.group(1)} = {m.group(2).replace(old_dir, new_dir, 1)}"
        out.append(line)
    return "\n".join(out) + "\n"


def config_dir(config: str, where: object = "the LXC config") -> str:
    """The container directory a config names (its rootfs line's parent)."""
    for line in config.splitlines():
        m = re.match(r"^\s*(lxc\.rootfs\.path|lxc\.rootfs)\s*=\s*(?:dir:)?(.*)/rootfs\s*$", line)
        if m:
            return m.group(2)
    raise InputError(f"{where}: no rootfs line (lxc.rootfs.path = .../rootfs); cannot install it",
                     "give a config imgbuild or LXC wrote")


_LINK = re.compile(r"^\s*(lxc\.net\.\d+\.link|lxc\.network(?:\.\d+)?\.link)\s*=\s*([A-Za-z0-9_.-]{1,15})\s*$")
BRIDGE_HINT = ("on Debian the lxc package's lxc-net makes lxcbr0 (10.0.3.1/24): `systemctl enable --now lxc-net` "
               "(with USE_LXC_BRIDGE=\"true\" in /etc/default/lxc-net); another bridge: `ip link add NAME type "
               "bridge && ip link set NAME up`, or build with --set targets.lxc.bridge=NAME")


def missing_links(config: str, sys_class_net: str = "/sys/class/net") -> list[tuple[str, str]]:
    """(key, interface) of each NIC's `link` (the bridge a veth joins) that does not exist on this host:
    lxc-start would fail with nothing better than 'Received container state "ABORTING"'."""
    return [(k, link) for k, link in links(config) if not os.path.exists(f"{sys_class_net}/{link}")]


def links(config: str) -> list[tuple[str, str]]:
    """(key, interface) of each NIC's `link` in a config: the bridges its veths join."""
    found = (_LINK.match(line) for line in config.splitlines())
    return [(m.group(1), m.group(2)) for m in found if m]
