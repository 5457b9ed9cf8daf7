"""Disk target: a bootable, partitioned disk image for a VM (KVM/libvirt, Xen HVM/PVH), made without a loop device
or a mount.

- The root filesystem is the image target's (`mke2fs -d` from the tree, times clamped, UUID derived from the
  recipe), with an /etc/fstab that mounts it by UUID and GRUB's menu written into it with debugfs: the tree,
  which other targets read, is left as it is.
- GRUB comes from the guest's own packages (Debian: grub-pc-bin for BIOS, grub-efi-amd64-bin for UEFI): its own
  grub-mkimage, run in a chroot of the tree, makes a core image holding every module the boot needs and an early
  config that finds the root filesystem by UUID. BIOS: boot.img goes into the MBR (the partition table kept) and
  the core image into a 1 MiB BIOS boot partition (GPT) or the gap before the first partition (MBR), with the
  sector addresses grub-bios-setup would write. UEFI: the core image is EFI/BOOT/BOOTX64.EFI on a FAT ESP (made
  with mkfs.fat and mtools), found by the firmware without a boot entry.
- The kernel and initramfs are the newest /boot/vmlinuz-* and its initrd; the command line has the serial console
  (ttyS0) as well as the VGA one, and `net.ifnames=0`, so the recipe's eth0 is the virtio NIC's name.
- The partition table is written by sfdisk into the image file, with a disk GUID derived from the recipe; the root
  filesystem is made by mke2fs -d in its partition (-E offset), the ESP copied in sparsely; qcow2 is made from the
  raw image by qemu-img.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from builder.build.families import family_of
from builder.build.steps import cloudinit
from builder.build.targets import image
from builder.core import e2fs
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.core.schema import opt

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.core.rootfs import RootFS

log = logging.getLogger("imgbuild")
DOC = "a bootable partitioned disk (qcow2 and/or raw; GPT or MBR; BIOS and/or UEFI): the guest's kernel and GRUB"

SECTOR = 512
MiB = 1 << 20
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ESP_SIZE = 63 * MiB
# what the boot needs, built into the core image (nothing is loaded from disk: no /boot/grub/<platform>/ needed)
MODULES = ("part_gpt", "part_msdos", "ext2", "search", "search_fs_uuid", "normal", "configfile", "linux", "serial",
           "terminal", "gzio", "echo", "test", "boot")
MKIMAGE = ("/usr/bin/grub-mkimage", "/usr/bin/grub2-mkimage")      # Debian's name, EL's name
PLATFORM = {"bios": ("i386-pc", ("biosdisk",)), "uefi": ("x86_64-efi", ("efi_gop", "all_video"))}


@dataclass(frozen=True)
class DiskOptions:
    """Disk target: a bootable disk for a virtual machine. Needs a kernel in the tree (Debian: linux-image-amd64)
    and GRUB's platform files (grub-pc-bin for BIOS, grub-efi-amd64-bin for UEFI) in bootstrap.packages."""

    format: Literal["qcow2", "raw", "both"] = opt("qcow2", doc="qcow2, raw, or both (NAME.qcow2, NAME.raw)")
    size: image.Size | None = opt(None, doc="disk size; default: the root filesystem's size plus the boot "
                                            "partitions")
    table: Literal["gpt", "mbr"] = opt("gpt", doc="partition table")
    boot: Literal["bios", "uefi", "both"] = opt("both", doc="firmware the disk boots with")
    cmdline: str = opt("console=tty0 console=ttyS0,115200 net.ifnames=0", doc="kernel command line after "
                                                                            "root=UUID=... ro")


Options = DiskOptions


def _uuid(what: str, name: str, epoch: int) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"disk:{what}:{name}:{epoch}".encode()).digest()[:16], version=4))


@dataclass(frozen=True)
class Job:
    """What the disk target reads: a name (files, GUIDs), the distribution (its package names in hints), the tree,
    where the disk goes, the time every stamp gets. A build's Context gives it (Job.of); migrate xen --to-kvm
    makes one for a converted guest."""

    name: str
    distro: str
    root: "RootFS"
    stage: Path
    epoch: int
    fstab: tuple[str, ...] = ()       # lines after the root's in the disk's /etc/fstab (a converted guest's disks)

    @classmethod
    def of(cls, ctx: "Context") -> Job:
        return cls(ctx.recipe.name, ctx.recipe.distro, ctx.root, ctx.stage, ctx.epoch)


def kernel(job: Job) -> tuple[str, str]:
    """(vmlinuz, initrd) file names in /boot: the newest kernel that has an initramfs."""
    names = job.root.listdir("/boot") if job.root.is_dir("/boot") else []
    versions = sorted((n[len("vmlinuz-"):] for n in names if n.startswith("vmlinuz-")),
                      key=lambda v: [int(x) if x.isdigit() else x for x in v.replace("-", ".").split(".")])
    for v in reversed(versions):
        for initrd in (f"initrd.img-{v}", f"initramfs-{v}.img"):
            if initrd in names:
                return f"vmlinuz-{v}", initrd
    raise InputError("targets.disk: the tree has no kernel with an initramfs in /boot",
                     f"add {family_of(job.distro).vm_packages.get('kernel', 'a kernel')} to "
                     "bootstrap.packages")


def grub_menu(root_uuid: str, vmlinuz: str, initrd: str, cmdline: str) -> str:
    return (f"# written by imgbuild\nset timeout=1\nserial --unit=0 --speed=115200\n"
            f"terminal_input serial console\nterminal_output serial console\n"
            f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
            f"menuentry 'Linux' {{\n  linux /boot/{vmlinuz} root=UUID={root_uuid} ro {cmdline}\n"
            f"  initrd /boot/{initrd}\n}}\n")


def core_image(job: Job, platform: str, root_uuid: str) -> bytes:
    """The guest's own grub-mkimage (in a chroot of the tree) makes the core image for `platform`."""
    fmt, extra = PLATFORM[platform]
    mkimage = next((p for p in MKIMAGE if job.root.exists(p)), None)
    if not job.root.is_dir(f"/usr/lib/grub/{fmt}") or mkimage is None:
        pkg = family_of(job.distro).vm_packages.get(platform, "GRUB's platform files")
        raise InputError(f"targets.disk: boot {platform} needs GRUB's {fmt} files and grub-mkimage in the tree",
                         f"add {pkg} to bootstrap.packages (or choose targets.disk.boot)")
    tmp = f"/tmp/.imgbuild-grub-{fmt}"
    job.root.mkdir(tmp, 0o700, reset=True)
    try:
        job.root.write(f"{tmp}/early.cfg", f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
                                           "set prefix=($root)/boot/grub\n")
        runner.run(["chroot", str(job.root.path), mkimage, "-O", fmt, "-o", f"{tmp}/core.img",
                    "-c", f"{tmp}/early.cfg", "-p", "/boot/grub", *extra, *MODULES])
        data = job.root.read_bytes(f"{tmp}/core.img", follow_last=False, limit=8 * MiB)
    finally:
        job.root.remove(tmp, tree=True)
    if not data:
        raise BuilderError(f"grub-mkimage made no {fmt} core image", "run the build with -v to see its output")
    return data


def _esp(job: Job, efi: bytes, dest: Path) -> None:
    """A FAT ESP holding EFI/BOOT/BOOTX64.EFI (mkfs.fat with the recipe's volume id; files copied with mtools)."""
    d = dest.with_suffix(".dir")
    (d / "EFI" / "BOOT").mkdir(parents=True)
    (d / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(efi)
    for p in (d / "EFI" / "BOOT" / "BOOTX64.EFI", d / "EFI" / "BOOT", d / "EFI"):
        os.utime(p, (job.epoch, job.epoch))
    volid = _uuid("esp", job.name, job.epoch).replace("-", "")[:8]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(job.epoch)}
    runner.run(["mkfs.fat", "-C", "-i", volid, "-n", "ESP", str(dest), str(ESP_SIZE // 1024)], env=env)
    runner.run(["mcopy", "-s", "-m", "-Q", "-i", str(dest), str(d / "EFI"), "::/"], env=env)


def layout(opts: DiskOptions, root_bytes: int) -> tuple[list[tuple[str, int, int]], int]:
    """[(role, start sector, sectors)] and the disk's size in bytes."""
    parts, start = [], 2048
    if opts.table == "gpt" and opts.boot in ("bios", "both"):
        parts.append(("bios", start, MiB // SECTOR))
        start += MiB // SECTOR
    if opts.boot in ("uefi", "both"):
        parts.append(("esp", start, ESP_SIZE // SECTOR))
        start += ESP_SIZE // SECTOR
    tail = 34 if opts.table == "gpt" else 0
    size = image.parse_size(opts.size) if opts.size else (start + root_bytes // SECTOR + tail) * SECTOR
    root = size // SECTOR - start - tail
    if root * SECTOR < root_bytes:
        raise InputError(f"targets.disk.size {opts.size} is too small: the root filesystem alone needs "
                         f"{root_bytes >> 20} MiB", "raise it, or leave it out to size the disk from the tree")
    parts.append(("root", start, root))
    return parts, size


def sfdisk_script(opts: DiskOptions, parts: list[tuple[str, int, int]], name: str, epoch: int) -> str:
    if opts.table == "gpt":
        types = {"bios": BIOS_BOOT, "esp": ESP_TYPE, "root": LINUX_FS}
        head = f"label: gpt\nlabel-id: {_uuid('table', name, epoch).upper()}\n"
        return head + "".join(f"start={s}, size={n}, type={types[r]}, uuid={_uuid(r, name, epoch).upper()}, "
                              f"name={r}\n" for r, s, n in parts)
    types = {"esp": "ef", "root": "83"}
    ident = "0x" + _uuid("table", name, epoch).replace("-", "")[:8]
    return f"label: dos\nlabel-id: {ident}\n" + "".join(
        f"start={s}, size={n}, type={types[r]}{', bootable' if r == 'root' else ''}\n" for r, s, n in parts)


def bios_boot(disk: Path, boot_img: bytes, core: bytes, core_sector: int) -> None:
    """What grub-bios-setup does for a disk whose core image lies in one run of sectors: boot.img into the MBR
    (the partition table and disk signature kept), pointed at the core image; the core image's first sector
    (diskboot) given the block list of the rest."""
    core = bytearray(core)
    sectors = (len(core) + SECTOR - 1) // SECTOR
    struct.pack_into("<QHH", core, SECTOR - 12, core_sector + 1, sectors - 1, 0x820)   # start, length, segment
    with open(disk, "r+b") as f:
        f.seek(core_sector * SECTOR)
        f.write(core)
        f.seek(0)
        mbr = bytearray(f.read(SECTOR))
        mbr[0:440] = boot_img[0:440]
        struct.pack_into("<Q", mbr, 0x5C, core_sector)      # the sector boot.img loads: the core image
        mbr[0x64] = 0xFF                                     # boot from the drive the BIOS booted
        mbr[0x66:0x68] = b"\x90\x90"                         # no floppy probe
        f.seek(0)
        f.write(mbr)


def core_place(parts: list[tuple[str, int, int]]) -> tuple[int, int, str]:
    """Where the BIOS core image goes: (first sector, sectors of room, what that room is)."""
    for role, start, n in parts:
        if role == "bios":
            return start, n, "BIOS boot partition"
    return 1, parts[0][1] - 1, "gap before the first partition"


def _copy_in(disk: Path, src: Path, sector: int) -> None:
    runner.run(["dd", f"if={src}", f"of={disk}", "bs=4M", f"seek={sector * SECTOR}", "oflag=seek_bytes",
                "conv=notrunc,sparse", "status=none"])


def produce(ctx: "Context", opts: DiskOptions) -> dict[str, Path]:
    """The build's disk (and, with cloud_init:, the seed ISO beside it)."""
    out = make(Job.of(ctx), opts)
    out.update(cloudinit.produce_iso(ctx))    # cloud_init: the NoCloud seed ISO beside the disk
    return out


def make(job: Job, opts: DiskOptions) -> dict[str, Path]:
    """The bootable disk of job.root in job.stage: NAME.qcow2 and/or NAME.raw (by opts.format)."""
    name, epoch = job.name, job.epoch
    vmlinuz, initrd = kernel(job)
    root_uuid = image.fs_uuid("root", epoch)        # make_image's UUID for label "root"
    cores = {p: core_image(job, p, root_uuid) for p in ("bios", "uefi") if opts.boot in (p, "both")}
    work = job.stage / f".{name}.disk"
    work.mkdir()
    try:
        fs_opts = image.ImageOptions(fstab=False)
        items, root_bytes = image.plan(job.root.path, fs_opts)
        parts, size = layout(opts, root_bytes)
        where = {role: start for role, start, _n in parts}
        raw = work / f"{name}.raw"
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)    # the tree's secrets go in
        with os.fdopen(fd, "wb") as f:
            f.truncate(size)                                               # sparse
        runner.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(raw)],
                   input=sfdisk_script(opts, parts, name, epoch))
        # the root filesystem made in its partition, in place: no second copy of the tree's bytes
        root_fs = image.write_fs(job.root.path, raw, items, root_bytes, fs_opts, epoch, where["root"] * SECTOR)
        e2fs.write(root_fs, "/etc/fstab", (f"# written by imgbuild\nUUID={root_uuid}\t/\text4\t"
                   "defaults,errors=remount-ro\t0 1\n" + "".join(f"{ln}\n" for ln in job.fstab)).encode(),
                   0o644, 0, 0, epoch)
        if not e2fs.is_dir(root_fs, "/boot/grub"):
            e2fs.script(root_fs, ["mkdir /boot/grub", "sif /boot/grub mode 040755",
                                  *(f"sif /boot/grub {t} @{epoch}" for t in ("atime", "mtime", "ctime", "crtime"))],
                        epoch)
        e2fs.write(root_fs, "/boot/grub/grub.cfg", grub_menu(root_uuid, vmlinuz, initrd, opts.cmdline).encode(),
                   0o644, 0, 0, epoch)
        e2fs.settle(root_fs, epoch)
        if "uefi" in cores:
            _esp(job, cores["uefi"], work / "esp.fat")
            _copy_in(raw, work / "esp.fat", where["esp"])
        if "bios" in cores:
            boot_img = job.root.read_bytes("/usr/lib/grub/i386-pc/boot.img", limit=SECTOR)
            if not boot_img or len(boot_img) != SECTOR:
                raise InputError("targets.disk: the tree's /usr/lib/grub/i386-pc/boot.img is not a boot sector",
                                 "reinstall grub-pc-bin in the recipe")
            at, room, what = core_place(parts)
            if (len(cores["bios"]) + SECTOR - 1) // SECTOR > room:
                raise BuilderError(f"the BIOS core image ({len(cores['bios']) >> 10} KiB) does not fit in the "
                                   f"{room * SECTOR >> 10} KiB {what}",
                                   "this is a bug in imgbuild (the modules built into it grew); report it")
            bios_boot(raw, boot_img, cores["bios"], at)
        out: dict[str, Path] = {}
        if opts.format in ("qcow2", "both"):
            q = job.stage / f"{name}.qcow2"
            runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(q)])
            out["disk-qcow2"] = q
        if opts.format in ("raw", "both"):
            os.rename(raw, job.stage / f"{name}.raw")
            out["disk-raw"] = job.stage / f"{name}.raw"
        log.info("disk: %s (%d MiB, %s, boot %s)", ", ".join(p.name for p in out.values()), size >> 20, opts.table,
                 opts.boot)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
