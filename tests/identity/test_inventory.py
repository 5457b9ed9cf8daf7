"""builder.identity.inventory: the inventory file, discovery of the guests on a host, conflicts, MAC allocation.

Seed 004: a Xen guest copied to a new host kept its MAC; the duplicate MAC took the LAN down for two days. These
tests hold the pieces that stop that: every guest's MACs are found (in LXC, Xen and OpenVZ configs, imgbuild's own
among them), a copy that keeps one is refused naming both guests, and two clones at once never draw the same MAC.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import multiprocessing
import random
import re
from pathlib import Path

import pytest

from builder.build import recipe
from builder.build.targets import lxc, openvz, xen
from builder.core.errors import BuilderError, InputError
from builder.identity import inventory as inv
from builder.identity.inventory import Conflict, GuestRecord
from tests.conftest import DEFAULT_RECIPE
from tests.support import TEST_DATA

DATA = TEST_DATA
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def octets(mac: str) -> list[int]:
    return [int(x, 16) for x in mac.split(":")]


# ------------------------------------------------------------------ where the file is


def test_path_precedence(tmp_path):
    env = {inv.ENV_VAR: str(tmp_path / "env.yml")}
    assert inv.inventory_path(tmp_path / "arg.yml", env, euid=0) == tmp_path / "arg.yml"
    assert inv.inventory_path(None, env, euid=0) == tmp_path / "env.yml"
    assert inv.inventory_path(None, {}, euid=0) == Path("/var/lib/imgbuild/inventory.db")
    assert inv.inventory_path(None, {inv.ENV_VAR: ""}, euid=1000, home="/home/ann") == \
        Path("/home/ann/.local/share/imgbuild/inventory.db")


def test_a_yaml_path_names_the_store_beside_it(tmp_path):
    """A .yml/.yaml inventory (an earlier imgbuild's) is migrated into FILE.db beside it; FILE.db's YAML
    predecessor is FILE.yml (the default: /var/lib/imgbuild/inventory.yml -> inventory.db)."""
    assert inv.db_path(tmp_path / "inventory.yml") == tmp_path / "inventory.db"
    assert inv.db_path(tmp_path / "i.yaml") == tmp_path / "i.db"
    assert inv.db_path(tmp_path / "i.db") == tmp_path / "i.db" and inv.db_path(tmp_path / "inv") == tmp_path / "inv"
    assert inv.yaml_path(tmp_path / "i.db") == tmp_path / "i.yml"
    assert inv.yaml_path(tmp_path / "i.yaml") == tmp_path / "i.yaml" and inv.yaml_path(tmp_path / "inv") is None


# ------------------------------------------------------------------ the file


GUESTS = [
    GuestRecord("www", "www.example.org", ("10.0.3.12", "2001:db8::12"), ("00:16:3e:5d:1a:07",),
                "xen:/etc/xen/www.cfg", "2024-05-01"),
    GuestRecord("vm1", "vm1", ("10.0.3.2",), ("00:16:3e:00:03:02", "10:20:30:40:50:60"), "lxc:/var/lib/lxc/vm1",
                "2024-05-02"),
    GuestRecord("db", None, (), ("00:18:51:a1:b2:c3",), "vz:/etc/vz/conf/102.conf", "2024-05-03"),
    GuestRecord("elsewhere", "mail.example.org"),
    GuestRecord("101", "yes", ("203.0.113.5",), (), "vz:/etc/vz/conf/101.conf", "2024-05-04"),   # YAML-ish values
]


def test_missing_file_is_an_empty_inventory(tmp_path):
    got = inv.load(tmp_path / "nothing" / "inventory.yml")
    assert got.guests == [] and not got.changed
    assert not (tmp_path / "nothing").exists()      # loading creates nothing


def test_round_trip(tmp_path):
    p = tmp_path / "inventory.db"
    inv.save(inv.Inventory(p, list(GUESTS)))
    back = inv.load(p)
    assert back.guests == sorted(GUESTS, key=lambda g: g.name)
    assert back.get("101").hostname == "yes"          # strings stay strings (quoted where YAML would not)
    first = inv.dumps(back.guests)
    inv.save(inv.Inventory(p, back.guests))
    assert inv.dumps(inv.load(p).guests) == first    # stable: the same guests, the same text
    assert inv.parse(first, "export") == back.guests
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["inventory.db"]   # no journal, no lock file left


# GUESTS as the YAML form writes them (the file body of `imgbuild inventory export`, and of the pre-SQLite file)
FILE_BODY = """\
guests:
- name: '101'
  hostname: 'yes'
  ips: [203.0.113.5]
  macs: []
  where: vz:/etc/vz/conf/101.conf
  updated: '2024-05-04'
- name: db
  ips: []
  macs: ['00:18:51:a1:b2:c3']
  where: vz:/etc/vz/conf/102.conf
  updated: '2024-05-03'
- name: elsewhere
  hostname: mail.example.org
  ips: []
  macs: []
- name: vm1
  hostname: vm1
  ips: [10.0.3.2]
  macs: ['00:16:3e:00:03:02', '10:20:30:40:50:60']
  where: lxc:/var/lib/lxc/vm1
  updated: '2024-05-02'
- name: www
  hostname: www.example.org
  ips: [10.0.3.12, '2001:db8::12']
  macs: ['00:16:3e:5d:1a:07']
  where: xen:/etc/xen/www.cfg
  updated: '2024-05-01'
"""


def test_file_is_sorted_and_readable(tmp_path):
    text = inv.dumps(reversed(GUESTS))       # the YAML form: `imgbuild inventory export`, the pre-SQLite file
    assert text.startswith("# imgbuild's guest inventory")
    body = text[text.index("guests:"):]
    assert body == FILE_BODY


def test_hand_written_file_loads(tmp_path):
    p = tmp_path / "inventory.yml"
    p.write_text("# mine\nguests:\n"
                 "  - name: web\n    hostname: web.example.org\n    ips: [10.0.3.20/24]\n"
                 "    macs: [\"00:16:3E:AA:BB:CC\", 00-16-3e-aa-bb-cd]\n    where: lxc:/var/lib/lxc/web/\n"
                 "    updated: 2024-06-01\n")
    g, = inv.load(p).guests
    assert g == GuestRecord("web", "web.example.org", ("10.0.3.20",), ("00:16:3e:aa:bb:cc", "00:16:3e:aa:bb:cd"),
                            "lxc:/var/lib/lxc/web", "2024-06-01")


def test_empty_file_and_empty_guests(tmp_path):
    for text in ("", "# nothing yet\n", "guests:\n", "guests: []\n"):
        (tmp_path / "i.yml").write_text(text)
        assert inv.load(tmp_path / "i.yml").guests == []


MALFORMED = {
    "syntax": ("guests:\n  - name: a\n    macs: [00:16:3e:00:00:01\n  - name: b\n", 4, "not valid YAML"),
    "tab": ("guests:\n\t- name: a\n", 2, "not valid YAML"),
    "bad mac": ("guests:\n  - name: a\n    macs:\n      - \"00:16:3e:00:00:01\"\n      - \"zz:16\"\n", 5,
                "macs[1]: 'zz:16' is not a MAC address"),
    "sexagesimal mac": ("guests:\n  - name: a\n    macs: [12:34:56:12:34:56]\n", 3, "write it in quotes"),
    "bad ip": ("guests:\n  - name: a\n    ips: [10.0.0.300]\n", 3, "is not an IP address"),
    "ips not a list": ("guests:\n  - name: a\n    ips: 10.0.0.3\n", 3, "expected a list"),
    "no name": ("guests:\n  - name: a\n  - hostname: b\n    ips: []\n", 3, "needs a name"),
    "unknown key": ("guests:\n  - name: a\n    mac: [\"00:16:3e:00:00:01\"]\n", 3, "unknown key 'mac'"),
    "twice": ("guests:\n  - name: a\n  - name: b\n  - name: a\n", 4, "listed twice (also on line 2)"),
    "guest not a mapping": ("guests:\n  - name: a\n  - just-a-name\n", 3, "a guest is a mapping"),
    "top level list": ("- name: a\n", 1, "expected a mapping"),
    "top level key": ("guests: []\nversion: 2\n", 2, "unknown key 'version'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_file_and_line(tmp_path, case):
    text, line, words = MALFORMED[case]
    p = tmp_path / "inventory.yml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        inv.load(p)
    assert str(e.value).startswith(f"{p}:{line}: "), str(e.value)
    assert words in str(e.value)
    assert e.value.hint and e.value.exit_code == 2


def test_binary_file_is_an_input_error(tmp_path):
    p = tmp_path / "inventory.yml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match=re.escape(str(p))):
        inv.load(p)


def test_record_replaces_by_name_and_by_where(tmp_path):
    i = inv.Inventory(tmp_path / "i.yml", list(GUESTS))
    moved = GuestRecord("www", "www.example.org", ("10.0.4.12",), ("00:16:3e:5d:1a:07",), "xen:/srv/xen/www.cfg")
    stamped = i.record(moved, today="2025-01-02")
    assert stamped.updated == "2025-01-02" and i.changed
    assert [g.where for g in i.guests if g.name == "www"] == ["xen:/srv/xen/www.cfg"]      # by name
    renamed = GuestRecord("vm1-renamed", "vm1", (), ("00:16:3e:00:03:02",), "lxc:/var/lib/lxc/vm1/")
    i.record(renamed)
    assert i.get("vm1") is None and i.at("lxc:/var/lib/lxc/vm1").name == "vm1-renamed"    # by where
    assert i.get("vm1-renamed").updated == datetime.date.today().isoformat()
    assert [g.name for g in i.guests] == sorted(g.name for g in i.guests)
    assert len(i.guests) == len(GUESTS)


def test_remove(tmp_path):
    i = inv.Inventory(tmp_path / "i.yml", list(GUESTS))
    assert i.remove("nosuch") == [] and not i.changed
    gone = i.remove(where="xen:/etc/xen//www.cfg")
    assert [g.name for g in gone] == ["www"] and i.changed
    assert [g.name for g in i.remove("db")] == ["db"]
    assert sorted(g.name for g in i.guests) == ["101", "elsewhere", "vm1"]


def test_locked_saves_on_success_only(tmp_path):
    p = tmp_path / "i.db"
    with inv.locked(p) as i:
        i.record(GUESTS[0])
    assert [g.name for g in inv.load(p).guests] == ["www"]
    before = p.read_bytes()
    with pytest.raises(RuntimeError):
        with inv.locked(p) as i:
            i.record(GUESTS[1])
            i.remove("www")
            assert [g.name for g in i.guests] == ["vm1"]     # seen inside the transaction ...
            raise RuntimeError("clone failed")
    assert p.read_bytes() == before                  # ... and rolled back
    assert [g.name for g in inv.load(p).guests] == ["www"]
    mtime = p.stat().st_mtime_ns
    with inv.locked(p) as i:
        assert i.get("www") is not None                # read only: not rewritten
    assert p.stat().st_mtime_ns == mtime


def test_lock_is_exclusive_and_times_out(tmp_path):
    p = tmp_path / "i.db"
    with inv.locked(p):
        assert [g.name for g in inv.load(p).guests] == []      # a reader does not wait for a writer
        with pytest.raises(BuilderError, match=r"locked by another imgbuild and was not released within the 0.2 s"):
            with inv.locked(p, timeout=0.2):
                pass
    with inv.locked(p, timeout=0.2):                   # released
        pass


def test_unwritable_place_is_an_error_not_a_traceback(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(BuilderError, match="inventory"):
        inv.save(inv.Inventory(tmp_path / "file" / "i.db", [GUESTS[0]]))


# ------------------------------------------------------------------ two clones at once


def _clone_locked(path: str, tag: str, rounds: int, barrier, queue) -> None:
    """One clone per round: under the lock, take a MAC no known guest has and record it. Every process draws
    from the same seed, so without the lock they would pick the same MAC."""
    got = []
    for k in range(rounds):
        barrier.wait(timeout=60)
        with inv.locked(path, timeout=60) as i:
            mac = inv.allocate_mac(i.guests, rng=random.Random(1000 + k))
            i.record(GuestRecord(f"{tag}-{k}", macs=(mac,), where=f"lxc:/var/lib/lxc/{tag}-{k}"))
        got.append(mac)
    queue.put(got)


def _clone_unlocked(path: str, tag: str, rounds: int, barrier, queue) -> None:
    """The same without the transaction: read, (the other reads too), allocate, write the whole inventory."""
    got = []
    for k in range(rounds):
        i = inv.Inventory(path, inv.load(path).guests)
        barrier.wait(timeout=60)
        mac = inv.allocate_mac(i.guests, rng=random.Random(1000 + k))
        i.record(GuestRecord(f"{tag}-{k}", macs=(mac,), where=f"lxc:/var/lib/lxc/{tag}-{k}"))
        inv.save(i)
        barrier.wait(timeout=60)
        got.append(mac)
    queue.put(got)


def _race(worker, path: Path, procs: int = 2, rounds: int = 4) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=worker, args=(str(path), f"clone{n}", rounds, barrier, queue)) for n in range(procs)]
    for p in ps:
        p.start()
    results = [queue.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(timeout=60)
        assert p.exitcode == 0
    return [mac for r in results for mac in r]


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_clones_never_share_a_mac(tmp_path, attempt):
    p = tmp_path / "inventory.yml"
    macs = _race(_clone_locked, p, procs=2 + attempt, rounds=4)
    assert len(macs) == (2 + attempt) * 4
    assert len(set(macs)) == len(macs), macs
    recorded = inv.load(p).guests
    assert len(recorded) == len(macs)
    assert sorted(m for g in recorded for m in g.macs) == sorted(macs)


def test_without_the_lock_the_same_race_does_collide(tmp_path):
    """The control: the race above is real. Both processes load before either saves, draw the same MAC, and one
    record is lost."""
    p = tmp_path / "inventory.db"
    macs = _race(_clone_unlocked, p, procs=2, rounds=2)
    assert len(set(macs)) < len(macs)


# ------------------------------------------------------------------ discovery


def load_recipe():
    return recipe.load(DEFAULT_RECIPE, ("network.eth1={address: 10.0.4.2/24, mac: '00:16:3E:00:04:02'}",)).recipe


LXC_MODERN = """\
# Template used to create this container: /usr/share/lxc/templates/lxc-download
# Parameters passed to the template: -d debian -r bookworm -a amd64
# For additional config options, please look at lxc.container.conf(5)

# Distribution configuration
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = linux64

# Container specific configuration
lxc.rootfs.path = dir:/var/lib/lxc/web/rootfs
lxc.uts.name = web.example.org

# Network configuration
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.net.0.hwaddr = 00:16:3E:6A:01:01
lxc.net.0.ipv4.address = 10.0.3.10/24 10.0.3.255
lxc.net.0.ipv4.gateway = 10.0.3.1
lxc.net.1.type = veth
lxc.net.1.link = br-dmz
lxc.net.1.flags = up
lxc.net.1.hwaddr = 00:16:3e:6a:01:02
lxc.net.1.ipv4.address = 192.0.2.10/28
lxc.net.1.ipv6.address = 2001:db8:0:0::10/64
"""

LXC_LEGACY = """\
# LXC 1.0 (Ubuntu 14.04)
lxc.network.type = veth
lxc.network.flags = up
lxc.network.link = br0
lxc.network.hwaddr = 00:16:3E:2B:7C:11
lxc.network.ipv4 = 10.0.3.50/24
lxc.network.ipv4.gateway = 10.0.3.1
# lxc.network.hwaddr = 00:16:3e:99:99:99
lxc.network.type = veth
lxc.network.link = br1
lxc.network.hwaddr = 00:16:3e:2b:7c:12
lxc.network.1.ipv6 = fd00:1::50/64

lxc.rootfs = /var/lib/lxc/old/rootfs
lxc.utsname = old
lxc.arch = amd64
lxc.pts = 1024
"""

LXC_RESET = """\
lxc.net.0.type = veth
lxc.net.0.hwaddr = 00:16:3e:aa:00:01
lxc.net =
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.hwaddr = 00:16:3e:xx:xx:xx
lxc.rootfs.path = dir:/var/lib/lxc/noname/rootfs
"""

XEN_XL = """\
# www: moved from the CentOS 5 host (xm) to Xen 4 (xl)
name = "www"
type = "pv"
memory = 512
vcpus = 1
bootloader = "pygrub"
disk = [ 'format=raw, vdev=xvda, access=rw, target=/dev/vg0/www' ]
vif = [ 'mac=00:16:3E:5D:1A:07,bridge=xenbr0',
        'mac=00:16:3e:5d:1a:08,bridge=xenbr1,ip=172.16.0.7', ]
on_crash = "restart"
"""

XEN_XM = """\
#  -*- mode: python; -*-
# mail: CentOS 5 guest, xm create mail
name = "mail"
uuid = "3f1c9a0e-6d1b-4c7e-9a55-1b2c3d4e5f60"
maxmem = 1024
memory = 1024
vcpus = 2
bootloader = "/usr/bin/pygrub"
on_poweroff = "destroy"
on_reboot = "restart"
on_crash = "restart"
disk = [ "tap:aio:/var/lib/xen/images/mail.img,xvda,w" ]
macbase = "00:16:3e:4d:00:"
vif = [ "mac=%s01,bridge=xenbr0,ip=10.0.0.25" % macbase,
        "mac=%s02,bridge=xenbr1,ip=192.168.10.25 192.168.10.26" % macbase ]
hostname = "mail.example.com"
"""

XL_EXAMPLE = """\
# =====================================================================
# Example PV Linux guest configuration
# =====================================================================
name = "example.pvlinux"
type = "pv"
kernel = "/boot/vmlinuz"
memory = 128
vif = [ 'mac=00:16:3E:74:34:32,bridge=xenbr0' ]
disk = [ '/dev/vg/guest-volume,raw,xvda,rw' ]
"""

CPUPOOL = """\
# the name of the new cpu pool
name = "Example-Cpupool"
# the scheduler to use: valid are e.g. credit, credit2 and rtds
sched = "credit"
# list of cpus to use
cpus = ["4", "5", "6", "7"]
"""

VZ_VENET = """\
#  Copyright (C) 2000-2011, Parallels, Inc. All rights reserved.
# RAM
PHYSPAGES="0:262144"
# Swap
SWAPPAGES="0:262144"
DISKSPACE="2G:2.2G"
DISKINODES="131072:144179"
QUOTATIME="0"
CPUUNITS="1000"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="centos-6-x86_64"
ORIGIN_SAMPLE="vswap-256m"
HOSTNAME="ns1.example.net"
IP_ADDRESS="203.0.113.5 203.0.113.6/24 2001:db8::53"
NAMESERVER="8.8.8.8"
"""

VZ_VETH = """\
ONBOOT="yes"
PHYSPAGES="0:512M"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="debian-7.0-x86_64"
NAME="db"
HOSTNAME="db"
IP_ADDRESS=""
NETIF="ifname=eth0,bridge=vmbr0,mac=00:18:51:A1:B2:C3,host_ifname=veth102.0,host_mac=00:18:51:D4:E5:F6;\
ifname=eth1,mac=00:18:51:A1:B2:C4,host_ifname=veth102.1,host_mac=00:18:51:D4:E5:F7"
"""

VZ_ODD = """\
HOSTNAME="odd
IP_ADDRESS="10.9.9.9"
"""


@pytest.fixture
def host(tmp_path):
    """An LXC, a Xen and an OpenVZ config tree as on a host that has run all three, with imgbuild's own configs."""
    r = load_recipe()
    lxcpath, xendir, vzdir = tmp_path / "lxc", tmp_path / "xen", tmp_path / "vz" / "conf"
    files = {
        lxcpath / "web" / "config": LXC_MODERN,
        lxcpath / "old" / "config": LXC_LEGACY,
        lxcpath / "noname" / "config": LXC_RESET,
        lxcpath / "vm0" / "config": lxc.render(r, dataclasses.replace(r.targets.lxc, cgroup="v2"), name="vm0",
                                               lxcpath=str(lxcpath), version="modern"),
        lxcpath / "vm0-legacy" / "config": lxc.render(r, r.targets.lxc, name="vm0-legacy", lxcpath=str(lxcpath),
                                                      version="legacy"),
        lxcpath / ".vm9.partial-4242" / "config": LXC_MODERN.replace("web", "vm9"),   # install-lxc's temp dir
        lxcpath / "stray-file": "lxc.uts.name = stray\n",
        xendir / "www.cfg": XEN_XL,
        xendir / "mail": XEN_XM,
        xendir / "mail~": XEN_XM.replace("mail", "backup"),
        xendir / "debian12.cfg": xen.render(r, xen.XenOptions(vif_ip=True), "hvc0"),
        xendir / "debian12-xm": xen.render(r, xen.XenOptions(toolstack="xm"), "hvc0"),
        xendir / "xlexample.pvlinux": XL_EXAMPLE,
        xendir / "cpupool": CPUPOOL,
        xendir / "xl.conf": 'autoballoon="off"\n',
        xendir / "scripts" / "vif-bridge": "#!/bin/sh\n",
        vzdir / "101.conf": VZ_VENET,
        vzdir / "102.conf": VZ_VETH,
        vzdir / "103.conf": openvz.render(r, openvz.OpenvzOptions(ctid=103)),
        vzdir / "104.conf": openvz.render(r, openvz.OpenvzOptions(ctid=104, network="veth")),
        vzdir / "105.conf": VZ_ODD,
        vzdir / "0.conf": 'HOSTNAME="host0"\nIP_ADDRESS="10.0.0.1"\n',
        vzdir / "ve-basic.conf-sample": 'IP_ADDRESS="10.0.0.2"\n',
        vzdir / "ve-vswap-256m.conf": 'IP_ADDRESS="10.0.0.3"\n',
        vzdir / "106.conf.destroyed": 'HOSTNAME="gone"\n',
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (lxcpath / "empty-dir").mkdir()
    (lxcpath / "binary").mkdir()
    (lxcpath / "binary" / "config").write_bytes(b"lxc.uts.name = \xff\xfe\n")
    (xendir / "broken.cfg").write_bytes(b"\x00\xff" * 64)
    (xendir / "auto").mkdir()
    (xendir / "auto" / "www.cfg").symlink_to(xendir / "www.cfg")
    return lxcpath, xendir, vzdir


def by_where(records: list[GuestRecord]) -> dict[str, tuple]:
    return {g.where: (g.name, g.hostname, g.ips, g.macs) for g in records}


IMGBUILD_MACS = ("00:16:3e:00:03:02", "00:16:3e:00:04:02")


def test_discover_lxc(host):
    lxcpath, _, _ = host
    assert by_where(inv.scan_lxc(lxcpath)) == {
        f"lxc:{lxcpath}/web": ("web", "web.example.org", ("10.0.3.10", "192.0.2.10", "2001:db8::10"),
                               ("00:16:3e:6a:01:01", "00:16:3e:6a:01:02")),
        f"lxc:{lxcpath}/old": ("old", "old", ("10.0.3.50", "fd00:1::50"), ("00:16:3e:2b:7c:11", "00:16:3e:2b:7c:12")),
        f"lxc:{lxcpath}/noname": ("noname", "noname", (), ()),     # reset by `lxc.net =`; xx template left out
        f"lxc:{lxcpath}/vm0": ("vm0", "vm0", (), IMGBUILD_MACS),
        f"lxc:{lxcpath}/vm0-legacy": ("vm0-legacy", "vm0", (), IMGBUILD_MACS),
    }


def test_discover_xen(host):
    _, xendir, _ = host
    assert by_where(inv.scan_xen(xendir)) == {
        f"xen:{xendir}/www.cfg": ("www", None, ("172.16.0.7",), ("00:16:3e:5d:1a:07", "00:16:3e:5d:1a:08")),
        f"xen:{xendir}/mail": ("mail", "mail.example.com", ("10.0.0.25", "192.168.10.25", "192.168.10.26"),
                               ("00:16:3e:4d:00:01", "00:16:3e:4d:00:02")),
        f"xen:{xendir}/debian12.cfg": ("debian12", None, ("10.0.3.2", "10.0.4.2"), IMGBUILD_MACS),
        f"xen:{xendir}/debian12-xm": ("debian12", None, (), IMGBUILD_MACS),
    }


def test_discover_openvz(host):
    _, _, vzdir = host
    assert by_where(inv.scan_openvz(vzdir)) == {
        f"vz:{vzdir}/101.conf": ("101", "ns1.example.net", ("203.0.113.5", "203.0.113.6", "2001:db8::53"), ()),
        f"vz:{vzdir}/102.conf": ("db", "db", (), ("00:18:51:a1:b2:c3", "00:18:51:a1:b2:c4")),   # not host_mac
        f"vz:{vzdir}/103.conf": ("103", "vm0", ("10.0.3.2", "10.0.4.2"), ()),
        f"vz:{vzdir}/104.conf": ("104", "vm0", (), IMGBUILD_MACS),
        f"vz:{vzdir}/105.conf": ("105", None, ("10.9.9.9",), ()),     # the broken line skipped, not the file
    }


def test_discover_all_and_the_skipped_files_are_logged(host, caplog):
    lxcpath, xendir, vzdir = host
    with caplog.at_level(logging.DEBUG, logger="imgbuild"):
        found = inv.discover(lxcpath, xendir, vzdir)
    assert len(found) == 5 + 4 + 5
    assert [g.name for g in found] == sorted((g.name for g in found), key=str.lower)
    assert f"{lxcpath}/binary/config" in caplog.text and f"{xendir}/broken.cfg" in caplog.text
    assert "00:16:3e:xx:xx:xx" in caplog.text


def test_discover_on_a_host_without_guests(tmp_path):
    assert inv.discover(tmp_path / "no-lxc", tmp_path / "no-xen", tmp_path / "no-vz") == []


def test_a_failing_reader_skips_that_file_only(host, caplog):
    lxcpath, _, _ = host

    def picky(text: str):
        if "lxc.utsname" in text:
            raise ValueError("legacy keys are not mine")
        return inv.read_lxc_config(text)

    with caplog.at_level(logging.DEBUG, logger="imgbuild"):
        names = sorted(g.name for g in inv.scan_lxc(lxcpath, picky))
    assert names == ["noname", "vm0", "web"]
    assert "legacy keys are not mine" in caplog.text


def test_readers_are_injectable(host):
    """formats.read_* return Identity(name, hostnames, ips, macs); anything of that shape plugs in."""
    import ipaddress

    @dataclasses.dataclass(frozen=True)
    class Identity:
        name: str
        hostnames: tuple
        ips: tuple
        macs: tuple

    seen = []

    def read(text: str) -> Identity:
        seen.append(text)
        return Identity("ignored-for-lxc", ("h.example",), (ipaddress.ip_address("10.1.1.1"),), ("02:00:00:00:00:01",))

    lxcpath, xendir, vzdir = host
    found = inv.discover(lxcpath, xendir, vzdir, inv.Readers(lxc=read, xen=read, openvz=read))
    assert len(seen) == len(found) == 14
    assert {(g.hostname, g.ips, g.macs) for g in found} == {("h.example", ("10.1.1.1",), ("02:00:00:00:00:01",))}
    assert {g.name for g in found if g.where.startswith("lxc:")} == {"web", "old", "noname", "vm0", "vm0-legacy"}


def test_merge_prefers_the_later_group(host):
    lxcpath, _, _ = host
    stale = GuestRecord("web", "web.example.org", (), ("00:16:3e:00:00:99",), f"lxc:{lxcpath}/web")
    away = GuestRecord("remote", "remote.example.org", (), ("00:16:3e:00:00:98",))
    merged = inv.merge([stale, away], inv.scan_lxc(lxcpath))
    web = [g for g in merged if g.name == "web"]
    assert len(web) == 1 and "00:16:3e:00:00:99" not in web[0].macs
    assert away in merged


# ------------------------------------------------------------------ conflicts


WWW = GuestRecord("www", "www.example.org", ("10.0.3.12", "2001:db8::12"), ("00:16:3e:5d:1a:07",),
                  "xen:/etc/xen/www.cfg")


def cand(**kw) -> GuestRecord:
    base = dict(name="www2", hostname="www2.example.org", ips=("10.0.3.99",), macs=("00:16:3e:00:00:99",),
                where="xen:/etc/xen/www2.cfg")
    return GuestRecord(**{**base, **kw})


CASES = {
    "mac other case": (cand(macs=("00:16:3E:5D:1A:07",)), [("mac", "00:16:3e:5d:1a:07")]),
    "mac dashes": (cand(macs=("00-16-3e-5d-1a-07",)), [("mac", "00:16:3e:5d:1a:07")]),
    "ip with prefix": (cand(ips=("10.0.3.12/24",)), [("ip", "10.0.3.12")]),
    "ipv6 long form": (cand(ips=("2001:0db8:0000:0000:0000:0000:0000:0012",)), [("ip", "2001:db8::12")]),
    "short vs fqdn": (cand(hostname="WWW"), [("hostname", "WWW")]),
    "fqdn vs fqdn, case and dot": (cand(hostname="Www.Example.Org."), [("hostname", "Www.Example.Org.")]),
    "everything": (cand(hostname="www", ips=("10.0.3.12",), macs=("00:16:3e:5d:1a:07",)),
                   [("mac", "00:16:3e:5d:1a:07"), ("ip", "10.0.3.12"), ("hostname", "www")]),
    "nothing shared": (cand(), []),
    "same short name, other domain": (cand(hostname="www.example.net"), []),
    "prefix of a label is not a name": (cand(hostname="ww"), []),
    "other ip in the same net": (cand(ips=("10.0.3.13",)), []),
    "loopback and unspecified count for nobody": (cand(ips=("127.0.0.1", "0.0.0.0")), []),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_conflicts(case):
    candidate, want = CASES[case]
    lo = GuestRecord("lo", "localhost", ("127.0.0.1", "0.0.0.0"), (), "lxc:/var/lib/lxc/lo")
    got = inv.conflicts(candidate, [WWW, lo], candidate.where)
    assert [(c.kind, c.value) for c in got] == want
    assert all(c.holder == "www" and c.holder_where == "xen:/etc/xen/www.cfg" for c in got)


def test_short_name_against_fqdn_both_ways():
    short = GuestRecord("a", "www", where="lxc:/a")
    assert [c.held_as for c in inv.conflicts(cand(hostname="www.example.org"), [short])] == ["www"]
    assert [c.held_as for c in inv.conflicts(cand(hostname="www"), [WWW])] == ["www.example.org"]
    assert not inv.same_host("localhost", "localhost.localdomain")


def test_no_conflict_with_itself():
    me = dataclasses.replace(WWW, ips=("10.0.3.12",))
    assert inv.conflicts(me, [WWW], "xen:/etc/xen/www.cfg") == []
    assert inv.conflicts(me, [WWW], "xen:/etc/xen//www.cfg") == []        # the same place, written otherwise
    assert inv.conflicts(me, [WWW], None) == []                            # None: the candidate's own where
    elsewhere = dataclasses.replace(me, where="xen:/srv/www.cfg")
    assert len(inv.conflicts(elsewhere, [WWW], None)) == 3                 # a copy of it conflicts everywhere
    assert len(inv.conflicts(me, [WWW], "xen:/etc/xen/other.cfg")) == 3


def test_the_same_guest_known_twice_is_reported_once():
    got = inv.conflicts(cand(macs=WWW.macs), [WWW, dataclasses.replace(WWW, updated="2020-01-01")])
    assert len(got) == 1


def test_message_names_both_guests(monkeypatch):
    monkeypatch.setattr(inv, "gone", lambda where: None)     # www's made-up config counts as present here
    c, = inv.conflicts(cand(macs=("00:16:3E:5D:1A:07",)), [WWW])
    assert isinstance(c, Conflict)
    assert str(c) == ("MAC 00:16:3e:5d:1a:07 of www2 (xen:/etc/xen/www2.cfg) is already taken by www "
                      "(xen:/etc/xen/www.cfg)")
    h, = inv.conflicts(cand(hostname="www"), [WWW])
    assert str(h).endswith("taken by www (xen:/etc/xen/www.cfg) (as www.example.org)")
    err = inv.conflict_error([c, h])
    assert isinstance(err, InputError) and err.exit_code == 2
    assert err.message.startswith("2 conflicts")
    for part in ("www2 (xen:/etc/xen/www2.cfg)", "www (xen:/etc/xen/www.cfg)", "MAC", "host name"):
        assert part in err.message
    assert "MAC" in err.hint


def test_seed_004_copied_xen_guest_keeping_its_mac_is_caught(tmp_path):
    """The seed: www's config copied to a new name, disk path and IP changed, the vif's MAC left as it was."""
    original = (DATA / "xen" / "centos5-seed004" / "in.cfg").read_text()
    (tmp_path / "www.cfg").write_text(original)
    copy = original.replace('name = "www"', 'name = "www2"').replace("/var/xen/www.img", "/var/xen/www2.img")
    (tmp_path / "www2.cfg").write_text(copy)
    known = inv.scan_xen(tmp_path)
    candidate, = [g for g in known if g.name == "www2"]
    found = inv.conflicts(candidate, known, candidate.where)
    assert [(c.kind, c.value, c.holder) for c in found] == [("mac", "00:16:3e:5d:1a:07", "www")]
    assert f"www2 (xen:{tmp_path}/www2.cfg)" in str(found[0]) and f"www (xen:{tmp_path}/www.cfg)" in str(found[0])
    fresh = inv.allocate_mac(known, rng=random.Random(4))
    assert inv.conflicts(dataclasses.replace(candidate, macs=(fresh,)), known, candidate.where) == []


def test_imgbuild_outputs_installed_twice_conflict(host):
    """The same recipe installed as two LXC containers (and as Xen and OpenVZ guests) shares its MACs."""
    found = inv.discover(*host)
    vm0 = next(g for g in found if g.name == "vm0")
    holders = {(c.kind, c.holder) for c in inv.conflicts(vm0, found, vm0.where)}
    assert {("mac", "vm0-legacy"), ("mac", "debian12"), ("mac", "104"), ("hostname", "vm0-legacy"),
            ("hostname", "103"), ("hostname", "104")} <= holders
    assert ("mac", "vm0") not in holders


# ------------------------------------------------------------------ allocation


def test_xen_macs_are_unicast_in_the_half_xen_draws_from():
    rng = random.Random(1)
    macs = [inv.allocate_mac([], rng=rng) for _ in range(3000)]
    assert all(MAC_RE.match(m) for m in macs)
    assert all(m.startswith("00:16:3e:") for m in macs)
    assert all(octets(m)[3] < 0x80 for m in macs)
    assert all(octets(m)[0] & 1 == 0 for m in macs)
    assert max(octets(m)[3] for m in macs) > 0x70      # the whole lower half is used, not some corner of it


def test_local_macs_have_the_local_bit_and_not_the_multicast_bit():
    rng = random.Random(2)
    macs = inv.allocate_macs(3000, local=True, rng=rng)
    assert all(MAC_RE.match(m) for m in macs)
    assert all(octets(m)[0] & 0b11 == 0b10 for m in macs)
    assert len({octets(m)[0] for m in macs}) == 64      # every xxxxxx10 first octet occurs
    assert not any(m.startswith("00:16:3e") for m in macs)


def test_local_with_a_prefix_of_ones_own():
    macs = inv.allocate_macs(50, prefix="02:42:ac", local=True, rng=random.Random(3))
    assert all(m.startswith("02:42:ac:") for m in macs)
    with pytest.raises(InputError, match="not locally administered"):
        inv.allocate_mac(prefix="00:11:22", local=True)


@pytest.mark.parametrize("prefix", ["01:00:5e", "zz:16:3e", "00:16:3e:00:00:00", "", "0:16:3e"])
def test_bad_prefixes(prefix):
    with pytest.raises(InputError, match="MAC prefix"):
        inv.allocate_mac(prefix=prefix)


def test_other_prefix_uses_all_its_space():
    macs = inv.allocate_macs(2000, prefix="52:54:00", rng=random.Random(5))
    assert all(m.startswith("52:54:00:") for m in macs)
    assert max(octets(m)[3] for m in macs) >= 0x80


def test_never_a_known_mac_even_when_the_rng_proposes_them():
    """The first 5000 MACs this seeded rng would give are all taken (some as records in upper case, some as
    plain strings): allocation must skip every one of them."""
    probe = random.Random(99)
    taken = [inv.allocate_mac([], rng=probe) for _ in range(5000)]
    known = [GuestRecord(f"g{i}", macs=(m.upper(),)) for i, m in enumerate(taken[:2500])] + taken[2500:]
    got = inv.allocate_macs(20, known, rng=random.Random(99))
    assert not set(got) & set(taken)
    assert len(set(got)) == 20


def test_a_small_space_is_searched_to_its_last_address():
    prefix = "00:16:3e:00:00"                                      # 256 addresses
    all_of_them = [f"{prefix}:{i:02x}" for i in range(256)]
    assert inv.allocate_mac(all_of_them[:137] + all_of_them[138:], prefix=prefix) == all_of_them[137]
    assert sorted(inv.allocate_macs(256, [], prefix=prefix, rng=random.Random(1))) == all_of_them
    with pytest.raises(BuilderError, match="no free MAC"):
        inv.allocate_mac(all_of_them, prefix=prefix)
    with pytest.raises(BuilderError, match="no free MAC"):
        inv.allocate_macs(257, [], prefix=prefix)


def test_gives_up_after_the_tries():
    class Stuck(random.Random):
        def randrange(self, *a, **kw):        # always proposes the same address
            return 5

    first = inv.allocate_mac([], rng=Stuck())
    with pytest.raises(BuilderError, match="in 50 tries"):
        inv.allocate_mac([first], rng=Stuck(), tries=50)


def test_several_at_once_are_all_different():
    macs = inv.allocate_macs(500, [WWW], rng=random.Random(6))
    assert len(set(macs)) == 500 and WWW.macs[0] not in macs
    assert inv.allocate_macs(0) == []


def test_seeded_rng_is_deterministic_and_the_default_is_not():
    assert inv.allocate_macs(5, [WWW], rng=random.Random(7)) == inv.allocate_macs(5, [WWW], rng=random.Random(7))
    assert inv.allocate_macs(5, rng=random.Random(7)) != inv.allocate_macs(5, rng=random.Random(8))
    assert inv.allocate_macs(3) != inv.allocate_macs(3)       # the OS's randomness: forked clones differ


def test_allocated_macs_are_valid_for_recipes_and_records():
    from builder.core.checks import mac as _mac

    for m in inv.allocate_macs(20, rng=random.Random(9)) + inv.allocate_macs(20, local=True, rng=random.Random(9)):
        assert _mac(m) == m
        assert GuestRecord("x", macs=(m,)).macs == (m,)


def test_record_rejects_what_is_not_an_address():
    with pytest.raises(ValueError, match="not a MAC"):
        GuestRecord("x", macs=("00:16:3e:xx:xx:xx",))
    with pytest.raises(ValueError, match="not an IP"):
        GuestRecord("x", ips=("dhcp",))
    with pytest.raises(ValueError, match="needs a name"):
        GuestRecord(" ")


def test_refuse_taken_is_the_guard_refusing_or_warning_with_force(tmp_path, caplog):
    here = tmp_path / "lxc" / "web"
    here.mkdir(parents=True)
    known = [GuestRecord("web", "web", ("10.0.3.5",), ("00:16:3e:00:00:05",), f"lxc:{here}"),
             GuestRecord("ux2", "ux2", ("10.0.3.6",), (), f"lxc:{tmp_path}/lxc/ux2")]
    me = GuestRecord("new", "new", ("10.0.3.5", "10.0.3.6"), ("00:16:3e:00:00:07",), f"lxc:{tmp_path}/lxc/new")
    with pytest.raises(InputError) as e:
        inv.refuse_taken(me, known, inventory_file=tmp_path / "inventory.yml")
    assert f"taken by web (lxc:{here})" in e.value.message
    assert f"taken by ux2 (stale: {tmp_path}/lxc/ux2 no longer exists)" in e.value.message
    assert ("ux2 is a guest that no longer exists: `imgbuild inventory forget ux2 --inventory "
            f"{tmp_path / 'inventory.yml'}` removes its entry") in e.value.hint
    assert "--ip 10.0.3.5=NEW" in e.value.hint and "--ip 10.0.3.6" not in e.value.hint    # a stale holder: forget it
    found = inv.refuse_taken(me, known, force=True)
    assert [c.holder for c in found] == ["web", "ux2"]
    assert sum("--force: IP address" in r.getMessage() for r in caplog.records) == 2
    assert inv.refuse_taken(dataclasses.replace(me, ips=("10.0.3.9",)), known) == []
