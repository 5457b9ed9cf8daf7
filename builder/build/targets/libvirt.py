"""libvirt target: NAME.xml, a libvirt domain for KVM booting the disk target's disk (`virsh define NAME.xml`).

virtio disk and NIC (the recipe's MACs, on a host bridge or a libvirt network), the serial console that the disk's
kernel command line names (`virsh console NAME`), a VNC display on the host's loopback only, a virtio RNG (a
fresh guest generating its ssh host keys needs entropy), and UEFI through libvirt's firmware autoselection with
Secure Boot off (the disk's GRUB is not signed) when booting UEFI.

The XML is built with ElementTree (every value escaped) and, when libvirt's `virt-xml-validate` is installed,
checked against libvirt's own schema before it is written.
"""
from __future__ import annotations

import logging
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from builder.build.steps import cloudinit
from builder.build.targets import vm
from builder.core import proc as runner
from builder.core.checks import IfName
from builder.core.errors import BuilderError
from builder.core.outputs import write_atomic
from builder.core.schema import FieldError, opt

if TYPE_CHECKING:
    from builder.build.context import Context
    from builder.build.recipe import Recipe

log = logging.getLogger("imgbuild")
DOC = "a libvirt domain (NAME.xml) for KVM booting the disk target's disk: virsh define NAME.xml"
IMAGES = "/var/lib/libvirt/images"
# a fixed namespace: the domain's UUID follows from its name alone, so a rebuilt domain redefines the old one
NAMESPACE = uuid.UUID("5b0e58a4-3f57-4c55-9d6e-0c6d1a1c9f21")


@dataclass(frozen=True)
class LibvirtOptions(vm.VmOptions):
    """libvirt target: a KVM domain for the disk target's disk."""

    bridge: IfName = opt("virbr0", doc="host bridge every NIC is attached to (ignored when network is set)")
    network: str | None = opt(None, doc="a libvirt network to attach the NICs to instead of a bridge "
                                        "(e.g. default)")
    machine: Literal["q35", "pc"] = opt("q35", doc="machine type: q35 (PCIe) or pc (i440FX, for old guests)")
    domain_type: Literal["kvm", "qemu"] = opt("kvm", key="type", doc="kvm (hardware virtualization) or qemu "
                                                                     "(emulation, slow)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.network is not None and not all(c.isalnum() or c in "-_." for c in self.network):
            raise FieldError("network", f"{self.network!r} is not a libvirt network name")


Options = LibvirtOptions


def recipe_checks(opts: LibvirtOptions, targets) -> list[tuple[str, str]]:
    return vm.requires("libvirt", opts, targets)


def domain_uuid(name: str) -> str:
    return str(uuid.uuid5(NAMESPACE, name))


def domain_xml(r: "Recipe", opts: LibvirtOptions, more: Sequence[str] = ()) -> str:
    """The domain; `more`: disk files (in the disk's format) attached after it as vdb, vdc ... (a converted
    guest's further disks)."""
    disk = r.targets.disk
    fmt = vm.disk_format(disk, "qcow2")
    dom = ET.Element("domain", type=opts.domain_type)
    ET.SubElement(dom, "name").text = r.name
    ET.SubElement(dom, "uuid").text = domain_uuid(r.name)
    ET.SubElement(dom, "description").text = f"written by imgbuild for {r.name}"
    ET.SubElement(dom, "memory", unit="MiB").text = str(opts.memory)
    ET.SubElement(dom, "vcpu").text = str(opts.vcpus)
    os_ = ET.SubElement(dom, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine=opts.machine).text = "hvm"
    if vm.firmware(opts, disk) == "uefi":
        os_.set("firmware", "efi")
        fw = ET.SubElement(os_, "firmware")
        ET.SubElement(fw, "feature", enabled="no", name="secure-boot")
    ET.SubElement(os_, "boot", dev="hd")
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(dom, "clock", offset="utc")
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        ET.SubElement(dom, event).text = action
    dev = ET.SubElement(dom, "devices")
    d = ET.SubElement(dev, "disk", type="file", device="disk")
    ET.SubElement(d, "driver", name="qemu", type=fmt)
    ET.SubElement(d, "source", file=vm.disk_path(r, opts, fmt, IMAGES))
    ET.SubElement(d, "target", dev="vda", bus="virtio")
    for i, path in enumerate(more, start=1):
        d = ET.SubElement(dev, "disk", type="file", device="disk")
        ET.SubElement(d, "driver", name="qemu", type=fmt)
        ET.SubElement(d, "source", file=path)
        ET.SubElement(d, "target", dev=f"vd{chr(ord('a') + i)}", bus="virtio")
    if cloudinit.makes_iso(r):     # cloud_init's NoCloud seed, read-only, beside the disk
        cd = ET.SubElement(dev, "disk", type="file", device="cdrom")
        ET.SubElement(cd, "driver", name="qemu", type="raw")
        seed = PurePosixPath(vm.disk_path(r, opts, fmt, IMAGES)).with_name(f"{r.name}.seed.iso")
        ET.SubElement(cd, "source", file=str(seed))
        ET.SubElement(cd, "target", dev="sda" if opts.machine == "q35" else "hda",
                      bus="sata" if opts.machine == "q35" else "ide")
        ET.SubElement(cd, "readonly")
    for _ifname, mac in vm.nics(r):
        nic = ET.SubElement(dev, "interface", type="network" if opts.network else "bridge")
        if mac:
            ET.SubElement(nic, "mac", address=mac)
        if opts.network:
            ET.SubElement(nic, "source", network=opts.network)
        else:
            ET.SubElement(nic, "source", bridge=opts.bridge)
        ET.SubElement(nic, "model", type="virtio")
    serial = ET.SubElement(dev, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(dev, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(dev, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    rng = ET.SubElement(dev, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


def validate(path: Path) -> None:
    """libvirt's own schema (virt-xml-validate, from libvirt-clients), when installed."""
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        log.warning("libvirt: virt-xml-validate (libvirt-clients, libxml2-utils) is not installed; %s was not "
                    "checked against libvirt's schema", path.name)
        return
    res = runner.run(["virt-xml-validate", str(path), "domain"], check=False)
    if res.returncode != 0:
        why = "\n".join(f"  {line}" for line in res.tail)
        raise BuilderError(f"libvirt: {path.name} does not validate against libvirt's schema:\n{why}",
                           "this is a bug in imgbuild; report it")


def produce(ctx: "Context", opts: LibvirtOptions) -> dict[str, Path]:
    r = ctx.recipe
    for ifname, mac in vm.nics(r):
        if not mac:
            log.warning("libvirt: network.%s has no mac: libvirt gives the guest a new one when the domain is "
                        "defined; set network.%s.mac", ifname, ifname)
    dest = ctx.stage / f"{r.name}.xml"
    write_atomic(dest, domain_xml(r, opts))
    validate(dest)
    fw = vm.firmware(opts, r.targets.disk)
    log.info("libvirt: %s (%s, %s, disk %s%s)", dest.name, opts.domain_type, fw,
             vm.disk_path(r, opts, vm.disk_format(r.targets.disk, "qcow2"), IMAGES),
             f", and {r.name}.seed.iso beside it" if cloudinit.makes_iso(r) else "")
    return {"libvirt-domain": dest}
