"""Property tests for the Xen bridge readers (builder/migrate/xenbridge.py): the host's ifcfg files and the guests'
xm/xl
configs are outside input (they come from the remote host `migrate xen-bridge` and `migrate xen` work on), so on
any text

- plan_bridge returns the two files, or raises ValueError naming what cannot be bridged (its documented error);
  what it writes is what the host's ifcfg file said plus the bridge lines: every setting line of the input is in
  one of the two files, none invented;
- bridges_defined returns a set of names and never raises;
- bridges_used returns one bridge per vif, or raises ValueError (vif needs Python) or InputError (no xm config).

Inputs: random text, the ifcfg files and configs of tests/data mutated, and generated ifcfg files of the keys
plan_bridge sorts (and unknown ones) with hostile values, quoting and comments.
"""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from builder.core.errors import InputError
from builder.identity.formats import shvars
from builder.migrate import xenbridge
from tests.migrate import test_xenbridge as golden
from tests.support import TEST_DATA
from tests.support.strategies import config_text, lines_of, one_line

DATA = TEST_DATA
IFCFG_SEEDS = [(DATA / "centos6" / "ifcfg-eth0").read_text()] + \
    [v for k, v in vars(golden).items() if k.isupper() and isinstance(v, str) and "DEVICE" in v]
XEN_SEEDS = [p.read_text() for p in sorted((DATA / "xen").glob("*/*.cfg"))] + [golden.XM_CFG, golden.XL_CFG]

KEYS = ["DEVICE", "TYPE", "BOOTPROTO", "IPADDR", "IPADDR0", "NETMASK", "PREFIX1", "GATEWAY", "HWADDR", "MACADDR",
        "ONBOOT", "USERCTL", "NM_CONTROLLED", "BRIDGE", "MASTER", "SLAVE", "DNS1", "GATEWAYDEV", "IPV6INIT",
        "IPV6_DEFAULTDEV", "UUID", "NAME", "MTU", "ETHTOOL_OPTS", "DHCP_HOSTNAME", "ZONE", "FOO"]
VALUES = ["eth0", "eth1", "xenbr0", "Bridge", "Ethernet", "static", "dhcp", "none", "yes", "no", "10.0.0.2",
          "255.255.255.0", "00:1E:0B:00:00:01", "", "a b", "$(id)", "'", '"']
IFCFG_LINE = st.one_of(
    st.tuples(st.sampled_from(["", "", "export ", "  "]), st.sampled_from(KEYS), st.just("="),
              st.sampled_from(["", '"', "'"]), st.one_of(st.sampled_from(VALUES), one_line(12)),
              st.sampled_from(["", '"', "'"]), st.sampled_from(["", " # note", "\r"])).map("".join),
    st.sampled_from(["", "# Xen Virtual Ethernet", "#IPADDR=1.2.3.4"]), one_line(30))
IFCFG = config_text(IFCFG_SEEDS, lines_of(IFCFG_LINE, max_lines=15))


@given(IFCFG, st.sampled_from(["eth0", "eth1", "bond0"]), st.sampled_from(["xenbr0", "br0"]))
def test_plan_bridge_returns_files_or_value_error(text, iface, bridge):
    try:
        plan = xenbridge.plan_bridge(text, iface, bridge)
    except ValueError:
        return
    assert set(plan.files) == {f"ifcfg-{bridge}", f"ifcfg-{iface}"}
    written = [m.group("key") + "=" + m.group("val") for t in plan.files.values() for _, m in shvars(t)[1]]
    for _, m in shvars(text)[1]:
        key, val = m.group("key"), m.group("val")
        if key not in ("NM_CONTROLLED", "BOOTPROTO", "GATEWAYDEV", "IPV6_DEFAULTDEV", "DEVICE", "TYPE"):
            assert f"{key}={val}" in written, (key, val)


@given(st.dictionaries(st.sampled_from(["ifcfg-eth0", "ifcfg-xenbr0", "ifcfg-br0:1", "ifcfg-x.bak", "route-eth0",
                                        "/etc/sysconfig/network-scripts/ifcfg-br1"]), IFCFG, max_size=4))
def test_bridges_defined_returns_names(files):
    got = xenbridge.bridges_defined(files)
    assert isinstance(got, set) and all(isinstance(b, str) for b in got)


@given(config_text(XEN_SEEDS, lines_of(st.sampled_from([
    "vif = [ 'bridge=xenbr1' ]", "vif = ['mac=00:16:3e:00:00:01']", "vif = [ '' ]", "vif = 'bridge=br0'",
    "vif = [ 'script=vif-route' ]", "vif = [ 'backend=1,bridge=x' ]", "vif = [ 1 ]", "vif = f()",
    "vif = [ 'script=' ]", "vif = [ 'bridge=' ]", "name = 'a'", "memory = " + "-" * 500 + "1"]), max_lines=4)))
def test_bridges_used_returns_one_bridge_per_vif(text):
    try:
        used = xenbridge.bridges_used(text)
    except (ValueError, InputError):
        return
    assert isinstance(used, list) and all(isinstance(b, str) for b in used)
