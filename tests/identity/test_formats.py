"""builder.identity.formats: a guest's new identity written into its files and configs, and read back from configs.

Golden cases: realistic files as distributions and imgbuild write them (RHEL 5/6/7 ifcfg, udev persistent-net rules,
Debian interfaces with several stanzas, netplan, EL8 NetworkManager keyfiles, networkd, hosts, LXC legacy and modern,
Xen xm and xl, OpenVZ), each rewritten by one Rename and compared with the exact expected text. Every golden case is
also checked for idempotence, and every function on every input for "a Rename that does not apply changes nothing"
and "a second run changes nothing" (also with CRLF line ends and without a final newline).

The renames: CLONE is a cluster node copied from vm0 (vm0 -> vm1, 10.0.3.2 -> 10.0.3.3 in the same /24, new MACs for
both NICs, the gateway kept); MOVE is a Xen guest moved to another network (new /16 and /56 prefixes, new gateways,
a new MAC, the old name given as an FQDN). The expected outputs of the golden cases are in
tests/data/identity-formats/<case id>.expected.
"""
from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import NamedTuple

import pytest

from builder.build import recipe
from builder.build.steps import basefiles, network
from builder.build.targets import lxc, openvz, xen
from builder.core.errors import InputError
from builder.guestconf import xl
from builder.identity import formats as f
from builder.identity.formats import Identity, Rename
from tests.conftest import BIN, DEFAULT_RECIPE
from tests.support import TEST_DATA

DATA = TEST_DATA

CLONE = Rename.of(hostname="vm1", old_hostnames=("vm0",), ips={"10.0.3.2": "10.0.3.3"},
                  macs={"00:16:3e:00:03:02": "00:16:3e:00:03:03", "00:16:3e:00:03:12": "00:16:3e:00:03:13"})
MOVE = Rename.of(hostname="vm7", old_hostnames=("vm0.example.com",),
                 ips={"10.0.3.2": "192.168.5.20/16", "10.0.3.13": "192.168.5.21", "fd00:3::2": "fd00:5::20/56"},
                 gateways={"10.0.3.1": "192.168.0.1", "fd00:3::1": "fd00:5::1"},
                 macs={"00:16:3e:00:03:02": "00:16:3e:05:00:20"})
# the same addresses, only a new prefix
REPREFIX = Rename.of(ips={"10.0.3.2": "10.0.3.2/16", "fd00:3::2": "fd00:3::2/48"})
# applies to none of the inputs, though some of its values are near misses of what they hold
NOOP = Rename.of(hostname="zz9", old_hostnames=("vm", "vm00", "m0.example.com"),
                 ips={"0.0.3.2": "192.0.2.9/24", "10.0.3.21": "192.0.2.10", "fd00:3::20": "fd00:9::1/48"},
                 gateways={"10.0.3.11": "192.0.2.253", "fd00::1": "fd00::2"},
                 macs={"00:16:3e:00:03:20": "02:00:00:00:00:02", "00:16:3e:00:00:02": "02:00:00:00:00:03"})


class Case(NamedTuple):
    id: str
    fn: Callable[[str, Rename], str]
    rename: Rename
    text: str
    expected: str


GOLDEN = DATA / "identity-formats"      # <case id>.expected: the exact text a golden case's rewrite gives


def golden_case(id: str, fn: Callable[[str, Rename], str], rename: Rename, text: str) -> Case:
    """A golden case, its expected text read byte for byte (no newline translation) from GOLDEN."""
    return Case(id, fn, rename, text, (GOLDEN / f"{id}.expected").read_bytes().decode("utf-8"))


# ------------------------------------------------------------------------------------------------ inputs

IFCFG_EL5 = """\
# Xen Virtual Ethernet
DEVICE=eth0
BOOTPROTO=static
BROADCAST=10.0.3.255
HWADDR=00:16:3E:00:03:02
IPADDR=10.0.3.2
NETMASK=255.255.255.0
NETWORK=10.0.3.0
ONBOOT=yes
"""

IFCFG_EL6 = """\
DEVICE=eth0
HWADDR=00:16:3E:00:03:02
TYPE=Ethernet
UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
ONBOOT=yes
NM_CONTROLLED=yes
BOOTPROTO=none
IPADDR=10.0.3.2
PREFIX=24
GATEWAY=10.0.3.1
DNS1=10.0.3.1
DEFROUTE=yes
IPV4_FAILURE_FATAL=yes
IPV6INIT=no
NAME="System eth0"
"""

IFCFG_EL7 = """\
TYPE="Ethernet"
PROXY_METHOD="none"
BROWSER_ONLY="no"
BOOTPROTO="none"
DEFROUTE="yes"
IPV4_FAILURE_FATAL="no"
IPV6INIT="yes"
IPV6_AUTOCONF="no"
IPV6_DEFROUTE="yes"
IPV6_FAILURE_FATAL="no"
IPV6_ADDR_GEN_MODE="stable-privacy"
NAME="eth0"
UUID="0c9e3a55-6d1f-4b3e-9f47-2a8e1c5d7b90"
DEVICE="eth0"
ONBOOT="yes"
IPADDR0="10.0.3.2"
PREFIX0="24"
GATEWAY0="10.0.3.1"
DNS1="10.0.3.1"
IPV6ADDR="fd00:3::2/64"
IPV6_DEFAULTGW="fd00:3::1"
HWADDR="00:16:3e:00:03:02"
DHCP_HOSTNAME=vm0.example.com
"""

IFCFG_SEED = """\
DEVICE=eth0
ONBOOT=yes
BOOTPROTO=static
IPADDR=10.0.3.2
GATEWAY=10.0.3.1
"""

IFCFG_IMGBUILD = """\
DEVICE=eth0
TYPE=Ethernet
ONBOOT=yes
NM_CONTROLLED=no
HWADDR=00:16:3E:00:03:02
BOOTPROTO=none
IPADDR=10.0.3.2
NETMASK=255.255.255.0
PREFIX=24
GATEWAY=10.0.3.1
"""

NETWORK_EL5 = """\
NETWORKING=yes
NETWORKING_IPV6=no
HOSTNAME=vm0.example.com
GATEWAY=10.0.3.1
"""

NETWORK_IMGBUILD = """\
NETWORKING=yes
HOSTNAME=vm0
"""

HOSTNAME_SHORT = """\
vm0
"""

HOSTNAME_FQDN = """\
# set by anaconda
vm0.example.com
"""

HOSTS_DEBIAN = """\
127.0.0.1\tlocalhost
127.0.1.1\tvm0.example.com\tvm0

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""

HOSTS_ALIASES = """\
# /etc/hosts on vm0
127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4
::1         localhost localhost.localdomain localhost6 localhost6.localdomain6
10.0.3.2    vm0.example.com vm0 db-master   # this guest, not vm0-old
10.0.3.20   vm01.example.com vm01
110.0.3.2   far-away
10.0.3.1    gw.example.com gw xvm0
fd00:3::2   vm0-v6 vm0.example.com
"""

HOSTS_EL5 = """\
# Do not remove the following line, or various programs
# that require network functionality will fail.
127.0.0.1\t\tvm0.example.com vm0 localhost.localdomain localhost
::1\t\tlocalhost6.localdomain6 localhost6
"""

HOSTS_CLUSTER = """\
127.0.0.1   localhost
127.0.1.1   vm0
10.0.3.2 vm0
10.0.3.3 vm1
10.0.3.4 vm2
"""

INTERFACES = """\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto eth0
iface eth0 inet static
\taddress 10.0.3.2
\tnetmask 255.255.255.0
\tnetwork 10.0.3.0
\tbroadcast 10.0.3.255
\tgateway 10.0.3.1
\thwaddress ether 00:16:3e:00:03:02
\t# dns-* options are implemented by the resolvconf package, if installed
\tdns-nameservers 10.0.3.1 10.0.3.2
\tdns-search example.com

iface eth0 inet6 static
\taddress fd00:3::2
\tnetmask 64
\tgateway fd00:3::1

allow-hotplug eth1
iface eth1 inet dhcp
\thostname vm0
\thwaddress 00:16:3E:00:03:12
"""

INTERFACES_D = """\
# /etc/network/interfaces.d/eth0-storage
auto eth0:1
iface eth0:1 inet static
    address 10.0.3.13/24
    up ip addr add 10.0.3.130/24 dev eth0 label eth0:2
    up ip route add 10.9.0.0/16 via 10.0.3.1 src 10.0.3.13
"""

NETPLAN = """\
# This file describes the network interfaces available on your system
# For more information, see netplan(5).
network:
  version: 2
  renderer: networkd
  ethernets:
    eth0:
      match:
        macaddress: 00:16:3e:00:03:02
      set-name: eth0
      addresses: [10.0.3.2/24, 'fd00:3::2/64']
      gateway4: 10.0.3.1
      gateway6: "fd00:3::1"
      nameservers:
        search: [example.com]
        addresses: [10.0.3.1, 10.0.3.2]
    eth1:
      match:
        macaddress: "00:16:3E:00:03:12"
      set-name: eth1
      dhcp4: true
      dhcp4-overrides:
        hostname: vm0
      addresses:
        - 10.0.3.13/24   # storage
        - 10.0.3.130/24
      routes:
        - to: 10.9.0.0/16
          via: 10.0.3.1
"""

NETPLAN_CLOUD = """\
network:
  ethernets:
    ens3:
      addresses:
      - 10.0.3.2/24
      match:
        macaddress: 00:16:3e:00:03:02
      nameservers:
        addresses:
        - 10.0.3.2
        - 10.0.3.1
      routes:
      - to: default
        via: 10.0.3.1
      set-name: ens3
  version: 2
"""

NM_EL8 = """\
[connection]
id=eth0
uuid=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
type=ethernet
autoconnect-priority=-999
interface-name=eth0
permissions=
timestamp=1650000000

[ethernet]
mac-address=00:16:3E:00:03:02
mac-address-blacklist=

[ipv4]
address1=10.0.3.2/24,10.0.3.1
dns=10.0.3.1;
dns-search=
method=manual
route1=10.9.0.0/16,10.0.3.1

[ipv6]
addr-gen-mode=stable-privacy
address1=fd00:3::2/64,fd00:3::1
dns-search=
method=manual

[proxy]
"""

NM_OLD = """\
[connection]
id=Wired connection 1
uuid=aa8527a7-294c-4456-95fd-b924c285609e
type=802-3-ethernet
autoconnect=true
timestamp=0

[802-3-ethernet]
speed=0
duplex=full
auto-negotiate=true
mac-address=0;22;62;0;3;2;
mtu=0

[ipv4]
method=manual
addresses1=10.0.3.2;24;10.0.3.1;
dhcp-hostname=vm0
"""

NETWORKD = """\
# /etc/systemd/network/10-eth0.network
[Match]
MACAddress=00:16:3e:00:03:02

[Network]
Address=10.0.3.2/24
Gateway=10.0.3.1
DNS=10.0.3.1
Domains=example.com

[Address]
Address = fd00:3::2/64

[Route]
Destination=10.9.0.0/16
Gateway=10.0.3.1
PreferredSource=10.0.3.2

[DHCPv4]
Hostname=vm0
"""

NETWORKD_LINK = """\
# /etc/systemd/network/10-lan0.link
[Match]
MACAddress=00-16-3E-00-03-02 0016.3e00.0312

[Link]
Name=lan0
"""

UDEV_EL6 = """\
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single
# line, and change only the value of the NAME= key.

# PCI device 0x8086:0x100f (e1000)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="00:16:3e:00:03:02", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"

# PCI device 0x8086:0x100f (e1000)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="00:16:3e:00:03:12", ATTR{type}=="1", KERNEL=="eth*", NAME="eth1"
"""

UDEV_DEBIAN = """\
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single
# line, and change only the value of the NAME= key.

# Xen virtual interface, replaced by hand (was: ATTR{address}=="00:16:3e:00:03:02")
#SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="00:16:3e:00:03:02", NAME="eth9"

# PCI device 0x10ec:0x8139 (8139too)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="00:16:3E:00:03:02", ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"
"""

LXC_LEGACY = """\
# static addressing, set up by LXC before init runs (LXC 0.7.5 / 1.0)
lxc.utsname = vm0
lxc.tty = 4
lxc.rootfs = /var/lib/lxc/vm0/rootfs
lxc.network.type = veth
lxc.network.flags = up
lxc.network.link = lxcbr0
lxc.network.name = eth0
lxc.network.veth.pair = veth-vm0
lxc.network.hwaddr = 00:16:3e:00:03:02
lxc.network.ipv4 = 10.0.3.2/24 10.0.3.255
lxc.network.ipv4 = 10.0.3.13/24
lxc.network.ipv4.gateway = 10.0.3.1
lxc.network.ipv6 = fd00:3::2/64
lxc.network.ipv6.gateway = fd00:3::1
# lxc.network.hwaddr = 00:16:3e:00:03:02
"""

LXC_MODERN = """\
lxc.uts.name=vm0
lxc.rootfs.path = dir:/var/lib/lxc/vm0/rootfs
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.veth.pair = veth-vm0
lxc.net.0.hwaddr  =  00:16:3E:00:03:02
lxc.net.0.ipv4.address = 10.0.3.2/24 10.0.3.255
lxc.net.0.ipv4.gateway = auto
lxc.net.1.type = veth
lxc.net.1.hwaddr = 00:16:3e:xx:xx:xx
lxc.net.1.ipv4.address = 10.0.3.20/24
"""

XM_SEED = """\
# vm0: CentOS 5 guest on a CentOS 5 + Xen 3 host (xm)
name = "vm0"
uuid = "7c9d1f4e-2a3b-4c5d-8e6f-0a1b2c3d4e5f"
memory = 512
bootloader = "/usr/bin/pygrub"
disk = [ 'file:/var/xen/vm0.img,xvda,w' ]
vif = [ 'mac=00:16:3e:00:03:02, bridge=xenbr0, ip=10.0.3.2',
        "mac=00:16:3E:00:03:12,bridge=xenbr1,vifname=vm0-eth1" ]
# vif = [ 'mac=00:16:3e:00:03:02' ]   the line before the move
"""

XM_KERNEL = """\
kernel = "/boot/vmlinuz-2.6.18-xen"
ramdisk = "/boot/initrd-2.6.18-xen.img"
name = "vm0.example.com"
memory = 256
vif = [ '' ]
ip = "10.0.3.2"
netmask = "255.255.255.0"
gateway = "10.0.3.1"
hostname = "vm0.example.com"
extra = "4"
"""

XL = """\
name        = "vm0"
memory      = 512
bootloader  = "pygrub"
disk        = [ "format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/vm0.img" ]
vif         = [ "mac=00:16:3e:00:03:02,bridge=xenbr0,ip=10.0.3.2/24" ]
"""

VZ_VENET = """\
# written by imgbuild for debian12: /etc/vz/conf/101.conf
ONBOOT=yes
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="debian-bookworm-x86_64"
HOSTNAME="vm0"
IP_ADDRESS="10.0.3.2 10.0.3.20 fd00:3::2"
NAMESERVER="10.0.3.1"
"""

VZ_VETH = """\
NAME="vm0"
HOSTNAME="vm0.example.com"
NETIF="ifname=eth0,bridge=vmbr0,mac=00:16:3E:00:03:02,host_ifname=veth101.0,host_mac=FE:FF:FF:00:03:02;ifname=eth1,bridge=vmbr0,mac=00:16:3E:00:03:12,host_ifname=veth101.1"
"""

VHOST = """\
<VirtualHost 10.0.3.2:80>
    ServerName vm0.example.com
    ServerAlias vm0 www.vm0.example.com vm01
    # listens on 10.0.3.2 only, not 10.0.3.20 or 110.0.3.2
    Header set X-Node "vm0 (00:16:3E:00:03:02)"
    CustomLog /var/log/apache2/vm0_access.log combined
    ErrorLog /var/log/apache2/vm0/error.log
</VirtualHost>
"""

MYCNF = """\
[mysqld]
binlog_format=ROW
wsrep_provider=/usr/lib64/libgalera_smm.so
wsrep_cluster_address=gcomm://10.0.3.20,10.0.3.30
wsrep_node_address=10.0.3.2:4567
wsrep_node_name=vm0
# vm0 listens on 10.0.3.2 (not on 10.0.3.20)
bind-address=10.0.3.2
"""

# ------------------------------------------------------------------------------------------------ golden cases

CASES = [
    golden_case('ifcfg-el5-xen-clone', f.ifcfg, CLONE, IFCFG_EL5),
    golden_case('ifcfg-el5-xen-move', f.ifcfg, MOVE, IFCFG_EL5),
    golden_case('ifcfg-el6-move', f.ifcfg, MOVE, IFCFG_EL6),
    golden_case('ifcfg-el7-quoted-move', f.ifcfg, MOVE, IFCFG_EL7),
    golden_case('ifcfg-seed-no-netmask-move', f.ifcfg, MOVE, IFCFG_SEED),
    golden_case('ifcfg-imgbuild-clone', f.ifcfg, CLONE, IFCFG_IMGBUILD),
    golden_case('sysconfig-network-el5-move', f.sysconfig_network, MOVE, NETWORK_EL5),
    golden_case('sysconfig-network-imgbuild-clone', f.sysconfig_network, CLONE, NETWORK_IMGBUILD),
    golden_case('hostname-short-clone', f.hostname_file, CLONE, HOSTNAME_SHORT),
    golden_case('hostname-fqdn-move', f.hostname_file, MOVE, HOSTNAME_FQDN),
    golden_case('hosts-debian-clone', f.hosts, CLONE, HOSTS_DEBIAN),
    golden_case('hosts-aliases-clone', f.hosts, CLONE, HOSTS_ALIASES),
    golden_case('hosts-aliases-move', f.hosts, MOVE, HOSTS_ALIASES),
    golden_case('hosts-el5-loopback-move', f.hosts, MOVE, HOSTS_EL5),
    golden_case('hosts-cluster-clone', f.hosts, CLONE, HOSTS_CLUSTER),
    golden_case('interfaces-clone', f.debian_interfaces, CLONE, INTERFACES),
    golden_case('interfaces-move', f.debian_interfaces, MOVE, INTERFACES),
    golden_case('interfaces.d-move', f.debian_interfaces, MOVE, INTERFACES_D),
    golden_case('netplan-clone', f.netplan, CLONE, NETPLAN),
    golden_case('netplan-move', f.netplan, MOVE, NETPLAN),
    golden_case('netplan-cloud-init-move', f.netplan, MOVE, NETPLAN_CLOUD),
    golden_case('nm-el8-move', f.nm_keyfile, MOVE, NM_EL8),
    golden_case('nm-bytes-clone', f.nm_keyfile, CLONE, NM_OLD),
    golden_case('networkd-move', f.networkd, MOVE, NETWORKD),
    golden_case('networkd-link-clone', f.networkd, CLONE, NETWORKD_LINK),
    golden_case('udev-el6-clone', f.udev_persistent_net, CLONE, UDEV_EL6),
    golden_case('udev-debian-move', f.udev_persistent_net, MOVE, UDEV_DEBIAN),
    golden_case('lxc-legacy-move', f.lxc_config, MOVE, LXC_LEGACY),
    golden_case('lxc-modern-clone', f.lxc_config, CLONE, LXC_MODERN),
    golden_case('xm-seed-clone', f.xen_config, CLONE, XM_SEED),
    golden_case('xm-kernel-ip-move', f.xen_config, MOVE, XM_KERNEL),
    golden_case('xl-move', f.xen_config, MOVE, XL),
    golden_case('openvz-venet-move', f.openvz_config, MOVE, VZ_VENET),
    golden_case('openvz-veth-clone', f.openvz_config, CLONE, VZ_VETH),
    golden_case('tokens-vhost-clone', f.tokens, CLONE, VHOST),
    golden_case('tokens-mycnf-clone', f.tokens, CLONE, MYCNF),
]
INPUTS = {"IFCFG_EL5": IFCFG_EL5, "IFCFG_EL6": IFCFG_EL6, "IFCFG_EL7": IFCFG_EL7, "IFCFG_SEED": IFCFG_SEED,
          "IFCFG_IMGBUILD": IFCFG_IMGBUILD, "NETWORK_EL5": NETWORK_EL5, "NETWORK_IMGBUILD": NETWORK_IMGBUILD,
          "HOSTNAME_SHORT": HOSTNAME_SHORT, "HOSTNAME_FQDN": HOSTNAME_FQDN, "HOSTS_DEBIAN": HOSTS_DEBIAN,
          "HOSTS_ALIASES": HOSTS_ALIASES, "HOSTS_EL5": HOSTS_EL5, "HOSTS_CLUSTER": HOSTS_CLUSTER,
          "INTERFACES": INTERFACES, "INTERFACES_D": INTERFACES_D, "NETPLAN": NETPLAN, "NETPLAN_CLOUD":
          NETPLAN_CLOUD, "NM_EL8": NM_EL8, "NM_OLD": NM_OLD, "NETWORKD": NETWORKD, "NETWORKD_LINK":
          NETWORKD_LINK, "UDEV_EL6": UDEV_EL6, "UDEV_DEBIAN": UDEV_DEBIAN, "LXC_LEGACY": LXC_LEGACY,
          "LXC_MODERN": LXC_MODERN, "XM_SEED": XM_SEED, "XM_KERNEL": XM_KERNEL, "XL": XL, "VZ_VENET":
          VZ_VENET, "VZ_VETH": VZ_VETH, "VHOST": VHOST, "MYCNF": MYCNF}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden(case):
    assert case.fn(case.text, case.rename) == case.expected


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_golden_output_is_a_fixed_point(case):
    assert case.expected != case.text                      # the case does change something
    assert case.fn(case.expected, case.rename) == case.expected


@pytest.mark.parametrize("name", sorted(f.REWRITERS))
@pytest.mark.parametrize("text_name", sorted(INPUTS))
def test_every_function_on_every_input(name, text_name):
    """A Rename that does not apply changes nothing; a second run changes nothing; line ends are kept (CRLF stays
    CRLF, a missing final newline stays missing); no line is deleted."""
    fn, text = f.REWRITERS[name], INPUTS[text_name]
    for variant in (text, text.replace("\n", "\r\n"), text.rstrip("\n")):
        assert fn(variant, NOOP) == variant
        assert fn(variant, Rename()) == variant
        for r in (CLONE, MOVE, REPREFIX):
            once = fn(variant, r)
            assert fn(once, r) == once
            assert once.endswith("\n") == variant.endswith("\n")
            if "\r\n" in variant:
                assert "\n" not in once.replace("\r\n", "")
                assert once.replace("\r\n", "\n") == fn(text, r)
            added = once.count("\n") - variant.count("\n")
            assert added == 0 or (name == "ifcfg" and added == 1)


# ------------------------------------------------------------------------------------------------ whole tokens


@pytest.mark.parametrize("text, expected", [
    ("10.0.3.2", "10.0.3.3"),
    ("10.0.3.20", "10.0.3.20"),
    ("110.0.3.2", "110.0.3.2"),
    ("10.0.3.2.1", "10.0.3.2.1"),
    ("1.10.0.3.2", "1.10.0.3.2"),
    ("v10.0.3.2", "v10.0.3.2"),
    ("10.0.3.2x", "10.0.3.2x"),
    ("10.0.3.2_old", "10.0.3.2_old"),
    ("10.0.3.2/24", "10.0.3.3/24"),
    ("[10.0.3.2]:22", "[10.0.3.3]:22"),
    ("gcomm://10.0.3.2:4567,10.0.3.20", "gcomm://10.0.3.3:4567,10.0.3.20"),
    ("ping 10.0.3.2.", "ping 10.0.3.3."),
    ("::ffff:10.0.3.2", "::ffff:10.0.3.2"),           # an IPv6 address, not the guest's IPv4 one
])
def test_addresses_are_whole_tokens(text, expected):
    assert f.tokens(text, CLONE) == expected


@pytest.mark.parametrize("text, expected", [
    ("fd00:3::2", "fd00:5::20"),
    ("fd00:3:0:0::2", "fd00:5::20"),                   # another spelling of the same address
    ("FD00:3::2", "fd00:5::20"),
    ("fd00:3::2/64", "fd00:5::20/56"),                 # the new prefix was given
    ("fd00:3::20", "fd00:3::20"),
    ("fd00:3::2:5", "fd00:3::2:5"),
    ("afd00:3::2", "afd00:3::2"),
    ("10.0.3.2/24", "192.168.5.20/16"),
    ("10.0.3.2/255.255.255.0", "192.168.5.20/255.255.0.0"),
    ("10.0.3.13/24", "192.168.5.21/24"),               # no prefix given for this one: kept
    ("10.0.3.1", "10.0.3.1"),                          # gateways are not tokens' business
])
def test_address_spellings_and_prefixes(text, expected):
    assert f.tokens(text, MOVE) == expected


@pytest.mark.parametrize("text, expected", [
    ("vm0", "vm1"),
    ("vm01", "vm01"),
    ("xvm0", "xvm0"),
    ("vm0-db", "vm0-db"),
    ("vm0_db", "vm0_db"),
    ("www.vm0.lxc", "www.vm0.lxc"),
    ("vm0.lxc", "vm1.lxc"),
    ("VM0.LXC", "vm1.LXC"),
    ("root@vm0:/srv", "root@vm1:/srv"),
    ("/var/lib/lxc/vm0/rootfs", "/var/lib/lxc/vm1/rootfs"),
    ("ssh vm0.", "ssh vm1."),
])
def test_names_are_whole_names(text, expected):
    assert f.tokens(text, CLONE) == expected


def test_short_ipv6_forms():
    r = Rename.of(ips={"fd00::2": "fd00::3", "::1": "::2"})
    assert f.tokens("fd00::2 fd00::20 ::1 [::1]:80 ::10", r) == "fd00::3 fd00::20 ::2 [::2]:80 ::10"


def test_an_fqdn_old_name_also_renames_its_short_form():
    assert f.tokens("vm0 vm0.example.com vm0.lxc vm00", MOVE) == "vm7 vm7.example.com vm7.lxc vm00"
    assert f.hostname_file("VM0.Example.COM\n", MOVE) == "vm7.Example.COM\n"


@pytest.mark.parametrize("text, expected", [
    ("00:16:3e:00:03:02", "00:16:3e:00:03:03"),
    ("00:16:3E:00:03:02", "00:16:3E:00:03:03"),
    ("00-16-3E-00-03-02", "00-16-3E-00-03-03"),
    ("00:16:3e:00:03:02:ff", "00:16:3e:00:03:02:ff"),
    ("ff:00:16:3e:00:03:02", "ff:00:16:3e:00:03:02"),
    ("x00:16:3e:00:03:02", "x00:16:3e:00:03:02"),
    ("mac=00:16:3e:00:03:12,", "mac=00:16:3e:00:03:13,"),
])
def test_macs_match_in_any_case_and_keep_theirs(text, expected):
    assert f.tokens(text, CLONE) == expected


def test_a_mac_without_letters_takes_the_formats_case():
    r = Rename.of(macs={"00:16:36:00:03:02": "00:16:3e:00:03:aa"})
    assert f.ifcfg("HWADDR=00:16:36:00:03:02\n", r) == "HWADDR=00:16:3E:00:03:AA\n"
    assert f.openvz_config('NETIF="ifname=eth0,mac=00:16:36:00:03:02"\n', r) == \
        'NETIF="ifname=eth0,mac=00:16:3E:00:03:AA"\n'
    assert f.udev_persistent_net('ATTR{address}=="00:16:36:00:03:02", NAME="eth0"\n', r) == \
        'ATTR{address}=="00:16:3e:00:03:aa", NAME="eth0"\n'
    assert f.lxc_config("lxc.net.0.hwaddr = 00:16:36:00:03:02\n", r) == "lxc.net.0.hwaddr = 00:16:3e:00:03:aa\n"
    assert f.netplan("    macaddress: 00:16:36:00:03:02\n", r) == "    macaddress: 00:16:3e:00:03:aa\n"


def test_a_mac_mapped_to_itself_is_left_as_written():
    r = Rename.of(macs={"00:16:3e:74:3d:76": "00:16:3e:74:3d:76"})
    assert f.tokens("00:16:3E:74:3d:76", r) == "00:16:3E:74:3d:76"
    assert f.xen_config("vif = [ 'mac=00:16:3E:74:3d:76' ]\n", r) == "vif = [ 'mac=00:16:3E:74:3d:76' ]\n"


def test_a_mixed_case_mac_is_written_lower_case():
    text = "vif = [ 'mac=00:16:3E:74:3d:76,bridge=xenbr0' ]\n"
    r = Rename.of(macs={"00:16:3e:74:3d:76": "00:16:3e:74:3d:77"})
    assert f.xen_config(text, r) == "vif = [ 'mac=00:16:3e:74:3d:77,bridge=xenbr0' ]\n"


# ------------------------------------------------------------------------------------------------ per-format rules


def test_hosts_keeps_peer_lines_when_the_file_already_knows_the_new_name():
    cluster = "127.0.0.1 localhost\n10.0.3.2 vm0\n10.0.3.3 vm1\n"
    assert f.hosts(cluster, Rename.of("vm1", "vm0")) == cluster
    assert f.hosts(cluster, Rename.of(ips={"10.0.3.2": "10.0.3.3"})) == cluster
    alone = "127.0.0.1 localhost\n10.0.3.2 vm0\n10.0.3.4 vm2\n"
    assert f.hosts(alone, CLONE) == "127.0.0.1 localhost\n10.0.3.3 vm1\n10.0.3.4 vm2\n"


def test_hosts_loopback_line_with_the_new_name_is_not_a_peer_entry():
    # half renamed by hand: 127.0.1.1 already says vm1; the guest's own line still follows
    assert f.hosts("127.0.1.1 vm1\n10.0.3.2 vm0\n", CLONE) == "127.0.1.1 vm1\n10.0.3.3 vm1\n"


def test_hosts_leaves_comments_and_unparsable_lines():
    text = "# 10.0.3.2 vm0 (old)\n10.0.3.2 vm0 # vm0 itself\nnot-an-address vm0\n"
    assert f.hosts(text, CLONE) == "# 10.0.3.2 vm0 (old)\n10.0.3.3 vm1 # vm0 itself\nnot-an-address vm0\n"


def test_ifcfg_adds_the_given_prefix_as_netmask_only_when_missing():
    r = Rename.of(ips={"10.0.3.2": "10.0.3.2/16"})
    assert f.ifcfg('IPADDR="10.0.3.2"\r\nONBOOT=yes\r\n', r) == \
        'IPADDR="10.0.3.2"\r\nNETMASK="255.255.0.0"\r\nONBOOT=yes\r\n'
    assert f.ifcfg("IPADDR1=10.0.3.2\nPREFIX1=24\n", r) == "IPADDR1=10.0.3.2\nPREFIX1=16\n"
    assert f.ifcfg("IPADDR=10.0.3.2\nIPADDR1=10.0.3.9\nPREFIX1=24\n", r) == \
        "IPADDR=10.0.3.2\nNETMASK=255.255.0.0\nIPADDR1=10.0.3.9\nPREFIX1=24\n"


def test_ifcfg_indexed_addresses_secondaries_and_scoped_gateways():
    text = ("IPADDR0=10.0.3.2\nNETMASK0=255.255.255.0\nBROADCAST=10.0.3.255\n"
            "IPV6ADDR_SECONDARIES=\"fd00:3::2/64 fd00:3::9/64\"\nIPV6_DEFAULTGW=fd00:3::1%eth0\n")
    assert f.ifcfg(text, MOVE) == ("IPADDR0=192.168.5.20\nNETMASK0=255.255.0.0\nBROADCAST=192.168.255.255\n"
                                   "IPV6ADDR_SECONDARIES=\"fd00:5::20/56 fd00:3::9/64\"\nIPV6_DEFAULTGW=fd00:5::1%eth0\n")


def test_ifcfg_keeps_uuid_dns_and_values_in_comments():
    out = f.ifcfg(IFCFG_EL6 + "# HWADDR=00:16:3E:00:03:02\n", MOVE)
    assert "UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03\n" in out
    assert "DNS1=10.0.3.1\n" in out
    assert out.endswith("# HWADDR=00:16:3E:00:03:02\n")


def test_a_broadcast_is_recomputed_only_when_it_was_the_old_networks():
    assert f.lxc_config("lxc.net.0.ipv4.address = 10.0.3.2/24 10.0.3.127\n", MOVE) == \
        "lxc.net.0.ipv4.address = 192.168.5.20/16 10.0.3.127\n"
    stanza = "iface eth0 inet static\n  address 10.0.3.2/24\n  broadcast 10.0.3.127\n  network 10.0.3.0\n"
    assert f.debian_interfaces(stanza, MOVE) == \
        "iface eth0 inet static\n  address 192.168.5.20/16\n  broadcast 10.0.3.127\n  network 192.168.0.0\n"
    assert f.ifcfg("IPADDR=10.0.3.2\nPREFIX=24\nBROADCAST=10.0.3.127\n", MOVE) == \
        "IPADDR=192.168.5.20\nPREFIX=16\nBROADCAST=10.0.3.127\n"


def test_lxc_leaves_host_side_names_and_paths():
    out = f.lxc_config(LXC_LEGACY, MOVE)
    assert "lxc.network.veth.pair = veth-vm0\n" in out
    assert "lxc.rootfs = /var/lib/lxc/vm0/rootfs\n" in out
    assert "# lxc.network.hwaddr = 00:16:3e:00:03:02\n" in out


def test_xen_leaves_disks_and_host_side_names():
    out = f.xen_config(XM_SEED, CLONE)
    assert "'file:/var/xen/vm0.img,xvda,w'" in out and "vifname=vm0-eth1" in out
    assert "# vif = [ 'mac=00:16:3e:00:03:02' ]" in out


def test_xen_renames_only_top_level_settings():
    text = 'name = "vm0"\nextra = "%(name)s" % dict(\n    name="vm0")\n'
    assert f.xen_config(text, CLONE) == 'name = "vm1"\nextra = "%(name)s" % dict(\n    name="vm0")\n'


def test_netplan_leaves_name_servers_and_other_lists():
    out = f.netplan(NETPLAN_CLOUD, CLONE)
    assert "        addresses:\n        - 10.0.3.2\n        - 10.0.3.1\n" in out
    assert "      addresses:\n      - 10.0.3.3/24\n" in out


def test_netplan_address_with_options():
    text = "      addresses:\n        - \"10.0.3.2/24\":\n            lifetime: 0\n            label: eth0:1\n"
    assert f.netplan(text, MOVE) == \
        "      addresses:\n        - \"192.168.5.20/16\":\n            lifetime: 0\n            label: eth0:1\n"


def test_networkd_edits_only_the_sections_that_carry_this_links_identity():
    # a DHCP server's static lease: the MAC and address of a client, not this guest's
    lease = "[DHCPServerStaticLease]\nMACAddress=00:16:3e:00:03:02\nAddress=10.0.3.2\n"
    assert f.networkd(lease, CLONE) == lease
    link = "[NetDev]\nName=br0\nKind=bridge\nMACAddress=00:16:3e:00:03:12\n"
    assert f.networkd(link, CLONE) == "[NetDev]\nName=br0\nKind=bridge\nMACAddress=00:16:3e:00:03:13\n"


def test_nm_keyfile_adds_a_given_prefix_and_keeps_separators():
    r = Rename.of(ips={"10.0.3.2": "10.0.3.2/16"})
    assert f.nm_keyfile("[ipv4]\naddress1=10.0.3.2,10.0.3.1\n", r) == "[ipv4]\naddress1=10.0.3.2/16,10.0.3.1\n"
    assert f.nm_keyfile("[ipv4]\naddresses=10.0.3.2;24;10.0.3.1;\n", r) == "[ipv4]\naddresses=10.0.3.2;16;10.0.3.1;\n"
    assert f.nm_keyfile("[ethernet]\ncloned-mac-address=preserve\n", CLONE) == "[ethernet]\ncloned-mac-address=preserve\n"
    # an address key outside [ipv4]/[ipv6] is not an address of this connection
    assert f.nm_keyfile("[vpn]\naddress1=10.0.3.2/24\n", CLONE) == "[vpn]\naddress1=10.0.3.2/24\n"


def test_udev_never_deletes_a_rule():
    out = f.udev_persistent_net(UDEV_EL6, CLONE)
    assert out.count("\n") == UDEV_EL6.count("\n")
    rules = [line for line in out.splitlines() if line.startswith("SUBSYSTEM==")]
    assert [rule.rsplit("NAME=", 1)[1] for rule in rules] == ['"eth0"', '"eth1"']
    assert out.replace("00:03:03", "00:03:02").replace("00:03:13", "00:03:12") == UDEV_EL6


# ------------------------------------------------------------------------------------------------ Rename


@pytest.mark.parametrize("kwargs, message", [
    (dict(hostname="vm1.lxc", old_hostnames="vm0"), "one label"),
    (dict(hostname="-vm1"), "one label"),
    (dict(old_hostnames=("bad name",)), "not a host name"),
    (dict(ips={"10.0.3.2": "fd00::2/64"}), "cannot become"),
    (dict(ips={"10.0.3.2": "10.0.3.3", "10.0.3.3": "10.0.3.4"}), "idempotently"),
    (dict(ips={"10.0.3.2": "10.0.3.3", "10.0.3.3": "10.0.3.2"}), "idempotently"),
    (dict(gateways={"10.0.3.1": "10.0.3.254", "10.0.3.254": "10.0.3.1"}), "idempotently"),
    (dict(gateways={"10.0.3.1": "10.0.3.2"}, ips={"10.0.3.2": "10.0.3.3"}), "gateway"),
    (dict(gateways={"10.0.3.3": "10.0.3.1"}, ips={"10.0.3.2": "10.0.3.3"}), "gateway"),
    (dict(gateways={"10.0.3.1": "fd00::1"}), "IP version"),
    (dict(macs={"00:16:3e:00:03:02": "00:16:3e:00:03"}), "not a MAC"),
    (dict(macs={"00:16:3e:00:03:02": "00:16:3E:00:03:03", "00-16-3e-00-03-03": "00:16:3e:00:03:04"}),
     "idempotently"),
])
def test_rename_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rename.of(**kwargs)


# A Rename's old values come from the guest (the old host name from its /etc/hostname): a name or address it
# cannot take is bad input (exit 2), not an internal error (a guest whose /etc/hostname said vm_0 made
# `migrate reidentify --dry-run` exit 70). RenameError is an InputError and still a ValueError.
@pytest.mark.parametrize("kwargs", [
    dict(hostname="vm1", old_hostnames=("vm_0",)), dict(hostname="vm1", old_hostnames=("vm0\n",)),
    dict(hostname="vm1\n", old_hostnames=("vm0",)), dict(hostname="vm1", old_hostnames=("a" * 300,)),
    dict(hostname="vm1", old_hostnames=("vm0..lan",)), dict(hostname="vm1", old_hostnames=("",)),
])
def test_rename_from_guest_values_is_an_input_error(kwargs):
    with pytest.raises(InputError) as e:
        Rename.of(**kwargs)
    assert isinstance(e.value, ValueError) and e.value.hint


@pytest.mark.parametrize("kwargs", [dict(ips={"10.0.3": "10.0.3.3"}), dict(gateways={"10.0.3.1": "x"}),
                                    dict(macs={"zz": "00:16:3e:00:00:01"})])
def test_rename_of_bad_strings_is_an_input_error(kwargs):
    with pytest.raises(InputError):
        Rename.of(**kwargs)


@pytest.mark.parametrize("name", ["vm_0", "vm 0"])
def test_reidentify_a_guest_whose_hostname_is_no_host_name_exits_2(name, tmp_path):
    """The real `migrate reidentify --dry-run` on a container directory whose guest names itself `name`."""
    guest = tmp_path / "vm0"
    (guest / "rootfs" / "etc").mkdir(parents=True)
    (guest / "rootfs" / "etc" / "hostname").write_text(name + "\n")
    (guest / "config").write_text(f"lxc.uts.name = vm0\nlxc.rootfs.path = dir:{guest}/rootfs\n")
    before = {p: p.read_bytes() for p in guest.rglob("*") if p.is_file()}
    r = subprocess.run([str(BIN / "migrate"), "reidentify", str(guest), "--hostname", "vm1", "--dry-run",
                        "--inventory", str(tmp_path / "inventory.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and "\nhint: " in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert {p: p.read_bytes() for p in guest.rglob("*") if p.is_file()} == before


def test_prefix_given_must_be_an_old_address():
    with pytest.raises(ValueError, match="prefix given"):
        Rename(ips={ip_address("10.0.3.2"): ip_interface("10.0.3.3/24")},
               prefix_given=frozenset({ip_address("10.0.3.9")}))


def test_rename_of_reads_strings():
    r = Rename.of("vm1", "vm0", {"10.0.3.2": "10.0.3.3", "fd00::2": "fd00::3/56"}, {"10.0.3.1": "10.0.3.254"},
                  {"00:16:3E:00:03:02": "00-16-3e-00-03-03"})
    assert r.old_hostnames == ("vm0",)
    assert dict(r.ips) == {ip_address("10.0.3.2"): ip_interface("10.0.3.3/32"),
                           ip_address("fd00::2"): ip_interface("fd00::3/56")}
    assert r.prefix_given == frozenset({ip_address("fd00::2")})
    assert dict(r.gateways) == {ip_address("10.0.3.1"): ip_address("10.0.3.254")}
    assert dict(r.macs) == {"00:16:3e:00:03:02": "00:16:3e:00:03:03"}
    assert not r.empty and Rename().empty and Rename.of(old_hostnames=("vm0",)).empty


# ------------------------------------------------------------------------------------------------ imgbuild's files


def test_reidentified_imgbuild_files_are_what_imgbuild_writes_for_the_new_identity():
    Iface = network.Interface
    old = Iface(address=ip_interface("10.0.3.2/24"), gateway=ip_address("10.0.3.1"), mac="00:16:3e:00:03:02")
    new = Iface(address=ip_interface("192.168.5.20/16"), gateway=ip_address("192.168.0.1"), mac="00:16:3e:05:00:20")
    old6 = Iface(address=ip_interface("fd00:3::2/64"), gateway=ip_address("fd00:3::1"))
    new6 = Iface(address=ip_interface("fd00:5::20/56"), gateway=ip_address("fd00:5::1"))
    assert f.debian_interfaces(network.debian_interfaces({"eth0": old, "eth1": old6}), MOVE) == \
        network.debian_interfaces({"eth0": new, "eth1": new6})
    assert f.ifcfg(network.rhel_ifcfg("eth0", old), MOVE) == network.rhel_ifcfg("eth0", new)
    assert f.ifcfg(network.rhel_ifcfg("eth1", old6), MOVE) == network.rhel_ifcfg("eth1", new6)
    assert f.sysconfig_network(network.rhel_network("vm0", "example.com"), MOVE) == \
        network.rhel_network("vm7", "example.com")
    assert f.hosts(basefiles.hosts("vm0", "example.com", ["10.0.3.2"]), MOVE) == \
        basefiles.hosts("vm7", "example.com", ["192.168.5.20"])
    assert f.hosts(basefiles.hosts("vm0", None, []), CLONE) == basefiles.hosts("vm1", None, [])
    assert f.hostname_file("vm0\n", CLONE) == "vm1\n"


def _load(path: Path, *sets: str):
    return recipe.load(path, sets).recipe


@pytest.mark.parametrize("version", ["modern", "legacy"])
def test_reidentified_lxc_config_is_the_one_rendered_for_the_new_identity(version):
    path = DATA / "lxc" / "modern" / "recipe.yml"
    r = _load(path)
    r2 = _load(path, "hostname=web2", "network.eth0.mac=00:16:3e:00:03:09")
    rn = Rename.of("web2", "web1", macs={"00:16:3e:00:03:02": "00:16:3e:00:03:09"})
    opts = dataclasses.replace(r.targets.lxc, cgroup="both")
    out = f.lxc_config(lxc.render(r, opts, version=version), rn)
    assert out == lxc.render(r2, opts, version=version)
    assert f.read_lxc(out) == Identity(None, ("web2",), (), ("00:16:3e:00:03:09",))


@pytest.mark.parametrize("toolstack", ["xl", "xm"])
def test_reidentified_xen_config_is_the_one_rendered_for_the_new_identity(toolstack):
    path = DATA / "xen" / "target-debian12" / "recipe.yml"
    moved = ("network.eth0.address=192.168.5.20/16", "network.eth0.gateway=192.168.0.1",
             "network.eth0.mac=00:16:3e:05:00:20")
    r, r2 = _load(path), _load(path, *moved)
    opts = dataclasses.replace(r.targets.xen, toolstack=toolstack, vif_ip=True)
    rn = Rename.of(ips={"10.0.3.20": "192.168.5.20/16"}, gateways={"10.0.3.1": "192.168.0.1"},
                   macs={"00:16:3e:00:03:20": "00:16:3e:05:00:20"})
    out = f.xen_config(xen.render(r, opts), rn)
    assert out == xen.render(r2, opts)
    assert f.read_xen(out) == Identity("xenguest", (), ("192.168.5.20",), ("00:16:3e:05:00:20",))


@pytest.mark.skipif(not xl.available(), reason=str(xl.why_unavailable()))
def test_renamed_xl_config_reads_back_with_xls_parser():
    path = DATA / "xen" / "target-debian12" / "recipe.yml"
    r = _load(path)
    opts = dataclasses.replace(r.targets.xen, vif_ip=True)
    rn = Rename.of("web2", "xenguest", {"10.0.3.20": "10.0.3.21"}, macs={"00:16:3e:00:03:20": "00:16:3e:00:03:21"})
    cfg = xl.parse(f.xen_config(xen.render(r, opts), rn))
    assert cfg.string("name") == "web2"
    assert cfg.strings("vif") == ["mac=00:16:3e:00:03:21,bridge=xenbr0,ip=10.0.3.21"]
    assert cfg.strings("disk") == ["format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/xenguest.img"]


@pytest.mark.parametrize("network_kind", ["venet", "veth"])
def test_reidentified_openvz_config_is_the_one_rendered_for_the_new_identity(network_kind):
    target = f"targets={{openvz: {{network: {network_kind}}}}}"
    moved = ("hostname=vm7", "network.eth0.address=192.168.5.20/16", "network.eth0.gateway=192.168.0.1",
             "network.eth0.mac=00:16:3e:05:00:20")
    r, r2 = _load(DEFAULT_RECIPE, target), _load(DEFAULT_RECIPE, target, *moved)
    out = f.openvz_config(openvz.render(r, r.targets.openvz), MOVE)
    assert out == openvz.render(r2, r2.targets.openvz)


# ------------------------------------------------------------------------------------------------ readers


@pytest.mark.parametrize("case, hostname", [("modern", "web1"), ("legacy", "vm0")])
@pytest.mark.parametrize("version", ["modern", "legacy"])
def test_read_lxc_on_imgbuild_configs(case, hostname, version):
    r = _load(DATA / "lxc" / case / "recipe.yml")
    text = lxc.render(r, dataclasses.replace(r.targets.lxc, cgroup="v1"), version=version)
    assert f.read_lxc(text) == Identity(None, (hostname,), (), ("00:16:3e:00:03:02",))


def test_read_lxc_builds_networks_as_lxc_does():
    # an empty lxc.net drops what an included common config defined; an empty list key clears that list
    modern = ("lxc.net.1.type = veth\nlxc.net.1.hwaddr = 00:16:3e:00:00:01\nlxc.net =\n"
              "lxc.net.0.type = veth\nlxc.net.0.hwaddr = 00:16:3e:00:03:02\nlxc.net.0.ipv4.address = 10.0.3.2/24\n"
              "lxc.net.0.ipv4.address =\nlxc.net.0.ipv4.address = 10.0.3.5/24\nlxc.net.0.ipv6.address = fd00::5/64\n")
    assert f.read_lxc(modern) == Identity(None, (), ("10.0.3.5", "fd00::5"), ("00:16:3e:00:03:02",))
    legacy = ("lxc.network.hwaddr = 00:16:3e:00:00:01\n"          # before any type line: belongs to no network
              "lxc.network.type = veth\nlxc.network.hwaddr = 00:16:3e:00:03:02\n"
              "lxc.network.type = veth\nlxc.network.hwaddr = 00:16:3e:00:03:12\nlxc.network.hwaddr =\n"
              "lxc.network.1.ipv4 = 10.0.3.9/24\n")
    assert f.read_lxc(legacy) == Identity(None, (), ("10.0.3.9",), ("00:16:3e:00:03:02",))


def test_read_lxc_legacy_and_modern_keys_agree():
    legacy = (DATA / "lxc-convert" / "legacy-static-net" / "in.conf").read_text()
    modern = (DATA / "lxc-convert" / "legacy-static-net" / "expected.conf").read_text()
    want = Identity(None, ("db1",), ("10.0.3.12", "10.0.3.13", "fd00:3::12"), ("00:16:3e:3a:00:02",))
    assert f.read_lxc(legacy) == want
    assert f.read_lxc(modern) == want


def test_read_lxc_on_seed_configs():
    assert f.read_lxc((DATA / "lxc-convert" / "legacy-seed-0.7" / "in.conf").read_text()) == \
        Identity(None, ("vm0",), (), ())
    assert f.read_lxc((DATA / "centos6" / "lxc.conf").read_text()) == \
        Identity(None, ("vm0",), (), ("00:16:3e:00:03:02",))


def test_read_lxc_skips_templates_and_comments_and_takes_the_last_name():
    assert f.read_lxc(LXC_MODERN) == Identity(None, ("vm0",), ("10.0.3.2", "10.0.3.20"), ("00:16:3e:00:03:02",))
    assert f.read_lxc(LXC_LEGACY) == Identity(None, ("vm0",), ("10.0.3.2", "10.0.3.13", "fd00:3::2"),
                                              ("00:16:3e:00:03:02",))
    assert f.read_lxc("lxc.utsname = a\n# lxc.utsname = c\nlxc.utsname = b\n").hostnames == ("b",)


@pytest.mark.parametrize("toolstack", ["xl", "xm"])
def test_read_xen_on_imgbuild_configs(toolstack):
    r = _load(DATA / "xen" / "target-debian12" / "recipe.yml")
    plain = dataclasses.replace(r.targets.xen, toolstack=toolstack)
    assert f.read_xen(xen.render(r, plain)) == Identity("xenguest", (), (), ("00:16:3e:00:03:20",))
    with_ip = dataclasses.replace(plain, vif_ip=True)
    assert f.read_xen(xen.render(r, with_ip)) == Identity("xenguest", (), ("10.0.3.20",), ("00:16:3e:00:03:20",))


def test_read_xen_on_seed_and_python_configs():
    assert f.read_xen((DATA / "xen" / "centos5-seed004" / "in.cfg").read_text()) == \
        Identity("www", (), (), ("00:16:3e:5d:1a:07",))
    # name = "web%d" % vmid and a %02x MAC: computed by the reader, never run
    assert f.read_xen((DATA / "xen" / "python-computed" / "in.cfg").read_text()) == \
        Identity("web7", (), (), ("00:16:3e:00:00:07",))
    assert f.read_xen(XM_SEED) == Identity("vm0", (), ("10.0.3.2",), ("00:16:3e:00:03:02", "00:16:3e:00:03:12"))
    assert f.read_xen(XM_KERNEL) == Identity("vm0.example.com", ("vm0.example.com",), ("10.0.3.2",), ())


def test_read_openvz():
    venet = _load(DEFAULT_RECIPE, "targets={openvz: {}}")
    veth = _load(DEFAULT_RECIPE, "targets={openvz: {network: veth}}")
    assert f.read_openvz(openvz.render(venet, venet.targets.openvz)) == Identity(None, ("vm0",), ("10.0.3.2",), ())
    assert f.read_openvz(openvz.render(veth, veth.targets.openvz)) == \
        Identity(None, ("vm0",), (), ("00:16:3e:00:03:02",))
    assert f.read_openvz(VZ_VENET) == Identity(None, ("vm0",), ("10.0.3.2", "10.0.3.20", "fd00:3::2"), ())
    # host_mac= is the host's end of the veth pair, not the guest's MAC
    assert f.read_openvz(VZ_VETH) == Identity("vm0", ("vm0.example.com",), (),
                                              ("00:16:3e:00:03:02", "00:16:3e:00:03:12"))


# A prefix length read from a guest file went through int() after str.isdigit(), which is true for "²" and other
# non-ASCII digits that int() refuses: ValueError (exit 70) instead of a value left alone. Every format that reads a
# prefix length or a netmask to recompute a broadcast or network address:
ODD_PREFIXES = ["²", "٣", "2⁴", "24 ", "999", "-1", "0x18", "255.255.255.0.0", "𝟚𝟜"]
PREFIX_READERS = {
    "ifcfg": (f.ifcfg, "IPADDR=10.0.3.2\nPREFIX={p}\nBROADCAST=10.0.3.255\nNETWORK=10.0.3.0\n"),
    "ifcfg-netmask": (f.ifcfg, "IPADDR=10.0.3.2\nNETMASK={p}\nBROADCAST=10.0.3.255\n"),
    "interfaces": (f.debian_interfaces, "iface eth0 inet static\n    address 10.0.3.2/{p}\n    broadcast 10.0.3.255\n"),
    "interfaces-netmask": (f.debian_interfaces,
                           "iface eth0 inet static\n    address 10.0.3.2\n    netmask {p}\n    network 10.0.3.0\n"),
    "lxc": (f.lxc_config, "lxc.net.0.ipv4.address = 10.0.3.2/{p} 10.0.3.255\n"),
}


@pytest.mark.parametrize("prefix", ODD_PREFIXES)
@pytest.mark.parametrize("fmt", sorted(PREFIX_READERS))
def test_odd_prefix_lengths_are_left_alone(fmt, prefix):
    fn, template = PREFIX_READERS[fmt]
    text = template.format(p=prefix)
    out = fn(text, CLONE)
    assert "10.0.3.3" in out                                      # the address itself still moves
    for old, new in zip(text.splitlines(), out.splitlines()):
        if "10.0.3.2" not in old:
            assert new == old                                     # no broadcast made up from a prefix it cannot read
    assert fn(out, CLONE) == out
