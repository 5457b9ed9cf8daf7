"""The disk target: recipes/debian12-vm.yml built for real (Debian's kernel and GRUB from the host's mirror) into a
raw and a qcow2 disk that boot to a login prompt under real qemu (TCG), with SeaBIOS and with OVMF; a second build
gives the same bytes except the two the note names; no loop device or mount is used. The layout, the partition
script and the boot sector are checked on their own too."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess

import pytest

from builder.build.targets import disk
from builder.core.errors import InputError
from tests.build.targets.conftest import VM_RECIPE, VM_SET
from tests.conftest import REPO, imgbuild

BOOT_TIMEOUT = 240


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_vm_disk_boots(vm_build, tmp_path, firmware):
    """`imgbuild boot` (its default runtime for a disk is qemu) on the qcow2: GRUB, the kernel, systemd to
    multi-user.target on the serial console, and the guest's sshd answering on the recipe's address. The UEFI boot
    is kept running, its serial console attached with `imgbuild boot --console` (a return gets the login prompt
    again), and then stopped with --stop."""
    m = json.loads((vm_build / "manifest.json").read_text())
    kinds = {a["kind"]: a["path"] for a in m["artifacts"]}
    assert kinds["disk-raw"] == "debian12-vm.raw" and kinds["disk-qcow2"] == "debian12-vm.qcow2"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    keep = ["--keep"] if firmware == "uefi" else []
    r = imgbuild("boot", vm_build, "--firmware", firmware, "--timeout", str(BOOT_TIMEOUT), *keep, env=env,
                 timeout=600)
    kept = re.search(r"^kept: (\S+)$", r.stdout, re.M)
    try:
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
        assert re.search(rf"^debian12-vm: up in [\d.]+ s under qemu: systemd running \(console: "
                         rf"(login prompt|multi-user.target), no failed unit; {firmware}, (tcg|kvm)\); "
                         rf"sshd answers on 10\.0\.3\.20:22$", r.stdout, re.M), r.stdout
        if kept:
            assert f"reach it: imgbuild boot --console {kept.group(1)}" in r.stdout, r.stdout
            c = imgbuild("boot", "--console", kept.group(1), input="\r", env=env, timeout=60)
            assert c.returncode == 0, c.stderr
            assert re.search(r"^vm20 login: ", c.stdout, re.M), c.stdout
    finally:
        if kept:
            s = imgbuild("boot", "--stop", kept.group(1), env=env, timeout=120)
            assert s.returncode == 0, s.stdout + s.stderr
    assert not list(tmp_path.glob("imgbuild-boot-*"))


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_the_layout_and_a_second_build(vm_build, tmp_path):
    raw = vm_build / "debian12-vm.raw"
    table = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    assert [p["type"] for p in table["partitions"]] == [disk.BIOS_BOOT, disk.ESP_TYPE, disk.LINUX_FS]
    assert [p["start"] for p in table["partitions"]][:2] == [2048, 4096]
    # the same recipe again: the same disk, but for the ESP's EFI directory entry, whose creation and change
    # times mtools sets from the clock (2 bytes; see docs/targets.md)
    r = imgbuild(VM_RECIPE, "-o", tmp_path / "again", "--force", *VM_SET)
    assert r.returncode == 0, r.stderr[-3000:]
    again = tmp_path / "again" / "debian12-vm" / "debian12-vm.raw"
    diff = subprocess.run(["cmp", "-l", str(raw), str(again)], capture_output=True, text=True).stdout.split("\n")
    offsets = [int(line.split()[0]) - 1 for line in diff if line.strip()]
    esp = table["partitions"][1]["start"] * disk.SECTOR
    assert len(offsets) <= 4 and all(esp <= o < esp + 4 * (1 << 20) for o in offsets), offsets


def opts(**kw) -> disk.DiskOptions:
    return disk.DiskOptions(**kw)


def test_layout_gpt_both_has_a_bios_boot_partition_and_an_esp():
    parts, size = disk.layout(opts(), 100 << 20)
    assert [(r, s) for r, s, _n in parts] == [("bios", 2048), ("esp", 4096), ("root", 4096 + 129024)]
    assert parts[-1][2] * 512 >= 100 << 20 and size == (parts[-1][1] + parts[-1][2] + 34) * 512
    parts, _ = disk.layout(opts(table="mbr", boot="bios"), 100 << 20)
    assert [(r, s) for r, s, _n in parts] == [("root", 2048)]           # the core image goes before it
    with pytest.raises(InputError, match="too small"):
        disk.layout(opts(size="64M"), 100 << 20)


def test_the_core_image_goes_where_there_is_room_for_it():
    gpt, _ = disk.layout(opts(), 100 << 20)
    assert disk.core_place(gpt) == (2048, 2048, "BIOS boot partition")          # 1 MiB
    mbr, _ = disk.layout(opts(table="mbr", boot="bios"), 100 << 20)
    assert disk.core_place(mbr) == (1, 2047, "gap before the first partition")


def test_the_partition_script_is_the_same_for_the_same_recipe():
    parts, _ = disk.layout(opts(), 100 << 20)
    a = disk.sfdisk_script(opts(), parts, "vm", 1700000000)
    assert a == disk.sfdisk_script(opts(), parts, "vm", 1700000000)
    assert a != disk.sfdisk_script(opts(), parts, "vm2", 1700000000)
    assert a.startswith("label: gpt\nlabel-id: ") and "name=bios" in a and f"type={disk.ESP_TYPE}" in a
    mbr = disk.sfdisk_script(opts(table="mbr"), disk.layout(opts(table="mbr"), 100 << 20)[0], "vm", 1)
    assert mbr.startswith("label: dos\n") and "type=ef" in mbr and "type=83, bootable" in mbr


def test_the_boot_sector_points_at_the_core_image(tmp_path):
    img = tmp_path / "d.img"
    table = bytes(range(64)) + b"\x55\xaa"
    img.write_bytes(b"\0" * 446 + table + b"\0" * (4096 * 512 - 512))
    boot_img = bytes([0xEB]) + b"\x63" * 511
    core = bytes(512) + b"\x11" * 1000                    # diskboot sector, then the rest (2 sectors)
    disk.bios_boot(img, boot_img, core, 2048)
    data = img.read_bytes()
    assert data[446:512] == table                          # the partition table and signature kept
    assert data[0] == 0xEB and struct.unpack_from("<Q", data, 0x5C)[0] == 2048 and data[0x64] == 0xFF
    first = data[2048 * 512:2049 * 512]
    assert struct.unpack_from("<QHH", first, 512 - 12) == (2049, 2, 0x820)
    assert data[2049 * 512:2049 * 512 + 1000] == b"\x11" * 1000


@pytest.mark.root
def test_an_el_tree_gets_its_core_image_from_grub2_mkimage(tmp_path):
    """EL names GRUB's tool grub2-mkimage (grub2-tools): the disk target runs the tree's own, in a chroot, with the
    platform and the root filesystem's UUID. The tree here is a stand-in (static busybox; a grub2-mkimage that
    records its arguments): a CentOS mirror is not reachable from here, so the real EL build is not made."""
    from builder.build.context import Context
    from builder.build.families import family_of
    from builder.build.recipe import load
    from builder.core.rootfs import RootFS

    root = tmp_path / "root"
    for d in ("bin", "usr/bin", "usr/lib/grub/i386-pc", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "usr/bin/grub2-mkimage").write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done\n'
        'echo "$0 $(/bin/busybox cat "$(/bin/busybox dirname "$out")/early.cfg")" > "$out"\n')
    (root / "usr/bin/grub2-mkimage").chmod(0o755)
    r = load(REPO / "recipes" / "centos7-vm.yml").recipe
    ctx = Context(recipe=r, source=REPO / "recipes" / "centos7-vm.yml", root=RootFS(root), work=tmp_path,
                  stage=tmp_path, epoch=1700000000, family=family_of(r.distro))
    core = disk.core_image(disk.Job.of(ctx), "bios", "0d0e0a0d-0000-4000-8000-000000000001").decode()
    assert core.startswith("/usr/bin/grub2-mkimage search --no-floppy --fs-uuid --set=root "
                           "0d0e0a0d-0000-4000-8000-000000000001"), core
    assert not (root / "tmp" / ".imgbuild-grub-i386-pc").exists()       # its work dir in the tree is gone
    with pytest.raises(InputError, match="x86_64-efi") as e:            # no EFI modules in this tree
        disk.core_image(disk.Job.of(ctx), "uefi", "0d0e0a0d-0000-4000-8000-000000000001")
    assert "grub2-efi-x64-modules" in e.value.hint
