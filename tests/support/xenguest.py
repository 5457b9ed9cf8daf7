"""A Xen 3 guest for the migrate xen tests: its xm config and a 64M ext4 disk image with a RHEL-style network
setup, and MOCK xm/xl scripts (no hypervisor here) that a test installs on its source and destination hosts
(tests/support/sshhost.py; the fixture `xen_hosts` in tests/migrate/conftest.py does)."""
from __future__ import annotations

import subprocess
from pathlib import Path

OLD_MAC, OLD_IP = "00:16:3e:11:22:33", "192.0.2.10"
XM_CFG = f"""# Xen 3 guest (xm)
name = "www"
memory = 512
vcpus = 1
bootloader = "/usr/bin/pygrub"
disk = ['tap:aio:/var/xen/www.img,xvda1,w']
vif = ['mac={OLD_MAC}, bridge=xenbr0']
on_reboot = 'restart'
"""
FAKE_XM = """#!/bin/sh
# MOCK xm (no hypervisor here): `xm list NAME` succeeds while /run/xm-NAME exists; `xm shutdown -w NAME` ends it
case "$1" in
  list) [ -e "/run/xm-$2" ] ;;
  shutdown) [ "$2" = -w ] && shift; rm -f "/run/xm-$2"; echo "$(date +%s.%N)" > "/run/xm-$2.shutdown" ;;
  *) exit 1 ;;
esac
"""
FAKE_XL = """#!/bin/sh
# MOCK xl (no hypervisor here): `xl create CFG` records CFG
[ "$1" = create ] && echo "$2" >> /run/xl-created
"""


def make_guest_image(tmp: Path) -> Path:
    root = tmp / "guest"
    nets = root / "etc/sysconfig/network-scripts"
    nets.mkdir(parents=True)
    (nets / "ifcfg-eth0").write_text(f"DEVICE=eth0\nBOOTPROTO=static\nHWADDR={OLD_MAC.upper()}\nIPADDR={OLD_IP}\n"
                                     "NETMASK=255.255.255.0\nGATEWAY=192.0.2.1\nONBOOT=yes\n")
    (root / "etc/sysconfig/network").write_text("NETWORKING=yes\nHOSTNAME=www.example.org\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n{OLD_IP} www.example.org www\n")
    (root / "etc/hostname").write_text("www\n")
    (root / "etc/udev/rules.d").mkdir(parents=True)
    (root / "etc/udev/rules.d/70-persistent-net.rules").write_text(
        f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{OLD_MAC}", ATTR{{type}}=="1", '
        'KERNEL=="eth*", NAME="eth0"\n')
    img = tmp / "www.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(img), "64M"], check=True)
    return img


def xen_args(src, tmp_path) -> list[str]:
    return ["--ssh-config", str(src.ssh_config), "--stage", str(tmp_path / "stage"),
            "--inventory", str(tmp_path / "inventory.yml")]
