"""Xen target: a PV guest's domain config (xl syntax for Xen 4, or xm syntax for Xen 3 hosts) and the disk image
it names, made with the image target's make_image.

boot: pygrub puts a bootloader config INSIDE the image, which pygrub reads on the Xen host: GRUB legacy
/boot/grub/menu.lst (what every pygrub reads, Xen 3's too) and /boot/grub/grub.cfg (what Xen 4's pygrub looks
for first), both naming the newest kernel and its initrd in the tree's /boot. boot: kernel boots a kernel
that lives on the Xen host (kernel/ramdisk paths there).

Every xl config written here is read back with xl's own parser (builder.guestconf.xl) when it is installed; every xm
config is read back by the converter's reader (builder.guestconf.xen), so it also converts to xl cleanly.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from builder.build.families import family_of
from builder.build.targets import image
from builder.build.targets.vm import HostPath
from builder.core import e2fs
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.core.outputs import write_atomic
from builder.core.schema import Check, FieldError, opt
from builder.guestconf import xen as xenconf
from builder.guestconf import xl

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe

log = logging.getLogger("imgbuild")
DOC = ("a Xen PV guest: NAME.cfg (xl for Xen 4, or xm for Xen 3) and the disk image NAME.img it names, "
       "bootable by pygrub or a kernel on the Xen host")

PYGRUB = {"xl": "pygrub", "xm": "/usr/bin/pygrub"}     # Xen 3 configs hard-code pygrub's path
DEFAULT_DIR = "/var/lib/xen/images"
HVC0_SINCE = (2, 6, 26)     # pvops kernels: console hvc0; older Xen kernels (EL5's 2.6.18 kernel-xen): xvc0
Action = Literal["destroy", "restart", "preserve", "rename-restart", "coredump-destroy", "coredump-restart"]


def _vdev(v: str) -> str:
    if not re.fullmatch(r"(xvd|sd|hd)[a-z]{1,2}[0-9]{0,2}", v):
        raise ValueError(f"{v!r} is not a Xen virtual disk name (xvda, xvda1, sda ...)")
    return v


def _args(v: str) -> str:
    if re.search(r"[\"\\\n]", v) or any(ord(c) < 32 for c in v):
        raise ValueError(f"{v!r}: quotes, backslashes and control characters cannot go on a kernel command line "
                         "written into a Xen config")
    return v


VDev = Annotated[str, Check(_vdev, {"pattern": r"^(xvd|sd|hd)[a-z]+[0-9]*$"}, describe="virtual disk (xvda)")]
KernelArgs = Annotated[str, Check(_args, {}, describe="kernel arguments")]


@dataclass(frozen=True)
class XenOptions:
    """Xen target (PV guests)."""

    toolstack: Literal["xl", "xm"] = opt("xl", doc="xl: an xl config for Xen 4 (bootloader \"pygrub\"); xm: a "
                                                  "Python config for Xen 3's xm (bootloader /usr/bin/pygrub)")
    memory: int = opt(512, doc="RAM in MB")
    vcpus: int = opt(1, doc="virtual CPUs")
    boot: Literal["pygrub", "kernel"] = opt("pygrub", doc="pygrub: the host's pygrub boots the kernel inside the "
                                                         "image (the tree needs a kernel package); kernel: a "
                                                         "kernel file on the Xen host")
    kernel: HostPath | None = opt(None, doc="boot: kernel: the kernel's path on the Xen host")
    ramdisk: HostPath | None = opt(None, doc="boot: kernel: the initrd's path on the Xen host")
    extra: KernelArgs | None = opt(None, doc="more kernel arguments (after root= and console=)")
    root: str | None = opt(None, doc="root device on the kernel command line (default: /dev/VDEV)")
    console: Literal["hvc0", "xvc0"] | None = opt(None, doc="the guest kernel's Xen console: hvc0 (kernels "
                                                           "2.6.26 and later) or xvc0 (EL5's kernel-xen and other "
                                                           "old Xen kernels); default: from the tree's kernel, "
                                                           "else hvc0")
    disk: Literal["file", "phy"] = opt("file", doc="file: an image file on the Xen host; phy: a block device "
                                                  "(LVM volume ...) you copy NAME.img onto")
    path: HostPath | None = opt(None, doc=f"where the disk is on the Xen host (file: default {DEFAULT_DIR}/"
                                          "NAME.img; phy: the block device, required)")
    vdev: VDev = opt("xvda", doc="the disk as the guest sees it")
    bridge: str = opt("xenbr0", doc="host bridge for every vif (it must exist on the host: xl never creates it)")
    vif_ip: bool = opt(False, doc="also put each static address in its vif (ip=), for hosts whose vif scripts "
                                  "filter by address")
    on_poweroff: Action = opt("destroy", doc="what Xen does when the guest powers off")
    on_reboot: Action = opt("restart", doc="what Xen does when the guest reboots")
    on_crash: Action = opt("destroy", doc="what Xen does when the guest crashes")
    fs: Literal["ext4", "ext3", "ext2"] | None = opt(None, doc="image filesystem (default: ext4 for xl, ext3 for "
                                                              "xm: Xen 3's pygrub and EL5 kernels read no ext4)")
    size: image.Size | None = opt(None, doc="image size (default: the tree plus headroom, as the image target)")
    label: str = opt("root", doc="filesystem label; the image's fstab mounts / by it")

    def __post_init__(self) -> None:
        if self.boot == "kernel" and self.kernel is None:
            raise FieldError("kernel", "boot: kernel needs kernel: the kernel's path on the Xen host")
        if self.boot == "pygrub" and (self.kernel or self.ramdisk):
            raise FieldError("kernel" if self.kernel else "ramdisk", "kernel and ramdisk are for boot: kernel; "
                                                                     "pygrub finds them inside the image")
        if self.disk == "phy" and self.path is None:
            raise FieldError("path", "disk: phy needs path: the block device on the Xen host, e.g. "
                                     "/dev/vg0/NAME")
        if self.disk == "phy" and self.path and not self.path.startswith("/dev/"):
            raise FieldError("path", f"disk: phy needs a block device under /dev, not {self.path}")
        if self.memory < 32:
            raise FieldError("memory", f"{self.memory} MB is too little for a Linux guest (at least 32)")
        if self.vcpus < 1:
            raise FieldError("vcpus", "at least 1")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", self.bridge):
            raise FieldError("bridge", f"{self.bridge!r} is not a bridge name")
        if self.root is not None:
            _args(self.root)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,16}", self.label):
            raise FieldError("label", f"{self.label!r}: an ext label is at most 16 letters, digits, '.', '_', '-'")


Options = XenOptions


# ------------------------------------------------------------------ the guest's kernel


@dataclass(frozen=True)
class Kernel:
    version: str
    kernel: str            # paths inside the guest (/boot/...)
    initrd: str | None


_KERNEL = re.compile(r"^vmlinu[zx]-(.+)$")


def _version_key(v: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-_+~]", v)]


def _initrd_for(names: set[str], version: str) -> str | None:
    for cand in (f"initrd.img-{version}", f"initramfs-{version}.img", f"initrd-{version}.img",
                 f"initrd-{version}"):
        if cand in names:
            return cand
    return None


def find_kernels(boot: Path) -> list[Kernel]:
    """Kernels in a tree's /boot (as the host sees it), newest first; a version ending in xen (EL5's
    kernel-xen) before the others, rescue kernels last."""
    try:
        entries = {e.name: e for e in os.scandir(boot)}
    except OSError:
        return []
    names = {n for n, e in entries.items() if e.is_file(follow_symlinks=False)}
    found = []
    for n in names:
        m = _KERNEL.match(n)
        if m:
            v = m.group(1)
            init = _initrd_for(names, v)
            found.append(Kernel(v, f"/boot/{n}", f"/boot/{init}" if init else None))
    found.sort(key=lambda k: _version_key(k.version), reverse=True)
    found.sort(key=lambda k: (not k.version.endswith("xen"), "rescue" in k.version))
    return found


def kernel_release(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("-")[0])[:3])


def pick_console(opts: XenOptions, kernel: Kernel | None) -> str:
    if opts.console:
        if kernel and opts.console == "hvc0" and kernel_release(kernel.version) < HVC0_SINCE:
            log.warning("xen: kernel %s predates hvc0 (2.6.26): its console is xvc0; set targets.xen.console: "
                        "xvc0", kernel.version)
        return opts.console
    if kernel and kernel_release(kernel.version) < HVC0_SINCE:
        return "xvc0"
    return "hvc0"


def kernel_hint(r: "Recipe") -> str:
    return family_of(r.distro).xen_kernel_hint(r.arch)


# ------------------------------------------------------------------ what goes into the image


def cmdline(opts: XenOptions, console: str) -> str:
    root = opts.root or f"/dev/{opts.vdev}"
    return " ".join(x for x in (f"root={root} ro", f"console={console}", opts.extra) if x)


def menu_lst(r: "Recipe", k: Kernel, args: str) -> str:
    """GRUB legacy, as pygrub (Xen 3 and 4) reads it."""
    lines = ["# written by imgbuild for pygrub (Xen PV): the kernel and initrd of this image",
             "default 0", "timeout 1", "", f"title {r.name} (Linux {k.version})", "  root (hd0)",
             f"  kernel {k.kernel} {args}"]
    if k.initrd:
        lines.append(f"  initrd {k.initrd}")
    return "\n".join(lines) + "\n"


def grub_cfg(r: "Recipe", k: Kernel, args: str) -> str:
    """GRUB 2 syntax, the subset Xen 4's pygrub reads first (and pvgrub2 reads too)."""
    lines = ["# written by imgbuild for pygrub (Xen PV): the kernel and initrd of this image",
             "set default=0", "set timeout=1", "", f"menuentry '{r.name} (Linux {k.version})' {{",
             "\tinsmod ext2", f"\tlinux {k.kernel} {args}"]
    if k.initrd:
        lines.append(f"\tinitrd {k.initrd}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the config


def disk_path(r: "Recipe", opts: XenOptions) -> str:
    return opts.path or f"{DEFAULT_DIR}/{r.name}.img"


def settings(r: "Recipe", opts: XenOptions, console: str) -> list[xenconf.Setting]:
    """The config's settings, in order (toolstack-specific values already chosen)."""
    S = lambda k, v: xenconf.Setting(k, v, 0)
    out = [S("name", r.name), S("memory", opts.memory), S("vcpus", opts.vcpus)]
    if opts.boot == "pygrub":
        out.append(S("bootloader", PYGRUB[opts.toolstack]))
    else:
        out.append(S("kernel", opts.kernel))
        if opts.ramdisk:
            out.append(S("ramdisk", opts.ramdisk))
        out.append(S("root", f"{opts.root or '/dev/' + opts.vdev} ro"))
        out.append(S("extra", " ".join(x for x in (f"console={console}", opts.extra) if x)))
    path = disk_path(r, opts)
    if opts.toolstack == "xl":
        disk = xenconf.Disk(path, opts.vdev, "rw").spec()
    else:
        disk = f"{'phy' if opts.disk == 'phy' else 'file'}:{path},{opts.vdev},w"
    out.append(S("disk", [disk]))
    vifs = []
    for iface in r.network.values():
        parts = [f"mac={iface.mac}"] if iface.mac else []
        parts.append(f"bridge={opts.bridge}")
        if opts.vif_ip and iface.address is not None:
            parts.append(f"ip={iface.address.ip}")
        vifs.append(",".join(parts))
    if vifs:
        out.append(S("vif", vifs))
    out += [S("on_poweroff", opts.on_poweroff), S("on_reboot", opts.on_reboot), S("on_crash", opts.on_crash)]
    return out


def render(r: "Recipe", opts: XenOptions, console: str = "hvc0") -> str:
    return xenconf.render(settings(r, opts, console), header(r, opts))


def header(r: "Recipe", opts: XenOptions) -> list[str]:
    which = ("xl config for Xen 4: xl create /etc/xen/{n}.cfg" if opts.toolstack == "xl"
             else "xm config for Xen 3: xm create /etc/xen/{n}.cfg").format(n=r.name)
    where = disk_path(r, opts)
    return [f"written by imgbuild for {r.name}: {which}",
            f"disk: copy {r.name}.img to {where}" if opts.disk == "file"
            else f"disk: copy {r.name}.img onto {where} (dd, or the LV at least as large)"]


def check(text: str, opts: XenOptions, want: list[xenconf.Setting]) -> None:
    """The config must read back as written: with xl's parser (xl), or the xm reader (xm: Python literals only,
    and convertible to xl without errors)."""
    if opts.toolstack == "xl":
        check_xl(text, want)
        return
    cfg = xenconf.read_xm(text)
    problems = [f for f in cfg.findings if f.level != "note"]
    for s in want:
        if cfg.get(s.key) != s.value:
            problems.append(xenconf.Finding(s.line, "error", f"{s.key} reads back as {cfg.get(s.key)!r}"))
    _, moved = xenconf.convert(cfg)
    problems += [f for f in moved if f.level == "error"]
    _refuse(problems)


def check_xl(text: str, want: list[xenconf.Setting], what: str = "xen") -> None:
    """An xl config must read back as written with xl's own parser, and each disk spec must parse."""
    if not xl.available():
        log.warning("%s: %s; the config was not checked", what, xl.why_unavailable())
        return
    problems = xenconf.verify(text, want)
    for s in want:
        if s.key == "disk":
            problems += [xenconf.Finding(0, "error", f"disk {d!r}: {m}") for d in s.value if (m := xl.check_disk(d))]
    _refuse(problems, what)


def _refuse(problems: list, what: str = "xen") -> None:
    if problems:
        raise BuilderError(f"{what}: the generated config does not read back:\n" +
                           "\n".join(f"  {p.message}" for p in problems), "this is a bug in imgbuild; report it")


# ------------------------------------------------------------------ produce


def _e2mkdir(img: Path, path: str, epoch: int) -> None:
    """Make a directory and its missing parents in an unmounted image, root-owned 0755."""
    parts = [p for p in path.split("/") if p]
    cmds = []
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        if not cmds and _e2isdir(img, d):
            continue
        q = e2fs.quote(d, img)
        cmds += [f"mkdir {q}", f"sif {q} mode 040755", f"sif {q} uid 0", f"sif {q} gid 0"]
    if cmds:
        e2fs.script(img, cmds, epoch)
    if not _e2isdir(img, path):
        raise BuilderError(f"xen: could not make {path} in {img.name} (debugfs)", "is the image full? set "
                                                                                 "targets.xen.size larger")


def _e2put(img: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write into the image, then read it back: debugfs exits 0 even when a write is lost (a full image ...)."""
    e2fs.write(img, path, data, mode, 0, 0)
    if e2fs.read(img, path, 64 << 20) != data:
        raise BuilderError(f"xen: writing {path} into {img.name} failed (debugfs)", "is the image full? set "
                                                                                     "targets.xen.size larger")


def _e2isdir(img: Path, path: str) -> bool:
    return e2fs.is_dir(img, path)


def produce(ctx: "Context", opts: XenOptions) -> dict[str, Path]:
    r = ctx.recipe
    kernels = find_kernels(ctx.root.resolve("/boot"))
    k = kernels[0] if kernels else None
    if opts.boot == "pygrub":
        if k is None:
            raise InputError(f"{ctx.source}: targets.xen.boot is pygrub, but the tree has no kernel in /boot "
                             "(pygrub boots the kernel inside the image)", kernel_hint(r))
        if not k.initrd:
            log.warning("xen: kernel %s has no initrd in /boot; a distribution kernel needs one to find its "
                        "disk (Debian: initramfs-tools; EL: dracut or mkinitrd)", k.version)
        if k.version.startswith("2.6.18") and not k.version.endswith("xen"):
            log.warning("xen: kernel %s is not a Xen PV kernel (EL5 boots PV only with kernel-xen); add "
                        "kernel-xen to bootstrap.packages", k.version)
        if opts.toolstack == "xm" and opts.fs == "ext4":
            log.warning("xen: Xen 3's pygrub reads no ext4; set targets.xen.fs: ext3 (the xm default)")
        if len(kernels) > 1:
            log.info("xen: %d kernels in /boot; pygrub boots the newest, %s", len(kernels), k.version)
    console = pick_console(opts, k)
    for ifname, iface in r.network.items():
        if not iface.mac:
            log.warning("xen: network.%s has no mac: Xen gives the guest a new one at every start (old guests' "
                        "udev then renames the NIC); set network.%s.mac", ifname, ifname)
    want = settings(r, opts, console)
    text = xenconf.render(want, header(r, opts))
    check(text, opts, want)

    fs = opts.fs or ("ext4" if opts.toolstack == "xl" else "ext3")
    dest = ctx.stage / f"{r.name}.img"
    image.make_image(ctx.root.path, dest, image.ImageOptions(size=opts.size, fs=fs, label=opts.label, fstab=True),
                     ctx.epoch)
    if opts.boot == "pygrub":
        args = cmdline(opts, console)
        _e2mkdir(dest, "/boot/grub", ctx.epoch)
        for name, body in (("menu.lst", menu_lst(r, k, args)), ("grub.cfg", grub_cfg(r, k, args))):
            if ctx.root.lexists(f"/boot/grub/{name}"):
                log.info("xen: the image's /boot/grub/%s is imgbuild's (pygrub boots %s), not the tree's",
                         name, k.version)
            _e2put(dest, f"/boot/grub/{name}", body.encode())
    securetty = ctx.root.read_text("/etc/securetty")
    if securetty is not None and console not in securetty.split():
        mode = ctx.root.stat("/etc/securetty").st_mode & 0o777
        _e2put(dest, "/etc/securetty", (securetty.rstrip("\n") + f"\n{console}\n").encode(), mode=mode)
        log.info("xen: added %s to the image's /etc/securetty (root may log in on the Xen console)", console)
    runner.run(["e2fsck", "-fn", str(dest)])

    cfg = ctx.stage / f"{r.name}.cfg"
    write_atomic(cfg, text)
    log.info("xen: %s (%s, boot %s, console %s)", cfg.name, opts.toolstack, opts.boot, console)
    return {"xen-config": cfg, "xen-image": dest}
