"""`migrate xen --to-kvm`: a Xen PV guest (an xm config booting a dom0 kernel, its root filesystem on a `phy:`
device without a partition table) converted on this host into a qcow2 disk with its own kernel and GRUB and a
libvirt domain, then booted for real by `imgbuild boot` under qemu. The guest's tree is the session's debian12
build (tests/conftest.py), so nothing is bootstrapped again.

The `phy:` device is an LVM logical volume on a loop device, made by the real LVM tools. When this kernel has
device-mapper the volume is active (/dev/VG/root exists) and a running guest's volume is read through a real
snapshot. Where it has not (`/dev/mapper/control: open failed: No such device`, no dm_mod module), LVM still
writes the volume group's metadata (`lvcreate --driverloaded n -an`: nothing is activated): the volume is then an
inactive one, as on a host where the old dom0's volume group is not activated, and imgbuild reads it from its
extents; the snapshot test says why it is skipped. The root volume is made in two segments with another volume
between them, so a wrong mapping gives a broken filesystem. Everything made is removed by finalizers (VG, PV, loop
device)."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from builder.core.errors import InputError
from builder.migrate import blockdev, guestdisks, lvextents, xen_kvm
from tests.conftest import imgbuild, migrate

LVM_ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1", "DM_DISABLE_UDEV": "1"}
LVMCONF = ["--config", blockdev.LVM_CONFIG]
PV_CFG = """# Xen 3 PV guest booting the dom0's kernel
name = "pvweb"
memory = 512
vcpus = 1
kernel = "/boot/vmlinuz-2.6.32-5-xen-amd64"
ramdisk = "/boot/initrd.img-2.6.32-5-xen-amd64"
root = "/dev/xvda1 ro"
disk = ['phy:{dev},xvda1,w', 'phy:/dev/vg0/swap,xvda2,w']
vif = ['mac=00:16:3e:5a:00:01, bridge=xenbr0']
"""


def dm_reason() -> str | None:
    try:
        misc = Path("/proc/misc").read_text()
    except OSError:
        misc = ""
    if "device-mapper" not in misc:
        return "this kernel has no device-mapper (/proc/misc lists none; lvcreate: /dev/mapper/control: open " \
               "failed: No such device): no snapshot can be made; the volumes are inactive and read from their extents"
    if subprocess.run(["which", "lvcreate"], capture_output=True).returncode != 0:
        return "lvm2 is not installed (scripts/setup.sh installs it)"
    return None


def sh(*argv, **kw) -> str:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=LVM_ENV, **kw)
    assert r.returncode == 0, f"{argv}: {r.stderr}"
    return r.stdout.strip()


@pytest.fixture
def loop(tmp_path, request):
    """A 3 GiB sparse file on a loop device, detached at the end."""
    backing = tmp_path / "pv.img"
    with open(backing, "wb") as f:
        f.truncate(3 << 30)                                  # sparse
    dev = sh("losetup", "--find", "--show", backing)
    request.addfinalizer(lambda: subprocess.run(["losetup", "-d", dev], capture_output=True))
    return dev


@pytest.fixture
def phy(loop, request):
    """The guest's root: a 2 GiB LVM volume VG/root on a loop device, in two segments around a 64 MiB VG/swap;
    active where the kernel has device-mapper, else only in LVM's metadata (see the module's text)."""
    off = ["--driverloaded", "n"] if dm_reason() else []
    vg = f"imgbuildtest{os.getpid()}"
    sh("pvcreate", *LVMCONF, loop)
    request.addfinalizer(lambda: subprocess.run(["pvremove", *LVMCONF, "-ff", "-y", loop], capture_output=True,
                                                env=LVM_ENV))
    sh("vgcreate", *LVMCONF, vg, loop)
    request.addfinalizer(lambda: subprocess.run(["vgremove", *LVMCONF, *off, "-f", vg], capture_output=True,
                                                env=LVM_ENV))
    inactive = ["-an", "-Zn"] if off else []
    sh("lvcreate", *LVMCONF, *off, *inactive, "-y", "-L", "1G", "-n", "root", vg)
    sh("lvcreate", *LVMCONF, *off, *inactive, "-y", "-L", "64M", "-n", "swap", vg)
    sh("lvextend", *LVMCONF, *off, "-L", "+1G", f"{vg}/root")
    return f"/dev/{vg}/root", vg


def lv_ranges(vg: str, lv: str) -> list[tuple[str, int, int]]:
    """(PV, byte offset, length) of each segment, in order, from LVM's seg_pe_ranges and pe_start: how the test
    puts bytes into a volume that is not active."""
    out = sh("lvs", *LVMCONF, "--noheadings", "--units", "b", "--nosuffix", "--segments", "-o",
             "seg_pe_ranges,vg_extent_size", f"{vg}/{lv}")
    ranges = []
    for line in out.splitlines():
        pe_ranges, ext = line.split()
        pv, _, span = pe_ranges.rpartition(":")
        first, last = (int(x) for x in span.split("-"))
        pe_start = int(sh("pvs", *LVMCONF, "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", pv))
        ranges.append((pv, pe_start + first * int(ext), (last - first + 1) * int(ext)))
        assert ranges[-1][1] % (1 << 20) == 0, "dd below copies in MiB"
    return ranges


def write_lv(vg: str, lv: str, image: Path) -> None:
    """image's bytes into the volume vg/lv: through its device when it is active, else segment by segment."""
    dev = Path(f"/dev/{vg}/{lv}")
    if dev.exists():
        sh("dd", f"if={image}", f"of={dev}", "bs=4M", "conv=sparse,notrunc", "status=none")
        return
    done = 0
    for pv, offset, length in lv_ranges(vg, lv):
        sh("dd", f"if={image}", f"of={pv}", "bs=1M", f"skip={done >> 20}", f"seek={offset >> 20}",
           f"count={length >> 20}", "conv=sparse,notrunc", "status=none")
        done += length


def test_the_plan_names_the_disks_the_boot_and_the_outputs():
    p = xen_kvm.plan(PV_CFG.format(dev="/dev/vg0/root"), "/etc/xen/pvweb.cfg", "kvm")
    assert (p.name, p.memory, p.vcpus, p.macs) == ("pvweb", 512, 1, ["00:16:3e:5a:00:01"])
    assert p.root.target == "/dev/vg0/root" and p.boot.startswith("the dom0's kernel /boot/vmlinuz-2.6.32")
    assert p.outputs == ["pvweb.qcow2", "pvweb-xvda2.qcow2", "pvweb.xml", "manifest.json"]
    assert any(n.startswith("further disk: /dev/vg0/swap (phy: device, xvda2) -> pvweb-xvda2.qcow2") for n in p.notes)
    assert any("EL5/EL6 kernel grub" in n for n in p.notes)
    assert xen_kvm.plan(PV_CFG.format(dev="vg0/root"), "x.cfg", "pvh").outputs[:3] == \
        ["pvweb.raw", "pvweb-xvda2.raw", "pvweb-pvh.cfg"]
    with pytest.raises(InputError, match="same device name"):
        xen_kvm.plan(PV_CFG.format(dev="/dev/vg0/root").replace("xvda2", "xvda1"), "x.cfg", "kvm")
    pyg = PV_CFG.replace('kernel = "/boot/vmlinuz-2.6.32-5-xen-amd64"', 'bootloader = "/usr/bin/pygrub"')
    assert xen_kvm.plan(pyg.format(dev="/dev/sda1"), "x.cfg", "hvm").boot.startswith("pygrub")
    with pytest.raises(InputError, match="no disk"):
        xen_kvm.plan('name = "x"\ndisk = []\n', "x.cfg", "kvm")
    hostile = 'name = "x"\ndisk = ["drbd:res0,xvda1,w"]\n'
    with pytest.raises(InputError, match="block script"):
        xen_kvm.plan(hostile, "x.cfg", "kvm")


@pytest.mark.root
def test_bad_input_is_refused_before_anything_is_read(tmp_path):
    cfg = tmp_path / "pvweb.cfg"
    cfg.write_text(PV_CFG.format(dev="/dev/vg0/root"))
    r = migrate("xen", "otherhost", str(cfg), "--to-kvm", tmp_path / "out")
    assert r.returncode == 2 and "not on otherhost" in r.stderr, r.stderr
    r = migrate("xen", "localhost", str(cfg), "--hvm")
    assert r.returncode == 2 and "go with --to-kvm" in r.stderr, r.stderr
    r = migrate("xen", "localhost", str(cfg), "--to-kvm", tmp_path / "out", "--bridge", "br0;reboot")
    assert r.returncode == 2 and "--bridge" in r.stderr and not (tmp_path / "out").exists(), r.stderr
    r = migrate("xen", "localhost", str(cfg), "--to-kvm", tmp_path / "out")     # no such device here
    assert r.returncode == 2 and "/dev/vg0/root" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "root.img").write_bytes(b"")
    files = tmp_path / "files.cfg"       # a further disk's image file missing: the dry run says so too
    files.write_text(PV_CFG.format(dev="x").replace("phy:x", f"file:{tmp_path}/root.img")
                     .replace("phy:/dev/vg0/swap", f"file:{tmp_path}/gone.img"))
    for dry in (["--dry-run"], []):
        r = migrate("xen", "localhost", str(files), "--to-kvm", tmp_path / "out", *dry)
        assert r.returncode == 2 and f"{tmp_path}/gone.img: the guest's disk image is missing" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("someone's file\n")
    r = migrate("xen", "localhost", str(cfg), "--to-kvm", tmp_path / "full")
    assert r.returncode == 2 and "not empty" in r.stderr, r.stderr


@pytest.mark.root
def test_a_stopped_guests_device_is_read_directly_and_a_busy_one_without_lvm_refused(loop, tmp_path):
    dev = loop
    notes: list[str] = []
    with blockdev.readable(dev, live=False, notes=notes) as src:
        assert str(src) == dev
    assert notes == [f"{dev}: read directly (the guest is stopped)"]
    with pytest.raises(InputError, match="cannot be snapshotted"):
        with blockdev.readable(dev, live=True):
            pass
    subprocess.run(["dd", "if=/dev/urandom", f"of={dev}", "bs=1M", "count=1", "seek=100", "status=none"], check=True)
    blockdev.sparse_copy(Path(dev), tmp_path / "copy.raw")
    st = os.stat(tmp_path / "copy.raw")
    assert st.st_size == 3 << 30 and st.st_blocks * 512 <= 2 << 20, "the copy is not sparse"


@pytest.mark.root
@pytest.mark.skipif(dm_reason() is not None, reason=str(dm_reason()))
def test_a_live_guest_is_read_through_a_snapshot_that_is_removed(phy, tmp_path):
    dev, vg = phy
    notes: list[str] = []
    with blockdev.readable(dev, live=True, snapshot_size="64M", notes=notes) as src:
        assert str(src) == f"/dev/{vg}/root-imgbuild-snap" and Path(src).exists()
    assert "snapshot" in notes[0]
    assert "root-imgbuild-snap" not in sh("lvs", *LVMCONF, "--noheadings", "-o", "lv_name", vg)


@pytest.mark.root
def test_an_inactive_volume_is_read_from_its_extents_and_nothing_is_activated(phy, tmp_path):
    """VG/root, not active here (no /dev/VG/root), is read from its two segments in order, VG/swap between them
    left out; the copy is sparse; --live is refused (no guest here runs from an inactive volume). Where this kernel
    has device-mapper the volume is active: then it is read through its device, and this test checks that."""
    dev, vg = phy
    marks = {0: os.urandom(1 << 20), (1 << 30) - (1 << 20): os.urandom(1 << 20), 1 << 30: os.urandom(1 << 20),
             (2 << 30) - (1 << 20): os.urandom(1 << 20)}          # both ends of both segments
    image = tmp_path / "pattern.img"
    with open(image, "wb") as f:
        f.truncate(2 << 30)
        for at, data in marks.items():
            f.seek(at)
            f.write(data)
    write_lv(vg, "root", image)
    swap = tmp_path / "swap.img"
    swap.write_bytes(b"\xaa" * (64 << 20))
    write_lv(vg, "swap", swap)
    notes: list[str] = []
    copy = tmp_path / "copy.raw"
    with blockdev.readable(dev, live=False, notes=notes) as src:
        blockdev.sparse_copy(src, copy)
    active = Path(dev).exists()
    assert ("read directly" if active else "is read from its extents") in notes[0], notes
    st = os.stat(copy)
    assert st.st_size == 2 << 30 and st.st_mode & 0o777 == 0o600
    assert st.st_blocks * 512 <= 8 << 20, "the copy is not sparse, or VG/swap's 64 MiB of 0xaa are in it"
    with open(copy, "rb") as f:
        for at, data in marks.items():
            f.seek(at)
            assert f.read(1 << 20) == data, f"byte {at} of the volume is not where LVM put it"
    for name in (dev, f"/dev/mapper/{vg}-root"):        # both spellings of a volume in an xm config
        assert isinstance(blockdev.source(name), Path if active else lvextents.InactiveVolume)
    if not active:
        with pytest.raises(InputError, match="not active on this host"):
            blockdev.source(dev, live=True)
        assert "active" not in sh("lvs", *LVMCONF, "--noheadings", "-o", "lv_active", f"{vg}/root").split()


def test_a_missing_device_on_a_host_without_lvm_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))           # no lvs here: the device's own error, not "lvs missing"
    with pytest.raises(InputError, match=r"phy:/dev/vg0/root: /dev/vg0/root: No such file or directory"):
        blockdev.source("/dev/vg0/root")


def fake_lvm(segs: list[dict], tail: tuple[str, ...] = (), pe_start: int = 1 << 20):
    """A stand-in for blockdev.lvm: LVM's JSON reports as `lvs --segments` and `pvs` give them, so the checks on
    what LVM says (data imgbuild does not trust) can be fed each bad answer."""
    import json as _json
    from types import SimpleNamespace

    def lvm(*args, check=True):
        rep = {"seg": segs} if args[0] == "lvs" else {"pv": [{"pv_name": args[-1], "pe_start": str(pe_start)}]}
        return SimpleNamespace(returncode=0, stdout=_json.dumps({"report": [rep]}), tail=list(tail))
    return lvm


def seg(pv: str, first: int, start: int, size: int, lv_size: int, **kw) -> dict:
    return {"vg_name": "vg", "lv_name": "root", "lv_active": "", "lv_size": str(lv_size), "seg_start": str(start),
            "seg_size": str(size), "segtype": "linear", "stripes": "1", "devices": f"{pv}({first})",
            "vg_extent_size": str(4 << 20), **kw}


@pytest.mark.root
def test_what_lvm_says_of_an_inactive_volume_is_checked_before_a_byte_is_read(loop):
    """Two segments out of order are put in order; an active volume, a gap, a striped or thin segment, a missing
    physical volume, a path that is no /dev path, a range past the device's end, segments short of lv_size and
    two volume groups of one name are each refused with their own reason."""
    g = 1 << 30
    ok = [seg(loop, 300, g, g, 2 * g), seg(loop, 0, 0, g, 2 * g)]
    vol = lvextents.find("vg", "root", fake_lvm(ok))
    assert [(e.offset, e.length, e.at) for e in vol.extents] == [(1 << 20, g, 0), ((1 << 20) + 300 * (4 << 20), g, g)]
    bad = {
        "is active": [seg(loop, 0, 0, g, g, lv_active="active")],
        "leave a gap at byte": [seg(loop, 0, 0, g, 3 * g), seg(loop, 300, 2 * g, g, 3 * g)],
        "is a striped volume": [seg(loop, 0, 0, g, g, segtype="striped", stripes="2")],
        "is a thin volume": [seg(loop, 0, 0, g, g, segtype="thin")],
        "a physical volume it lies on is missing": [seg("[unknown]", 0, 0, g, g)],
        "not a device path under /dev": [seg("/dev/../etc/passwd", 0, 0, g, g)],
        "end beyond the device": [seg(loop, 700, 0, g, g)],           # 2.7 GiB + 1 GiB on a 3 GiB device
        "cover 1073741824 bytes of a": [seg(loop, 0, 0, g, 2 * g)],
    }
    for why, segs in bad.items():
        with pytest.raises(InputError, match=why):
            lvextents.find("vg", "root", fake_lvm(segs))
    with pytest.raises(InputError, match="two volume groups named vg"):
        lvextents.find("vg", "root", fake_lvm(ok, tail=("  WARNING: Multiple VGs found with the same name: "
                                                        "skipping vg",)))


def test_volume_names_from_a_device_path():
    assert lvextents.names(Path("/dev/vg0/root")) == ("vg0", "root")
    assert lvextents.names(Path("/dev/mapper/my--vg-web--root")) == ("my-vg", "web-root")
    for bad in ("/dev/sda1", "/dev/vg0/../sda", "/dev/mapper/novolume", "/srv/vg0/root", "/dev/vg0/$(reboot)"):
        assert lvextents.names(Path(bad)) is None, bad


SWAP_UUID = "5a0e1d2c-3b4a-4c5d-8e6f-0123456789ab"
FSTAB = """# the PV guest's fstab: its disks by their Xen names
/dev/xvda1  /     ext4  defaults,errors=remount-ro  0 1
/dev/xvda2  none  swap  sw                          0 0
/dev/xvdc1  /srv  ext4  defaults                    0 2
proc        /proc proc  defaults                    0 0
"""


def test_the_further_disks_fstab_lines_are_kept_by_uuid_and_the_rest_named():
    """Lines for a converted disk (Xen name in any spelling, or its UUID) are kept with UUID=; lines that mount
    no disk as they are; a /boot of its own and lines for disks not converted dropped, each named."""
    data = "0a1b2c3d-0000-4000-8000-00000000dada"
    found = {"xvda2": {"TYPE": "swap", "UUID": SWAP_UUID}, "xvdb": {"TYPE": "ext4", "UUID": data},
             "xvde1": {"TYPE": "ext2", "UUID": "5d1e0000-0000-4000-8000-000000000b00"}}
    old = FSTAB + (f"/dev/sdb /srv ext4 defaults 0 2\nuuid={data} /data ext4 ro 0 2\n/dev/xvdd /x ext4 defaults 0 0\n"
                   "tmpfs /var/tmp tmpfs nosuid,nodev 0 0\nnfs1:/export/home /home nfs defaults 0 0\n"
                   "/dev/xvde1 /boot ext2 defaults 0 2\n")
    keep, notes = guestdisks.fstab(old, found)
    assert keep == [f"UUID={SWAP_UUID}\tnone\tswap\tsw\t0\t0", f"UUID={data}\t/srv\text4\tdefaults\t0\t2",
                    f"UUID={data}\t/data\text4\tro\t0\t2", "tmpfs\t/var/tmp\ttmpfs\tnosuid,nodev\t0\t0",
                    "nfs1:/export/home\t/home\tnfs\tdefaults\t0\t0"]
    assert [n.split("'")[1].split()[0] for n in notes] == ["/dev/xvdc1", "/dev/xvdd", "/dev/xvde1"], notes
    assert "on the root disk's /boot" in notes[2], notes


def test_system_directories_on_another_disk_are_found():
    """/usr, /var (where dpkg and the kernel's modules go) on a disk of their own: the conversion would install
    beside them, so it refuses; /var/lib/mysql, /usr/local, /srv, a tmpfs on /var/tmp and /boot are no reason."""
    old = "\n".join(["/dev/xvda1 / ext4 defaults 0 1", "/dev/xvdb1 /var ext4 defaults 0 2",
                     "UUID=0a1b2c3d-0000-4000-8000-00000000dada /usr/ ext4 defaults 0 2",
                     "/dev/xvdc1 /var/lib/mysql ext4 defaults 0 2", "/dev/xvdc2 /usr/local ext4 d 0 2",
                     "/dev/xvdd /srv ext4 d 0 2", "tmpfs /var/tmp tmpfs d 0 0", "/dev/xvde1 /boot ext2 d 0 2",
                     "# /dev/xvdf /etc ext4 d 0 2"])
    assert guestdisks.split_system(old) == ["/var", "/usr/"]
    assert guestdisks.split_system(FSTAB) == []


@pytest.mark.root
def test_what_a_further_disk_holds_is_read_from_the_copy(tmp_path):
    """blkid on the copy: a swap area and a bare filesystem give their type and UUID under the disk's Xen name; a
    disk with a partition table gives each partition's under NAME1, NAME2 (an empty partition none); nothing on
    it, none."""
    def blank(name: str) -> Path:
        f = tmp_path / name
        with open(f, "wb") as fh:
            fh.truncate(64 << 20)
        return f
    data = "0a1b2c3d-0000-4000-8000-00000000dada"
    sh("mkswap", "-q", "-U", SWAP_UUID, blank("swap"))
    assert guestdisks.identities(tmp_path / "swap", "xvda2") == {"xvda2": {"TYPE": "swap", "UUID": SWAP_UUID}}
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-U", data, blank("ext4"))
    assert guestdisks.identities(tmp_path / "ext4", "xvdb") == {"xvdb": {"TYPE": "ext4", "UUID": data}}
    table = blank("table")
    subprocess.run(["sfdisk", "-q", str(table)], input="label: gpt\n,16M\n,16M\n,\n", text=True, check=True)
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-U", data, "-E", "offset=1048576", table, "16M")       # partition 1
    sh("dd", f"if={tmp_path / 'swap'}", f"of={table}", "bs=1M", "count=16", "seek=33", "conv=notrunc",
       "status=none")                                                                             # partition 3
    assert guestdisks.identities(table, "xvdc") == {"xvdc1": {"TYPE": "ext4", "UUID": data},
                                                    "xvdc3": {"TYPE": "swap", "UUID": SWAP_UUID}}
    assert guestdisks.identities(blank("empty"), "xvdd") == {}


FAKE_LVM = """#!/bin/sh
# a stand-in for LVM (see the test): records each call, answers as LVM would for vgtest/root
echo "$(basename "$0") $*" >> "$LVM_CALLS"
case "$(basename "$0") $*" in
  lvs*imgbuild-snap*) exit 5 ;;                                   # no snapshot left from before
  lvs*) echo "  vgtest/root" ;;
esac
"""


@pytest.mark.root
def test_the_snapshot_is_removed_also_when_the_copy_fails_lvm_stood_in(loop, tmp_path, monkeypatch):
    """A STAND-IN for LVM, because this machine's kernel has no device-mapper (lvcreate fails with 'Required
    device-mapper target(s) not detected'; the real test above is skipped for it): lvs, lvcreate and lvremove on
    PATH record what imgbuild asks of LVM. It asks for the snapshot (without udev), reads from it, and removes
    it when the read fails; a snapshot left by an earlier run is refused, not reused."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("lvs", "lvcreate", "lvremove"):
        (bin_dir / name).write_text(FAKE_LVM)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("LVM_CALLS", str(calls))
    with pytest.raises(RuntimeError, match="the copy failed"):
        with blockdev.readable(loop, live=True, snapshot_size="64M") as src:
            assert str(src) == "/dev/vgtest/root-imgbuild-snap"
            raise RuntimeError("the copy failed")
    made = calls.read_text().splitlines()
    assert [c.split()[0] for c in made] == ["lvs", "lvs", "lvcreate", "lvremove"], made
    assert made[2] == f"lvcreate --config {blockdev.LVM_CONFIG} -s -n root-imgbuild-snap -L 64M vgtest/root"
    assert made[3].endswith("-f vgtest/root-imgbuild-snap")
    # a snapshot of that name exists already: refused, nothing made or removed
    (bin_dir / "lvs").write_text(FAKE_LVM.replace("exit 5", "exit 0"))
    calls.unlink()
    with pytest.raises(InputError, match="exists already"):
        with blockdev.readable(loop, live=True):
            pass
    assert [c.split()[0] for c in calls.read_text().splitlines()] == ["lvs", "lvs"]


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_a_pv_guest_converted_to_kvm_boots_under_qemu(debian12_build, phy, tmp_path):
    """The acceptance test: the PV guest's filesystem (the debian12 tree, no kernel, no GRUB) on the phy: device,
    an xm config booting the dom0's kernel; `migrate xen localhost pvweb --to-kvm OUT`; `imgbuild boot OUT`."""
    dev, vg = phy
    tree = debian12_build.parent / "debian12.rootfs"
    assert not list((tree / "boot").glob("vmlinuz-*")), "the guest tree already has a kernel"
    image = tmp_path / "root.img"
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, image, "2G")
    (tmp_path / "fstab").write_text(FSTAB)            # the PV guest's own: by Xen names (the tree is shared)
    subprocess.run(["debugfs", "-w", "-R", "rm /etc/fstab", image], capture_output=True)     # if it has one
    sh("debugfs", "-w", "-R", f"write {tmp_path / 'fstab'} /etc/fstab", image)
    assert "/dev/xvdc1" in sh("debugfs", "-R", "cat /etc/fstab", image)
    write_lv(vg, "root", image)
    image.unlink()
    swap = tmp_path / "swap.img"                      # its swap disk, VG/swap
    swap.write_bytes(b"")
    os.truncate(swap, 64 << 20)
    sh("mkswap", "-q", "-U", SWAP_UUID, swap)
    write_lv(vg, "swap", swap)
    cfg = tmp_path / "pvweb.cfg"
    cfg.write_text(PV_CFG.format(dev=dev).replace("/dev/vg0/swap", f"/dev/{vg}/swap"))
    out = tmp_path / "out"
    r = migrate("xen", "localhost", str(cfg), "--to-kvm", out, "--dry-run")
    assert r.returncode == 0 and "nothing was changed" in r.stdout and not out.exists(), r.stdout + r.stderr
    # DIR holds an earlier run's output (its manifest names a disk this run has not, a path out of DIR and a
    # directory): the run replaces it, removes that disk, and nothing else
    out.mkdir()
    (out / "pvweb-xvdz.qcow2").write_bytes(b"earlier")
    (out / "notes.d").mkdir()
    (tmp_path / "outside").write_bytes(b"not ours")
    (out / "manifest.json").write_text(json.dumps({"made_by": xen_kvm.MARKER, "artifacts": [
        {"kind": "extra-disk-xvdz", "path": "pvweb-xvdz.qcow2"}, {"kind": "x", "path": "../outside"},
        {"kind": "y", "path": "notes.d"}]}))
    r = migrate("xen", "localhost", str(cfg), "--to-kvm", out, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.d", "pvweb-xvda2.qcow2", "pvweb.qcow2",
                                                     "pvweb.xml"]
    assert (tmp_path / "outside").read_bytes() == b"not ours"
    xml = (out / "pvweb.xml").read_text()
    assert "00:16:3e:5a:00:01" in xml and str(out / "pvweb.qcow2") in xml
    assert re.search(rf"<source file=\"{out / 'pvweb-xvda2.qcow2'}\" />\s*<target dev=\"vdb\" bus=\"virtio\"", xml), xml
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "pvweb" and m["was"].startswith("the dom0's kernel")
    assert any("dropped '/dev/xvdc1 " in n for n in m["notes"]), m["notes"]
    # the tree was built for a container (udev masked): a VM needs udev for its disks' by-uuid links
    unmasked = next(n for n in m["notes"] if n.startswith("unmasked (masked as in a container"))
    assert "systemd-udevd-kernel.socket" in unmasked and "getty@" not in unmasked, unmasked
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    b = imgbuild("boot", out, "--timeout", "300", "--keep", env=env, timeout=600)
    kept = re.search(r"^kept: (\S+)$", b.stdout, re.M)
    try:
        assert b.returncode == 0, b.stdout + b.stderr[-3000:]
        assert re.search(r"^pvweb: up in [\d.]+ s under qemu: systemd (running|degraded)", b.stdout, re.M), b.stdout
        # the swap disk came along: attached as vdb, its fstab line rewritten to its UUID, and used
        console = (Path(kept.group(1)) / "console.log").read_text(errors="replace")
        assert re.search(r"Adding \d+k swap on /dev/vdb\.", console), console[-3000:]     # the kernel's line
        assert "Timed out waiting for device" not in console, console[-3000:]
    finally:
        if kept:
            s = imgbuild("boot", "--stop", kept.group(1), env=env, timeout=120)
            assert s.returncode == 0, s.stdout + s.stderr


@pytest.mark.parametrize("kind, name", [("kvm", "pvweb.xml"), ("hvm", "pvweb-hvm.cfg"), ("pvh", "pvweb-pvh.cfg")])
def test_the_vm_config_has_the_guests_memory_mac_and_disk(tmp_path, kind, name):
    """The configs come from the libvirt and xenvm targets (the xl ones read back by xl's own parser when it is
    installed); the manifest is what `imgbuild boot` reads."""
    from builder.build.manifest import read_manifest
    from builder.build.targets.disk import DiskOptions

    p = xen_kvm.plan(PV_CFG.format(dev="/dev/vg0/root"), "pvweb.cfg", kind)
    req = xen_kvm.KvmRequest(tmp_path / "pvweb.cfg", tmp_path, kind, bridge="br7")
    fmt = xen_kvm.disk_format(kind)
    xen_kvm.write_configs(req, p, DiskOptions(format=fmt, table="gpt", boot="bios"))
    text = (tmp_path / name).read_text()
    assert "00:16:3e:5a:00:01" in text and "br7" in text and str(tmp_path / f"pvweb.{fmt}") in text
    assert ("512" in text) and (("hvm" in text) if kind == "hvm" else True)
    if kind == "pvh":
        assert re.search(r'^bootloader *= "pygrub"', text, re.M) and re.search(r'^type *= "pvh"', text, re.M), text
    m = read_manifest(tmp_path)
    assert [a["kind"] for a in m["artifacts"]][:2] == [f"disk-{fmt}", "extra-disk-xvda2"]
    assert m["made_by"] == xen_kvm.MARKER
    # the further disk (the swap volume) after the root: vdb for libvirt, xvdb for xl
    more = str(tmp_path / f"pvweb-xvda2.{fmt}")
    assert (f'<source file="{more}" />' in text and '<target dev="vdb" bus="virtio" />' in text) if kind == "kvm" \
        else f"format={fmt}, vdev=xvdb, access=rw, target={more}" in text, text
    assert m["network"] == {"eth0": {"mac": "00:16:3e:5a:00:01"}}
