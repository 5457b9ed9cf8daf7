from __future__ import annotations

import os

from builder.build.steps import basefiles


def test_files_from_the_recipe(ctx_for, tmp_path):
    ctx = ctx_for(hostname="vm0", domain="lxc", dns=["10.0.3.1", "2001:db8::53"], search=["lxc"],
                  network={"eth0": {"address": "10.0.3.2/24", "gateway": "10.0.3.1"}})
    basefiles.run(ctx)
    etc = ctx.root.path / "etc"
    assert (etc / "hostname").read_text() == "vm0\n"
    hosts = (etc / "hosts").read_text()
    assert "10.0.3.2\tvm0.lxc vm0" in hosts and "127.0.0.1\tlocalhost" in hosts and "127.0.1.1" not in hosts
    assert (etc / "resolv.conf").read_text().splitlines()[1:] == ["search lxc", "nameserver 10.0.3.1",
                                                                  "nameserver 2001:db8::53"]
    assert "nothing to mount" in (etc / "fstab").read_text()


def test_no_static_address_uses_127_0_1_1(ctx_for):
    ctx = ctx_for(network={"eth0": {"dhcp": True}})
    basefiles.run(ctx)
    assert "127.0.1.1\tt1" in (ctx.root.path / "etc/hosts").read_text()


def test_build_hosts_resolver_is_never_shipped(ctx_for, tmp_path):
    ctx = ctx_for()
    outside = tmp_path / "host-resolv.conf"
    outside.write_text("nameserver 192.0.2.1\n")
    os.symlink(str(outside), ctx.root.path / "etc/resolv.conf")
    basefiles.run(ctx)
    assert not os.path.lexists(ctx.root.path / "etc/resolv.conf")
    assert outside.read_text() == "nameserver 192.0.2.1\n"
