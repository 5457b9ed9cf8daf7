"""LXC target: a container config (modern keys for LXC 2.1+, or the legacy keys of LXC 0.7-2.0), and
`install()`, which unpacks a built output as a container under an lxcpath."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from builder.build.steps import devices as devices_step
from builder.core import checks
from builder.core import proc as runner
from builder.core.checks import IfName
from builder.core.errors import BuilderError, InputError
from builder.core.outputs import write_atomic
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe

log = logging.getLogger("imgbuild")
DOC = "an LXC container config (modern or legacy keys, cgroup v1 and v2 device rules)"

DEFAULT_LXCPATH = "/var/lib/lxc"
LINUX_ARCH = {"amd64": "x86_64", "i386": "i686", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv5tel",
              "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64el": "mips64"}
# what every container may use: LXC's own common.conf list, plus tun (for VPN guests)
ALLOW = ("c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm",
         "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:229 rwm", "c 10:200 rwm")
CAP_DROP = "sys_module mac_admin mac_override sys_time sys_rawio"


@dataclass(frozen=True)
class LxcOptions:
    """LXC target."""

    bridge: IfName = opt("lxcbr0", doc="host bridge every NIC is attached to")
    version: Literal["modern", "legacy", "both"] = opt("modern", doc="modern: LXC 2.1 and later (lxc.net.N.*, "
                                                                   "lxc.uts.name); legacy: LXC 0.7 to 2.0 "
                                                                   "(lxc.network.*); both: lxc.conf and "
                                                                   "lxc.legacy.conf (install-lxc picks by the "
                                                                   "host's LXC)")
    cgroup: Literal["auto", "v1", "v2", "both"] = opt("auto", doc="device allow-list as cgroup v1 keys, v2 keys or "
                                                                "both; auto: what the build host uses (legacy: "
                                                                "always v1). install-lxc adapts to its host.")
    tty: int = opt(1, doc="number of ttys (lxc.tty.max)")
    pty: int = opt(1024, doc="number of ptys (lxc.pty.max)")
    lxcpath: str = opt(DEFAULT_LXCPATH, doc="where the container will live; the config's paths point there")
    extra: tuple[str, ...] = opt((), doc="raw config lines appended at the end")


Options = LxcOptions


def host_cgroup(mountinfo: str = "/proc/self/mountinfo") -> str:
    """Which device-rule keys this host's LXC can apply: v1 when the devices controller is a cgroup v1
    hierarchy (also on hybrid hosts, where v2 device rules fail to load), else v2."""
    with open(mountinfo) as f:
        return cgroup_layout(f.read())


def cgroup_layout(mountinfo: str) -> str:
    """host_cgroup's answer from the text of a /proc/self/mountinfo (another host's, read over ssh)."""
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _, opts = (post.split() + ["", "", ""])[:3]
        if fstype == "cgroup" and "devices" in opts.split(","):
            return "v1"
    return "v2"


def adapt_cgroup(config: str, layout: str) -> tuple[str, list[str]]:
    """Drop device rules of the cgroup version this host does not use; returns (config, dropped keys)."""
    other = "lxc.cgroup2.devices." if layout == "v1" else "lxc.cgroup.devices."
    mine = "lxc.cgroup.devices." if layout == "v1" else "lxc.cgroup2.devices."
    lines = config.splitlines()
    if not any(line.strip().startswith(mine) for line in lines):
        return config, []  # only the other kind is there: keep it, LXC will say what it thinks
    kept = [line for line in lines if not line.strip().startswith(other)]
    dropped = sorted({line.split("=")[0].strip() for line in lines if line.strip().startswith(other)})
    return "\n".join(kept) + "\n", dropped


def _allow(recipe: "Recipe") -> list[str]:
    rules = list(ALLOW)
    for d in devices_step.nodes(recipe.devices):
        if d.type in ("c", "b"):
            r = f"{d.type} {d.major}:{d.minor} rwm"
            if r not in rules:
                rules.append(r)
    return rules


def render(recipe: "Recipe", opts: LxcOptions, name: str | None = None, lxcpath: str | None = None,
           version: str | None = None) -> str:
    name = name or recipe.name
    cdir = f"{(lxcpath or opts.lxcpath).rstrip('/')}/{name}"
    modern = (version or opts.version) != "legacy"
    k = (lambda m, legacy: m if modern else legacy)
    out = [f"# written by imgbuild for {recipe.name} ({'LXC 2.1 and later' if modern else 'LXC 0.7 to 2.0'})",
           f"{k('lxc.uts.name', 'lxc.utsname')} = {recipe.hostname}",
           f"lxc.arch = {LINUX_ARCH.get(recipe.arch, recipe.arch)}",
           f"{k('lxc.rootfs.path', 'lxc.rootfs')} = {'dir:' if modern else ''}{cdir}/rootfs"]
    if modern:
        out += ["lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed", "lxc.autodev = 1"]
    else:
        out.append(f"lxc.mount = {cdir}/fstab")
    out += [f"{k('lxc.tty.max', 'lxc.tty')} = {opts.tty}", f"{k('lxc.pty.max', 'lxc.pts')} = {opts.pty}",
            f"lxc.cap.drop = {CAP_DROP}", ""]
    for n, (ifname, iface) in enumerate(recipe.network.items()):
        p = f"lxc.net.{n}." if modern else "lxc.network."
        out += [f"{p}type = veth", f"{p}link = {opts.bridge}", f"{p}flags = up", f"{p}name = {ifname}"]
        if iface.mac:
            out.append(f"{p}hwaddr = {iface.mac}")
        out.append("")
    cg = host_cgroup() if opts.cgroup == "auto" else opts.cgroup
    versions = ["v1"] if not modern or cg == "v1" else ["v2"] if cg == "v2" else ["v1", "v2"]
    for v in versions:
        key = "lxc.cgroup.devices" if v == "v1" else "lxc.cgroup2.devices"
        out.append(f"# devices (cgroup {v})")
        out.append(f"{key}.deny = a")
        out += [f"{key}.allow = {r}" for r in _allow(recipe)]
        out.append("")
    out += list(opts.extra)
    return "\n".join(out).rstrip("\n") + "\n"


LEGACY_FSTAB = ("proc {cdir}/rootfs/proc proc nodev,noexec,nosuid 0 0\n"
                "sysfs {cdir}/rootfs/sys sysfs defaults 0 0\n")


def produce(ctx: "Context", opts: "LxcOptions") -> dict[str, Path]:
    made = {}
    if opts.version in ("modern", "both"):
        made["lxc-config"] = ctx.stage / "lxc.conf"
        write_atomic(made["lxc-config"], render(ctx.recipe, opts, version="modern"))
    if opts.version in ("legacy", "both"):
        kind, file = ("lxc-legacy-config", "lxc.legacy.conf") if opts.version == "both" else ("lxc-config", "lxc.conf")
        made[kind] = ctx.stage / file
        write_atomic(made[kind], render(ctx.recipe, opts, version="legacy"))
        made["lxc-fstab"] = ctx.stage / "lxc.fstab"
        write_atomic(made["lxc-fstab"], LEGACY_FSTAB.format(cdir=f"{opts.lxcpath.rstrip('/')}/{ctx.recipe.name}"))
    return made


def host_is_legacy() -> bool:
    """Whether this host's LXC predates 2.1 (the legacy keys)."""
    try:
        out = runner.output(["lxc-start", "--version"])
    except BuilderError:
        return False
    m = re.match(r"(\d+)\.(\d+)", out)
    return bool(m) and (int(m.group(1)), int(m.group(2))) < (2, 1)


# ------------------------------------------------------------------ install


def artifact_files(output: Path, manifest: dict) -> dict[str, Path]:
    files = {a["kind"]: Path(output) / a["path"] for a in manifest["artifacts"]}
    if "lxc-legacy-config" in files and host_is_legacy():
        files["lxc-config"] = files["lxc-legacy-config"]
    if "tarball" not in files or "lxc-config" not in files:
        raise InputError(f"{output}: the build has no tarball or no lxc config",
                         "add targets: {tarball: {}, lxc: {}} to the recipe and build again")
    for kind in ("tarball", "lxc-config", "lxc-fstab"):
        f = files.get(kind)
        if f is not None and (f.is_symlink() or not f.is_file()):
            raise InputError(f"{f}: the output's {kind} is missing or not a regular file",
                             "build again")
    return files


MARK = "# written by imgbuild"


def installed_by_imgbuild(cdir: Path) -> bool:
    """Whether the container directory holds a container imgbuild installed: a real directory whose config (a
    regular file) starts with the line imgbuild writes first."""
    cfg = cdir / "config"
    if cdir.is_symlink() or not cdir.is_dir() or cfg.is_symlink() or not cfg.is_file():
        return False
    try:
        with open(cfg, "rb") as f:
            return f.readline().startswith(MARK.encode())
    except OSError:
        return False


def running(lxcpath: str | os.PathLike[str], name: str) -> str | None:
    """Why container NAME of LXCPATH counts as running (None when it does not): its LXC monitor process
    (`[lxc monitor] LXCPATH NAME`, found in /proc, so whatever network namespace it was started in), or
    lxc-info's state."""
    real = os.path.realpath(lxcpath)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read(4096).replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd.startswith("[lxc monitor] ") and cmd.endswith(f" {name}"):
            path = cmd[len("[lxc monitor] "):-len(name) - 1].strip()
            if path and os.path.realpath(path) == real:
                return f"its LXC monitor runs (pid {pid})"
    if runner.which("lxc-info"):
        try:
            state = runner.output(["lxc-info", "-P", real, "-n", name, "-s", "-H"]).strip()
        except BuilderError:
            state = ""
        if state and state not in ("STOPPED", "ABORTING"):
            return f"lxc-info says {state}"
    return None


def destination(lxcpath: str | os.PathLike[str], name: str, force: bool, what: str = "--name") -> Path:
    """LXCPATH/NAME for a container install-lxc may put there: NAME passes the Name check (`what` names where
    it came from), the result is a direct child of the resolved lxcpath and not a symlink; an existing one is
    replaced only with force, only when imgbuild installed it, and never while it runs."""
    dest = checks.child(lxcpath, name, what)
    if not os.path.lexists(dest):
        return dest
    if not force:
        raise InputError(f"{dest} already exists", "choose another --name, or --force to replace it")
    if not installed_by_imgbuild(dest):
        raise InputError(f"{dest} is not a container imgbuild installed (its config is missing or was not written "
                         "by imgbuild); --force replaces only those",
                         f"remove it yourself if you mean it (lxc-destroy -P {dest.parent} -n {name}), or choose "
                         "another --name")
    why = running(dest.parent, name)
    if why:
        raise InputError(f"container {name} in {dest.parent} is running ({why}); it is not replaced",
                         f"stop it first (lxc-stop -P {dest.parent} -n {name}), or choose another --name")
    return dest
