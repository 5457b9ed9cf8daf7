"""imgbuild sysprep on a real, used LXC container: the default recipe's output installed and booted under the
real lxc-start (it makes its ssh host keys, machine-id and journal; a root shell history is added), refused while
it runs, prepared once stopped, and booted again: new ssh host keys, a new machine-id, no history, systemd running."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from builder.identity import inventory
from tests.conftest import imgbuild
from tests.support.lxc import boot, container_cgroups, install_on_bridge, lxc_netns


def stopped(sb, name: str) -> None:
    r = sb.run_ns("lxc-stop", "-P", sb.lxcpath, "-n", name, "-t", "30", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.root
@pytest.mark.lxc
@pytest.mark.network
@pytest.mark.slow
def test_a_used_container_prepared_boots_with_new_keys(debian12_build: Path, tmp_path, monkeypatch):
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inventory.yml"))
    name = "tmpl"
    assert not container_cgroups(name), f"cgroups of a container {name} exist before the test"
    with lxc_netns(tmp_path / "sandbox", bridge_cidr="10.0.3.1/24") as sb:
        sb.adopt(name)
        rootfs = install_on_bridge(sb, debian12_build, name)
        boot(sb, name)
        key1 = sb.attach(name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout
        mid1 = sb.attach(name, "cat", "/etc/machine-id").stdout.strip()
        assert key1.startswith("ssh-ed25519 ") and re.fullmatch(r"[0-9a-f]{32}", mid1), (key1, mid1)
        assert sb.attach(name, "sh", "-c", "echo 'mysql -psecret' > /root/.bash_history").returncode == 0
        # running: refused, nothing touched
        r = imgbuild("sysprep", sb.lxcpath / name)
        assert r.returncode == 2 and "running" in r.stderr, r.stderr
        stopped(sb, name)
        assert (rootfs / "root/.bash_history").exists() and (rootfs / "etc/ssh/ssh_host_ed25519_key").exists()
        r = imgbuild("sysprep", f"lxc:{name}", "--lxcpath", sb.lxcpath)
        assert r.returncode == 0, r.stderr
        assert "ssh-hostkeys: remove /etc/ssh/ssh_host_ed25519_key" in r.stdout
        assert not (rootfs / "root/.bash_history").exists()
        assert not list((rootfs / "etc/ssh").glob("ssh_host_*")) and (rootfs / "etc/machine-id").read_bytes() == b""
        assert [p for p in (rootfs / "var/log/journal").rglob("*") if p.is_file()] == []
        boot(sb, name)
        key2 = sb.attach(name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout
        mid2 = sb.attach(name, "cat", "/etc/machine-id").stdout.strip()
        assert key2.startswith("ssh-ed25519 ") and key2 != key1, (key1, key2)
        assert re.fullmatch(r"[0-9a-f]{32}", mid2) and mid2 != mid1
        assert sb.attach(name, "test", "-e", "/root/.bash_history").returncode == 1
        assert os.path.isdir(rootfs / "tmp")
