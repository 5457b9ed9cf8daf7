"""builder.migrate.xenbridge: the EL6 host's xenbr0 (ifcfg-xenbr0 + the NIC as its port) made from the host's
ifcfg-eth0,
and the check that every bridge a moved guest's vifs name exists on the destination (seed 004).

Golden cases are compared with the exact expected texts; every generated file is also read by bash (`bash -n`, then
sourced with `set -a`) to check that initscripts would see the values intended."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from builder.migrate.xenbridge import BridgePlan, bridges_defined, bridges_used, missing_bridges, plan_bridge
from tests.support import TEST_DATA

DATA = TEST_DATA / "xen"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash not installed")

# CentOS 5's anaconda: the NIC's model as a header, static address with BROADCAST/NETWORK, upper-case HWADDR
CENTOS5_STATIC = """\
# Broadcom Corporation NetXtreme BCM5751 Gigabit Ethernet PCI Express
DEVICE=eth0
BOOTPROTO=static
BROADCAST=192.168.1.255
HWADDR=00:1E:C9:3A:5B:7C
IPADDR=192.168.1.10
NETMASK=255.255.255.0
NETWORK=192.168.1.0

# the office router (NTT ONU)
GATEWAY=192.168.1.1
ONBOOT=yes
TYPE=Ethernet
ETHTOOL_OPTS="speed 1000 duplex full autoneg off"
"""

CENTOS5_BRIDGE = """\
# xenbr0: the Xen guests' bridge; eth0's IP settings (from ifcfg-eth0) are here now
DEVICE=xenbr0
TYPE=Bridge
BOOTPROTO=static
BROADCAST=192.168.1.255
IPADDR=192.168.1.10
NETMASK=255.255.255.0
NETWORK=192.168.1.0
# the office router (NTT ONU)
GATEWAY=192.168.1.1
ONBOOT=yes
DELAY=0
STP=off
NM_CONTROLLED=no
"""

CENTOS5_NIC = """\
# Broadcom Corporation NetXtreme BCM5751 Gigabit Ethernet PCI Express
DEVICE=eth0
BOOTPROTO=none
HWADDR=00:1E:C9:3A:5B:7C

ONBOOT=yes
TYPE=Ethernet
ETHTOOL_OPTS="speed 1000 duplex full autoneg off"
NM_CONTROLLED=no
# a port of the Xen bridge xenbr0: its IP settings are in ifcfg-xenbr0
BRIDGE=xenbr0
"""

# CentOS 6's anaconda, DHCP: every value quoted, NetworkManager's UUID
CENTOS6_DHCP = """\
DEVICE="eth0"
BOOTPROTO="dhcp"
HWADDR="00:25:90:1A:2B:3C"
NM_CONTROLLED="yes"
ONBOOT="yes"
TYPE="Ethernet"
UUID="5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03"
"""

CENTOS6_DHCP_BRIDGE = """\
# xenbr0: the Xen guests' bridge; eth0's IP settings (from ifcfg-eth0) are here now
DEVICE="xenbr0"
TYPE="Bridge"
BOOTPROTO="dhcp"
NM_CONTROLLED="no"
ONBOOT="yes"
DELAY="0"
STP="off"
"""

CENTOS6_DHCP_NIC = """\
DEVICE="eth0"
BOOTPROTO="none"
HWADDR="00:25:90:1A:2B:3C"
NM_CONTROLLED="no"
ONBOOT="yes"
TYPE="Ethernet"
UUID="5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03"
# a port of the Xen bridge xenbr0: its IP settings are in ifcfg-xenbr0
BRIDGE="xenbr0"
"""

# system-config-network / NetworkManager on EL6, static with PREFIX, DNS, IPv6 settings and NAME
CENTOS6_PREFIX = """\
DEVICE=eth0
HWADDR=00:25:90:1A:2B:3C
TYPE=Ethernet
UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
ONBOOT=yes
NM_CONTROLLED=yes
BOOTPROTO=none
IPADDR=203.0.113.10
PREFIX=24
GATEWAY=203.0.113.1
DNS1=203.0.113.53
DNS2=8.8.8.8
DOMAIN=example.jp
DEFROUTE=yes
IPV4_FAILURE_FATAL=yes
IPV6INIT=yes
IPV6ADDR=2001:db8::10/64
IPV6_DEFAULTGW=2001:db8::1
NAME="System eth0"
USERCTL=no
MTU=9000
"""

CENTOS6_PREFIX_BRIDGE = """\
# br0: the Xen guests' bridge; eth0's IP settings (from ifcfg-eth0) are here now
DEVICE=br0
TYPE=Bridge
ONBOOT=yes
NM_CONTROLLED=no
BOOTPROTO=none
IPADDR=203.0.113.10
PREFIX=24
GATEWAY=203.0.113.1
DNS1=203.0.113.53
DNS2=8.8.8.8
DOMAIN=example.jp
DEFROUTE=yes
IPV4_FAILURE_FATAL=yes
IPV6INIT=yes
IPV6ADDR=2001:db8::10/64
IPV6_DEFAULTGW=2001:db8::1
USERCTL=no
DELAY=0
STP=off
"""

CENTOS6_PREFIX_NIC = """\
DEVICE=eth0
HWADDR=00:25:90:1A:2B:3C
TYPE=Ethernet
UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
ONBOOT=yes
NM_CONTROLLED=no
BOOTPROTO=none
NAME="System eth0"
USERCTL=no
MTU=9000
# a port of the Xen bridge br0: its IP settings are in ifcfg-br0
BRIDGE=br0
"""


def sourced(path: Path, *names: str) -> dict[str, str]:
    """The variables as bash sees them after `set -a; . FILE` (initscripts sources ifcfg files the same way)."""
    script = 'set -a; . "$1" || exit 9; shift; for v in "$@"; do printf "%s=%s\\0" "$v" "${!v-<unset>}"; done'
    r = subprocess.run([BASH, "-c", script, "bash", str(path), *names], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return dict(item.split("=", 1) for item in r.stdout.split("\0") if item)


def write(tmp_path: Path, plan: BridgePlan) -> dict[str, Path]:
    out = {}
    for name, text in plan.files.items():
        p = tmp_path / name
        p.write_text(text)
        out[name] = p
    return out


# ------------------------------------------------------------------ plan_bridge: golden cases


def test_centos5_static_golden():
    plan = plan_bridge(CENTOS5_STATIC)
    assert list(plan.files) == ["ifcfg-xenbr0", "ifcfg-eth0"]
    assert plan.files["ifcfg-xenbr0"] == CENTOS5_BRIDGE
    assert plan.files["ifcfg-eth0"] == CENTOS5_NIC
    assert plan.notes[0] == ("ifcfg-xenbr0: new bridge xenbr0 (TYPE=Bridge, DELAY=0, STP=off) with eth0's address "
                             "settings from ifcfg-eth0: BOOTPROTO, BROADCAST, IPADDR, NETMASK, NETWORK, GATEWAY")
    assert plan.notes[1] == ("ifcfg-eth0: now a port of xenbr0 (BRIDGE=xenbr0, BOOTPROTO=none); kept: DEVICE, "
                             "HWADDR, TYPE, ETHTOOL_OPTS")
    assert "in both files: ONBOOT" in plan.notes
    assert any("NM_CONTROLLED=no in both" in n for n in plan.notes)
    assert not any("DHCP" in n for n in plan.notes)


def test_dhcp_golden_the_bridge_does_dhcp():
    plan = plan_bridge(CENTOS6_DHCP)
    assert plan.files["ifcfg-xenbr0"] == CENTOS6_DHCP_BRIDGE
    assert plan.files["ifcfg-eth0"] == CENTOS6_DHCP_NIC
    dhcp = [n for n in plan.notes if n.startswith("BOOTPROTO=dhcp")]
    assert len(dhcp) == 1 and "xenbr0 asks for the lease" in dhcp[0] and "fe:ff:ff:ff:ff:ff" in dhcp[0]


def test_prefix_golden_with_ipv6_dns_and_mtu():
    plan = plan_bridge(CENTOS6_PREFIX, bridge="br0")
    assert list(plan.files) == ["ifcfg-br0", "ifcfg-eth0"]
    assert plan.files["ifcfg-br0"] == CENTOS6_PREFIX_BRIDGE
    assert plan.files["ifcfg-eth0"] == CENTOS6_PREFIX_NIC
    assert "in both files: ONBOOT, NM_CONTROLLED, USERCTL" in plan.notes
    mtu = [n for n in plan.notes if n.startswith("MTU=9000")]
    assert len(mtu) == 1 and "mtu=9000" in mtu[0]


def test_quoted_values_and_inline_comments_are_kept_verbatim():
    text = ("DEVICE='eth0'\n"
            "BOOTPROTO='static'\n"
            "IPADDR='10.0.0.5'   # the host\n"
            'NETMASK="255.255.0.0"\n'
            "HWADDR=00:16:3E:00:00:01\n"
            "ONBOOT='yes'\n")
    plan = plan_bridge(text)
    br, nic = plan.files["ifcfg-xenbr0"], plan.files["ifcfg-eth0"]
    assert "IPADDR='10.0.0.5'   # the host\n" in br
    assert 'NETMASK="255.255.0.0"\n' in br
    assert "ONBOOT='yes'\n" in br and "ONBOOT='yes'\n" in nic
    # most of the file uses single quotes: the lines written here do too
    assert "DEVICE='xenbr0'\nTYPE='Bridge'\n" in br
    assert br.endswith("DELAY='0'\nSTP='off'\nNM_CONTROLLED='no'\n")
    assert "BOOTPROTO='none'\n" in nic and nic.endswith("BRIDGE='xenbr0'\n")
    assert "IPADDR" not in nic and "NETMASK" not in nic
    assert "HWADDR=00:16:3E:00:00:01\n" in nic and "HWADDR" not in br


def test_comments_go_with_their_setting_others_stay_with_the_nic():
    text = ("# Intel Corporation 82574L Gigabit Network Connection\n"
            "DEVICE=eth0\n"
            "\n"
            "# the address the monitoring knows\n"
            "# (do not change without telling ops)\n"
            "IPADDR=10.1.2.3\n"
            "NETMASK=255.255.255.0\n"
            "# ring buffers\n"
            "ETHTOOL_OPTS=\"-G eth0 rx 4096\"\n"
            "\n"
            "# a loose remark\n"
            "\n"
            "ONBOOT=yes\n")
    plan = plan_bridge(text)
    br, nic = plan.files["ifcfg-xenbr0"], plan.files["ifcfg-eth0"]
    assert "# the address the monitoring knows\n# (do not change without telling ops)\nIPADDR=10.1.2.3\n" in br
    assert "monitoring" not in nic
    assert nic.startswith("# Intel Corporation 82574L Gigabit Network Connection\nDEVICE=eth0\n")
    assert "# ring buffers\nETHTOOL_OPTS=" in nic and "ring buffers" not in br
    assert "# a loose remark\n" in nic and "loose" not in br
    assert "\n\n\n" not in nic


def test_a_header_comment_stays_with_the_nic_even_above_an_address_setting():
    text = "# Realtek Semiconductor Co., Ltd. RTL8111/8168B PCI Express Gigabit Ethernet\nBOOTPROTO=dhcp\nDEVICE=eth0\n"
    plan = plan_bridge(text)
    assert plan.files["ifcfg-eth0"].startswith("# Realtek Semiconductor Co., Ltd. RTL8111/8168B PCI Express Gigabit "
                                               "Ethernet\nBOOTPROTO=none\nDEVICE=eth0\n")
    assert "Realtek" not in plan.files["ifcfg-xenbr0"]
    assert "BOOTPROTO=dhcp\n" in plan.files["ifcfg-xenbr0"]


def test_unknown_keys_stay_on_the_nic_and_gatewaydev_follows_the_address():
    text = "DEVICE=eth0\nIPADDR=10.0.0.2\nPREFIX=8\nGATEWAYDEV=eth0\nFOO_VENDOR=1\nMACADDR=00:16:3e:aa:bb:cc\n"
    plan = plan_bridge(text)
    br, nic = plan.files["ifcfg-xenbr0"], plan.files["ifcfg-eth0"]
    assert "GATEWAYDEV=xenbr0\n" in br and "GATEWAYDEV" not in nic
    assert "FOO_VENDOR=1\n" in nic and "FOO_VENDOR" not in br
    assert "MACADDR=00:16:3e:aa:bb:cc\n" in nic and "MACADDR" not in br
    assert "GATEWAYDEV=eth0 -> xenbr0" in plan.notes
    # no BOOTPROTO in the source: the NIC gets none explicitly, the bridge keeps the source's default (static)
    assert "BOOTPROTO=none\n" in nic and "BOOTPROTO" not in br


def test_missing_device_is_written_and_no_address_is_reported():
    plan = plan_bridge("ONBOOT=yes\nBOOTPROTO=none\n")
    nic = plan.files["ifcfg-eth0"]
    assert nic.startswith("DEVICE=eth0\nONBOOT=yes\nBOOTPROTO=none\n")
    assert any("had no DEVICE=" in n for n in plan.notes)
    assert any("has no address" in n for n in plan.notes)
    assert any("has no HWADDR" in n for n in plan.notes)


def test_other_iface_and_source_name():
    text = "DEVICE=eth1\nBOOTPROTO=dhcp\nHWADDR=00:25:90:1A:2B:3D\n"
    plan = plan_bridge(text, iface="eth1", bridge="xenbr1", source="/etc/sysconfig/network-scripts/ifcfg-eth1")
    assert set(plan.files) == {"ifcfg-xenbr1", "ifcfg-eth1"}
    assert plan.files["ifcfg-xenbr1"].startswith("# xenbr1: the Xen guests' bridge; eth1's IP settings (from "
                                                 "ifcfg-eth1) are here now\nDEVICE=xenbr1\n")
    assert plan.files["ifcfg-eth1"].endswith("BRIDGE=xenbr1\n")


# ------------------------------------------------------------------ plan_bridge: refusals


def test_already_enslaved_is_refused_and_a_second_run_says_so():
    plan = plan_bridge(CENTOS5_STATIC)
    with pytest.raises(ValueError, match=r"^eth0 is already a port of xenbr0 \(ifcfg-eth0 has BRIDGE=xenbr0\)"):
        plan_bridge(plan.files["ifcfg-eth0"])
    with pytest.raises(ValueError, match="eth0 is already a port of xenbr0"):
        plan_bridge('DEVICE=eth0\nBRIDGE="xenbr0"\n')


def test_port_of_another_bridge_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match=r"already a port of br0 .*not of xenbr0.*--bridge-map xenbr0=br0"):
        plan_bridge("DEVICE=eth0\nBRIDGE=br0\n")


def test_device_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"ifcfg-eth0: DEVICE=eth1, not eth0.*--iface eth1"):
        plan_bridge("DEVICE=eth1\nIPADDR=10.0.0.2\n")


def test_a_bridge_is_refused():
    plan = plan_bridge(CENTOS5_STATIC)
    with pytest.raises(ValueError, match=r"TYPE=Bridge: xenbr0 is already a bridge"):
        plan_bridge(plan.files["ifcfg-xenbr0"], iface="xenbr0", bridge="br9", source="ifcfg-xenbr0")
    with pytest.raises(ValueError, match=r"TYPE=bridge"):
        plan_bridge("DEVICE=eth0\nTYPE=bridge\n")


def test_a_bond_slave_is_refused():
    with pytest.raises(ValueError, match=r"MASTER=bond0.*slave of bond0.*--iface bond0"):
        plan_bridge("DEVICE=eth0\nMASTER=bond0\nSLAVE=yes\n")


@pytest.mark.parametrize("bridge, why", [("xen-br0", "clone file of ifcfg-xen"), ("a" * 16, "at most 15"),
                                         ("br 0", "at most 15"), ("eth0", "both named")])
def test_bad_bridge_names_are_refused(bridge, why):
    with pytest.raises(ValueError, match=why):
        plan_bridge(CENTOS5_STATIC, bridge=bridge)


# ------------------------------------------------------------------ the files as bash and initscripts read them


@needs_bash
@pytest.mark.parametrize("text, bridge, proto", [(CENTOS5_STATIC, "xenbr0", "static"),
                                                 (CENTOS6_DHCP, "xenbr0", "dhcp"),
                                                 (CENTOS6_PREFIX, "br0", "none")])
def test_generated_files_are_valid_shell_with_the_intended_values(tmp_path, text, bridge, proto):
    plan = plan_bridge(text, bridge=bridge)
    paths = write(tmp_path, plan)
    for p in paths.values():
        r = subprocess.run([BASH, "-n", str(p)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    keys = ("DEVICE", "TYPE", "BOOTPROTO", "IPADDR", "BRIDGE", "HWADDR", "STP", "DELAY", "NM_CONTROLLED", "ONBOOT")
    br = sourced(paths[f"ifcfg-{bridge}"], *keys)
    nic = sourced(paths["ifcfg-eth0"], *keys)
    assert (br["DEVICE"], br["TYPE"], br["BOOTPROTO"]) == (bridge, "Bridge", proto)
    assert (br["STP"], br["DELAY"], br["NM_CONTROLLED"], br["BRIDGE"], br["HWADDR"]) == ("off", "0", "no", "<unset>",
                                                                                        "<unset>")
    assert (nic["DEVICE"], nic["BRIDGE"], nic["BOOTPROTO"], nic["NM_CONTROLLED"]) == ("eth0", bridge, "none", "no")
    assert nic["IPADDR"] == "<unset>" and nic["HWADDR"] != "<unset>"
    assert br["ONBOOT"] == nic["ONBOOT"] == "yes"
    orig = tmp_path / "orig"
    orig.write_text(text)
    assert br["IPADDR"] == sourced(orig, "IPADDR")["IPADDR"]


@needs_bash
def test_quoted_and_commented_values_survive_bash(tmp_path):
    text = "DEVICE=eth0\nIPADDR='10.0.0.5'   # the host\nNAME=\"System eth0\"\nETHTOOL_OPTS=\"autoneg off\"\n"
    paths = write(tmp_path, plan_bridge(text))
    assert sourced(paths["ifcfg-xenbr0"], "IPADDR")["IPADDR"] == "10.0.0.5"
    nic = sourced(paths["ifcfg-eth0"], "NAME", "ETHTOOL_OPTS", "IPADDR")
    assert nic == {"NAME": "System eth0", "ETHTOOL_OPTS": "autoneg off", "IPADDR": "<unset>"}


# ------------------------------------------------------------------ bridges_defined


def test_bridges_defined_over_a_hosts_files():
    plan = plan_bridge(CENTOS5_STATIC)
    files = {
        **plan.files,
        "ifcfg-lo": "DEVICE=lo\nIPADDR=127.0.0.1\nNETMASK=255.0.0.0\nONBOOT=yes\nNAME=loopback\n",
        "ifcfg-br1": "TYPE=Bridge\nBOOTPROTO=none\nONBOOT=yes\n",                        # name from the file
        "/etc/sysconfig/network-scripts/ifcfg-dmz": 'DEVICE="brdmz"\nTYPE="Bridge"\n',    # DEVICE wins
        "ifcfg-br2.rpmsave": "DEVICE=br2\nTYPE=Bridge\n",           # the network service skips it
        "ifcfg-br3~": "DEVICE=br3\nTYPE=Bridge\n",
        "ifcfg-br4": "DEVICE=br4\nTYPE=bridge\n",                   # initscripts compares TYPE case-sensitively
        "ifcfg-xenbr0:1": "DEVICE=xenbr0:1\nIPADDR=192.168.1.11\nTYPE=Bridge\n",   # an alias, not a bridge
        "ifcfg-ovsbr0": "DEVICE=ovsbr0\nDEVICETYPE=ovs\nTYPE=OVSBridge\n",
        "ifcfg-eth1": "DEVICE=eth1\n# TYPE=Bridge\nBRIDGE=br1\n",
        "route-eth0": "TYPE=Bridge\n",                              # not an ifcfg file
    }
    assert bridges_defined(files) == {"xenbr0", "br1", "brdmz", "ovsbr0"}
    assert bridges_defined({}) == set()
    assert bridges_defined({"ifcfg-eth0": CENTOS5_STATIC}) == set()


# ------------------------------------------------------------------ bridges_used


XM_CFG = """\
# CentOS 5 guest, xm (Python): a helper variable and a computed vif
name = "mail"
memory = 1024
bootloader = "/usr/bin/pygrub"
dmz = "xenbr1"
vif = [ 'mac=00:16:3e:5d:1a:07, bridge=xenbr0',
        'mac=00:16:3e:5d:1a:08,bridge=%s' % dmz,
        'mac=00:16:3e:5d:1a:09' ]
"""

XL_CFG = """\
name = "web"
memory = 512
vif = [ 'mac=00:16:3e:11:22:33,bridge=br0', '',
        'mac=00:16:3e:11:22:35,script=/etc/xen/scripts/vif-route,ip=10.0.0.5',
        'bridge=br1,backend=netdrv', 'bridge=br2,bridge=br3', 'type=ioemu,model=e1000,bridge=br4' ]
"""


def test_bridges_used_xm_style():
    assert bridges_used(XM_CFG) == ["xenbr0", "xenbr1", "xenbr0"]


def test_bridges_used_xl_style():
    assert bridges_used(XL_CFG) == ["br0", "xenbr0", "", "", "br3", "br4"]
    # the host's xl.conf vif.default.bridge changes the default
    assert bridges_used(XL_CFG, default="xenbr9") == ["br0", "xenbr9", "", "", "br3", "br4"]


def test_bridges_used_golden_seed_config_and_edge_cases():
    assert bridges_used((DATA / "centos5-seed004" / "in.cfg").read_text()) == ["xenbr0"]
    assert bridges_used('name = "x"\nmemory = 256\n') == []
    assert bridges_used("vif = 'bridge=br5'\n") == ["br5"]
    assert bridges_used("vif = [ 'bridge=' ]\n") == ["xenbr0"]
    with pytest.raises(ValueError, match="computed by Python"):
        bridges_used("import os\nif os.path.exists('/x'):\n    vif = ['bridge=br1']\nelse:\n    vif = []\n")
    with pytest.raises(ValueError, match="list of strings"):
        bridges_used("vif = [ 1, 2 ]\n")


# ------------------------------------------------------------------ missing_bridges


def test_missing_bridges_messages():
    used = {"mail.cfg": bridges_used(XM_CFG), "web.cfg": bridges_used(XL_CFG)}
    defined = bridges_defined(plan_bridge(CENTOS5_STATIC).files)
    assert defined == {"xenbr0"}
    assert missing_bridges(used, defined) == [
        "mail.cfg: vif 1 uses bridge 'xenbr1', which the destination does not define (add ifcfg-xenbr1 or use "
        "--bridge-map xenbr1=xenbr0)",
        "web.cfg: vif 0 uses bridge 'br0', which the destination does not define (add ifcfg-br0 or use "
        "--bridge-map br0=xenbr0)",
        "web.cfg: vif 4 uses bridge 'br3', which the destination does not define (add ifcfg-br3 or use "
        "--bridge-map br3=xenbr0)",
        "web.cfg: vif 5 uses bridge 'br4', which the destination does not define (add ifcfg-br4 or use "
        "--bridge-map br4=xenbr0)",
    ]
    assert missing_bridges(used, {"xenbr0", "xenbr1", "br0", "br3", "br4"}) == []


def test_missing_bridges_target_and_no_bridge_at_all():
    assert missing_bridges({"g.cfg": ["br1"]}, {"br0", "lan"}) == [
        "g.cfg: vif 0 uses bridge 'br1', which the destination does not define (add ifcfg-br1 or use "
        "--bridge-map br1=br0)"]
    assert missing_bridges({"g.cfg": ["xenbr0", ""]}, set()) == [
        "g.cfg: vif 0 uses bridge 'xenbr0', which the destination does not define (add ifcfg-xenbr0)"]


# ------------------------------------------------------------------ names given on the command line


@pytest.mark.parametrize("name", ["eth0", "em1", "enp0s25", "eth0.100", "bond0", "br_lan", "a" * 15, "veth-x"])
def test_interface_names_the_kernel_and_initscripts_take(name):
    from builder.migrate.xenbridge import check_ifname

    assert check_ifname(name) == name


@pytest.mark.parametrize("name, why", [
    ("", "empty"), ("a" * 16, "at most 15"), (".", "'.'"), ("..", "'.'"), ("eth/0", "'/'"), ("eth0:1", "':'"),
    ("eth 0", "whitespace"), ("eth\t0", "whitespace"), ("eth0\n", "whitespace"), ("eth0$(cmd)", "initscripts"),
    ("eth0`id`", "initscripts"), ("eth0;id", "initscripts"), ("e'h", "initscripts"), ('e"h', "initscripts"),
    ("eth*", "initscripts"), ("\x00", "'/'"), ("ëth0", "initscripts"),
])
def test_interface_names_refused_with_the_rule_they_break(name, why):
    from builder.migrate.xenbridge import check_ifname

    with pytest.raises(ValueError) as e:
        check_ifname(name, "--iface")
    assert "--iface" in str(e.value) and why in str(e.value)


def test_bridge_names_also_refuse_a_dash_and_the_nic_itself():
    from builder.migrate.xenbridge import check_names

    check_names("eth0", "xenbr0")
    for iface, bridge in (("eth0", "xen-br0"), ("eth0", "eth0"), ("eth0", "br$(x)"), ("eth0$(x)", "xenbr0")):
        with pytest.raises(ValueError):
            check_names(iface, bridge)
