"""recipes/debian12-vm.yml built once for the whole run: the disk target's tests boot it, the VM config tests read
its libvirt domain and xl configs, and the interruption test compares against it."""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO, imgbuild

VM_RECIPE = REPO / "recipes" / "debian12-vm.yml"
# the VM build also carries a cloud-init NoCloud seed (in the guest, and as a seed ISO beside the disk)
VM_SET = ("--set", "cloud_init={user_data: {ssh_pwauth: false, runcmd: [[touch, /root/cloud-init-ran]]}}")


def loop_devices() -> list[str]:
    return subprocess.run(["losetup", "-l", "-n", "-O", "NAME"], capture_output=True, text=True).stdout.split()


@pytest.fixture(scope="session")
def vm_build(tmp_path_factory):
    """The built output directory (…/debian12-vm); the build used no loop device."""
    before = loop_devices()
    out = tmp_path_factory.mktemp("vm") / "out"
    r = imgbuild(VM_RECIPE, "-o", out, *VM_SET)
    assert r.returncode == 0, r.stderr[-4000:]
    assert loop_devices() == before
    return out / "debian12-vm"
