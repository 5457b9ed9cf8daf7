"""The acceptance test of clone: the default recipe's output, installed as vm0 with `imgbuild install-lxc`, cloned
three times with `imgbuild clone`; the three clones boot together on one bridge under the real lxc-start, each with
its own host name, address, MAC and ssh host keys, and reach each other.

Seed 004: a copied guest that kept its original's MAC took a LAN down for two days. Here the clones share one
L2 segment (a bridge inside a network namespace this test creates; see tests/support/lxc.py): a duplicate MAC or
address would show up as a clone that cannot reach another.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from builder.identity import inventory
from tests.conftest import imgbuild
from tests.support.lxc import container_cgroups, lxc_netns, tcp_banner

OLD_MAC, OLD_IP = "00:16:3e:00:03:02", "10.0.3.2"      # recipes/debian12.yml
CLONES = {"vmA": "10.0.3.11", "vmB": "10.0.3.12", "vmC": "10.0.3.13"}
BOOT_TIMEOUT = 60


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    """No test here may touch the host's inventory, even through a default (subprocesses get `env` too)."""
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inventory.yml"))


@pytest.fixture
def sandbox(tmp_path):
    """A network namespace with a bridge (10.0.3.1/24); every container adopted or started through it is stopped
    and removed, its cgroups too, and the namespace deleted, whatever the test does (teardown fails if anything
    is left behind)."""
    with lxc_netns(tmp_path / "lxc-sandbox", bridge_cidr="10.0.3.1/24") as sb:
        yield sb


def wait_running(sb, name: str, timeout: float = BOOT_TIMEOUT) -> tuple[str, float]:
    t0 = time.monotonic()
    state = ""
    while time.monotonic() - t0 < timeout:
        r = sb.attach(name, "systemctl", "is-system-running")
        state = r.stdout.strip() or r.stderr.strip()
        if state in ("running", "degraded", "maintenance", "stopping"):
            break
        time.sleep(0.5)
    return state, time.monotonic() - t0


def banner_from(sb, name: str, ip: str, timeout: float = 20) -> str:
    """The first line port 22 of `ip` sends, read from inside container `name` with bash's /dev/tcp."""
    script = f'exec 3<>/dev/tcp/{ip}/22 && IFS= read -r line <&3 && printf "%s\\n" "$line"'
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        r = sb.attach(name, "timeout", "5", "bash", "-c", script, timeout=15)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
        last = (r.stdout + r.stderr).strip()
        time.sleep(0.5)
    return f"(no banner: {last})"


def config_mac(config: Path) -> str:
    return re.search(r"^lxc\.net\.0\.hwaddr = (\S+)$", config.read_text(), re.M).group(1)


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.network
@pytest.mark.slow
def test_three_clones_boot_side_by_side_with_their_own_identities(debian12_build: Path, sandbox, tmp_path):
    lxcpath = sandbox.lxcpath
    env = {**os.environ, inventory.ENV_VAR: str(tmp_path / "inventory.yml")}
    dirs = ["--lxcpath", str(lxcpath), "--xen-dir", str(tmp_path / "xen"), "--vz-dir", str(tmp_path / "vz")]
    for name in ("vm0", *CLONES):
        # LXC names cgroups after the container: one of another run still there would be a leftover, not ours
        assert not container_cgroups(name), f"cgroups of a container {name} exist before the test: " \
                                            f"{container_cgroups(name)}"
        sandbox.adopt(name)      # removed at the end even if it never starts

    r = imgbuild("install-lxc", debian12_build, "--name", "vm0", "--lxcpath", lxcpath, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    vm0 = lxcpath / "vm0"
    assert config_mac(vm0 / "config") == OLD_MAC
    vm0_config = (vm0 / "config").read_bytes()
    assert not list((vm0 / "rootfs/etc/ssh").glob("ssh_host_*")), "the image ships ssh host keys"

    for name, ip in CLONES.items():
        r = imgbuild("clone", "lxc:vm0", name, "--ip", f"{OLD_IP}={ip}", *dirs, env=env)
        assert r.returncode == 0, f"clone {name}: {r.stdout}{r.stderr}"
        assert r.stdout.strip().splitlines()[-1] == str(lxcpath / name)
    assert (vm0 / "config").read_bytes() == vm0_config, "cloning changed the original's config"

    macs: dict[str, str] = {}
    recorded = {g.name: g for g in inventory.load(tmp_path / "inventory.yml").guests}
    for name, ip in CLONES.items():
        cfg = lxcpath / name / "config"
        text = cfg.read_text()
        assert re.search(rf"^lxc\.uts\.name = {name}$", text, re.M), text
        assert re.search(rf"^lxc\.rootfs\.path = dir:{re.escape(str(lxcpath / name))}/rootfs$", text, re.M), text
        assert str(vm0) not in text, f"{name}'s config still points into vm0: {text}"
        macs[name] = config_mac(cfg)
        assert recorded[name].macs == (macs[name],) and recorded[name].ips == (ip,)
        assert not list((lxcpath / name / "rootfs/etc/ssh").glob("ssh_host_*"))
        # the host has no lxcbr0 and the test must not touch its network: the one link line of each installed
        # config points at the test's own bridge instead; nothing else in it changes
        links = re.findall(r"^lxc\.net\.0\.link = (.*)$", text, re.M)
        assert links == ["lxcbr0"], text
        cfg.write_text(re.sub(r"^lxc\.net\.0\.link = .*$", f"lxc.net.0.link = {sandbox.bridge}", text, flags=re.M))
    assert len(set(macs.values())) == 3 and OLD_MAC not in macs.values(), macs

    for name in CLONES:
        sandbox.start(name)
    for name in CLONES:
        state, took = wait_running(sandbox, name)
        if state != "running":
            failed = sandbox.attach(name, "systemctl", "--failed", "--no-pager")
            pytest.fail(f"systemd in {name} is {state!r} after {took:.1f} s (want 'running')\n"
                        f"--- systemctl --failed:\n{failed.stdout}{failed.stderr}\n"
                        f"--- lxc-info: {sandbox.state(name)}\n--- tail of the LXC log:\n{sandbox.log_tail()}")
        print(f"{name}: systemd running {took:.1f} s after its start")

    seen_macs, keys, machine_ids = {}, {}, {}
    for name, ip in CLONES.items():
        assert sandbox.attach(name, "hostname").stdout.strip() == name
        assert sandbox.attach(name, "cat", "/etc/hostname").stdout.strip() == name
        link = sandbox.attach(name, "ip", "-br", "link", "show", "dev", "eth0")
        m = re.match(r"^eth0\S*\s+UP\s+([0-9a-f:]{17})\s", link.stdout)
        assert m, link.stdout + link.stderr
        seen_macs[name] = m.group(1)
        addr = sandbox.attach(name, "ip", "-br", "-4", "addr", "show", "dev", "eth0")
        assert re.search(rf"\s{re.escape(ip)}/24(\s|$)", addr.stdout), addr.stdout + addr.stderr
        assert OLD_IP + "/" not in addr.stdout
        pub = sandbox.attach(name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
        assert pub.returncode == 0 and pub.stdout.startswith("ssh-ed25519 "), pub.stdout + pub.stderr
        keys[name] = pub.stdout.split()[1]
        machine_ids[name] = sandbox.attach(name, "cat", "/etc/machine-id").stdout.strip()
    assert seen_macs == macs, "a clone's NIC does not carry the MAC its config gives it"
    assert len(set(seen_macs.values())) == 3 and OLD_MAC not in seen_macs.values()
    assert len(set(keys.values())) == 3, f"clones share ssh host keys: {keys}"
    assert all(machine_ids.values()) and len(set(machine_ids.values())) == 3, machine_ids

    # every clone reaches the two others' sshd, from inside, over the one bridge
    for name in CLONES:
        for peer, peer_ip in CLONES.items():
            if peer != name:
                banner = banner_from(sandbox, name, peer_ip)
                assert banner.startswith("SSH-2.0-"), f"{name} -> {peer} ({peer_ip}): {banner}"
    # ... and on the wire each address answers with its own clone's MAC
    for name, ip in CLONES.items():
        assert tcp_banner(sandbox, ip, 22).startswith("SSH-2.0-")
        neigh = sandbox.run_ns("ip", "neigh", "show", ip)
        assert f"lladdr {macs[name]}" in neigh.stdout, neigh.stdout + neigh.stderr
    failed = {n: sandbox.attach(n, "systemctl", "--failed", "--no-legend", "--plain", "--no-pager").stdout.strip()
              for n in CLONES}
    assert not any(failed.values()), failed
