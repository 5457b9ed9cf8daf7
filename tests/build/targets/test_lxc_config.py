"""LXC config rendering (golden files), relocation on install and cgroup adaptation."""
from __future__ import annotations

import pytest

from builder.build import recipe
from builder.build.targets import lxc
from builder.guestconf import lxc as lxcconf
from tests.support import TEST_DATA

DATA = TEST_DATA / "lxc"


@pytest.mark.parametrize("case", sorted(p.name for p in DATA.iterdir()))
def test_golden(case):
    r = recipe.load(DATA / case / "recipe.yml").recipe
    got = lxc.render(r, r.targets.lxc)
    expected = (DATA / case / "expected.conf").read_text()
    assert got == expected, f"rendered config differs from {DATA / case / 'expected.conf'}"


def test_legacy_uses_only_legacy_keys():
    r = recipe.load(DATA / "legacy" / "recipe.yml").recipe
    keys = {line.split("=")[0].strip() for line in lxc.render(r, r.targets.lxc).splitlines() if "=" in line}
    assert not any(k.startswith(("lxc.net.", "lxc.uts.", "lxc.rootfs.path", "lxc.cgroup2",
                                 "lxc.tty.max")) for k in keys)
    assert {"lxc.utsname", "lxc.rootfs", "lxc.tty", "lxc.pts", "lxc.network.type"} <= keys


def test_relocate_moves_paths_only():
    conf = ("lxc.uts.name = vm0\nlxc.rootfs.path = dir:/var/lib/lxc/debian12/rootfs\n"
            "lxc.mount.fstab = /var/lib/lxc/debian12/fstab\nlxc.hook.pre-start = /var/lib/lxc/debian12/x\n")
    out = lxcconf.relocate(conf, "/var/lib/lxc/debian12", "/srv/lxc/vm0")
    assert "lxc.rootfs.path = dir:/srv/lxc/vm0/rootfs" in out
    assert "lxc.mount.fstab = /srv/lxc/vm0/fstab" in out
    assert "lxc.hook.pre-start = /var/lib/lxc/debian12/x" in out   # not a path key we own


def test_adapt_cgroup_drops_the_other_version():
    r = recipe.load(DATA / "modern" / "recipe.yml").recipe
    conf = lxc.render(r, r.targets.lxc)
    v1, dropped = lxc.adapt_cgroup(conf, "v1")
    assert "lxc.cgroup2." not in v1 and "lxc.cgroup.devices.deny = a" in v1
    assert dropped == ["lxc.cgroup2.devices.allow", "lxc.cgroup2.devices.deny"]
    v2, _ = lxc.adapt_cgroup(conf, "v2")
    assert "lxc.cgroup.devices" not in v2 and "lxc.cgroup2.devices.deny = a" in v2
    only_v1 = "\n".join(line for line in conf.splitlines() if "cgroup2" not in line) + "\n"
    assert lxc.adapt_cgroup(only_v1, "v2") == (only_v1, [])


def test_host_cgroup_reads_mountinfo(tmp_path):
    hybrid = tmp_path / "hybrid"
    hybrid.write_text("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                      "36 31 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n"
                      "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    pure = tmp_path / "pure"
    pure.write_text("31 23 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    assert lxc.host_cgroup(str(hybrid)) == "v1"
    assert lxc.host_cgroup(str(pure)) == "v2"
