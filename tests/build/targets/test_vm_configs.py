"""The VM guest configs, read by the real consumers that run here: libvirt's domain schema (virt-xml-validate) and
libvirt's own domain parser (virsh on libvirt's built-in test driver, test:///default: no daemon, no hypervisor);
xl's parser (libxlutil) for the Xen HVM and PVH configs, Xen's real pygrub reading the built disk the way a
Xen host boots a PVH guest from it, and cloud-init's own checks of the NoCloud seed ISO beside the disk. No Xen
hypervisor and no libvirtd run here: booting the disk itself is test_disk.py's (qemu)."""
from __future__ import annotations

import glob
import json
import re
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from builder.build import recipe
from builder.build.steps import cloudinit
from builder.build.targets import libvirt, xenvm
from builder.core.errors import RecipeError
from builder.guestconf import xl
from tests.build.targets.conftest import VM_RECIPE
from tests.build.test_cloudinit import _volume_id, cli

needs_xl = pytest.mark.skipif(not xl.available(), reason=str(xl.why_unavailable()))
PYGRUB = next(iter(sorted(glob.glob("/usr/lib/xen-*/bin/pygrub"), reverse=True)), None)
needs_pygrub = pytest.mark.skipif(PYGRUB is None, reason="Xen's pygrub is not installed (xen-utils-4.17)")
needs_libvirt = pytest.mark.skipif(not (shutil.which("virt-xml-validate") and shutil.which("xmllint")
                                        and shutil.which("virsh")),
                                   reason="libvirt-clients and libxml2-utils are not installed (scripts/setup.sh)")


def load(*overrides: str):
    return recipe.load(VM_RECIPE, overrides).recipe


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)


def libvirt_reads(path: Path) -> ET.Element:
    """The domain as libvirt's own parser reads it back (define + dumpxml on the built-in test driver)."""
    name = ET.parse(path).getroot().findtext("name")
    r = subprocess.run(["virsh", "-q", "-c", "test:///default", f"define {path}; dumpxml {name}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return ET.fromstring(r.stdout[r.stdout.index("<domain"):])


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
@needs_libvirt
def test_the_libvirt_domain_is_valid_and_names_the_disk_the_mac_and_the_bridge(vm_build):
    xml = vm_build / "debian12-vm.xml"
    assert validate(xml).returncode == 0, validate(xml).stderr
    dom = libvirt_reads(xml)
    assert dom.get("type") == "kvm"
    assert dom.find("os").get("firmware") is None          # BIOS: the disk boots both, auto picks BIOS
    d = dom.find("devices/disk")
    assert d.find("driver").get("type") == "qcow2"
    assert d.find("source").get("file") == "/var/lib/libvirt/images/debian12-vm.qcow2"
    assert d.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    # cloud_init's seed ISO (the build has one): a read-only CD-ROM beside the disk
    cd = dom.find("devices/disk[@device='cdrom']")
    assert cd.find("source").get("file") == "/var/lib/libvirt/images/debian12-vm.seed.iso"
    assert cd.find("target").attrib == {"dev": "sda", "bus": "sata"} and cd.find("readonly") is not None
    nic = dom.find("devices/interface")
    assert nic.find("mac").get("address") == "00:16:3e:00:03:20"
    assert nic.find("source").get("bridge") == "virbr0" and nic.find("model").get("type") == "virtio"
    assert dom.find("devices/console/target").attrib == {"type": "serial", "port": "0"}
    assert dom.findtext("uuid") == libvirt.domain_uuid("debian12-vm")


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
@needs_xl
@needs_pygrub
def test_the_xl_configs_parse_and_pygrub_boots_the_disk_as_a_pvh_guest(vm_build, tmp_path):
    """Both configs read back with xl's parser; the PVH one's pygrub (Xen's own, run as xl runs it, with the
    config's extra= as --args) finds the disk's GRUB menu in the GPT disk's root partition and hands over the
    kernel, the initrd and a command line with the root filesystem's UUID and the Xen console."""
    hvm = xl.parse((vm_build / "debian12-vm-hvm.cfg").read_text())
    pvh = xl.parse((vm_build / "debian12-vm-pvh.cfg").read_text())
    assert (hvm["type"], hvm["firmware"], hvm["serial"]) == ("hvm", "seabios", "pty")
    assert (pvh["type"], pvh["bootloader"], pvh["extra"]) == ("pvh", "pygrub", "console=hvc0")
    seed = "target=/var/lib/xen/images/debian12-vm.seed.iso"     # the build has cloud_init's seed ISO
    assert hvm["disk"][1] == f"format=raw, vdev=hdc, access=ro, devtype=cdrom, {seed}"
    assert pvh["disk"][1] == f"format=raw, vdev=xvdz, access=ro, {seed}"
    for cfg in (hvm, pvh):
        assert cfg["disk"][0] == "format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/debian12-vm.raw"
        assert len(cfg["disk"]) == 2 and all(xl.check_disk(d) is None for d in cfg["disk"])
        assert cfg["vif"] == ["mac=00:16:3e:00:03:20,bridge=xenbr0"]
    r = subprocess.run([PYGRUB, "-q", f"--args={pvh['extra']}", "--output-format=simple",
                        f"--output-directory={tmp_path}", str(vm_build / "debian12-vm.raw")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    kernel, ramdisk = Path(got["kernel"]), Path(got["ramdisk"])
    assert kernel.read_bytes()[0x202:0x206] == b"HdrS"       # a Linux bzImage
    assert ramdisk.stat().st_size > 1 << 20
    root_uuid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", "--offset",
                                str(int(subprocess.run(["partx", "-g", "-o", "START", "-n", "3",
                                                        str(vm_build / "debian12-vm.raw")],
                                                       capture_output=True, text=True).stdout) * 512),
                                str(vm_build / "debian12-vm.raw")], capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(rf"root=UUID={root_uuid} ro .*console=ttyS0,115200 net\.ifnames=0 console=hvc0",
                        got["args"]), got["args"]


@needs_libvirt
def test_uefi_domains_ask_libvirt_for_efi_without_secure_boot_and_values_are_escaped(tmp_path):
    r = load("targets.disk.boot=uefi", "targets.libvirt.path=/srv/vm&co/<disk>.qcow2",
             "targets.libvirt.network=default")
    path = tmp_path / "d.xml"
    path.write_text(libvirt.domain_xml(r, r.targets.libvirt))
    assert validate(path).returncode == 0, validate(path).stderr
    dom = libvirt_reads(path)
    assert dom.find("os").get("firmware") == "efi"
    assert dom.find("os/firmware/feature").attrib == {"enabled": "no", "name": "secure-boot"}
    assert dom.find("devices/disk/source").get("file") == "/srv/vm&co/<disk>.qcow2"
    nic = dom.find("devices/interface")
    assert nic.get("type") == "network" and nic.find("source").get("network") == "default"


@needs_xl
def test_the_xl_configs_attach_the_seed_iso_only_when_the_build_makes_one():
    """HVM: an emulated read-only CD-ROM; PVH, which has no emulated devices: a read-only PV disk after the root
    (pygrub boots the first). Each spec read by xl's disk parser. No ISO (none asked, or cloud-init disabled):
    the root disk alone."""
    with_iso = load("cloud_init={user_data: {ssh_pwauth: false}}", "targets.xenvm.path=/srv/xen/web.raw")
    disks = {kind: {x.key: x.value for x in xenvm.settings(with_iso, with_iso.targets.xenvm, kind)}["disk"]
             for kind in ("hvm", "pvh")}
    assert disks["hvm"][1] == "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/srv/xen/debian12-vm.seed.iso"
    assert disks["pvh"][1] == "format=raw, vdev=xvdz, access=ro, target=/srv/xen/debian12-vm.seed.iso"
    assert all(xl.check_disk(d) is None for d in disks["hvm"] + disks["pvh"])
    assert "debian12-vm.seed.iso beside it" in xenvm.header(with_iso, with_iso.targets.xenvm, "hvm")[-1]
    for r in (load(), load("cloud_init={disable: true}"), load("cloud_init={iso: false}")):
        for kind in ("hvm", "pvh"):
            assert len({x.key: x.value for x in xenvm.settings(r, r.targets.xenvm, kind)}["disk"]) == 1


@needs_xl
def test_xen_uefi_is_ovmf_and_one_type_writes_one_config():
    r = load("targets.disk.boot=uefi", "targets.disk.format=qcow2", "targets.xenvm.types=[hvm]")
    s = {x.key: x.value for x in xenvm.settings(r, r.targets.xenvm, "hvm")}
    assert s["firmware"] == "ovmf"
    assert s["disk"] == ["format=qcow2, vdev=xvda, access=rw, target=/var/lib/xen/images/debian12-vm.qcow2"]
    assert xl.check_disk(s["disk"][0]) is None
    assert r.targets.xenvm.types == ("hvm",)


@pytest.mark.parametrize("overrides, key, words", [
    (("targets.disk=null",), "targets.libvirt", "needs the disk target"),
    (("targets.disk.boot=bios", "targets.libvirt.firmware=uefi"), "targets.libvirt.firmware", "would not boot"),
    (("targets.disk.boot=uefi", "targets.xenvm.firmware=bios"), "targets.xenvm.firmware", "would not boot"),
    (("targets.xenvm.types=[]",), "targets.xenvm.types", "at least one"),
    (("targets.libvirt.memory=64",), "targets.libvirt.memory", "too little"),
    (("targets.xenvm.path=relative.raw",), "targets.xenvm.path", "absolute path"),
])
def test_a_vm_config_that_cannot_boot_is_refused_when_the_recipe_loads(overrides, key, words):
    with pytest.raises(RecipeError) as e:
        load(*overrides)
    assert any(p.path == key and words in p.message for p in e.value.problems), str(e.value)


# ------------------------------------------------------------------ the seed of a real VM build


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_the_vm_outputs_seed_iso_passes_cloud_inits_checks(vm_build, tmp_path):
    """The debian12-vm build (with a cloud_init: key, as tests/build/targets/conftest.py builds it): its manifest
    lists NAME.seed.iso, the ISO is volume cidata, its user-data passes `cloud-init schema`, its network-config is
    the recipe's eth0 as cloud-init's own converter reads it."""
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is not installed (scripts/setup.sh installs it)")
    m = json.loads((vm_build / "manifest.json").read_text())
    assert {a["kind"]: a["path"] for a in m["artifacts"]}[cloudinit.ISO_KIND] == "debian12-vm.seed.iso"
    iso = vm_build / "debian12-vm.seed.iso"
    assert _volume_id(iso) == "cidata" and stat.S_IMODE(iso.stat().st_mode) == 0o600
    out = tmp_path / "seed"
    r = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load((out / "meta-data").read_text()) == {"instance-id": "vm20", "local-hostname": "vm20"}
    r = cli("schema", "--config-file", out / "user-data", cwd=tmp_path)
    assert r.returncode == 0 and "Valid cloud-config" in r.stdout, r.stdout + r.stderr
    r = cli("devel", "net-convert", "-p", out / "network-config", "-k", "yaml", "-D", "debian", "-O", "eni", "-d",
            tmp_path / "eni", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    eni = "".join(p.read_text() for p in (tmp_path / "eni").rglob("*") if p.is_file())
    assert "address 10.0.3.20/24" in eni and 'ATTR{address}=="00:16:3e:00:03:20"' in eni, eni
