"""The disk target: recipes/debian12-vm.yml built for real (Debian's kernel and GRUB from the host's mirror) into a
raw and a qcow2 disk that boot to a login prompt under real qemu (TCG), with SeaBIOS and with OVMF; a second build
gives the same bytes except the two the note names; no loop device or mount is used. The layout, the partition
script and the boot sector are checked on their own too."""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess

import pytest

from builder.build.targets import disk
from builder.core.errors import InputError
from tests.conftest import REPO, imgbuild

VM_RECIPE = REPO / "recipes" / "debian12-vm.yml"
BOOT_TIMEOUT = 240


def loop_devices() -> list[str]:
    return subprocess.run(["losetup", "-l", "-n", "-O", "NAME"], capture_output=True, text=True).stdout.split()


@pytest.fixture(scope="module")
def vm_build(tmp_path_factory):
    """recipes/debian12-vm.yml built once for this module; (output dir, loop devices before the build)."""
    before = loop_devices()
    out = tmp_path_factory.mktemp("vm") / "out"
    r = imgbuild(VM_RECIPE, "-o", out)
    assert r.returncode == 0, r.stderr[-4000:]
    assert loop_devices() == before
    return out / "debian12-vm"


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_vm_disk_boots(vm_build, tmp_path, firmware):
    """`imgbuild boot` (its default runtime for a disk is qemu) on the qcow2: GRUB, the kernel, systemd to
    multi-user.target on the serial console, and the guest's sshd answering on the recipe's address."""
    m = json.loads((vm_build / "manifest.json").read_text())
    kinds = {a["kind"]: a["path"] for a in m["artifacts"]}
    assert kinds["disk-raw"] == "debian12-vm.raw" and kinds["disk-qcow2"] == "debian12-vm.qcow2"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = imgbuild("boot", vm_build, "--firmware", firmware, "--timeout", str(BOOT_TIMEOUT), env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert re.search(rf"^debian12-vm: up in [\d.]+ s under qemu: console: (login prompt|multi-user.target) "
                     rf"\({firmware}, (tcg|kvm)\); sshd answers on 10\.0\.3\.20:22$", r.stdout, re.M), r.stdout
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
    r = imgbuild(VM_RECIPE, "-o", tmp_path / "again", "--force")
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
