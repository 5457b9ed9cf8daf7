from __future__ import annotations

import os

import pytest

from builder.build.steps import init
from builder.core.errors import InputError


def test_systemd_container(ctx_for):
    ctx = ctx_for(init="systemd-container")
    units = ctx.root.path / "lib/systemd/system"
    units.mkdir(parents=True)
    (units / "systemd-journald.service").write_text("[Unit]\n")
    wants = ctx.root.path / "etc/systemd/system/getty.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/lib/systemd/system/getty@.service", wants / "getty@tty1.service")
    init.run(ctx, ctx.recipe.init)
    sysd = ctx.root.path / "etc/systemd/system"
    assert os.readlink(sysd / "systemd-udevd.service") == "/dev/null"
    assert os.readlink(sysd / "getty@.service") == "/dev/null"
    assert not os.path.lexists(wants / "getty@tty1.service")
    assert os.readlink(wants / "console-getty.service") == "/lib/systemd/system/console-getty.service"


def test_systemd_container_needs_systemd(ctx_for):
    ctx = ctx_for(init="systemd-container")
    with pytest.raises(InputError, match="no systemd"):
        init.run(ctx, ctx.recipe.init)


def test_sysvinit_container(ctx_for):
    ctx = ctx_for(init="sysvinit-container")
    (ctx.root.path / "etc/init.d").mkdir(parents=True)
    (ctx.root.path / "etc/init.d/rc").write_text("#!/bin/sh\n")
    (ctx.root.path / "sbin").mkdir()
    (ctx.root.path / "sbin/init").write_text("")
    init.run(ctx, ctx.recipe.init)
    inittab = (ctx.root.path / "etc/inittab").read_text()
    assert "getty --noclear 38400 console" in inittab and "tty2" not in inittab
