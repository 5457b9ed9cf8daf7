"""An OpenVZ CTID.conf (ctid.conf(5)) read as data, and what its limits become in an LXC config.

The file is another system's: it is parsed (`NAME="value"` lines, builder.identity.formats.shell), never sourced;
only the literal `$VEID` of VE_PRIVATE is expanded by the caller; every value used is checked, and a bad one is an
InputError naming the file, the line and the key (exit 2)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.build.targets.lxc import CAP_DROP
from builder.core.errors import InputError
from builder.core.untrusted import read_file
from builder.identity.formats.shell import shvars

MAX_CONF = 256 << 10          # a CTID.conf is a few KB
CONF_HINT = "give the VPS's config file, e.g. /etc/vz/conf/101.conf (a copy of it is fine)"
PAGE = 4096
UNLIMITED = (1 << 63) - 1     # LONG_MAX: vzctl's "unlimited"
CPU_PERIOD = 100_000

# the CTID.conf keys this conversion reads; every other key set is listed as a note
USED = {"HOSTNAME", "IP_ADDRESS", "NETIF", "NAMESERVER", "SEARCHDOMAIN", "NAME", "ONBOOT", "VE_PRIVATE",
        "VE_ROOT", "OSTEMPLATE", "PHYSPAGES", "SWAPPAGES", "CPUS", "CPULIMIT", "CPUUNITS", "CPUMASK", "NUMPROC"}
# keys that need nothing in LXC (vzctl's own bookkeeping)
NOTHING_TO_DO = {"VE_LAYOUT", "ORIGIN_SAMPLE", "VEID", "CONFIG_CUSTOMIZED", "DESCRIPTION", "LOCAL_UID",
                 "LOCAL_GID", "BOOTORDER", "VE_TYPE"}
WHY_NOT = {
    "DISKSPACE": "disk quota: LXC's dir backend has none (put the rootfs on a filesystem or LV of that size)",
    "DISKINODES": "inode quota: LXC's dir backend has none",
    "QUOTATIME": "quota grace time: no quota in LXC",
    "QUOTAUGIDLIMIT": "per-user quotas inside the container: not in LXC",
    "IOPRIO": "I/O priority: set the host's blkio/io weight by hand if you need it",
    "IOLIMIT": "I/O bandwidth limit: set lxc.cgroup.blkio.throttle.* by hand (it names a block device)",
    "IOPSLIMIT": "I/O operations limit: set lxc.cgroup.blkio.throttle.* by hand (it names a block device)",
    "FEATURES": "OpenVZ features (nfs, ppp, sysfs ...): grant what the guest needs with LXC keys by hand",
    "CAPABILITY": "capabilities: LXC drops " + CAP_DROP + " and keeps the rest",
    "DEVICES": "device permissions: the LXC config allows what a container normally needs; add "
               "lxc.cgroup.devices.allow lines for more",
    "DEVNODES": "device nodes: the LXC config allows what a container normally needs; add "
                "lxc.cgroup.devices.allow lines and lxc.mount.entry binds for more",
    "DISABLED": "OpenVZ's start lock: an LXC container starts when you start it",
    "STOP_TIMEOUT": "stop timeout: give lxc-stop -t",
    "NETFILTER": "netfilter modules: an LXC container has its own netfilter tables in its network namespace",
}
BEANCOUNTERS = ("KMEMSIZE", "LOCKEDPAGES", "PRIVVMPAGES", "SHMPAGES", "NUMTCPSOCK", "NUMFLOCK", "NUMPTY",
                "NUMSIGINFO", "TCPSNDBUF", "TCPRCVBUF", "OTHERSOCKBUF", "DGRAMRCVBUF", "NUMOTHERSOCK", "DCACHESIZE",
                "NUMFILE", "NUMIPTENT", "VMGUARPAGES", "OOMGUARPAGES", "AVNUMPROC", "MEMINFO")
_SUFFIX = {"": None, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)([BKMGT]?)$", re.I)
_VEID = re.compile(r"\$(?:VEID|\{VEID\})")



# ------------------------------------------------------------------ the CTID.conf, as data


@dataclass(frozen=True)
class VzConf:
    """A CTID.conf read as data: the last value of each key and the line it is on."""

    path: Path
    ctid: str | None
    values: dict[str, str]
    lines: dict[str, int]

    def get(self, key: str) -> str | None:
        v = self.values.get(key)
        return v if v is not None and v.strip() != "" else None

    def where(self, key: str) -> str:
        return f"{self.path}:{self.lines.get(key, 0)}: {key}"


def parse_conf(text: str, path: Path) -> VzConf:
    """vzctl's `KEY="value"` lines (ctid.conf(5)); comments and blank lines skipped. Nothing is evaluated: the
    value is the text between the quotes (or up to a trailing comment)."""
    _, found = shvars(text)
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for i, m in found:
        key = m.group("key")
        values[key] = m.group("val")
        lines[key] = i + 1
    ctid = path.name[:-len(".conf")] if path.name.endswith(".conf") else None
    return VzConf(path, ctid if ctid and ctid.isdigit() else None, values, lines)


def read_conf(path: Path) -> VzConf:
    data = read_file(path, what="an OpenVZ CTID.conf", limit=MAX_CONF, hint=CONF_HINT)
    try:
        if b"\0" in data:
            raise ValueError
        text = data.decode("utf-8")
    except ValueError:
        raise InputError(f"{path}: not an OpenVZ CTID.conf: not UTF-8 text", CONF_HINT) from None
    conf = parse_conf(text, path)
    if not conf.values:
        raise InputError(f"{path}: not an OpenVZ CTID.conf: no KEY=\"value\" line in it", CONF_HINT)
    return conf



def bad_value(conf: VzConf, key: str, why: str, hint: str) -> InputError:
    value = conf.values.get(key, "")
    shown = value if len(value) <= 80 else value[:77] + "..."
    return InputError(f"{conf.where(key)}={shown!r}: {why}", hint)


def _count(conf: VzConf, key: str, text: str, unit: int) -> int | None:
    """One vzctl number in bytes (`unit`: the size of one when it has no suffix: a page for *PAGES); None for
    unlimited."""
    t = text.strip()
    if t.lower() == "unlimited":
        return None
    m = _NUMBER.match(t)
    if not m:
        raise bad_value(conf, key, f"{t!r} is not a number vzctl takes (e.g. 262144, 1G, unlimited)",
                   "fix the value in a copy of the config")
    n, suffix = float(m.group(1)), m.group(2).upper()
    if suffix == "" and int(n) >= UNLIMITED:
        return None
    size = int(n * (_SUFFIX[suffix] or unit))
    return None if size >= UNLIMITED else size


def _limit(conf: VzConf, key: str, unit: int = PAGE) -> int | None:
    """The limit of a `barrier:limit` (or single) value, in bytes (or a count with unit=1); None: unlimited."""
    v = conf.get(key)
    if v is None:
        return None
    return _count(conf, key, v.split(":")[-1], unit)


# ------------------------------------------------------------------ what the container becomes



def memsw(layout: str) -> bool:
    """Whether this host's v1 memory controller accounts swap (memory.memsw.*): without it LXC cannot set it."""
    return layout != "v1" or os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


def limits(conf: VzConf, layout: str, notes: list[str], memsw: bool = True) -> list[str]:
    """The cgroup lines for the limits that have an LXC equivalent (`layout`: v1 or v2 keys); every other limit
    set is a note."""
    v1 = layout == "v1"
    k = "lxc.cgroup." if v1 else "lxc.cgroup2."
    out: list[str] = []
    phys = _limit(conf, "PHYSPAGES")
    swap = _limit(conf, "SWAPPAGES")
    if phys is not None:
        out.append(f"{k}memory.{'limit_in_bytes' if v1 else 'max'} = {phys}")
        if swap is not None:
            if not v1:
                out.append(f"{k}memory.swap.max = {swap}")
            elif memsw:
                out.append(f"{k}memory.memsw.limit_in_bytes = {phys + swap}")
            else:
                notes.append(f"{conf.where('SWAPPAGES')}: this host's kernel does not account swap "
                             "(no memory.memsw): the swap limit is not set")
    elif swap is not None:
        notes.append(f"{conf.where('SWAPPAGES')}: a swap limit without a RAM limit (PHYSPAGES unlimited): not set")
    quotas = []
    cpus = conf.get("CPUS")
    if cpus is not None:
        if not cpus.strip().isdigit() or int(cpus) < 1:
            raise bad_value(conf, "CPUS", "not a number of CPUs", "fix CPUS in a copy of the config")
        quotas.append(int(cpus) * CPU_PERIOD)
    cpulimit = conf.get("CPULIMIT")
    if cpulimit is not None:
        m = re.fullmatch(r"(\d+)%?", cpulimit.strip())
        if not m:
            raise bad_value(conf, "CPULIMIT", "not a percentage (100 is one CPU)",
                            "fix CPULIMIT in a copy of the config")
        if int(m.group(1)) > 0:
            quotas.append(int(m.group(1)) * CPU_PERIOD // 100)
    if quotas:
        q = min(quotas)
        out += ([f"{k}cpu.cfs_period_us = {CPU_PERIOD}", f"{k}cpu.cfs_quota_us = {q}"] if v1
                else [f"{k}cpu.max = {q} {CPU_PERIOD}"])
    units = conf.get("CPUUNITS")
    if units is not None:
        if not units.strip().isdigit():
            raise bad_value(conf, "CPUUNITS", "not a number", "fix CPUUNITS in a copy of the config")
        u = int(units)        # OpenVZ's default weight is 1000; cgroup v1's 1024, v2's 100
        out.append(f"{k}cpu.shares = {max(2, min(262144, round(u * 1024 / 1000)))}" if v1
                   else f"{k}cpu.weight = {max(1, min(10000, round(u / 10)))}")
    mask = conf.get("CPUMASK")
    if mask is not None and mask.strip() != "all":
        if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", mask.strip()):
            raise bad_value(conf, "CPUMASK", "not a CPU list (0-3,5 or all)", "fix CPUMASK in a copy of the config")
        out.append(f"{k}cpuset.cpus = {mask.strip()}")
    numproc = _limit(conf, "NUMPROC", unit=1)
    if numproc is not None:
        out.append(f"{k}pids.max = {numproc}")
    for key in sorted(conf.values):
        if key in USED or key in NOTHING_TO_DO or conf.get(key) is None:
            continue
        if key in WHY_NOT:
            notes.append(f"{conf.where(key)}={conf.values[key]!r}: no LXC equivalent: {WHY_NOT[key]}")
        elif key in BEANCOUNTERS:
            notes.append(f"{conf.where(key)}={conf.values[key]!r}: an OpenVZ beancounter, no LXC equivalent "
                         "(the memory cgroup limits RAM and swap as a whole)")
        else:
            notes.append(f"{conf.where(key)}: not known to this conversion, not carried over")
    return out
