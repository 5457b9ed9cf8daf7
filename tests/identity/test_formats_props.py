"""Property tests for the identity rewriters and config readers (builder/identity/formats.py). Every file they
read comes from a guest tree or a guest config (outside input), so for every format and any text:

- (a) the rewriter returns text and never raises (for the readers: an Identity, or InputError for an xm config
  no xm config looks like);
- (b) a line that holds no identity token (an old host name, an old address or gateway in any notation, an old
  MAC in any notation) is byte-identical and in place after the rewrite. Configs are generated as identity lines
  of the format interleaved with random unrelated lines; the rename keeps every address in its /24 and gives no
  new prefix, so the only other lines the formats document as changing, broadcast and network addresses
  recomputed from the address, are left out of the check;
- the rewrite is idempotent: a second run changes nothing (also for renames with new prefixes and networks).

The renames come from tests/strategies.renames(); real files (the golden inputs of tests/identity/test_formats.py
and tests/data) are mutated too.
"""
from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.core.checks import mac_norm
from builder.core.errors import InputError
from builder.identity import formats as f
from tests.identity import test_formats as golden
from tests.support import TEST_DATA
from tests.support.strategies import WORDS, lines_of, mutated, one_line, outside_text, renames

DATA = TEST_DATA

# identity lines of each format, as templates over the rename's old values
TEMPLATES = {
    "hostname": ["{name}", "{NAME}", "  {name}  ", "# {name}"],
    "hosts": ["{ip}\t{name} {short}", "127.0.1.1\t{name}", "127.0.0.1 localhost {short}", "{ip6} {name}",
              "{ip} other-host", "# {ip} {name}"],
    "sysconfig-network": ["HOSTNAME={name}", 'HOSTNAME="{name}"', "GATEWAY={gw}", "GATEWAY='{gw}' # default route",
                          "IPV6_DEFAULTGW={ip6}"],
    "ifcfg": ["IPADDR={ip}", 'IPADDR0="{ip}"', "HWADDR={MAC}", "MACADDR={mac}", "GATEWAY={gw}", "GATEWAY0={gw}",
              "DHCP_HOSTNAME={name}", "IPV6ADDR={ip6}/64", "IPV6ADDR_SECONDARIES='{ip6}/64 fd00::9/64'",
              "export HOSTNAME={short}"],
    "debian-interfaces": ["iface eth0 inet static", "    address {ip}/24", "\taddress {ip}", "    gateway {gw}",
                          "    hwaddress ether {mac}", "    up ip addr add {ip}/24 dev eth0 # own", "    netmask 24",
                          "iface eth0 inet6 static", "    address {ip6}/64", "    hostname {name}",
                          "    post-up ip route add default via {gw}"],
    "networkd": ["[Match]", "MACAddress={mac}", "[Link]", "MACAddress={MAC}", "[Network]", "Address={ip}/24",
                 "Gateway={gw}", "[DHCPv4]", "Hostname={name}", "[Route]", "PreferredSource={ip}", "Gateway={gw}"],
    "nm-keyfile": ["[ethernet]", "mac-address={MAC}", "cloned-mac-address={decmac}", "[ipv4]",
                   "address1={ip}/24,{gw}", "addresses={ip};24;{gw};", "gateway={gw}", "dhcp-hostname={name}",
                   "route1=10.9.0.0/16,{gw}", "[ipv6]", "address1={ip6}/64"],
    "netplan": ["network:", "  ethernets:", "    eth0:", "      match:", "        macaddress: {mac}",
                "      macaddress: \"{MAC}\"", "      addresses: [{ip}/24, \"{ip6}/64\"]", "      addresses:",
                "        - {ip}/24", "        - '{ip6}/64'", "      gateway4: {gw}", "      dhcp4-overrides:",
                "        hostname: {name}", "      routes:", "        - to: default", "          via: {gw}"],
    "udev-persistent-net": ['SUBSYSTEM=="net", ACTION=="add", ATTR{{address}}=="{mac}", NAME="eth0"',
                            'KERNEL=="eth*", SYSFS{{address}}=="{MAC}", NAME="eth1"'],
    "lxc": ["lxc.uts.name = {name}", "lxc.utsname={short}", "lxc.net.0.hwaddr = {mac}", "lxc.network.hwaddr = {MAC}",
            "lxc.net.0.ipv4.address = {ip}/24", "lxc.network.ipv4 = {ip}/24 10.0.3.255",
            "lxc.net.1.ipv4.gateway = {gw}", "lxc.network.1.ipv6 = {ip6}/64"],
    "xen": ['name = "{name}"', "vif = [ 'mac={mac},bridge=xenbr0,ip={ip}' ]", 'ip = "{ip}"', 'gateway = "{gw}"',
            "hostname = '{name}'", "vif = [", "  'mac={MAC}, ip={ip} 10.9.9.9',", "]"],
    "openvz": ['HOSTNAME="{name}"', "NAME={short}", 'IP_ADDRESS="{ip} 10.9.9.9"',
               'NETIF="ifname=eth0,mac={MAC},host_ifname=veth101.0,host_mac={MAC}"'],
    "tokens": ["bind-address = {ip}", "server_name {name} www.{name};", "# {mac}", "wsrep_node_address={ip}:4567",
               "peers = [{ip6}]"],
}
# keys whose value is recomputed from the address (documented), left out of the "untouched" check
DERIVED = re.compile(r"^\s*(?:BROADCAST\d*|NETWORK\d*)\s*=|^\s*(?:broadcast|network)\s", re.IGNORECASE)

# lines that look like the format but hold other values (keys with random values, near misses of the tokens)
NEAR = ["vm01", "xvm0", "vm0-db", "www.vm0x", "10.0.3.20", "110.0.3.2", "10.0.3.2.1", "10.0.3.2/33", "fd00:3::20",
        "00:16:3e:00:03:200", "00:16:3e:00:03", "0;22;62;0;3", "255.255.255.0", "auto", "dhcp"]
KEYS = ["IPADDR=", "HWADDR=", "GATEWAY=", "HOSTNAME=", "NETMASK=", "PREFIX=", "address ", "gateway ", "hwaddress ",
        "MACAddress=", "Address=", "mac-address=", "address1=", "  addresses: ", "  - ", "  macaddress: ",
        "lxc.net.0.hwaddr = ", "lxc.uts.name = ", "vif = [ '", "name = '", "ATTR{address}==\"", "NETIF=\"mac=",
        "[Match]", "[ipv4]", "iface eth1 inet static", "mapping eth0", "---"]
unrelated = st.one_of(one_line(60), st.tuples(st.sampled_from(KEYS), st.one_of(st.sampled_from(NEAR + WORDS),
                                                                            one_line(16))).map("".join))


def _render(template: str, r: f.Rename, pick: int) -> str:
    name = r.old_hostnames[0]
    ips = [str(ip) for ip in r.ips if ip.version == 4]
    ip6 = next((str(ip) for ip in r.ips if ip.version == 6), "fd00:9::9")
    gw = next((str(g) for g in r.gateways), "10.0.3.1")
    macs = sorted(r.macs) or ["02:00:00:00:00:01"]
    mac = macs[pick % len(macs)]
    return template.format(
        name=name, NAME=name.upper(), short=name.split(".")[0], ip=ips[pick % len(ips)], ip6=ip6, gw=gw,
        mac=mac, MAC=mac.upper(), decmac=";".join(str(int(b, 16)) for b in mac.split(":")))


@st.composite
def config(draw, fmt: str, rename_strategy=None) -> tuple[str, f.Rename]:
    r = draw(renames() if rename_strategy is None else rename_strategy)
    identity = st.tuples(st.sampled_from(TEMPLATES[fmt]), st.integers(0, 3)).map(lambda t: _render(t[0], r, t[1]))
    lines = draw(st.lists(st.one_of(identity, unrelated), min_size=2, max_size=25))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(lines) + draw(st.sampled_from(["", eol])), r


def holds_identity(line: str, r: f.Rename) -> bool:
    """Whether the line holds an old name, address, gateway or MAC in any notation (conservative: any run of
    address characters is tried at every boundary)."""
    low = line.lower()
    if any(n in low for n in r.match_names):
        return True
    olds = set(r.ips) | set(r.gateways)
    for m in re.finditer(r"[0-9A-Fa-f:.\-]+", line):
        run = m.group()
        for a in range(len(run)):
            for b in range(a + 2, min(len(run), a + 45) + 1):
                cand = run[a:b]
                try:
                    if ipaddress.ip_address(cand) in olds:
                        return True
                except ValueError:
                    pass
                if mac_norm(cand) in r.macs:
                    return True
    for m in re.finditer(r"\d{1,3}(?:;\d{1,3}){5}", line):
        octets = [int(x) for x in m.group().split(";")]
        if all(x < 256 for x in octets) and ":".join(f"{x:02x}" for x in octets) in r.macs:
            return True
    return False


FORMATS = sorted(f.REWRITERS)
assert set(FORMATS) == set(TEMPLATES)


@pytest.mark.parametrize("fmt", FORMATS)
@given(data=st.data())
def test_lines_without_identity_are_untouched(fmt, data):
    text, r = data.draw(config(fmt))
    out = f.REWRITERS[fmt](text, r)
    before, after = text.split("\n"), out.split("\n")
    assert len(after) == len(before)
    for no, (old, new) in enumerate(zip(before, after), 1):
        if not holds_identity(old, r) and not DERIVED.match(old):
            assert new == old, (fmt, no, old, new)


SEEDS = [v for k, v in vars(golden).items() if k.isupper() and isinstance(v, str) and "\n" in v] + \
        [p.read_text() for p in sorted((DATA / "centos6").iterdir())]
any_rename = st.one_of(renames(), renames(same_network=False), renames(same_network=False, prefix=True))
any_text = st.one_of(outside_text(300), mutated(SEEDS), lines_of(unrelated, 15))


@pytest.mark.parametrize("fmt", FORMATS)
@given(data=st.data())
def test_rewriters_return_text_and_are_idempotent(fmt, data):
    text, r = data.draw(st.one_of(any_text.flatmap(lambda t: st.tuples(st.just(t), any_rename)),
                                  st.sampled_from(FORMATS).flatmap(lambda other: config(other, any_rename))))
    fn = f.REWRITERS[fmt]
    once = fn(text, r)
    assert isinstance(once, str)
    assert fn(once, r) == once


@given(any_text)
def test_readers_return_an_identity(text):
    for reader in (f.read_lxc, f.read_openvz, f.read_xen):
        try:
            ident = reader(text)
        except InputError:
            assert reader is f.read_xen
            continue
        assert isinstance(ident, f.Identity)
        assert all(isinstance(x, str) for x in (*ident.hostnames, *ident.ips, *ident.macs))
        assert ident.name is None or isinstance(ident.name, str)


names = st.one_of(st.sampled_from(["vm0", "vm0.example.com", "vm_0", "-vm", "vm0.", "a" * 64, ""]), one_line(20))
addresses = st.one_of(st.sampled_from(["10.0.3.2", "10.0.3.3/24", "fd00::2", "fd00::3/64", "10.0.3.2/33", "x",
                                       "10.0.3", "::ffff:10.0.3.2"]), one_line(16))
macs = st.one_of(st.sampled_from(["00:16:3e:00:03:02", "00-16-3E-00-03-03", "0016.3e00.0304", "zz", ""]),
                 one_line(17))


@given(st.one_of(st.none(), names), st.lists(names, max_size=2), st.dictionaries(addresses, addresses, max_size=2),
       st.dictionaries(addresses, addresses, max_size=2), st.dictionaries(macs, macs, max_size=2))
def test_a_rename_is_made_or_refused_as_bad_input(hostname, old_names, ips, gateways, mac_map):
    """Old names come from the guest's files: Rename.of makes a Rename or raises RenameError (an InputError)."""
    try:
        r = f.Rename.of(hostname=hostname, old_hostnames=tuple(old_names), ips=ips, gateways=gateways, macs=mac_map)
    except f.RenameError as e:
        assert isinstance(e, InputError) and e.message
        return
    for fn in f.REWRITERS.values():
        assert fn("\n".join(["vm0 10.0.3.2 00:16:3e:00:03:02"] * 2), r) is not None
