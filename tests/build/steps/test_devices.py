from __future__ import annotations

import os
import stat

import pytest

from builder.build.steps import devices
from builder.core.errors import InputError


@pytest.mark.root
def test_container_preset(ctx_for):
    ctx = ctx_for()
    devices.run(ctx, "container")
    d = ctx.root.path / "dev"
    expect = {"null": (1, 3, 0o666), "zero": (1, 5, 0o666), "full": (1, 7, 0o666), "random": (1, 8, 0o666),
              "urandom": (1, 9, 0o666), "tty": (5, 0, 0o666), "console": (5, 1, 0o600), "tty1": (4, 1, 0o620),
              "ptmx": (5, 2, 0o666)}
    for name, (major, minor, mode) in expect.items():
        st = os.lstat(d / name)
        assert stat.S_ISCHR(st.st_mode), name
        assert (os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode)) == (major, minor, mode), name
    assert os.lstat(d / "tty1").st_gid == 5
    assert os.readlink(d / "fd") == "/proc/self/fd"
    assert stat.S_IMODE(os.stat(d / "shm").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(d / "pts").st_mode) == 0o755


@pytest.mark.root
def test_explicit_list_with_owner(ctx_for):
    ctx = ctx_for()
    spec = ctx_for(devices=[{"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232, "mode": "0660",
                             "group": "adm"}, {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0,
                                               "mode": "0600", "owner": "sshd"}]).recipe.devices
    devices.run(ctx, spec)
    kvm = os.lstat(ctx.root.path / "dev/kvm")
    assert stat.S_ISCHR(kvm.st_mode) and kvm.st_gid == 4 and stat.S_IMODE(kvm.st_mode) == 0o660
    sda = os.lstat(ctx.root.path / "dev/sda")
    assert stat.S_ISBLK(sda.st_mode) and sda.st_uid == 100


def test_unknown_owner_names_the_recipe_key(ctx_for):
    ctx = ctx_for()
    spec = ctx_for(devices=[{"path": "/dev/x", "type": "dir", "owner": "nobody-here"}]).recipe.devices
    with pytest.raises(InputError, match=r"devices\[0\]\.owner: no user 'nobody-here'"):
        devices.run(ctx, spec)
