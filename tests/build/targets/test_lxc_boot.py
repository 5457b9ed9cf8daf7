"""The acceptance test of the LXC target: the default recipe's output, installed with `imgbuild install-lxc`, boots
under the real lxc-start to systemd `running`, with the recipe's hostname, address, MAC, sshd and hook result.

Network: the container's NIC hangs on a bridge (10.0.3.1/24) inside a network namespace this test creates; every
packet stays in that namespace (see tests/support/lxc.py for how LXC is run there and how it is cleaned up).
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from tests.conftest import imgbuild
from tests.support.lxc import ADDRESS, HOSTNAME, MAC, lxc_netns, tcp_banner, wait_running


@pytest.fixture
def sandbox(tmp_path):
    """A network namespace with a bridge; every container started through it is stopped and removed, and the
    namespace deleted, whatever the test does (teardown fails if anything is left behind)."""
    with lxc_netns(tmp_path / "lxc-sandbox", bridge_cidr="10.0.3.1/24") as sb:
        yield sb


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.network
@pytest.mark.slow
def test_default_recipe_boots_under_lxc(debian12_build: Path, sandbox):
    name = f"imgbuild-boot-{os.getpid()}-{secrets.token_hex(2)}"
    lxcpath = sandbox.lxcpath

    sandbox.adopt(name)  # the sandbox removes the container at the end, even if it never starts
    r = imgbuild("install-lxc", debian12_build, "--name", name, "--lxcpath", lxcpath)
    assert r.returncode == 0, r.stdout + r.stderr
    cdir = lxcpath / name
    assert r.stdout.strip().splitlines()[-1] == str(cdir)
    config_file = cdir / "config"
    config = config_file.read_text()
    # install-lxc moved the config's paths into LXCPATH/NAME
    assert re.search(rf"^lxc\.rootfs\.path = dir:{re.escape(str(cdir))}/rootfs$", config, re.M), config
    assert (cdir / "rootfs" / "sbin" / "init").exists()

    # The session build was made as written, with `lxc: {bridge: lxcbr0}`. The host has no lxcbr0 and this test
    # must not touch the host's network, so the one link line of the *installed* config is pointed at the bridge
    # inside the test's own namespace; nothing else in the config is changed.
    links = re.findall(r"^lxc\.net\.0\.link = (.*)$", config, re.M)
    assert links == ["lxcbr0"], config
    config_file.write_text(re.sub(r"^lxc\.net\.0\.link = .*$", f"lxc.net.0.link = {sandbox.bridge}", config,
                                  flags=re.M))

    sandbox.start(name)
    state, took = wait_running(sandbox, name)
    if state != "running":
        failed = sandbox.attach(name, "systemctl", "--failed", "--no-pager")
        jobs = sandbox.attach(name, "systemctl", "list-jobs", "--no-pager")
        pytest.fail(f"systemd in {name} is {state!r} after {took:.1f} s (want 'running')\n"
                    f"--- systemctl --failed:\n{failed.stdout}{failed.stderr}\n"
                    f"--- systemctl list-jobs:\n{jobs.stdout}{jobs.stderr}\n"
                    f"--- lxc-info: {sandbox.state(name)}\n--- tail of the LXC log:\n{sandbox.log_tail()}")
    print(f"{name}: systemd running {took:.1f} s after lxc-start")

    failed = sandbox.attach(name, "systemctl", "--failed", "--no-legend", "--plain", "--no-pager")
    assert failed.returncode == 0 and failed.stdout.strip() == "", f"failed units:\n{failed.stdout}{failed.stderr}"

    # install-lxc --name NAME gives the container NAME as its host name (the recipe's is HOSTNAME)
    assert sandbox.attach(name, "hostname").stdout.strip() == name != HOSTNAME
    assert sandbox.attach(name, "cat", "/etc/hostname").stdout.strip() == name

    addr = sandbox.attach(name, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
    assert re.search(rf"\binet {re.escape(ADDRESS)}/24\b", addr.stdout), addr.stdout + addr.stderr
    mac = sandbox.attach(name, "cat", "/sys/class/net/eth0/address")
    assert mac.stdout.strip() == MAC, mac.stdout + mac.stderr
    # the container's veth peer is a port of the test's bridge
    ports = sandbox.run_ns("ip", "-o", "link", "show", "master", sandbox.bridge)
    assert ports.stdout.strip(), f"nothing is attached to {sandbox.bridge}: {ports.stderr}"

    # sshd answers on 10.0.3.2:22, seen from the namespace's side of the bridge
    banner = tcp_banner(sandbox, ADDRESS, 22)
    assert banner.startswith("SSH-2.0-"), banner
    # ... and the address answered with the recipe's MAC on the wire
    neigh = sandbox.run_ns("ip", "neigh", "show", ADDRESS)
    assert f"lladdr {MAC}" in neigh.stdout, neigh.stdout + neigh.stderr

    hello = sandbox.attach(name, "cat", "/etc/hello")
    assert hello.returncode == 0 and hello.stdout == "hello\n", hello.stdout + hello.stderr
