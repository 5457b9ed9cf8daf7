"""The OpenVZ target: CTID.conf (golden, and line by line against what vzctl documents and parses) and the OS
template tarball, from a real (small) build.

What the checks rest on (vzctl 4.x): ctid.conf(5) says every line is PARAMETER="value", quotes required only when
the value has spaces, no extra spaces; PHYSPAGES/SWAPPAGES are barrier:limit (vSwap: barrier 0, set by --ram and
--swap), DISKSPACE and DISKINODES softlimit[:hardlimit], QUOTATIME seconds, IP_ADDRESS/NAMESERVER/SEARCHDOMAIN
space-separated lists, VE_ROOT/VE_PRIVATE may hold a literal $VEID. vzctl(8) lists the size suffixes (T G M K P B,
either case) and vzctl's config.c parses them with an optional fraction ("2.2G", as in its own
ve-vswap-2g.conf-sample). NETIF is `ifname=...[,mac=...,host_ifname=...,host_mac=...,bridge=...]` per device,
devices separated by ';' (config.c: parse_netif_str), interface names shorter than IFNAMSIZ (16). vzctl create
finds the template as /vz/template/cache/OSTEMPLATE.tar.gz and unpacks it with tar.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess

import pytest

from builder.build import recipe
from builder.build.targets import openvz
from builder.core.errors import RecipeError
from tests.conftest import DEFAULT_RECIPE, imgbuild, mounts_under, sha256


def load(*sets: str):
    return recipe.load(DEFAULT_RECIPE, sets).recipe


def render(*sets: str) -> str:
    r = load(*sets)
    return openvz.render(r, r.targets.openvz)


# ------------------------------------------------------------------ golden files

GOLDEN = {
    # the default recipe as shipped (eth0 10.0.3.2/24, dns 10.0.3.1), default options: venet
    "venet-defaults": (("targets={openvz: {}}",), """\
# written by imgbuild for debian12: /etc/vz/conf/101.conf
ONBOOT=yes
PHYSPAGES="0:512M"
SWAPPAGES="0:512M"
DISKSPACE="10G:11G"
DISKINODES="200000:220000"
QUOTATIME="0"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="debian-bookworm-x86_64"
HOSTNAME="vm0"
IP_ADDRESS="10.0.3.2"
NAMESERVER="10.0.3.1"
"""),
    # veth on a bridge, a second (DHCP) NIC without a MAC, two name servers, search domains, every resource option
    "veth-everything": ((("targets={openvz: {ctid: 123, network: veth, bridge: br1, memory: 1G, swap: 256M, "
                          "disk: 20G, diskinodes: 400000, cpus: 2, onboot: false, ostemplate: debian-12.0-x86_64}}"),
                         "network.eth1={dhcp: true}", "dns=[192.0.2.53, 192.0.2.54]",
                         "search=[example.org, lab.example.org]"), """\
# written by imgbuild for debian12: /etc/vz/conf/123.conf
ONBOOT=no
PHYSPAGES="0:1G"
SWAPPAGES="0:256M"
DISKSPACE="20G:22G"
DISKINODES="400000:440000"
QUOTATIME="0"
CPUS="2"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="debian-12.0-x86_64"
HOSTNAME="vm0"
NETIF="ifname=eth0,bridge=br1,mac=00:16:3E:00:03:02,host_ifname=veth123.0;ifname=eth1,bridge=br1,host_ifname=veth123.1"
NAMESERVER="192.0.2.53 192.0.2.54"
SEARCHDOMAIN="example.org lab.example.org"
"""),
    # venet with two static addresses (one IPv6) and one DHCP NIC: only the static ones are routed; no DNS
    "venet-multi": (("targets={openvz: {ctid: 4242, disk: 500M}}", "dns=[]", "hostname=web1",
                     "network={eth0: {address: 10.0.3.2/24}, eth1: {address: '2001:db8::2/64'}, eth2: {dhcp: true}}"),
                    """\
# written by imgbuild for debian12: /etc/vz/conf/4242.conf
ONBOOT=yes
PHYSPAGES="0:512M"
SWAPPAGES="0:512M"
DISKSPACE="500M:550M"
DISKINODES="200000:220000"
QUOTATIME="0"
VE_ROOT="/vz/root/$VEID"
VE_PRIVATE="/vz/private/$VEID"
OSTEMPLATE="debian-bookworm-x86_64"
HOSTNAME="web1"
IP_ADDRESS="10.0.3.2 2001:db8::2"
"""),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_render_golden(case):
    sets, expected = GOLDEN[case]
    assert render(*sets) == expected


# ------------------------------------------------------------------ line by line, as vzctl reads it

SFX = "TtGgMmKkPpBb"
_MUL = {"T": 1 << 40, "G": 1 << 30, "M": 1 << 20, "K": 1 << 10, "P": 4096, "B": 1}


def vz_size(text: str, divisor: int = 1) -> float:
    """One value as vzctl's parse_ul_sfx reads it: digits, an optional fraction, an optional suffix."""
    m = re.fullmatch(rf"(\d+(?:\.\d+)?)([{SFX}]?)", text)
    assert m, f"{text!r} is not a vzctl number[suffix]"
    n = float(m.group(1))
    return n * _MUL[m.group(2).upper()] / divisor if m.group(2) else n


def two(value: str, divisor: int = 1, optional: bool = False) -> tuple[float, float]:
    parts = value.split(":")
    assert len(parts) == 2 or (optional and len(parts) == 1), f"{value!r}: want barrier:limit"
    a = vz_size(parts[0], divisor)
    return a, vz_size(parts[-1], divisor)


def hostname(v: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*", v), v


def netif(value: str) -> list[dict[str, str]]:
    devices = []
    for dev in value.split(";"):
        pairs = [p.split("=", 1) for p in dev.split(",")]
        assert all(len(p) == 2 for p in pairs), dev
        d = dict(pairs)
        assert pairs[0][0] == "ifname", f"{dev}: ifname must come first"
        assert set(d) <= {"ifname", "mac", "host_ifname", "host_mac", "bridge"}, dev
        for k in ("ifname", "host_ifname", "bridge"):
            if k in d:
                assert 0 < len(d[k]) < 16, f"{k}={d[k]} is longer than IFNAMSIZ-1"
        for k in ("mac", "host_mac"):
            if k in d:
                assert re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", d[k]), d[k]
        devices.append(d)
    return devices


def check_line(key: str, value: str) -> None:
    """Raise AssertionError unless KEY="value" is what vzctl documents for KEY."""
    if key == "ONBOOT":
        assert value in ("yes", "no")
    elif key in ("PHYSPAGES", "SWAPPAGES"):
        barrier, limit = two(value)
        assert barrier == 0 and limit > 0, f"vSwap: {key} is 0:LIMIT"
    elif key == "DISKSPACE":
        soft, hard = two(value, 1024, optional=True)
        assert 0 < soft <= hard
    elif key == "DISKINODES":
        assert re.fullmatch(r"\d+(:\d+)?", value)
        soft, hard = two(value, optional=True)
        assert 0 < soft <= hard
    elif key in ("QUOTATIME", "CPUS"):
        assert re.fullmatch(r"\d+", value)
    elif key in ("VE_ROOT", "VE_PRIVATE"):
        assert value.startswith("/") and "$VEID" in value
    elif key == "OSTEMPLATE":
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value)
    elif key == "HOSTNAME":
        hostname(value)
    elif key in ("IP_ADDRESS", "NAMESERVER"):
        for a in value.split():
            ipaddress.ip_address(a)
    elif key == "SEARCHDOMAIN":
        for d in value.split():
            hostname(d)
    elif key == "NETIF":
        netif(value)
    else:
        raise AssertionError(f"{key} is not a key this target should write")


def parse_conf(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([A-Z_0-9]+)=(?:"([^"]*)"|([^\s"]*))', line)
        assert m, f"not PARAMETER=\"value\": {line!r}"
        key, value = m.group(1), m.group(2) if m.group(2) is not None else m.group(3)
        assert m.group(2) is not None or " " not in value, line
        assert key not in out, f"{key} twice"
        check_line(key, value)
        out[key] = value
    return out


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_render_is_what_vzctl_documents(case):
    conf = parse_conf(render(*GOLDEN[case][0]))
    assert {"ONBOOT", "PHYSPAGES", "SWAPPAGES", "DISKSPACE", "DISKINODES", "VE_ROOT", "VE_PRIVATE", "OSTEMPLATE",
            "HOSTNAME"} <= set(conf)
    assert ("IP_ADDRESS" in conf) != ("NETIF" in conf), "venet writes IP_ADDRESS, veth writes NETIF"


def test_veth_devices_match_the_recipe():
    sets = GOLDEN["veth-everything"][0]
    r = load(*sets)
    devs = netif(parse_conf(render(*sets))["NETIF"])
    assert [d["ifname"] for d in devs] == list(r.network)
    assert devs[0]["mac"].lower() == r.network["eth0"].mac.lower() and "mac" not in devs[1]
    assert {d["bridge"] for d in devs} == {"br1"}
    assert [d["host_ifname"] for d in devs] == ["veth123.0", "veth123.1"]     # vzctl's own naming


@pytest.mark.parametrize("disk", [
    "10G", "500M", "10g", "2048",
    pytest.param("1G"),
    pytest.param("1.5G"),
])
def test_diskspace_hard_limit_is_ten_percent_more(disk):
    try:
        text = render(f"targets={{openvz: {{disk: '{disk}'}}}}")
    except Exception as e:  # noqa: BLE001 - any exception is the failure being tested
        raise AssertionError(f"render raised {type(e).__name__}: {e}") from None
    soft, hard = two(parse_conf(text)["DISKSPACE"], 1024)
    assert hard > soft and abs(hard - soft * 1.1) <= max(1.0, soft * 0.001), (soft, hard)


@pytest.mark.parametrize("override,why", [
    pytest.param("targets={openvz: {ctid: 0}}", "CTID 0 is the host itself (/etc/vz/conf/0.conf)"),
    pytest.param("targets={openvz: {ctid: -3}}", "a negative CTID"),
    pytest.param("targets={openvz: {memory: lots}}", "memory that vzctl cannot parse"),
    pytest.param("targets={openvz: {ctid: 102, network: veth}}", "(valid: must load)"),
])
def test_bad_options_are_rejected_when_the_recipe_loads(override, why):
    if why.startswith("(valid"):
        load(override)
        return
    try:
        load(override)
    except RecipeError as e:
        assert "targets.openvz" in str(e), str(e)
        return
    raise AssertionError(f"loaded without complaint: {why}")


# ------------------------------------------------------------------ a real build


CONF_KEYS = ("ONBOOT", "PHYSPAGES", "SWAPPAGES", "DISKSPACE", "DISKINODES", "QUOTATIME", "VE_ROOT", "VE_PRIVATE",
             "OSTEMPLATE", "HOSTNAME", "IP_ADDRESS", "NAMESERVER")


@pytest.fixture(scope="module")
def openvz_build(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = tmp_path_factory.mktemp("openvz-build") / "out"
    r = imgbuild(DEFAULT_RECIPE, "-o", out, "--set", "bootstrap.packages=[]", "--set", "init=none",
                 "--set", "targets={openvz: {ctid: 123}}")
    assert r.returncode == 0, r.stdout + r.stderr
    yield out / "debian12"
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_build_writes_config_and_template(openvz_build):
    names = sorted(p.name for p in openvz_build.iterdir())
    assert names == ["123.conf", "SHA256SUMS", "debian-bookworm-x86_64.tar.gz", "debian12.spdx.json",
                     "manifest.json"], names
    conf_text = (openvz_build / "123.conf").read_text()
    conf = parse_conf(conf_text)
    assert conf["OSTEMPLATE"] + ".tar.gz" == "debian-bookworm-x86_64.tar.gz"
    manifest = json.loads((openvz_build / "manifest.json").read_text())
    kinds = {a["kind"]: a for a in manifest["artifacts"]}
    assert kinds["openvz-config"]["path"] == "123.conf"
    assert kinds["openvz-template"]["path"] == "debian-bookworm-x86_64.tar.gz"
    assert kinds["openvz-template"]["sha256"] == sha256(openvz_build / "debian-bookworm-x86_64.tar.gz")
    assert mounts_under(openvz_build.parent) == []


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_config_is_valid_shell_with_the_expected_values(openvz_build):
    conf = openvz_build / "123.conf"
    r = subprocess.run(["sh", "-n", str(conf)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    # vzctl's scripts see the config with VEID set; `set -u` makes any other unset variable an error
    script = 'set -eu; VEID=123; . "$1"; ' + "; ".join(f'printf "%s=%s\\n" {k} "${k}"' for k in CONF_KEYS)
    r = subprocess.run(["sh", "-c", script, "sh", str(conf)], capture_output=True, text=True, check=False,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    got = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert got == {
        "ONBOOT": "yes", "PHYSPAGES": "0:512M", "SWAPPAGES": "0:512M", "DISKSPACE": "10G:11G",
        "DISKINODES": "200000:220000", "QUOTATIME": "0", "VE_ROOT": "/vz/root/123", "VE_PRIVATE": "/vz/private/123",
        "OSTEMPLATE": "debian-bookworm-x86_64", "HOSTNAME": "vm0", "IP_ADDRESS": "10.0.3.2",
        "NAMESERVER": "10.0.3.1",
    }
    # sourcing it assigns exactly those variables and nothing else
    script = 'set -eu; VEID=123; a="$(set)"; . "$1"; b="$(set)"; printf "%s\\n---\\n%s\\n" "$a" "$b"'
    r = subprocess.run(["sh", "-c", script, "sh", str(conf)], capture_output=True, text=True, check=False,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    before, after = (set(re.findall(r"^([A-Za-z_][A-Za-z_0-9]*)=", part, re.MULTILINE))
                     for part in r.stdout.split("\n---\n"))
    assert after - before - {"a"} == set(CONF_KEYS)


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_template_is_a_tarball_vzctl_can_unpack(openvz_build, tmp_path):
    tmpl = openvz_build / "debian-bookworm-x86_64.tar.gz"
    data = tmpl.read_bytes()
    assert data[:2] == b"\x1f\x8b", "not gzip"
    assert data[4:8] == b"\0\0\0\0", "the gzip header carries a timestamp (not reproducible)"
    assert subprocess.run(["gzip", "-t", str(tmpl)], check=False).returncode == 0

    r = subprocess.run(["tar", "--numeric-owner", "-tvzf", str(tmpl)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    rows = [line.split(None, 5) for line in r.stdout.splitlines()]
    names = [row[5].split(" -> ")[0] for row in rows]
    assert names[0] == "./" and all(n.startswith("./") for n in names), names[:5]
    by_name = {row[5].split(" -> ")[0]: row for row in rows}
    null = by_name["./dev/null"]
    assert null[0].startswith("c") and null[1] == "0/0" and null[2].replace(" ", "") in ("1,3",), null
    assert by_name["./etc/hostname"][0].startswith("-")
    # sorted the way tarwriter promises: depth first, names in byte order at each level
    assert names == sorted(names, key=lambda n: [c.encode() for c in n.rstrip("/").split("/")]), \
        "entries are not in sorted order"

    # what vzctl create does with it: unpack into the container's private area, owners numeric
    private = tmp_path / "private" / "123"
    private.mkdir(parents=True)
    try:
        r = subprocess.run(["tar", "--numeric-owner", "-xpzf", str(tmpl), "-C", str(private)], capture_output=True,
                           text=True, check=False)
        assert r.returncode == 0, r.stderr
        st = os.lstat(private / "dev" / "null")
        assert stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
        assert (st.st_uid, st.st_gid) == (0, 0)
        assert (private / "etc" / "hostname").read_text() == "vm0\n"
        assert (private / "etc" / "hello").read_text() == "hello\n"            # the recipe's hook
        assert (private / "etc" / "motd").read_text() == "built by imgbuild\n"  # the recipe's files
    finally:
        shutil.rmtree(private, ignore_errors=True)
