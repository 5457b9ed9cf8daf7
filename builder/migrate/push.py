"""`migrate push`: a whole OS tree to a directory on a remote host, with real rsync over the user's ssh.

Safety first, because the receiver is usually a running host nobody can reach by console:
- every local input (source, list, profile, patterns) is checked before connecting;
- the destination is probed before anything is sent: `/`, the system's own trees (/usr, /etc, /var/lib,
  /boot, /root ... and everything inside them) are refused, also when the destination only resolves into one
  on the remote host; a symlink that would send --delete somewhere else is refused; --delete needs an empty
  destination or the marker an earlier push left there (MARKER); every mount found under the destination (a
  running chroot's /proc, /dev, /lib/modules binds) is left alone: rsync never enters it;
- the source's live filesystems (proc, sysfs, devtmpfs, tmpfs ...) and /proc, /sys, /run, /tmp contents are
  never sent;
- per-host files (host name, ssh host keys, machine-id, network config, fstab) are protected: never sent,
  never deleted on the receiver, unless asked;
- partial files go to a partial directory, so an interrupted push leaves no half-written file in place and the
  rerun resumes from what arrived; a rerun converges.
"""
from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.core import proc as runner
from builder.core.errors import BuilderError, CommandError, InputError
from builder.core.sizes import human
from builder.core.untrusted import read_file
from builder.migrate.remote import Remote, shown

log = logging.getLogger("imgbuild")

RSYNC_FLAGS = ["-aHAXS", "--numeric-ids"]
PARTIAL_DIR = ".imgbuild-partial"

# contents never sent: the running system's virtual and scratch directories (the directories themselves are)
DEFAULT_EXCLUDES = ("/proc/*", "/sys/*", "/run/*", "/tmp/*", "/var/tmp/*", "/var/run/*", "/var/lock/*",
                    "/mnt/*", "/media/*", "/lost+found", "/swapfile", "/var/cache/apt/archives/*.deb",
                    "/var/cache/yum/*")

# per-host files: kept on the receiver, never sent, never deleted
DEFAULT_PROTECT = ("/etc/hostname", "/etc/HOSTNAME", "/etc/machine-id", "/var/lib/dbus/machine-id",
                   "/etc/ssh/ssh_host_*", "/etc/hosts", "/etc/resolv.conf", "/etc/fstab",
                   "/etc/network/interfaces", "/etc/network/interfaces.d", "/etc/sysconfig/network",
                   "/etc/sysconfig/network-scripts/ifcfg-*", "/etc/netplan", "/etc/systemd/network",
                   "/etc/NetworkManager/system-connections", "/etc/udev/rules.d/70-persistent-net.rules",
                   # what `migrate chroot-install` put into the tree on the host (chroot.BOOT, chroot.ESCAPE): a
                   # push of the tree again, --delete too, keeps a chroot startable
                   "/usr/local/sbin/imgbuild-chroot", "/usr/local/sbin/chroot-escape")

# a push there would overwrite or delete the running system itself: these trees and everything inside them
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run",
                "/sbin", "/sys", "/usr", "/var/account", "/var/adm", "/var/backups", "/var/cache", "/var/crash",
                "/var/db", "/var/empty", "/var/games", "/var/kerberos", "/var/lib", "/var/local", "/var/lock",
                "/var/log", "/var/mail", "/var/named", "/var/nis", "/var/opt", "/var/preserve", "/var/run",
                "/var/spool", "/var/tmp", "/var/yp")
# directories that hold others' trees: the directory itself is refused, a directory of its own inside it is not
SYSTEM_PARENTS = frozenset({"/", "/home", "/media", "/mnt", "/opt", "/srv", "/tmp", "/var", "/usr/local"})
# /usr/local's own directories; /usr/local/NAME for any other NAME is a place of its own (/usr/local/newos)
USR_LOCAL_OWN = frozenset({"bin", "etc", "games", "include", "lib", "lib32", "lib64", "libexec", "man", "sbin",
                           "share", "src"})

# written into the destination by a push into an empty directory; --delete needs it (or an empty destination)
MARKER = ".imgbuild-push"
MARKER_TEXT = ("This directory receives OS trees from `migrate push` (imgbuild). `migrate push --delete` may delete "
               "anything in it\nthat the pushed tree does not have. Remove this file to stop that.\n")
MAX_PROBE_LINES = 20000

# filesystems that are a running system's, not its files
VIRTUAL_FS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup", "cgroup2", "securityfs",
                        "debugfs", "tracefs", "pstore", "bpf", "mqueue", "hugetlbfs", "configfs", "fusectl",
                        "binfmt_misc", "autofs", "efivarfs", "rpc_pipefs", "nsfs"})

PROFILE_DIRS = (Path(__file__).parent / "profiles", Path("/etc/imgbuild/profiles"))

_PATH_OK = re.compile(r"/[A-Za-z0-9._+@:/,=-]*")
_RSYNC_WORD = re.compile(r"[A-Za-z0-9_./=:+-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class PushRequest:
    dest: str
    source: Path = Path("/")
    files_from: Path | None = None
    profile: str | None = None
    excludes: tuple[str, ...] = ()
    protect: tuple[str, ...] = ()
    unprotect: tuple[str, ...] = ()
    bwlimit: int | None = None
    delete: bool = False
    dry_run: bool = False
    verify: bool = False
    force: bool = False
    rsync_path: str | None = None
    progress: bool = True
    marker: bool = True          # leave MARKER in a new or empty destination (imgbuild deploy keeps its own)


@dataclass
class Probe:
    """What the receiver looks like before the push."""
    rsync: str = ""
    exists: bool = False
    is_dir: bool = False
    real: str = ""
    empty: bool = False                                  # an existing directory with nothing in it
    marker: bool = False                                 # MARKER is there: an earlier push's destination
    mounts: list[str] = field(default_factory=list)     # relative to dest, with a leading /
    odd_mounts: list[str] = field(default_factory=list)  # mount points whose names rsync cannot be given
    have_protected: list[str] = field(default_factory=list)


@dataclass
class Changes:
    """rsync's itemized changes: every path, and what changes in it."""
    sent: list[tuple[str, int]] = field(default_factory=list)      # regular files with data to send
    made: list[str] = field(default_factory=list)                   # new directories, links, devices, hardlinks
    touched: list[tuple[str, str]] = field(default_factory=list)    # (path, what) owner/mode/time/xattr/acl only
    deleted: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    not_sent: list[str] = field(default_factory=list)   # protected files the source has and the receiver lacks
    new: set[str] = field(default_factory=set)          # which of `sent` the receiver does not have yet

    @property
    def created(self) -> int:
        return len(self.made)

    @property
    def attrs(self) -> int:
        return len(self.touched)

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.sent)

    @property
    def total(self) -> int:
        return len(self.sent) + self.created + self.attrs + len(self.deleted)


def system_dir(path: str) -> str | None:
    """The running system's directory that `path` (absolute, normalized) is, or lies inside; None for a directory
    of its own (/srv/newos, /usr/local/newos, /home/alice/os)."""
    if path in SYSTEM_PARENTS:
        return path
    if path.startswith("/usr/local/"):
        first = path.split("/")[3]
        return f"/usr/local/{first}" if first in USR_LOCAL_OWN else None
    return next((t for t in SYSTEM_TREES if path == t or path.startswith(t + "/")), None)


def _plain(path: str) -> bool:
    return bool(_PATH_OK.fullmatch(path)) and ".." not in path.split("/") and "//" not in path


def check_dest(dest: str, force: bool, verb: str = "push into", can_force: bool = True) -> str:
    """--dest: a plain absolute path, not the remote system's own (a system tree or anything inside one, or a
    directory that holds others' trees: / /srv /home /opt ...); --force allows the latter. Returns it normalized."""
    if not dest.startswith("/"):
        raise InputError(f"--dest {shown(dest)}: give an absolute path on the remote host", "e.g. --dest /srv/newos")
    if not _PATH_OK.fullmatch(dest) or ".." in dest.split("/"):
        raise InputError(f"--dest {shown(dest)}: only plain absolute paths are accepted (letters, digits, "
                         "._+@:,=- and /; no spaces, quotes or ..)", "e.g. --dest /srv/newos")
    norm = "/" + os.path.normpath(dest).lstrip("/")
    area = system_dir(norm)
    if area and not force:
        raise InputError(f"--dest {norm}: refusing to {verb} the remote system's own {area}"
                         + (f" ({norm} is inside it)" if norm != area else ""),
                         "push into a directory of its own (e.g. /srv/newos or /usr/local/newos) and start it with "
                         "chroot-start" + ("; --force if you really mean to overwrite the running system"
                                           if can_force else ""))
    return norm


def check_resolved(host: str, dest: str, real: str, force: bool, can_force: bool = True) -> str:
    """The destination as the remote host resolved it (realpath there): the same rules as check_dest. Returns
    the path to use (the resolved one)."""
    if not real:
        return dest
    if not real.startswith("/") or not _plain(real):
        raise InputError(f"{host}:{dest} resolves to {shown(real)!r} there, not a plain absolute path; nothing was "
                         "changed", "give --dest as the real directory (no symlinks to odd names)")
    area = system_dir(real)
    if area and not force:
        raise InputError(f"{host}:{dest} resolves to {real} there, part of the running system ({area}); "
                         "nothing was changed", "use a directory of its own (e.g. /srv/newos)"
                         + ("; --force to override" if can_force else ""))
    return real


def check_request(req: PushRequest) -> None:
    """Everything local, before any connection: bad input exits 2 and the remote host is never contacted."""
    if not req.source.is_dir():
        raise InputError(f"--source {req.source}: not a directory", "give the root of the tree to push")
    if req.files_from and req.profile:
        raise InputError("--files-from and --profile both given", "use one of them")
    if req.files_from and not req.files_from.is_file():
        raise InputError(f"--files-from {req.files_from}: no such file",
                         "give a file listing paths relative to --source")
    if req.files_from:
        hint = "give a file listing paths relative to --source, one per line"
        data = read_file(req.files_from, f"--files-from {req.files_from}", what="a list of paths", hint=hint)
        try:
            if b"\0" in data:
                raise ValueError
            data.decode("utf-8")
        except ValueError:
            raise InputError(f"--files-from {req.files_from}: not a list of paths (binary, or not UTF-8 text)",
                             hint) from None
    if req.profile:
        profile_rules(req.profile)
    for flag, values in (("--exclude", req.excludes), ("--protect", req.protect), ("--unprotect", req.unprotect)):
        for v in values:
            if not v or _CONTROL.search(v):
                raise InputError(f"{flag} {shown(v)!r}: an empty pattern or one with a newline or control character",
                                 "give one rsync pattern per option")
    _protect_list(req)
    rsync_path(req.rsync_path)


def rsync_path(value: str | None) -> str | None:
    """--rsync-path: a command (`rsync`, `sudo -n rsync`, `/opt/bin/rsync`) run by the remote host's shell, so
    only plain words are accepted."""
    if value is None:
        return None
    try:
        words = [] if _CONTROL.search(value) else shlex.split(value)
    except ValueError:
        words = []
    if not words or not all(_RSYNC_WORD.fullmatch(w) for w in words):
        raise InputError(f"--rsync-path {shown(value)!r}: only plain words are accepted (letters, digits, ._/=:+-)",
                         "e.g. --rsync-path 'sudo -n rsync' or --rsync-path /opt/bin/rsync")
    return " ".join(words)


def _probe_script(dest: str, protect: list[str]) -> str:
    d = shlex.quote(dest)
    lines = [
        f"D={d}",
        'echo "rsync=$(command -v rsync 2>/dev/null)"',
        'if [ -e "$D" ] || [ -L "$D" ]; then echo exists=1; [ -d "$D" ] && echo isdir=1; fi',
        'if [ -d "$D" ] && [ -z "$(ls -A "$D" 2>/dev/null | head -n 1)" ]; then echo empty=1; fi',
        f'if [ -f "$D/{MARKER}" ] && [ ! -L "$D/{MARKER}" ]; then echo marker=1; fi',
        'P="$D"; while [ ! -e "$P" ] && [ "$P" != / ]; do P=$(dirname "$P"); done',
        'R="$(readlink -f "$P")${D#"$P"}"; echo "real=$R"',
        # mounts strictly below D (or below where it resolves to); "/" has every other mount below it
        "[ -r /proc/mounts ] && D=\"$D\" R=\"$R\" awk 'BEGIN { d = ENVIRON[\"D\"]; r = ENVIRON[\"R\"];"
        " pd = (d == \"/\") ? \"/\" : d \"/\"; pr = (r == \"/\") ? \"/\" : r \"/\" }"
        " { if ($2 != d && index($2, pd) == 1) print \"mount=\" substr($2, length(pd));"
        " else if (r != d && $2 != r && index($2, pr) == 1) print \"mount=\" substr($2, length(pr)) }' /proc/mounts",
    ]
    for p in protect:
        pat = p.rstrip("/")
        glob = "".join(ch if ch in "*?[]" else shlex.quote(ch) if ch != "/" else "/" for ch in pat)
        lines.append(f'for f in "$D"{glob}; do [ -e "$f" ] && echo "have=${{f#"$D"}}"; done')
    return "\n".join(lines) + "\ntrue\n"


def _unescape_mount(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def parse_probe(out: str) -> Probe:
    """The probe's answer (a remote host's: untrusted): known keys only, at most MAX_PROBE_LINES lines; a value
    that is not what the key holds is dropped (a mount point rsync cannot be told about is kept aside)."""
    p = Probe()
    for line in out.splitlines()[:MAX_PROBE_LINES]:
        k, _, v = line.partition("=")
        if k == "rsync":
            p.rsync = v if v.startswith("/") and not _CONTROL.search(v) else ""
        elif k == "exists":
            p.exists = True
        elif k == "isdir":
            p.is_dir = True
        elif k == "empty":
            p.empty = True
        elif k == "marker":
            p.marker = True
        elif k == "real":
            p.real = v if v.startswith("/") else ""
            if p.real and _plain(p.real):
                p.real = "/" + os.path.normpath(p.real).lstrip("/")
        elif k == "mount" and v.startswith("/"):
            m = _unescape_mount(v)
            if _CONTROL.search(m) or ".." in m.split("/") or "\\" in m:
                p.odd_mounts.append(m)
            else:
                p.mounts.append(m)
        elif k == "have":
            p.have_protected.append(shown(v, 200))
    p.mounts = sorted(set(p.mounts))
    return p


def probe(remote: Remote, dest: str, protect: list[str]) -> Probe:
    return parse_probe(remote.sh(_probe_script(dest, protect), what=f"looking at {dest}",
                                 max_output=4 << 20).stdout)


def source_mounts(source: Path) -> list[str]:
    """Live filesystems mounted under the source (as /relative paths): their contents are never sent."""
    src = os.path.realpath(source)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        f = line.split()
        try:
            sep = f.index("-")
        except ValueError:
            continue
        point, fstype = _unescape_mount(f[4]), f[sep + 1]
        if fstype in VIRTUAL_FS and point != src and (src == "/" or point.startswith(src + "/")):
            found.append(point[len(src.rstrip("/")):] or "/")
    return sorted(set(found))


def profile_rules(name: str) -> tuple[Path, list[str]]:
    """A profile: rsync filter rules (`+ /usr/***`, `- *`), from the project's profiles, /etc/imgbuild/profiles
    or a file path."""
    cands = [Path(name)] if "/" in name else [d / f"{name}.rules" for d in PROFILE_DIRS]
    for c in cands:
        if c.is_file():
            try:
                text = read_file(c, f"--profile {c}", what="a file of rsync filter rules").decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"--profile {c}: not UTF-8 text (byte {e.start})",
                                 "give a file of rsync filter rules") from None
            rules = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            bad = [r for r in rules if not re.match(r"^[-+PR] \S", r)]
            if bad:
                raise InputError(f"{c}: not an rsync filter rule: {bad[0]!r}",
                                 "each line is `+ PATTERN` (include) or `- PATTERN` (exclude); "
                                 "see rsync(1) FILTER RULES")
            return c, rules
    known = sorted({p.stem for d in PROFILE_DIRS if d.is_dir() for p in d.glob("*.rules")})
    raise InputError(f"--profile {name}: no such profile", f"known profiles: {', '.join(known) or 'none'}; "
                     "or give the path of a file of rsync filter rules")


def _protect_list(req: PushRequest) -> list[str]:
    out = [p for p in DEFAULT_PROTECT if p not in req.unprotect]
    for p in req.protect:
        if not p.startswith("/"):
            raise InputError(f"--protect {p}: give a path inside the tree, starting with /",
                             "e.g. --protect /etc/myapp.conf")
        out.append(p)
    return list(dict.fromkeys(out))


def filters(req: PushRequest, pr: Probe, protect: list[str]) -> list[str]:
    """Filter rules, first match wins: the receiver's mounts, protected files, the user's excludes, the live
    filesystems of the source, the default excludes, then the profile."""
    rules = [f"- {_literal(m)}" for m in pr.mounts]
    rules += [f"- /{MARKER}"]
    rules += [f"- {p}" for p in protect]
    rules += [f"- {e}" for e in req.excludes]
    rules += [f"- {m}/*" for m in source_mounts(req.source) if m != "/"]
    rules += [f"- {e}" for e in DEFAULT_EXCLUDES]
    if req.profile:
        rules += profile_rules(req.profile)[1]
    return rules


def _literal(path: str) -> str:
    """A path as an rsync pattern that matches only itself: rsync reads backslash escapes only in a pattern that
    holds a wildcard character."""
    return re.sub(r"([*?\[\\])", r"\\\1", path) if re.search(r"[*?\[]", path) else path


def rsync_argv(req: PushRequest, remote: Remote, rules: list[str], *, dry_run: bool, checksum: bool = False,
               progress: bool = False) -> list[str]:
    a = ["rsync", *RSYNC_FLAGS, f"--partial-dir={PARTIAL_DIR}", "--stats", "--out-format=%i|%l|%n",
         "-e", remote.rsh()]
    if dry_run:
        a.append("--dry-run")
    if checksum:
        a.append("--checksum")
    if progress:
        a.append("--info=progress2")
    if req.delete:
        a.append("--delete")
    if req.bwlimit:
        a.append(f"--bwlimit={req.bwlimit}")
    if req.rsync_path:
        a.append(f"--rsync-path={rsync_path(req.rsync_path)}")
    if req.files_from:
        a += ["-r", f"--files-from={req.files_from}"]
    a += [f"--filter={r}" for r in rules]
    a += [str(req.source).rstrip("/") + "/", remote.spec(req.dest.rstrip("/") + "/")]
    return a


_ITEM = re.compile(r"^([<>ch.*][fdLDS]?[^|]*)\|(\d*)\|(.*)$")
_STAT = re.compile(r"^(Number of [a-z ]+|Total [a-z ]+|Literal data|Matched data): ([\d,]+)")


def parse(lines: list[str]) -> Changes:
    """rsync's itemized lines counted. The destination directory itself ("./") is not counted: a dry run into
    a new directory would count it as created, the real run (which made it for the marker) as changed."""
    c = Changes()
    for line in lines:
        m = _ITEM.match(line)
        if m:
            item, size, name = m.group(1), m.group(2), m.group(3)
            if name == "./":
                continue
            if item.startswith("*deleting"):
                c.deleted.append(name)
            elif item[0] in "<>" and item[1:2] == "f":
                c.sent.append((name, int(size or 0)))
                if "+" in item:
                    c.new.add(name)
            elif "+" in item:
                c.made.append(name)
            else:
                c.touched.append((name, what_changed(item)))
            continue
        s = _STAT.match(line.strip())
        if s:
            c.stats[s.group(1)] = int(s.group(2).replace(",", ""))
    return c


# rsync's itemize flags after the update and file type: YXcstpoguax
_FLAGS = {2: "checksum", 3: "size", 4: "time", 5: "mode", 6: "owner", 7: "group", 9: "acl", 10: "xattrs"}


def what_changed(item: str) -> str:
    """What an itemized line says changes in a path that exists on both sides: "mode, owner" ..."""
    what = [w for i, w in _FLAGS.items() if len(item) > i and item[i] not in ". "]
    if len(item) > 1 and item[1] == "L" and len(item) > 2 and item[2] == "c":
        what = ["link target"] + [w for w in what if w != "checksum"]
    return ", ".join(dict.fromkeys(what)) or "attributes"


def listing(c: Changes, limit: int = 20) -> list[str]:
    """Every path a push creates, changes (and what in it) or deletes, grouped; a group longer than `limit` is
    shortened to its first paths and a count per top directory."""
    groups: dict[str, list[str]] = {}
    for name, _size in c.sent:
        groups.setdefault("create" if name in c.new else "change content:", []).append("/" + name)
    for name in c.made:
        groups.setdefault("create", []).append("/" + name)
    for name, what in c.touched:
        groups.setdefault(f"change {what}:", []).append("/" + name)
    if c.deleted:
        groups["delete"] = ["/" + d for d in c.deleted]
    out = []
    for head, paths in groups.items():
        paths = sorted(paths)
        out.append(f"{head.rstrip(':')} ({len(paths)}):")
        out += [f"  {p}" for p in paths[:limit]]
        if len(paths) > limit:
            rest: dict[str, int] = {}
            for p in paths[limit:]:
                top = "/".join(p.split("/")[:3]) if p.count("/") > 2 else p.rsplit("/", 1)[0] or "/"
                rest[top] = rest.get(top, 0) + 1
            out.append("  ... and " + ", ".join(f"{n} under {t}" for t, n in sorted(rest.items(),
                                                                                    key=lambda x: -x[1])[:8]) +
                       (" ..." if len(rest) > 8 else ""))
    return out


def as_json(c: Changes, host: str, dest: str, dry: bool) -> dict:
    return {"host": host, "dest": dest, "dry_run": dry,
            "create": sorted(["/" + n for n, _ in c.sent if n in c.new] + ["/" + n for n in c.made]),
            "change": [{"path": "/" + n, "what": "content"} for n, _ in c.sent if n not in c.new] +
                      [{"path": "/" + n, "what": w} for n, w in c.touched],
            "delete": ["/" + d for d in c.deleted], "bytes": c.bytes, "not_sent": c.not_sent}


class _Progress:
    """rsync's --info=progress2 turned into one tqdm bar (percent of the whole transfer)."""

    _RE = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)")

    def __init__(self, show: bool):
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", desc="push", leave=False, file=sys.stderr,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        m = self._RE.match(line)
        if m:
            if self.bar is not None:
                self.bar.n = int(m.group(2))
                self.bar.set_postfix_str(f"{human(int(m.group(1).replace(',', '')))} {m.group(3)}", refresh=True)
            return
        self.lines.append(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()



# rsync's exit codes that mean "stopped part-way": the next run resumes from the partial directory
_INTERRUPTED = {10: "socket I/O error", 12: "the connection broke", 20: "rsync was stopped by a signal",
                30: "timeout", 35: "timeout", 255: "ssh failed"}


def _rsync(argv: list[str], remote: Remote, req: PushRequest, progress: bool) -> Changes:
    prog = _Progress(progress)
    try:
        r = runner.run(argv, check=False, on_line=prog, split_cr=progress,
                       trace_output=True)
    finally:
        prog.close()
    rc = r.returncode
    if rc == 24:
        log.warning("some files vanished while they were being sent (a live source); rerun to converge")
    elif rc in _INTERRUPTED or rc < 0:
        why = _INTERRUPTED.get(rc, f"signal {-rc}")
        if rc == 255 or any("ssh:" in t or "Host key" in t for t in r.tail):
            raise remote.ssh_error(r.tail)
        raise BuilderError(f"{remote.host}: the push to {req.dest} stopped part-way ({why}, rsync exit {rc}); "
                           f"what arrived is kept ({PARTIAL_DIR}/ inside the directories)",
                           "run the same command again: it resumes and converges")
    elif rc != 0:
        raise CommandError(runner.show(argv), rc, [shown(t) for t in r.tail[-12:]],
                           "rsync's own messages are above; exit 23 means some files could not be read or written")
    return parse(prog.lines)


def check_probe(remote: Remote, req: PushRequest, pr: Probe) -> None:
    """The refusals that need the receiver's answer; each one changes nothing."""
    where = f"{remote.host}:{req.dest}"
    if not pr.rsync:
        raise BuilderError(f"{remote.host}: rsync is not installed there; nothing was changed",
                           "install it on the host (apt-get install rsync / yum install rsync), or give --rsync-path")
    if pr.exists and not pr.is_dir:
        raise InputError(f"{where} exists and is not a directory; nothing was changed",
                         "give a directory (or a new path) as --dest")
    if not pr.real:
        raise BuilderError(f"{where}: the host did not say where it resolves to; nothing was changed",
                           "log in and check the path (readlink -f)")
    check_resolved(remote.host, req.dest, pr.real, req.force)
    if pr.real != req.dest and req.delete and not req.force:
        raise InputError(f"{where} is reached through a symlink and is really {pr.real}: "
                         "--delete would delete there; nothing was changed",
                         f"give --dest {pr.real} if that is meant, or --force")
    if pr.odd_mounts:
        raise InputError(f"{where}: {shown(pr.odd_mounts[0])} is a mount point whose name rsync cannot be told to "
                         "leave alone; nothing was changed", "unmount it (or rename its mount point) first")
    if req.delete and pr.exists and not (pr.empty or pr.marker) and not req.force:
        raise InputError(f"{where} already holds files and no earlier push's {MARKER}: --delete would delete "
                         "whatever it does not get from the source; nothing was changed",
                         f"push into an empty or new directory (a push leaves {MARKER} there, and later --delete "
                         "runs are allowed), or --force if everything in it may go")


def push(remote: Remote, req: PushRequest) -> Changes:
    check_request(req)
    protect = _protect_list(req)
    pr = probe(remote, req.dest, protect)
    check_probe(remote, req, pr)
    for m in pr.mounts:
        log.info("%s:%s is a mount point: left alone (not entered, not deleted)", remote.host,
                 req.dest.rstrip("/") + shown(m))
    rules = filters(req, pr, protect)
    if req.marker and not req.dry_run and (not pr.exists or pr.empty):
        remote.write_text(f"{req.dest}/{MARKER}", MARKER_TEXT)       # makes the directory too
    t0 = time.monotonic()
    show = req.progress and not req.dry_run and sys.stderr.isatty() and log.isEnabledFor(logging.INFO)
    changes = _rsync(rsync_argv(req, remote, rules, dry_run=req.dry_run, progress=show), remote, req, show)
    changes.stats["seconds_x1000"] = int((time.monotonic() - t0) * 1000)
    # a directory holding a protected file (or a mount) is not deleted: the run says "cannot delete non-empty
    # directory", only the dry run itemizes it; both count it as kept
    kept = [p.lstrip("/") for p in (*pr.have_protected, *pr.mounts)]
    changes.deleted = [d for d in changes.deleted if not (d.endswith("/") and any(k.startswith(d) for k in kept))]
    if pr.have_protected:
        log.info("protected on %s (kept, not sent): %s", remote.host, ", ".join(pr.have_protected[:50]))
    changes.not_sent = grouped([f for f in source_protected(req.source, protect) if f not in pr.have_protected],
                               protect)
    return changes


def source_protected(source: Path, protect: list[str]) -> list[str]:
    """The protected paths the source has (as /paths, sorted): with the receiver's, what a push leaves out."""
    root = os.path.realpath(source)
    found = set()
    for p in protect:
        for f in glob.glob(glob.escape(root.rstrip("/")) + p.rstrip("/")):
            if os.path.lexists(f):
                found.add("/" + os.path.relpath(f, root))
    return sorted(found)


def grouped(paths: list[str], protect: list[str]) -> list[str]:
    """Paths shortened for a message: those matching one wildcard pattern as the pattern and their number."""
    out, left = [], list(paths)
    for p in protect:
        if any(c in p for c in "*?["):
            hit = [f for f in left if fnmatch.fnmatchcase(f, p)]
            if len(hit) > 1:
                out.append(f"{p} ({len(hit)})")
                left = [f for f in left if f not in hit]
    return sorted(out + left)


def verify(remote: Remote, req: PushRequest) -> list[str]:
    """Compare every file by checksum (rsync --checksum --dry-run); the differences, as rsync itemizes them."""
    protect = _protect_list(req)
    pr = probe(remote, req.dest, protect)
    argv = rsync_argv(req, remote, filters(req, pr, protect), dry_run=True, checksum=True)
    lines: list[str] = []
    r = runner.run(argv, check=False, on_line=lines.append, trace_output=True)
    if r.returncode == 255:
        raise remote.ssh_error(r.tail)
    if r.returncode not in (0, 24):
        raise CommandError(runner.show(argv), r.returncode, [shown(t) for t in r.tail[-12:]],
                           "the checksum comparison failed")
    c = parse(lines)
    return [n for n, _ in c.sent] + [f"(deleted on the source) {d}" for d in c.deleted] + \
        ([f"{c.created} paths missing on {remote.host}"] if c.created else []) + \
        ([f"{c.attrs} paths with other owners, modes or times"] if c.attrs else [])


def summary(c: Changes, dry: bool) -> list[str]:
    verb = "would send" if dry else "sent"
    out = [f"{verb} {len(c.sent)} files ({human(c.bytes)}), "
           f"{'would create' if dry else 'created'} {c.created} directories/links/devices, "
           f"{'would update' if dry else 'updated'} attributes of {c.attrs}, "
           f"{'would delete' if dry else 'deleted'} {len(c.deleted)}"]
    if c.not_sent:
        out.append(f"not sent (per-host files the destination has none of): {', '.join(c.not_sent[:20])}"
                   f"{' ...' if len(c.not_sent) > 20 else ''}; a chroot gets its own from `migrate chroot-install`; "
                   "--unprotect PATH sends the source's")
    if not dry and "Total bytes sent" in c.stats:
        out.append(f"on the wire: {human(c.stats['Total bytes sent'])} sent, "
                   f"{human(c.stats.get('Total bytes received', 0))} received "
                   f"in {c.stats.get('seconds_x1000', 0) / 1000:.1f} s")
    return out
