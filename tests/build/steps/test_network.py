from __future__ import annotations

import logging

from builder.build.steps import network


def test_static_with_mac(ctx_for):
    ctx = ctx_for(network={"eth0": {"address": "10.0.3.2/24", "gateway": "10.0.3.1", "mac": "00:16:3E:00:03:02"}})
    network.run(ctx)
    text = (ctx.root.path / "etc/network/interfaces").read_text()
    assert "auto lo\niface lo inet loopback" in text
    assert ("auto eth0\niface eth0 inet static\n    address 10.0.3.2/24\n    gateway 10.0.3.1\n"
            "    hwaddress ether 00:16:3e:00:03:02\n") in text


def test_dhcp_and_ipv6(ctx_for, caplog):
    ctx = ctx_for(network={"eth0": {"dhcp": True}, "eth1": {"address": "2001:db8::2/64"}})
    with caplog.at_level(logging.WARNING, logger="imgbuild"):
        network.run(ctx)
    text = (ctx.root.path / "etc/network/interfaces").read_text()
    assert "iface eth0 inet dhcp" in text and "iface eth1 inet6 static\n    address 2001:db8::2/64" in text
    assert "no DHCP client" in caplog.text


def test_no_network_writes_nothing(ctx_for):
    ctx = ctx_for()
    network.run(ctx)
    assert not (ctx.root.path / "etc/network/interfaces").exists()
