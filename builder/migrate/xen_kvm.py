"""`migrate xen --to-kvm DIR` (and --hvm / --pvh): a Xen PV guest made into a full virtual machine, on the host
that holds its disks (the dom0, or a host that sees its volumes).

1. The xm config is read as data (builder.guestconf.xm: parsed, never run): the guest's name, memory, vcpus, MACs
   and disks, and how it boots (a dom0 kernel, `kernel = "/boot/vmlinuz-...-xen"`, or pygrub).
2. Each disk is copied sparsely into a work directory beside DIR: a `phy:` device through an LVM snapshot while
   the guest runs, else the device itself, or an inactive volume from its extents (builder.migrate.blockdev); an
   image file as it is. The first is the root; the others become NAME-VDEV.qcow2 as they are
   (builder.migrate.guestdisks), attached after the root, their fstab lines kept by UUID.
3. The copy (never the original) is mounted (nodev, nosuid; unmounted however the run ends) and the guest gets a
   kernel, an initramfs and GRUB of its own, installed by its own dpkg in a chroot from its distribution's
   packages (Debian: linux-image-amd64 and grub-pc-bin, downloaded by this host's apt from this host's mirror
   for the guest's release, checked with this host's keyring). An EL5/6 guest is not installed into (no mirror
   of those releases is reachable from here): the plan names what it would need.
4. The disk target's own code (builder.build.targets.disk) makes the new disk from that tree: a GPT with a BIOS
   boot partition, the root filesystem, /etc/fstab by UUID, GRUB with the serial console, qcow2 by qemu-img.
5. DIR gets NAME.qcow2, the VM config (libvirt's NAME.xml for --to-kvm, built by the libvirt target; an xl
   NAME-hvm.cfg or NAME-pvh.cfg by the xenvm target) and a manifest.json, so `imgbuild boot DIR` boots it.

The rewritten /etc/fstab holds the root filesystem and the lines that mount the further disks; the old one's
other lines are named in the notes.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from builder.boot.qemu import EXTRA_DISK
from builder.build.steps.init import SYSTEMD_MASK
from builder.build.targets import disk as disk_target
from builder.build.targets import libvirt, xenvm
from builder.build.targets import xen as xen_target
from builder.core import proc as runner
from builder.core.errors import BuilderError, InputError
from builder.core.mounts import MountStack, chroot_mounts, remove_tree
from builder.core.outputs import write_atomic
from builder.core.rootfs import RootFS
from builder.core.untrusted import read_text
from builder.guestconf import xen as xenconf
from builder.migrate import blockdev, guestdisks
from builder.migrate.remote import shown

log = logging.getLogger("imgbuild")
KINDS = ("kvm", "hvm", "pvh")
# what each distribution family installs to boot on its own (the plan names it; only Debian's is run here)
PACKAGES = {"debian": ("linux-image-amd64", "grub-pc-bin"), "ubuntu": ("linux-image-virtual", "grub-pc-bin"),
            "el": ("kernel", "grub2-tools", "grub2-pc-modules"), "el5": ("kernel", "grub"), "el6": ("kernel", "grub")}
_RELEASE = re.compile(r"[a-z][a-z0-9-]{1,30}")
MARKER = "migrate xen --to-kvm"
# what the container shim masks (builder.build.steps.init) but a VM runs; the gettys stay masked (the VM's console
# login is console-getty on the serial console, as in the container)
VM_UNITS = tuple(u for u in SYSTEMD_MASK if u not in ("getty@.service", "serial-getty@.service",
                                                      "getty-static.service"))


@dataclass(frozen=True)
class KvmRequest:
    config: Path                 # the guest's xm config, on this host
    out: Path                    # the output directory
    kind: str = "kvm"            # kvm (libvirt XML), hvm or pvh (an xl config)
    live: bool = False           # the guest runs: read its LVM volumes through a snapshot
    snapshot_size: str = "1G"
    bridge: str | None = None
    dry_run: bool = False
    force: bool = False


@dataclass
class KvmPlan:
    name: str
    memory: int
    vcpus: int
    macs: list[str]
    root: xenconf.Disk
    boot: str                    # how it booted as a PV guest
    more: list[xenconf.Disk] = field(default_factory=list)     # the further disks, copied as they are
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def disk_format(kind: str) -> str:
    """qcow2; raw for PVH, whose pygrub (on the Xen host) reads raw disks only."""
    return "raw" if kind == "pvh" else "qcow2"


def _int(v, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def plan(cfg_text: str, cfg_path: str, kind: str) -> KvmPlan:
    """What the conversion does, from the config alone (the dry run's answer, and the real run's plan)."""
    from builder.migrate.xen import guest_name

    xm = xenconf.read_xm(cfg_text)
    name = guest_name(cfg_text, cfg_path, "this host")
    entries = xm.get("disk") or []
    entries = [entries] if isinstance(entries, str) else entries
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise InputError(f"{cfg_path}: disk must be a list of strings", "check its disk = [...] line")
    disks = []
    for spec in entries:
        try:
            d = xenconf.xm_disk(spec)
        except xenconf.DiskError as e:
            raise InputError(f"{cfg_path}: {e}", "fix the disk line in a copy of the config") from None
        if d.target and d.devtype != "cdrom":
            if d.script:
                raise InputError(f"{cfg_path}: disk {shown(spec)!r} uses a block script ({d.script}); only phy:, "
                                 "file: and tap:aio: disks are read", "copy that disk to a file first")
            disks.append(d)
    if not disks:
        raise InputError(f"{cfg_path}: the guest has no disk to convert", "check its disk = [...] line")
    macs = []
    for vif in xm.get("vif") or []:
        if isinstance(vif, str):
            mac = dict(xenconf.parse_vif(vif)).get("mac")
            if mac and re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", mac):
                macs.append(mac.lower())
    kernel, loader = xm.get("kernel"), xm.get("bootloader")
    if xm.get("builder") == "hvm":
        boot = "HVM already (its own bootloader)"
    elif isinstance(kernel, str):
        boot = f"the dom0's kernel {shown(kernel)}"
    elif isinstance(loader, str):
        boot = f"{shown(os.path.basename(loader))} (the dom0 read its kernel from the guest's disk)"
    else:
        boot = "unknown (no kernel or bootloader line)"
    vdevs = [d.vdev for d in disks]
    if len(set(vdevs)) != len(vdevs):
        raise InputError(f"{cfg_path}: two disks have the same device name ({', '.join(vdevs)})",
                         "check its disk = [...] line")
    p = KvmPlan(name, _int(xm.get("memory"), 512), _int(xm.get("vcpus"), 1), macs, disks[0], boot, disks[1:])
    fmt = disk_format(kind)
    how = lambda d: "phy: device" if _is_phy(d) else f"{d.format} image file"    # noqa: E731
    p.notes.append(f"root disk: {disks[0].target} ({how(disks[0])}, {disks[0].vdev}) -> {name}.{fmt} "
                   "(GPT, BIOS boot partition, the root filesystem, GRUB)")
    for d in p.more:
        p.notes.append(f"further disk: {d.target} ({how(d)}, {d.vdev}) -> {name}-{d.vdev}.{fmt}, copied as it is "
                       "and attached after the root (its fstab lines kept, by UUID, when it holds a filesystem or "
                       "swap area)")
    p.notes.append(f"boot: was {boot}; gets a kernel, initramfs and GRUB of its own: Debian "
                   f"{' '.join(PACKAGES['debian'])} (the guest's dpkg in a chroot), EL5/EL6 "
                   f"{' '.join(PACKAGES['el6'])} (not installed by this version: no EL5/6 mirror is reachable; "
                   "install them in the guest before converting)")
    config = {"kvm": f"{name}.xml", "hvm": f"{name}-hvm.cfg", "pvh": f"{name}-pvh.cfg"}[kind]
    p.outputs = [f"{name}.{fmt}", *(f"{name}-{d.vdev}.{fmt}" for d in p.more), config, "manifest.json"]
    return p


def os_release(root: RootFS) -> tuple[str, str]:
    """(family, release codename) of the guest tree: ("debian", "bookworm"), ("el6", ""), ... ("", "")."""
    text = root.read_text("/etc/os-release") or ""
    vals = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.M))
    ident = vals.get("ID", "")
    if ident in ("debian", "ubuntu"):
        code = vals.get("VERSION_CODENAME", "")
        return ident, code if _RELEASE.fullmatch(code) else ""
    rh = root.read_text("/etc/redhat-release") or ""
    m = re.search(r"release (\d+)", rh)
    if m:
        return (f"el{m.group(1)}" if m.group(1) in ("5", "6") else "el"), m.group(1)
    return ident, ""


def apt_config(top: Path, root: RootFS, mirror: str, release: str, keyring: Path) -> Path:
    """This host's apt, confined to the guest: the guest's dpkg database and archives, our own sources list (the
    host's mirror for the guest's release, checked with this host's keyring), dpkg run chrooted in the guest."""
    empty = top / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    (top / "sources.list").write_text(f"deb [signed-by={keyring}] {mirror} {release} main\n")
    r = root.path
    lines = {
        "Dir": f"{r}/", "Dir::Etc::Parts": empty, "Dir::Etc::Main": empty / "none",
        "Dir::Etc::SourceList": top / "sources.list", "Dir::Etc::SourceParts": empty,
        "Dir::Etc::Preferences": empty / "none", "Dir::Etc::PreferencesParts": empty,
        "Dir::Etc::Trusted": empty / "none", "Dir::Etc::TrustedParts": empty, "Dir::Log": top,
        "DPkg::Chroot-Directory": r, "APT::Install-Recommends": "false", "Acquire::Languages": "none",
        "APT::Sandbox::User": "root", "Dpkg::Options::": "--force-confold",
    }
    conf = top / "apt.conf"
    conf.write_text("".join(f'{k} "{v}";\n' for k, v in lines.items()))
    return conf


def install_debian(root: RootFS, top: Path, release: str, packages: tuple[str, ...]) -> None:
    from builder.debian.apt import host_mirror, keyring

    conf = apt_config(top, root, host_mirror(release), release, keyring())
    env = {**os.environ, "APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    placed = not root.lexists("/usr/sbin/policy-rc.d")
    if placed:          # no service of the guest is started on this host while its packages install
        root.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    try:
        with chroot_mounts(root):
            runner.run(["apt-get", "-q", "update"], env=env)
            runner.run(["apt-get", "-q", "-y", "install", *packages], env=env, reap_group=True)
    finally:
        if placed:
            root.remove("/usr/sbin/policy-rc.d")


def _unmask_for_vm(root: RootFS) -> list[str]:
    """A guest that ran as a container (imgbuild's systemd-container shim, or a tree made for LXC) has udev and
    the units that need hardware masked; a VM needs them (udev makes its disks' /dev/disk/by-uuid links, which
    the swap and data disks in fstab wait for): those masks go, the gettys' stay."""
    gone = []
    for unit in VM_UNITS:
        link = f"/etc/systemd/system/{unit}"
        if root.readlink(link) == "/dev/null":
            root.remove(link)
            gone.append(unit)
    return [f"unmasked (masked as in a container; a VM needs them): {', '.join(gone)}"] if gone else []


def _check_out(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out}: not a directory", "give a new or empty directory")
    if out.is_dir() and any(out.iterdir()):
        m = out / "manifest.json"
        ours = m.is_file() and not m.is_symlink() and MARKER in m.read_text(errors="replace")[:4096]
        if not (ours or force):
            raise InputError(f"{out}: not empty and not an earlier `migrate xen --to-kvm` output; nothing was "
                             "changed", "give a new or empty directory, or --force")


def convert(req: KvmRequest) -> KvmPlan:
    if req.kind not in KINDS:
        raise InputError(f"{req.kind}: not a VM kind", f"one of {', '.join(KINDS)}")
    text = read_text(req.config, what="an xm config")
    p = plan(text, str(req.config), req.kind)
    _check_out(req.out, req.force)
    # each disk there and readable, and how (a busy device that is no LVM volume refused): before anything is
    # made; the dry run's notes say it, the run's own notes come with the copies
    seen: list[str] = []
    for d in (p.root, *p.more):
        if _is_phy(d):              # no snapshot is made here
            with blockdev.readable(d.target, req.live, req.snapshot_size, dry_run=True, notes=seen):
                pass
        else:
            guestdisks.check(d, req.live)
    if req.dry_run:
        p.notes += seen
        return p
    made_out = not req.out.exists()
    req.out.mkdir(parents=True, exist_ok=True)
    work = req.out / f".{p.name}.work"
    remove_tree(work)                  # a killed run's: its mounts undone first
    work.mkdir(mode=0o700)
    done = False
    try:
        _convert(req, p, work)
        done = True
    finally:
        with runner.cleanup():
            remove_tree(work)
            if not done and made_out and not any(req.out.iterdir()):
                req.out.rmdir()        # nothing half-made left behind
    return p


_is_phy = guestdisks.is_phy


def _further_disks(req: KvmRequest, p: KvmPlan, work: Path, fmt: str) -> tuple[list[Path], dict]:
    """Each further disk copied into the work directory in the output's format, and what it holds."""
    made, found = [], {}
    for d in p.more:
        raw = work / f"{d.vdev}.raw"
        guestdisks.copy(d, raw, req.live, req.snapshot_size, p.notes)
        found.update(guestdisks.identities(raw, d.vdev))
        dest = work / f"{p.name}-{d.vdev}.{fmt}"
        if fmt == "raw":
            os.rename(raw, dest)
        else:
            runner.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(dest)])
            os.chmod(dest, 0o600)
            os.unlink(raw)
        made.append(dest)
    return made, found


def _convert(req: KvmRequest, p: KvmPlan, work: Path) -> None:
    copy = work / "root.fs"
    guestdisks.copy(p.root, copy, req.live, req.snapshot_size, p.notes)
    fmt = disk_format(req.kind)
    # a snapshot of a running guest holds a journal to replay: fixed in the copy
    r = runner.run(["e2fsck", "-fp", str(copy)], check=False)
    if r.returncode >= 4:
        raise BuilderError(f"the copy of {p.root.target} is no clean ext2/3/4 filesystem (e2fsck exit "
                           f"{r.returncode})", "check the guest's filesystem (e2fsck -f) while it is stopped")
    mnt = work / "root"
    mnt.mkdir(mode=0o700)
    stage = work / "stage"
    stage.mkdir()
    epoch = int(time.time())
    with MountStack() as ms:
        ms.mount(str(copy), mnt, options="loop,nodev,nosuid")
        root = RootFS(mnt)
        family, release = os_release(root)
        if family != "debian" or not release:
            what = " ".join(PACKAGES.get(family, ("a kernel", "GRUB")))
            raise InputError(f"{p.name}: the guest is {family or 'of an unknown distribution'}"
                             f"{' ' + release if release else ''}; this version installs a kernel and GRUB only "
                             "into Debian guests", f"install {what} in the guest, then run again")
        old_fstab = root.read_text("/etc/fstab") or ""
        split = guestdisks.split_system(old_fstab)
        if split:
            raise InputError(f"{p.name}: the guest mounts {', '.join(split)} from another disk; the kernel's packages "
                             "would be installed beside those filesystems, not into them; nothing was written",
                             "move them into the root filesystem first (or convert this guest by hand)")
        # the root is good: now the further disks (they can be large)
        more, found = _further_disks(req, p, work, fmt)
        fstab, dropped = guestdisks.fstab(old_fstab, found)
        p.notes += dropped + _unmask_for_vm(root)
        log.info("installing %s into the guest (its own dpkg, in a chroot)", " ".join(PACKAGES["debian"]))
        install_debian(root, work / "apt", release, PACKAGES["debian"])
        opts = disk_target.DiskOptions(format=fmt, table="gpt", boot="bios")
        arts = disk_target.make(disk_target.Job(p.name, family, root, stage, epoch, tuple(fstab)), opts)
    q = arts[f"disk-{opts.format}"]
    os.chmod(q, 0o600)                           # the guest's secrets are in it
    before = _earlier_outputs(req.out)
    config = write_configs(req, p, opts, into=work)      # checked (libvirt's schema, xl's parser) before any move
    for f in (q, *more, config, work / "manifest.json"):  # the manifest last: it lists what is there
        os.replace(f, req.out / f.name)
    for name in before - {f.name for f in (q, *more, config)}:
        stale = req.out / name                            # an earlier run's disk or config this one has not
        if stale.is_symlink() or stale.is_file():         # a file (a link itself, never what it points to)
            stale.unlink()


def _earlier_outputs(out: Path) -> set[str]:
    """The files an earlier `--to-kvm` run listed in DIR/manifest.json (plain names in DIR, ours only)."""
    m = out / "manifest.json"
    try:
        data = json.loads(read_text(m, what="an earlier run's manifest.json")) if m.is_file() else {}
    except (InputError, ValueError):
        return set()
    if not isinstance(data, dict) or data.get("made_by") != MARKER or not isinstance(data.get("artifacts"), list):
        return set()
    return {a["path"] for a in data["artifacts"] if isinstance(a, dict) and isinstance(a.get("path"), str)
            and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}", a["path"]) and a["path"] != "manifest.json"}


def write_configs(req: KvmRequest, p: KvmPlan, dopts, into: Path | None = None) -> Path:
    """DIR/NAME.xml (libvirt) or DIR/NAME-KIND.cfg (xl), and DIR/manifest.json for `imgbuild boot DIR`; written
    into `into` (the work directory, moved into DIR after) when given. Returns the config's path."""
    into = into or req.out
    nets = {f"eth{i}": SimpleNamespace(mac=mac) for i, mac in enumerate(p.macs)}
    # what the libvirt and xenvm targets read of a recipe (no cloud-init seed for a converted guest)
    r = SimpleNamespace(name=p.name, targets=SimpleNamespace(disk=dopts), network=nets, cloud_init=None)
    disk_path = str(req.out.resolve() / f"{p.name}.{dopts.format}")
    arts = [{"kind": f"disk-{dopts.format}", "path": f"{p.name}.{dopts.format}"}]
    more = [f"{p.name}-{d.vdev}.{dopts.format}" for d in p.more]
    arts += [{"kind": f"{EXTRA_DISK}{d.vdev}", "path": f, "format": dopts.format} for d, f in zip(p.more, more)]
    more = [str(req.out.resolve() / f) for f in more]
    if req.kind == "kvm":
        lopts = libvirt.LibvirtOptions(memory=max(p.memory, 128), vcpus=p.vcpus, path=disk_path,
                                       **({"bridge": req.bridge} if req.bridge else {}))
        dest = into / f"{p.name}.xml"
        write_atomic(dest, libvirt.domain_xml(r, lopts, more))
        libvirt.validate(dest)
        arts.append({"kind": "libvirt-domain", "path": dest.name})
    else:
        xopts = xenvm.XenVmOptions(memory=max(p.memory, 128), vcpus=p.vcpus, path=disk_path, types=(req.kind,),
                                   **({"bridge": req.bridge} if req.bridge else {}))
        want = xenvm.settings(r, xopts, req.kind, more)
        text = xenconf.render(want, xenvm.header(r, xopts, req.kind))
        xen_target.check_xl(text, want, "migrate xen --to-kvm")     # read back with xl's own parser
        dest = into / f"{p.name}-{req.kind}.cfg"
        write_atomic(dest, text)
        arts.append({"kind": f"xen-{req.kind}-config", "path": dest.name})
    manifest = {"name": p.name, "made_by": MARKER, "source": str(req.config), "was": p.boot,
                "artifacts": arts, "notes": p.notes,
                "network": {n: {"mac": nic.mac} for n, nic in nets.items()}}
    write_atomic(into / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return dest
