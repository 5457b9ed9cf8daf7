"""migrate convert-openvz: an OpenVZ VPS (CTID.conf + private area) made an LXC container.

Unit tests run the conversion on small trees shaped like OpenVZ guests (a Debian VPS whose network vzctl
configured on venet0, an EL6 one with ifcfg-venet0 files) with CTID.conf samples in the shape vzctl writes
(tests/data/openvz/): the LXC config, every guest file, the notes; hostile configs and trees; the dry run; the
duplicate refusal. The real test converts what the openvz target makes (its CTID.conf and the built tree as the
private area), boots it under real lxc-start in a network namespace the test makes, reaches the CTID.conf's
address from there, and is refused when it converts the same VPS a second time.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.core.errors import InputError
from builder.identity import inventory
from builder.migrate import openvz
from tests.conftest import DEFAULT_RECIPE, migrate

DATA = Path(__file__).resolve().parent.parent / "data" / "openvz"


# ------------------------------------------------------------------ small OpenVZ guests


def debian_vps(root: Path, interfaces: str | None = None) -> Path:
    """A Debian VPS's tree as vzctl leaves it: systemd, venet0 in /etc/network/interfaces, the simfs root in
    fstab, resolv.conf a link."""
    for d in ("etc/network", "lib/systemd/system", "sbin", "etc/systemd/system"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/debian_version").write_text("12.5\n")
    (root / "etc/network/interfaces").write_text(interfaces or (DATA / "interfaces.venet").read_text())
    for unit in ("systemd-journald.service", "console-getty.service", "multi-user.target"):
        (root / "lib/systemd/system" / unit).write_text("")
    os.symlink("/lib/systemd/systemd", root / "sbin/init")
    (root / "etc/fstab").write_text("/dev/simfs / simfs defaults 0 0\nproc /proc proc defaults 0 0\n")
    os.symlink("../run/resolvconf/resolv.conf", root / "etc/resolv.conf")
    (root / "etc/hostname").write_text("old\n")
    return root


def el6_vps(root: Path) -> Path:
    """A CentOS 6 VPS as vzctl's redhat scripts leave it: ifcfg-venet0 and venet0:0, GATEWAYDEV in
    sysconfig/network, upstart."""
    nets = root / "etc/sysconfig/network-scripts"
    nets.mkdir(parents=True)
    (root / "etc/init").mkdir()
    (root / "sbin").mkdir()
    (root / "etc/rc.d").mkdir()
    (root / "etc/redhat-release").write_text("CentOS release 6.10 (Final)\n")
    (root / "sbin/initctl").write_text("")
    (root / "sbin/init").write_text("")
    (root / "etc/rc.d/rc.sysinit").write_text("/sbin/start_udev\n")
    (root / "etc/sysconfig/network").write_text('NETWORKING="yes"\nGATEWAYDEV="venet0"\nHOSTNAME="old"\n')
    (nets / "ifcfg-venet0").write_text("DEVICE=venet0\nBOOTPROTO=static\nONBOOT=yes\nIPADDR=127.0.0.1\n"
                                       "NETMASK=255.255.255.255\nBROADCAST=0.0.0.0\n")
    (nets / "ifcfg-venet0:0").write_text("DEVICE=venet0:0\nONBOOT=yes\nIPADDR=198.51.100.7\n"
                                         "NETMASK=255.255.255.255\n")
    (nets / "ifcfg-lo").write_text("DEVICE=lo\nIPADDR=127.0.0.1\n")
    (root / "etc/fstab").write_text("/dev/ploop12345p1 / ext4 defaults 0 0\nnone /dev/pts devpts rw 0 0\n")
    return root


def options(tmp_path: Path, private: Path, **kw) -> openvz.Options:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    base = dict(private=private, lxcpath=str(tmp_path / "lxc"), inventory_file=str(tmp_path / "inv.db"),
                xen_dir=str(empty), vz_dir=str(empty), gateways=("192.0.2.1",))
    base.update(kw)
    return openvz.Options(**base)


def changed(plan: openvz.Plan) -> dict[str, openvz.Change]:
    return {c.path: c for c in plan.changes}


def tree_digest(root: Path) -> list[tuple]:
    """Every entry of a tree: path, type and mode, owner, link target or content hash, mtime."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for n in sorted(dirs + files):
            p = Path(dirpath) / n
            st = os.lstat(p)
            what = (os.readlink(p) if p.is_symlink() else
                    hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
            out.append((str(p.relative_to(root)), st.st_mode, st.st_uid, what, st.st_mtime_ns))
    return sorted(out)


# ------------------------------------------------------------------ config translation


def test_vswap_debian_vps_translated(tmp_path):
    """101.conf (vSwap: PHYSPAGES in pages, SWAPPAGES with a suffix, CPUS and CPULIMIT, three addresses one of
    them IPv6, NAME, NAMESERVER, SEARCHDOMAIN) on a Debian VPS: the limits as cgroup v1 and v2 keys, the
    addresses on eth0 in ifupdown's format (venet0's stanzas gone, the owner's own tun0 kept), resolv.conf
    replacing its link, hostname, fstab, console getty, and what has no equivalent as notes."""
    priv = debian_vps(tmp_path / "priv")
    p = openvz.plan(DATA / "101.conf", options(tmp_path, priv), layout="v1")
    assert p.name == "www" and p.dest == (tmp_path / "lxc" / "www").resolve()
    cfg = p.config.splitlines()
    mac = p.nics[0].mac
    assert re.fullmatch(r"00:16:3e:[0-7][0-9a-f](:[0-9a-f]{2}){2}", mac), mac
    for line in ("lxc.uts.name = www.example.org", "lxc.arch = x86_64", "lxc.start.auto = 1",
                 f"lxc.rootfs.path = dir:{p.dest}/rootfs", "lxc.net.0.type = veth", "lxc.net.0.link = lxcbr0",
                 "lxc.net.0.name = eth0", f"lxc.net.0.hwaddr = {mac}",
                 f"lxc.cgroup.memory.limit_in_bytes = {262144 * 4096}",
                 f"lxc.cgroup.memory.memsw.limit_in_bytes = {(1 << 30) + (512 << 20)}",
                 "lxc.cgroup.cpu.cfs_period_us = 100000", "lxc.cgroup.cpu.cfs_quota_us = 150000",  # CPULIMIT < CPUS
                 "lxc.cgroup.cpu.shares = 1024", "lxc.cgroup.devices.deny = a"):
        assert line in cfg, (line, p.config)
    assert cfg[0].startswith("# written by imgbuild")   # install-lxc --force and clone know it as imgbuild's
    assert not any("ipv4.address" in line for line in cfg)   # the guest configures its address (ifupdown)

    v2 = openvz.plan(DATA / "101.conf", options(tmp_path, priv), layout="v2").config.splitlines()
    for line in (f"lxc.cgroup2.memory.max = {262144 * 4096}", f"lxc.cgroup2.memory.swap.max = {512 << 20}",
                 "lxc.cgroup2.cpu.max = 150000 100000", "lxc.cgroup2.cpu.weight = 100",
                 "lxc.cgroup2.devices.deny = a"):
        assert line in v2, line
    assert not any(line.startswith("lxc.cgroup.") for line in v2)

    ch = changed(p)
    interfaces = ch["/etc/network/interfaces"].new
    assert "venet" not in interfaces
    assert "auto tun0\niface tun0 inet manual\n\tpre-up ip tuntap add tun0 mode tun\n" in interfaces
    assert interfaces.startswith("# This configuration file is auto-generated.")
    assert interfaces.endswith(f"""\
auto eth0
iface eth0 inet static
    address 192.0.2.10/24
    gateway 192.0.2.1
    hwaddress ether {mac}

auto eth0:1
iface eth0:1 inet static
    address 192.0.2.11/24

iface eth0 inet6 static
    address 2001:db8::10/64
"""), interfaces
    resolv = ch["/etc/resolv.conf"]
    assert resolv.link == "../run/resolvconf/resolv.conf" and resolv.kind == "write"
    assert resolv.new.endswith("search example.org\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n")
    assert ch["/etc/hostname"].new == "www\n"
    assert ch["/etc/fstab"].new == ("# imgbuild: the container's root is LXC's (was OpenVZ's): /dev/simfs / simfs "
                                    "defaults 0 0\nproc /proc proc defaults 0 0\n")
    assert ch["/etc/systemd/system/getty.target.wants/console-getty.service"].new == \
        "/lib/systemd/system/console-getty.service"
    assert ch["/etc/systemd/system/getty@.service"].kind == "link"
    notes = "\n".join(p.notes)
    for key in ("DISKSPACE", "DISKINODES", "QUOTATIME", "NETFILTER"):
        assert "101.conf:" in notes and f": {key}=" in notes, (key, notes)
    assert p.record == inventory.GuestRecord("www", "www.example.org", ("192.0.2.10", "192.0.2.11", "2001:db8::10"),
                                             (mac,), f"lxc:{p.dest}")
    text = p.describe()
    assert "+    address 192.0.2.10/24" in text and "-auto venet0" in text and "DISKSPACE" in text


def test_beancounter_el6_vps_translated(tmp_path):
    """102.conf (pre-vSwap beancounters, PHYSPAGES unlimited, NUMPROC, CPUMASK, CPUUNITS, NAMESERVER=inherit)
    on a CentOS 6 VPS: ifcfg-venet0* removed, ifcfg-eth0 written (EL's own format), GATEWAYDEV gone, upstart's
    console shim, the ploop root out of fstab; no memory limit, pids and cpuset set, every beancounter a note."""
    priv = el6_vps(tmp_path / "priv")
    p = openvz.plan(DATA / "102.conf", options(tmp_path, priv, gateways=("198.51.100.1",)), layout="v1")
    assert (p.name, p.family, p.init) == ("102", "rhel", "upstart-lxc")
    cfg = p.config.splitlines()
    assert "lxc.arch = i686" in cfg and "lxc.start.auto = 1" not in cfg
    assert "lxc.cgroup.pids.max = 240" in cfg and "lxc.cgroup.cpuset.cpus = 0-1" in cfg
    assert "lxc.cgroup.cpu.shares = 512" in cfg
    assert not any("memory" in line for line in cfg)
    ch = changed(p)
    nets = "/etc/sysconfig/network-scripts"
    assert ch[f"{nets}/ifcfg-venet0"].kind == "remove" and ch[f"{nets}/ifcfg-venet0:0"].kind == "remove"
    assert f"{nets}/ifcfg-lo" not in ch
    mac = p.nics[0].mac
    assert ch[f"{nets}/ifcfg-eth0"].new == (
        f"DEVICE=eth0\nTYPE=Ethernet\nONBOOT=yes\nNM_CONTROLLED=no\nHWADDR={mac.upper()}\nBOOTPROTO=none\n"
        "IPADDR=198.51.100.7\nNETMASK=255.255.255.0\nPREFIX=24\nGATEWAY=198.51.100.1\n")
    assert ch["/etc/sysconfig/network"].new == 'NETWORKING="yes"\nHOSTNAME=db1\n'
    assert "/etc/resolv.conf" not in ch
    assert "lxc-sysinit.conf" in " ".join(ch) and ch["/etc/rc.d/rc.sysinit"].new == ": # /sbin/start_udev\n"
    assert ch["/etc/fstab"].new.startswith("# imgbuild: the container's root is LXC's")
    notes = "\n".join(p.notes)
    for key in ("KMEMSIZE", "LOCKEDPAGES", "PRIVVMPAGES", "SHMPAGES", "VMGUARPAGES", "NUMTCPSOCK", "NUMFILE",
                "DISKSPACE", "IOPRIO"):
        assert f": {key}=" in notes, (key, notes)
    assert "NAMESERVER=inherit" in notes


def test_sysvinit_debian_vps_gets_a_console_getty(tmp_path):
    """A Debian VPS with sysvinit: the build's container inittab (a getty on the console only)."""
    priv = debian_vps(tmp_path / "priv")
    (priv / "sbin/init").unlink()
    (priv / "sbin/init").write_text("")
    (priv / "etc/init.d").mkdir()
    (priv / "etc/init.d/rc").write_text("")
    (priv / "etc/inittab").write_text("1:2345:respawn:/sbin/getty 38400 tty1\n")
    p = openvz.plan(DATA / "101.conf", options(tmp_path, priv), layout="v1")
    assert p.init == "sysvinit-container"
    inittab = changed(p)["/etc/inittab"].new
    assert "c:2345:respawn:/sbin/getty --noclear 38400 console" in inittab and "tty1" not in inittab


def test_several_addresses_need_one_gateway_on_their_network(tmp_path):
    priv = debian_vps(tmp_path / "priv")
    with pytest.raises(InputError, match="--gateway 10.9.9.1: not an address on the network"):
        openvz.plan(DATA / "101.conf", options(tmp_path, priv, gateways=("10.9.9.1",)), layout="v1")
    p = openvz.plan(DATA / "101.conf", options(tmp_path, priv, gateways=(), prefix4=28), layout="v1")
    assert [a.with_prefixlen for a in p.nics[0].addresses] == ["192.0.2.10/28", "192.0.2.11/24", "2001:db8::10/64"]
    assert any("no default route" in n for n in p.notes)


# ------------------------------------------------------------------ hostile configs and trees


HOSTILE = [
    pytest.param('HOSTNAME="$(touch {marker})"\nIP_ADDRESS="192.0.2.9"\n', "HOSTNAME", id="hostname-subshell"),
    pytest.param('HOSTNAME="a;touch {marker}"\nIP_ADDRESS="192.0.2.9"\n', "HOSTNAME", id="hostname-semicolon"),
    pytest.param('HOSTNAME="../../../etc"\nIP_ADDRESS="192.0.2.9"\n', "HOSTNAME", id="hostname-dotdot"),
    pytest.param('HOSTNAME="ok"\nNAME="../../etc"\nIP_ADDRESS="192.0.2.9"\n', "NAME", id="name-dotdot"),
    pytest.param('HOSTNAME="ok"\nIP_ADDRESS="192.0.2.9 `touch {marker}`"\n', "IP_ADDRESS", id="ip-backticks"),
    pytest.param('HOSTNAME="ok"\nIP_ADDRESS="192.0.2.9"\nNAMESERVER="1.1.1.1;touch {marker}"\n', "NAMESERVER",
                 id="nameserver"),
    pytest.param('HOSTNAME="ok"\nIP_ADDRESS="192.0.2.9"\nPHYSPAGES="0:$(touch {marker})"\n', "PHYSPAGES",
                 id="limit"),
    pytest.param('HOSTNAME="ok"\nIP_ADDRESS="192.0.2.9"\nVE_PRIVATE="/vz/private/$(touch {marker})"\n',
                 "VE_PRIVATE", id="private-subshell"),
]


@pytest.mark.parametrize("conf, key", HOSTILE)
def test_hostile_values_are_bad_input_and_never_run(tmp_path, conf, key):
    """A value with shell syntax or a path in it is refused (exit 2, naming the file, line and key), nothing
    runs it, nothing is made: no container directory, no inventory."""
    marker = tmp_path / "marker"
    priv = debian_vps(tmp_path / "vz" / "private" / "777")
    cfg = tmp_path / "777.conf"
    cfg.write_text(conf.format(marker=marker))
    args = ["convert-openvz", cfg, "--to", "lxc", "--lxcpath", tmp_path / "lxc", "--inventory", tmp_path / "inv.db",
            "--vz-dir", tmp_path / "none", "--xen-dir", tmp_path / "none"]
    if key != "VE_PRIVATE":
        args += ["--private", priv]
    for extra in (["--dry-run"], []):
        r = migrate(*args, *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "777.conf:" in r.stderr and key in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists()
    assert not (tmp_path / "lxc").exists() and not (tmp_path / "inv.db").exists()
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("link", ["/etc", "../../../../../../../../etc"])
def test_links_in_the_private_tree_never_lead_out(tmp_path, link):
    """/etc/network a link to /etc (or a relative link climbing out): the conversion writes interfaces inside the
    copy (where the link leads inside it, as in a chroot), never the host's /etc; the original is only read."""
    priv = debian_vps(tmp_path / "priv")
    text = (priv / "etc/network/interfaces").read_text()
    shutil.rmtree(priv / "etc/network")
    (priv / "etc/interfaces").write_text(text)
    os.symlink(link, priv / "etc/network")
    host_before = os.path.exists("/etc/interfaces")
    before = tree_digest(priv)
    opts = options(tmp_path, priv)
    p = openvz.convert(DATA / "101.conf", opts, layout="v1")
    rootfs = p.dest / "rootfs"
    assert os.readlink(rootfs / "etc/network") == link
    assert "iface eth0 inet static" in (rootfs / "etc/interfaces").read_text()
    assert os.path.exists("/etc/interfaces") == host_before
    assert tree_digest(priv) == before
    assert (p.dest / "config").read_text() == p.config


def test_an_unknown_guest_os_is_refused(tmp_path):
    priv = tmp_path / "priv"
    (priv / "etc").mkdir(parents=True)
    with pytest.raises(InputError, match="neither a Debian nor an EL system"):
        openvz.plan(DATA / "101.conf", options(tmp_path, priv), layout="v1")


def test_not_a_ctid_conf(tmp_path):
    """A binary file, a missing one, a fifo: bad input naming it (exit 2), no traceback."""
    bad = tmp_path / "101.conf"
    bad.write_bytes(b"\x00\x01binary")
    r = migrate("convert-openvz", bad, "--to", "lxc", "--private", tmp_path, "--dry-run")
    assert r.returncode == 2 and "not an OpenVZ CTID.conf" in r.stderr, r.stderr
    r = migrate("convert-openvz", tmp_path / "none.conf", "--to", "lxc", "--dry-run")
    assert r.returncode == 2 and "none.conf" in r.stderr, r.stderr
    os.mkfifo(tmp_path / "102.conf")          # nobody writes to it: refused, never a hang
    r = migrate("convert-openvz", tmp_path / "102.conf", "--to", "lxc", "--dry-run", timeout=30)
    assert r.returncode == 2 and "fifo" in r.stderr, r.stderr


# ------------------------------------------------------------------ dry run, duplicates


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    priv = debian_vps(tmp_path / "priv")
    before = tree_digest(tmp_path)
    r = migrate("convert-openvz", DATA / "101.conf", "--private", priv, "--to", "lxc", "--dry-run",
                "--lxcpath", tmp_path / "lxc", "--inventory", tmp_path / "inv.db", "--gateway", "192.0.2.1",
                "--vz-dir", tmp_path / "none", "--xen-dir", tmp_path / "none")
    assert r.returncode == 0, r.stderr
    assert tree_digest(tmp_path) == before
    out = r.stdout
    assert out.startswith("dry run: nothing is changed\n")
    for piece in ("lxc.net.0.link = lxcbr0", "change /etc/network/interfaces", "+iface eth0 inet static",
                  "replace the link /etc/resolv.conf", "change /etc/fstab", "change /etc/hostname",
                  "link   /etc/systemd/system/getty.target.wants/console-getty.service", "inventory: www",
                  "DISKSPACE"):
        assert piece in out, (piece, out)
    # the run does what the dry run said: the same MAC
    mac = re.search(r"MAC (\S+),", out).group(1)
    r = migrate("convert-openvz", DATA / "101.conf", "--private", priv, "--to", "lxc",
                "--lxcpath", tmp_path / "lxc", "--inventory", tmp_path / "inv.db", "--gateway", "192.0.2.1",
                "--vz-dir", tmp_path / "none", "--xen-dir", tmp_path / "none")
    assert r.returncode == 0, r.stderr
    assert f"lxc.net.0.hwaddr = {mac}" in (tmp_path / "lxc/www/config").read_text()


def test_second_conversion_and_taken_identity_are_refused(tmp_path):
    """The same VPS converted twice (under its name, and under another --name) is refused, exit 2, naming the
    inventory entry of the first; a VPS whose address another guest in the inventory holds is refused too."""
    priv = debian_vps(tmp_path / "priv")
    args = ["convert-openvz", DATA / "101.conf", "--private", priv, "--to", "lxc", "--lxcpath", tmp_path / "lxc",
            "--inventory", tmp_path / "inv.db", "--gateway", "192.0.2.1", "--vz-dir", tmp_path / "none",
            "--xen-dir", tmp_path / "none"]
    assert migrate(*args).returncode == 0
    before = tree_digest(tmp_path)
    for extra in ([], ["--name", "www2"], ["--dry-run"]):
        r = migrate(*args, *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"converted before: the inventory has it as www (lxc:{(tmp_path / 'lxc/www').resolve()})" in r.stderr
        assert "IP address 192.0.2.10" in r.stderr and "lxc-destroy" in r.stderr
    assert tree_digest(tmp_path) == before

    other = tmp_path / "other"
    with inventory.locked(other / "inv.db") as inv:
        inv.record(inventory.GuestRecord("web9", "web9", ("192.0.2.11",), (), "lxc:/var/lib/lxc/web9"))
    r = migrate("convert-openvz", DATA / "101.conf", "--private", priv, "--to", "lxc", "--lxcpath", other / "lxc",
                "--inventory", other / "inv.db", "--vz-dir", tmp_path / "none", "--xen-dir", tmp_path / "none")
    assert r.returncode == 2, r.stderr
    assert "duplicate of guests imgbuild knows of" in r.stderr
    assert "IP address 192.0.2.11 of www" in r.stderr and "web9" in r.stderr
    assert not (other / "lxc").exists()

    # only the name is taken (another guest called www, elsewhere): recording it would replace that entry
    third = tmp_path / "third"
    with inventory.locked(third / "inv.db") as inv:
        inv.record(inventory.GuestRecord("www", "other", ("10.1.1.1",), (), "xen:/etc/xen/www.cfg"))
    r = migrate("convert-openvz", DATA / "101.conf", "--private", priv, "--to", "lxc", "--lxcpath", third / "lxc",
                "--inventory", third / "inv.db", "--vz-dir", tmp_path / "none", "--xen-dir", tmp_path / "none")
    assert r.returncode == 2 and "the name www is already taken by www (xen:/etc/xen/www.cfg)" in r.stderr, r.stderr


NETIF_CONF = """# a VPS with veth devices (vzctl set 103 --netif_add eth0,...,vmbr0 --save), no venet address
ONBOOT="no"
PHYSPAGES="0:131072"
SWAPPAGES="0:0"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="debian-12.0-x86_64"
HOSTNAME="app.example.org"
NETIF="ifname=eth0,mac=00:18:51:AA:BB:01,host_ifname=veth103.0,host_mac=00:18:51:CC:DD:01,bridge=vmbr0;\
ifname=eth1,mac=00:18:51:AA:BB:02,host_ifname=veth103.1,host_mac=00:18:51:CC:DD:02"
"""
STATIC_ETH0 = "auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n    address 192.0.2.30/24\n"


def test_a_veth_vps_keeps_its_nics_macs_and_bridges(tmp_path):
    """NETIF's veth devices become LXC veth NICs with the guest's own names and MACs (the host side's names and
    MACs are OpenVZ's and go), each on its bridge (or --bridge when it named none); the guest's own network
    files already say eth0 and stay as they are; ONBOOT=no starts nothing at boot. A MAC another guest holds is
    refused."""
    conf = tmp_path / "103.conf"
    conf.write_text(NETIF_CONF.replace("\\\n", ""))
    priv = debian_vps(tmp_path / "priv", interfaces=STATIC_ETH0)
    p = openvz.plan(conf, options(tmp_path, priv, gateways=()), layout="v2")
    assert [(n.name, n.mac, n.link, n.venet) for n in p.nics] == [
        ("eth0", "00:18:51:aa:bb:01", "vmbr0", False), ("eth1", "00:18:51:aa:bb:02", "lxcbr0", False)]
    cfg = p.config.splitlines()
    for line in ("lxc.net.0.link = vmbr0", "lxc.net.0.name = eth0", "lxc.net.0.hwaddr = 00:18:51:aa:bb:01",
                 "lxc.net.1.link = lxcbr0", "lxc.net.1.name = eth1", "lxc.net.1.hwaddr = 00:18:51:aa:bb:02"):
        assert line in cfg, (line, p.config)
    assert not any(x in p.config for x in ("lxc.start.auto", "veth103", "cc:dd")), p.config
    assert "/etc/network/interfaces" not in changed(p)
    assert any("eth0 stays on bridge vmbr0" in n for n in p.notes), p.notes
    assert p.record.macs == ("00:18:51:aa:bb:01", "00:18:51:aa:bb:02")
    with inventory.locked(tmp_path / "inv.db") as inv:
        inv.record(inventory.GuestRecord("db1", "db1", (), ("00:18:51:aa:bb:02",), "lxc:/var/lib/lxc/db1"))
    with pytest.raises(InputError, match="duplicate of guests imgbuild knows of") as e:
        openvz.dry_run(conf, options(tmp_path, priv, gateways=()), layout="v2")
    assert "00:18:51:aa:bb:02" in str(e.value) and "db1" in str(e.value), str(e.value)


def test_the_vps_own_config_in_vz_dir_is_no_duplicate(tmp_path):
    """Converting /etc/vz/conf/CTID.conf itself: the OpenVZ config (which discover() finds) is the container
    being converted, not another guest holding its address."""
    vz = tmp_path / "vz"
    vz.mkdir()
    shutil.copy(DATA / "101.conf", vz / "101.conf")
    priv = debian_vps(tmp_path / "priv")
    p = openvz.dry_run(vz / "101.conf", options(tmp_path, priv, vz_dir=str(vz)), layout="v1")
    assert p.record.ips[0] == "192.0.2.10"


# ------------------------------------------------------------------ the real thing


@pytest.fixture
def openvz_output(debian12_build: Path, tmp_path) -> tuple[Path, Path]:
    """What the openvz target makes of recipes/debian12.yml (CTID 123: its CTID.conf, rendered by the target)
    and its private area as `vzctl create` unpacks the template (the built tree, copied) and as `vzctl start`
    leaves a Debian VPS: eth0's interfaces replaced by venet0's (tests/data/openvz/interfaces.venet's shape)."""
    from builder.build import recipe
    from builder.build.targets import openvz as target

    r = recipe.load(DEFAULT_RECIPE, ("targets={openvz: {ctid: 123}}",)).recipe
    conf = tmp_path / "vz" / "123.conf"
    conf.parent.mkdir()
    conf.write_text(target.render(r, r.targets.openvz))
    private = tmp_path / "vz" / "private" / "123"
    private.parent.mkdir()
    subprocess.run(["cp", "-a", f"{debian12_build.parent / 'debian12.rootfs'}", str(private)], check=True)
    venet = (DATA / "interfaces.venet").read_text()
    venet = venet.split("# the VPS owner's own tunnel")[0]      # no /dev/net/tun in the container
    venet = re.sub(r"auto venet0:1\n.*?\n\n", "", venet, flags=re.S).replace("192.0.2.10", "10.0.3.2")
    (private / "etc/network/interfaces").unlink()
    (private / "etc/network/interfaces").write_text(venet)
    return conf, private


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.network
@pytest.mark.slow
def test_openvz_output_converted_boots_under_lxc(openvz_output, tmp_path):
    from tests.support.lxc import boot, container_cgroups, lxc_netns, tcp_banner

    conf, private = openvz_output
    assert 'IP_ADDRESS="10.0.3.2"' in conf.read_text()
    name = "123"
    assert not container_cgroups(name), f"cgroups of a container {name} exist before the test"
    before = tree_digest(private)
    with lxc_netns(tmp_path / "sandbox", bridge_cidr="10.0.3.1/24") as sb:
        args = ["convert-openvz", conf, "--private", private, "--to", "lxc", "--lxcpath", sb.lxcpath,
                "--bridge", sb.bridge, "--gateway", "10.0.3.1", "--inventory", tmp_path / "inv.db",
                "--vz-dir", conf.parent, "--xen-dir", tmp_path / "none"]
        sb.adopt(name)
        r = migrate(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert tree_digest(private) == before                    # the VPS's own files are only read
        boot(sb, name)
        addr = sb.attach(name, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
        assert " 10.0.3.2/24 " in addr.stdout, addr.stdout + addr.stderr
        assert sb.attach(name, "hostname").stdout.strip() == "vm0"
        assert "nameserver 10.0.3.1" in sb.attach(name, "cat", "/etc/resolv.conf").stdout
        assert tcp_banner(sb, "10.0.3.2", 22).startswith("SSH-2.0-"), "sshd not reachable at the VPS's address"
        # PHYSPAGES="0:512M" became the container's memory limit (v1 or v2, as this host's LXC uses)
        limits = {f.name: f.read_text().strip() for c in container_cgroups(name) if c.name == f"lxc.payload.{name}"
                  for f in (c / "memory.limit_in_bytes", c / "memory.max") if f.exists()}
        assert set(limits.values()) == {str(512 << 20)}, limits
        # the same VPS a second time: a duplicate, refused, nothing made
        r = migrate(*args, "--name", "again")
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"converted before: the inventory has it as {name} (lxc:{sb.lxcpath.resolve() / name})" in r.stderr
        assert not (sb.lxcpath / "again").exists()
