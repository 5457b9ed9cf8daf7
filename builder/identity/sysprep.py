"""`imgbuild sysprep TARGET`: a used guest made into a clean template, as virt-sysprep does, on a directory, an
LXC container, an output or an ext2/3/4 image (loop-mounted while it runs; never one in use).

Each operation says what it removes (`--list-operations`). The defaults lose nothing a template needs; the opt-in
ones remove people's data (ssh-userdir, user-account). The guest's files are data, never code: nothing in the
guest runs. Every path is looked up without following a link on the way: a link where a directory is expected
(/var/log pointing at /etc, say) is left alone and named, so sysprep never empties what a link points to; a file
is removed as itself, a link as a link. `--dry-run` lists every path it would touch and changes nothing.
"""
from __future__ import annotations

import fnmatch
import re
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from builder.build.steps import cleanup
from builder.core.errors import InputError
from builder.core.rootfs import RootFS

Kind = Literal["remove", "truncate", "empty", "edit"]
HOMES = ("/root", "/home/*")
HISTORIES = (".bash_history", ".zsh_history", ".ash_history", ".sh_history", ".history", ".mksh_history",
             ".python_history", ".mysql_history", ".psql_history", ".sqlite_history", ".lesshst", ".viminfo",
             ".wget-hsts", ".node_repl_history")
ROTATED = re.compile(r"(\.\d+)(\.(gz|xz|bz2|zst|lz4))?$|\.(gz|xz|bz2|zst|lz4|old)$|-\d{8}(\.(gz|xz|bz2|zst))?$")
UID_MIN = 1000
NOBODY = 65534


@dataclass(frozen=True)
class Action:
    op: str
    kind: Kind
    path: str
    apply: Callable[[], object] = field(compare=False, repr=False)

    def show(self) -> str:
        return f"{self.op}: {self.kind} {self.path}"


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)     # links where directories were expected

    def add(self, op: str, kind: Kind, path: str, apply: Callable[[], object]) -> None:
        self.actions.append(Action(op, kind, path, apply))

    def skip(self, path: str) -> None:
        msg = f"{path}: a symbolic link where a directory is expected; left alone"
        if msg not in self.skipped:
            self.skipped.append(msg)


# ------------------------------------------------------------------ finding paths, never through a link

class Finder:
    """Paths of the tree, every directory on the way a real one (a link there is skipped and said)."""

    def __init__(self, root: RootFS, plan: Plan):
        self.root, self.plan = root, plan

    def kind(self, path: str) -> int | None:
        st = self.root.lstat(path)
        return None if st is None else stat.S_IFMT(st.st_mode)

    def real_dir(self, path: str) -> bool:
        cur = ""
        for part in [p for p in path.split("/") if p]:
            cur += "/" + part
            k = self.kind(cur)
            if k == stat.S_IFLNK:
                self.plan.skip(cur)
                return False
            if k != stat.S_IFDIR:
                return False
        return True

    def glob(self, pattern: str) -> list[str]:
        """Matches of pattern (fnmatch per component; `*` never crosses `/`), sorted."""
        found = [""]
        parts = [p for p in pattern.split("/") if p]
        for i, part in enumerate(parts):
            nxt = []
            for base in found:
                if base and not self.real_dir(base):
                    continue
                wild = any(c in part for c in "*?[")
                for n in self.root.listdir(base or "/") if wild else [part]:
                    p = f"{base}/{n}"
                    k = self.kind(p)
                    if k is None or not fnmatch.fnmatchcase(n, part):
                        continue
                    if i == len(parts) - 1 or k == stat.S_IFDIR:
                        nxt.append(p)
                    elif k == stat.S_IFLNK:
                        self.plan.skip(p)
            found = nxt
        return sorted(found)

    def files(self, top: str) -> list[str]:
        """Everything but directories under top, recursively (never through a link), sorted."""
        if not self.real_dir(top):
            return []
        out = []
        for n in self.root.listdir(top):
            p = f"{top.rstrip('/')}/{n}"
            k = self.kind(p)
            if k == stat.S_IFDIR:
                out += self.files(p)
            elif k is not None:
                out.append(p)
        return out

    def entries(self, top: str) -> list[str]:
        """The entries directly in top (a real directory), sorted."""
        return [f"{top.rstrip('/')}/{n}" for n in self.root.listdir(top)] if self.real_dir(top) else []


def _remove(root: RootFS, plan: Plan, op: str, paths: Iterable[str]) -> None:
    for p in paths:
        plan.add(op, "remove", p, lambda p=p: root.remove(p, tree=True))


def _truncate(root: RootFS, plan: Plan, op: str, paths: Iterable[str]) -> None:
    for p in paths:
        st = root.lstat(p)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size:
            plan.add(op, "truncate", p, lambda p=p: root.truncate(p))


# ------------------------------------------------------------------ the operations

def _histories(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
    homes = [h for pattern in HOMES for h in f.glob(pattern) if f.kind(h) == stat.S_IFDIR]
    _remove(root, plan, op, [f"{h}/{n}" for h in homes for n in HISTORIES if f.kind(f"{h}/{n}") is not None])


def _spool(*tops: str) -> Callable[[RootFS, Plan, Finder, str], None]:
    """The files under each top (the directories stay, with their modes: cron's crontabs is 1730 root:crontab)."""
    def run(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
        _remove(root, plan, op, [p for t in tops for p in f.files(t)])
    return run


def _patterns(*patterns: str) -> Callable[[RootFS, Plan, Finder, str], None]:
    def run(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
        _remove(root, plan, op, sorted({p for pat in patterns for p in f.glob(pat)}))
    return run


def _contents(*tops: str) -> Callable[[RootFS, Plan, Finder, str], None]:
    """Everything in each top (the top itself stays)."""
    def run(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
        _remove(root, plan, op, [p for t in tops for p in f.entries(t)])
    return run


def _logs(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
    """Rotated logs go; the others are emptied in place (file, mode and owner kept: daemons append to them);
    the journal's files go (journald makes new ones)."""
    journal = [p for p in f.entries("/var/log/journal")]
    _remove(root, plan, op, journal)
    logs = [p for p in f.files("/var/log") if not p.startswith("/var/log/journal/")]
    _remove(root, plan, op, [p for p in logs if ROTATED.search(p.rsplit("/", 1)[1])])
    _truncate(root, plan, op, [p for p in logs if not ROTATED.search(p.rsplit("/", 1)[1])])


def _machine_id(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
    st = root.lstat("/etc/machine-id")
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size and f.real_dir("/etc"):
        # empty, not removed: systemd makes a new one at the next boot (and a missing file means "first boot")
        plan.add(op, "empty", "/etc/machine-id", lambda: root.truncate("/etc/machine-id"))
    _remove(root, plan, op, f.glob("/var/lib/dbus/machine-id"))


def _ssh_hostkeys(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
    keys = f.glob("/etc/ssh/ssh_host_*")
    if keys:
        _remove(root, plan, op, keys)
        # what a build does: the first-boot unit (or init script) that runs ssh-keygen -A, so sshd starts
        plan.add(op, "edit", "/etc/systemd/system/imgbuild-ssh-keygen.service (or /etc/init.d/imgbuild-ssh-keygen)",
                 lambda: cleanup.ssh_keys(root))


def _net_hwaddr(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
    """HWADDR= and MACADDR= lines of EL's ifcfg files: a template's NIC has another MAC in every clone."""
    for p in f.glob("/etc/sysconfig/network-scripts/ifcfg-*"):
        data = root.read_bytes(p, follow_last=False, limit=1 << 20)
        if data is None or len(data) > 1 << 20:
            continue
        text = data.decode("utf-8", "surrogateescape")
        new = re.sub(r"(?m)^[ \t]*(HWADDR|MACADDR)=.*\n?", "", text)
        if new != text:
            st = root.lstat(p)
            plan.add(op, "edit", p, lambda p=p, new=new, st=st: root.write(
                p, new.encode("utf-8", "surrogateescape"), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))


def _accounts(root: RootFS, plan: Plan, f: Finder, op: str) -> None:
    """Accounts of people (uid UID_MIN and up, not nobody) with their personal groups and home directories under
    /home; root and system accounts stay."""
    text = _text(root, "/etc/passwd")
    if text is None:
        return
    users, homes = set(), []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit() and UID_MIN <= int(parts[2]) != NOBODY and parts[0] != "root":
            users.add(parts[0])
            home = parts[5]
            if re.fullmatch(r"/home/[^/]+", home) and f.kind(home) == stat.S_IFDIR and f.real_dir("/home"):
                homes.append(home)
    if not users:
        return
    for path in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"):
        old = _text(root, path)
        if old is None:
            continue
        new = _drop_users(old, users, path.rsplit("/", 1)[1])
        if new != old:
            st = root.lstat(path)
            plan.add(op, "edit", f"{path} (remove {', '.join(sorted(users))})", lambda path=path, new=new, st=st:
                     root.write(path, new, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
    _remove(root, plan, op, sorted(homes))
    _remove(root, plan, op, [p for u in sorted(users) for d in ("/var/spool/mail", "/var/mail")
                             for p in f.glob(f"{d}/{u}")])


def _text(root: RootFS, path: str) -> str | None:
    st = root.lstat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    data = root.read_bytes(path, follow_last=False, limit=16 << 20)
    if data is None or len(data) > 16 << 20:
        raise InputError(f"{path}: larger than 16 MiB, not an account file sysprep edits",
                         "look at the guest's file, or leave out user-account")
    return data.decode("utf-8", "surrogateescape")


def _drop_users(text: str, users: set[str], kind: str) -> str:
    """passwd/shadow without the users' lines; group/gshadow without their personal groups (the group of the
    same name) and without them among the others' members (gshadow: and administrators)."""
    lists = {"group": (3,), "gshadow": (2, 3)}.get(kind, ())
    out = []
    for line in text.splitlines(keepends=True):
        parts = line.rstrip("\n").split(":")
        if parts[0] in users:
            continue
        if lists and len(parts) == 4:
            for i in lists:
                parts[i] = ",".join(m for m in parts[i].split(",") if m and m not in users)
            line = ":".join(parts) + ("\n" if line.endswith("\n") else "")
        out.append(line)
    return "".join(out)


@dataclass(frozen=True)
class Operation:
    name: str
    default: bool
    what: str                                            # what it removes (--list-operations)
    run: Callable[[RootFS, Plan, Finder, str], None]


OPERATIONS = (
    Operation("abrt-data", True, "ABRT's crash data: /var/spool/abrt/*, /var/tmp/abrt/*",
              _patterns("/var/spool/abrt/*", "/var/tmp/abrt/*")),
    Operation("bash-history", True, "shell and tool histories of root and /home/*: " + ", ".join(HISTORIES),
              _histories),
    Operation("crash-data", True, "kernel crash dumps: /var/crash/*, /var/log/dump/*",
              _patterns("/var/crash/*", "/var/log/dump/*")),
    Operation("cron-spool", True, "users' crontabs and at jobs (the spool directories stay): /var/spool/cron, "
              "/var/spool/at, /var/spool/atjobs, /var/spool/atspool",
              _spool("/var/spool/cron", "/var/spool/at", "/var/spool/atjobs", "/var/spool/atspool")),
    Operation("dhcp-client-state", True, "DHCP leases: /var/lib/dhclient/*, /var/lib/dhcp/*leases*, "
              "/var/lib/NetworkManager/*.lease, /var/lib/dhcpcd*/*.lease, /var/lib/systemd/netif/leases/*",
              _patterns("/var/lib/dhclient/*", "/var/lib/dhcp/*leases*", "/var/lib/dhcp/dhclient*",
                        "/var/lib/NetworkManager/*.lease", "/var/lib/NetworkManager/dhclient-*",
                        "/var/lib/dhcpcd/*.lease", "/var/lib/dhcpcd5/*.lease", "/var/lib/systemd/netif/leases/*")),
    Operation("logfiles", True, "logs under /var/log: emptied in place (files, modes and owners kept); rotated "
              "ones (.1, .gz, -YYYYMMDD) and the journal's files removed", _logs),
    Operation("machine-id", True, "/etc/machine-id emptied (systemd makes a new one at the next boot), "
              "/var/lib/dbus/machine-id removed", _machine_id),
    Operation("mail-spool", True, "local mail: /var/spool/mail/*, /var/mail/*", _spool("/var/spool/mail", "/var/mail")),
    Operation("net-hwaddr", True, "HWADDR= and MACADDR= of /etc/sysconfig/network-scripts/ifcfg-* (EL)", _net_hwaddr),
    Operation("package-manager-cache", True, "downloaded packages and caches: /var/cache/apt/archives/*.deb, "
              "/var/cache/apt/*.bin, /var/cache/yum/*, /var/cache/dnf/*, /var/cache/zypp/*",
              _patterns("/var/cache/apt/archives/*.deb", "/var/cache/apt/archives/partial/*", "/var/cache/apt/*.bin",
                        "/var/cache/yum/*", "/var/cache/dnf/*", "/var/cache/zypp/*")),
    Operation("passwd-backups", True, "the account files' backups, with old password hashes: /etc/passwd-, "
              "/etc/shadow-, /etc/group-, /etc/gshadow-",
              _patterns("/etc/passwd-", "/etc/shadow-", "/etc/group-", "/etc/gshadow-")),
    Operation("random-seed", True, "the saved random seed (every clone would start from the same one): "
              "/var/lib/systemd/random-seed, /var/lib/random-seed, /var/lib/urandom/random-seed",
              _patterns("/var/lib/systemd/random-seed", "/var/lib/random-seed", "/var/lib/urandom/random-seed")),
    Operation("rpm-db", True, "rpm's database locks and environment: /var/lib/rpm/__db.*",
              _patterns("/var/lib/rpm/__db.*", "/var/lib/rpm/.rpm.lock")),
    Operation("ssh-hostkeys", True, "ssh host keys /etc/ssh/ssh_host_*; the guest makes new ones at its next boot "
              "(a one-shot unit or init script running ssh-keygen -A is installed)", _ssh_hostkeys),
    Operation("ssh-userdir", False, "users' ssh directories (authorized keys, known hosts, private keys): "
              "/root/.ssh, /home/*/.ssh", _patterns("/root/.ssh", "/home/*/.ssh")),
    Operation("tmp-files", True, "temporary files: everything in /tmp and /var/tmp", _contents("/tmp", "/var/tmp")),
    Operation("udev-persistent-net", True, "/etc/udev/rules.d/70-persistent-net.rules (a clone's NIC would "
              "become eth1)", _patterns("/etc/udev/rules.d/70-persistent-net.rules")),
    Operation("user-account", False, f"accounts of people (uid {UID_MIN} and up except nobody) from passwd, "
              "shadow, group, gshadow, with their homes under /home and their mail", _accounts),
    Operation("yum-uuid", True, "yum's installation id: /var/lib/yum/uuid", _patterns("/var/lib/yum/uuid")),
)
BY_NAME = {o.name: o for o in OPERATIONS}


def select(spec: str | None) -> list[Operation]:
    """--operations: comma-separated; `defaults`, `all`, NAME adds, -NAME removes. A spec that starts with a
    name (not -NAME) selects only what it names; one that starts with -NAME starts from the defaults."""
    if not spec:
        return [o for o in OPERATIONS if o.default]
    chosen: list[str] = []
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if items and items[0].startswith("-"):
        chosen = [o.name for o in OPERATIONS if o.default]
    for item in items:
        name = item.lstrip("+-")
        names = ([o.name for o in OPERATIONS if o.default] if name == "defaults" else
                 [o.name for o in OPERATIONS] if name == "all" else [name])
        for n in names:
            if n not in BY_NAME:
                raise InputError(f"--operations: no operation {n!r}",
                                 "imgbuild sysprep --list-operations lists them")
            if item.startswith("-"):
                chosen = [c for c in chosen if c != n]
            elif n not in chosen:
                chosen.append(n)
    return [o for o in OPERATIONS if o.name in chosen]


def plan(root: RootFS, ops: list[Operation]) -> Plan:
    """What the operations would do to the tree (nothing done yet)."""
    p = Plan()
    f = Finder(root, p)
    for op in ops:
        op.run(root, p, f, op.name)
    return p


def apply(p: Plan) -> None:
    for a in p.actions:
        a.apply()
