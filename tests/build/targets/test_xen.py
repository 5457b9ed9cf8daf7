"""Xen target: configs read back by Xen's own parser (libxlutil), disk specs by xlu_disk_parse, images checked
with e2fsck and read with debugfs, and the bootloader config read by Xen's real pygrub where it is installed.

Quick tests use a hand-made tree (fake kernel files); the slow one builds a Debian guest with its kernel
package from the host's mirror and checks the whole output.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.build import recipe
from builder.build.context import Context
from builder.build.families import family_of
from builder.build.targets import xen
from builder.core.errors import InputError, RecipeError
from builder.core.rootfs import RootFS
from builder.guestconf import xen as xenconf
from builder.guestconf import xl
from tests.conftest import imgbuild
from tests.support import TEST_DATA

DATA = TEST_DATA / "xen" / "target-debian12"
RECIPE = DATA / "recipe.yml"
needs_xl = pytest.mark.skipif(not xl.available(), reason=str(xl.why_unavailable()))
PYGRUB = next(iter(sorted(glob.glob("/usr/lib/xen-*/bin/pygrub"), reverse=True)), None)
needs_pygrub = pytest.mark.skipif(PYGRUB is None, reason="Xen's pygrub is not installed (xen-utils-4.17)")


def load(*overrides: str):
    return recipe.load(RECIPE, overrides).recipe


def config(r, **changes) -> tuple[str, xen.XenOptions]:
    opts = dataclasses.replace(r.targets.xen, **changes)
    return xen.render(r, opts, xen.pick_console(opts, None)), opts


def debugfs_cat(img: Path, path: str) -> str | None:
    r = subprocess.run(["debugfs", "-R", f"cat {path}", str(img)], capture_output=True, text=True)
    return None if r.returncode or "not found" in r.stderr else r.stdout


def debugfs_ls(img: Path, path: str) -> list[str]:
    r = subprocess.run(["debugfs", "-R", f"ls -l {path}", str(img)], capture_output=True, text=True)
    return [line.split()[-1] for line in r.stdout.splitlines() if line.strip()]


def fs_label(img: Path) -> str:
    return subprocess.run(["e2label", str(img)], capture_output=True, text=True, check=True).stdout.strip()


def fs_type(img: Path) -> str:
    out = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", str(img)], capture_output=True,
                         text=True).stdout.strip()
    return out


# ------------------------------------------------------------------ configs


def test_golden_configs():
    r = load()
    assert config(r)[0] == (DATA / "xl.cfg").read_text()
    assert config(r, toolstack="xm")[0] == (DATA / "xm.cfg").read_text()


@needs_xl
@pytest.mark.parametrize("changes,boot,disk", [
    ({}, ("bootloader", "pygrub"), "format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/xenguest.img"),
    ({"disk": "phy", "path": "/dev/vg0/xenguest", "vdev": "xvda1"}, ("bootloader", "pygrub"),
     "format=raw, vdev=xvda1, access=rw, backendtype=phy, target=/dev/vg0/xenguest"),
    ({"boot": "kernel", "kernel": "/srv/xen/vmlinuz", "ramdisk": "/srv/xen/initrd", "extra": "quiet"},
     ("kernel", "/srv/xen/vmlinuz"), "format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/xenguest.img"),
    ({"path": "/srv/images/g.img", "memory": 2048, "vcpus": 4, "on_crash": "restart"}, ("bootloader", "pygrub"),
     "format=raw, vdev=xvda, access=rw, target=/srv/images/g.img"),
])
def test_xl_config_reads_back_in_libxlutil(changes, boot, disk):
    r = load()
    text, opts = config(r, **changes)
    cfg = xl.parse(text)
    assert cfg.string("name") == "xenguest"
    assert cfg.long("memory") == opts.memory and cfg.long("vcpus") == opts.vcpus
    assert cfg.string(boot[0]) == boot[1]
    assert ("bootloader" in cfg) == (boot[0] == "bootloader")
    assert cfg.strings("disk") == [disk]
    assert xl.check_disk(disk) is None
    assert cfg.strings("vif") == ["mac=00:16:3e:00:03:20,bridge=xenbr0"]
    assert cfg.string("on_crash") == opts.on_crash
    if opts.boot == "kernel":
        assert cfg.string("ramdisk") == "/srv/xen/initrd"
        assert cfg.string("root") == "/dev/xvda ro"
        assert cfg.string("extra") == "console=hvc0 quiet"


@needs_xl
def test_vifs_follow_the_recipe_network():
    r = load("network.eth1={dhcp: true}", "network.eth2={address: 192.0.2.9/24, mac: '00:16:3e:00:03:22'}")
    text, _ = config(r, bridge="br-guests", vif_ip=True)
    assert xl.parse(text).strings("vif") == ["mac=00:16:3e:00:03:20,bridge=br-guests,ip=10.0.3.20",
                                             "bridge=br-guests",
                                             "mac=00:16:3e:00:03:22,bridge=br-guests,ip=192.0.2.9"]


def test_xm_config_is_python_literals_and_converts_to_the_xl_config():
    """The Xen 3 config, read as xm would (Python, never run), moves to exactly the xl config of the target."""
    r = load()
    xm_text, _ = config(r, toolstack="xm")
    cfg = xenconf.read_xm(xm_text)
    assert cfg.findings == []
    assert cfg.get("bootloader") == "/usr/bin/pygrub"
    assert cfg.get("disk") == ["file:/var/lib/xen/images/xenguest.img,xvda,w"]
    assert cfg.get("memory") == 512
    moved, findings = xenconf.convert(cfg)
    assert not [f for f in findings if f.level == "error"]
    xl_settings = xen.settings(r, r.targets.xen, "hvc0")
    assert [(s.key, s.value) for s in moved] == [(s.key, s.value) for s in xl_settings]


def test_xm_kernel_boot_for_el5():
    r = load()
    text, _ = config(r, toolstack="xm", boot="kernel", kernel="/boot/vmlinuz-2.6.18-419.el5xen",
                     ramdisk="/boot/initrd-2.6.18-419.el5xen.img", console="xvc0", disk="phy",
                     path="/dev/VolGroup00/guest", vdev="xvda1")
    cfg = xenconf.read_xm(text)
    assert cfg.get("extra") == "console=xvc0"
    assert cfg.get("root") == "/dev/xvda1 ro"
    assert cfg.get("disk") == ["phy:/dev/VolGroup00/guest,xvda1,w"]
    assert "bootloader" not in cfg.settings


@pytest.mark.parametrize("override,key", [
    ("targets.xen.boot=kernel", "targets.xen.kernel"),
    ("targets.xen.disk=phy", "targets.xen.path"),
    ("targets.xen.kernel=/boot/vmlinuz", "targets.xen.kernel"),
    ("targets.xen.path=relative.img", "targets.xen.path"),
    ("targets.xen.path=/a,b.img", "targets.xen.path"),
    ("targets.xen.vdev=vda", "targets.xen.vdev"),
    ("targets.xen.console=ttyS0", "targets.xen.console"),
    ("targets.xen.toolstack=xend", "targets.xen.toolstack"),
    ("targets.xen.on_crash=explode", "targets.xen.on_crash"),
    ("targets.xen.memory=16", "targets.xen.memory"),
])
def test_bad_options_name_their_key(override, key):
    with pytest.raises(RecipeError) as e:
        load(override)
    assert [p.path for p in e.value.problems] == [key]


# ------------------------------------------------------------------ the image, from a hand-made tree


def make_tree(root: Path, kernels: dict[str, str], securetty: str | None = None) -> None:
    """kernels: version -> initrd file name ('' for none). Kernel files hold their version, for checking."""
    (root / "boot").mkdir(parents=True)
    (root / "etc").mkdir()
    for version, initrd in kernels.items():
        (root / "boot" / f"vmlinuz-{version}").write_bytes(f"KERNEL {version}\n".encode() * 64)
        if initrd:
            (root / "boot" / initrd).write_bytes(f"INITRD {version}\n".encode() * 64)
    (root / "boot" / "config-6.1.0-9-amd64").write_text("# not a kernel\n")
    if securetty is not None:
        (root / "etc" / "securetty").write_text(securetty)
    (root / "etc" / "hostname").write_text("xenguest\n")


def produce(tmp_path: Path, r, **changes) -> dict[str, Path]:
    stage = tmp_path / "stage"
    stage.mkdir()
    ctx = Context(recipe=r, source=RECIPE, root=RootFS(tmp_path / "root"), work=tmp_path, stage=stage,
                  epoch=1700000000, family=family_of(r.distro))
    return xen.produce(ctx, dataclasses.replace(r.targets.xen, **changes))


DEBIAN = {"6.1.0-9-amd64": "initrd.img-6.1.0-9-amd64", "6.1.0-10-amd64": "initrd.img-6.1.0-10-amd64"}
EL5 = {"2.6.18-419.el5xen": "initrd-2.6.18-419.el5xen.img", "2.6.18-419.el5": "initrd-2.6.18-419.el5.img"}


def test_find_kernels_newest_first_xen_flavour_first(tmp_path):
    make_tree(tmp_path, {**DEBIAN, "6.1.0-2-amd64": "", "5.10.0-30-rescue": ""})
    found = xen.find_kernels(tmp_path / "boot")
    assert [k.version for k in found] == ["6.1.0-10-amd64", "6.1.0-9-amd64", "6.1.0-2-amd64", "5.10.0-30-rescue"]
    assert found[0].initrd == "/boot/initrd.img-6.1.0-10-amd64" and found[2].initrd is None
    el = tmp_path / "el"
    make_tree(el, {**EL5, "2.6.18-420.el5": "initrd-2.6.18-420.el5.img"})
    assert [k.version for k in xen.find_kernels(el / "boot")][0] == "2.6.18-419.el5xen"


@pytest.mark.root
@needs_xl
def test_pygrub_image_from_a_tree(tmp_path):
    make_tree(tmp_path / "root", DEBIAN)
    made = produce(tmp_path, load())
    assert set(made) == {"xen-config", "xen-image"}
    img, cfg_file = made["xen-image"], made["xen-config"]
    assert img.name == "xenguest.img" and cfg_file.name == "xenguest.cfg"
    cfg = xl.parse(cfg_file.read_text())
    assert cfg.string("bootloader") == "pygrub"
    assert cfg.strings("disk") == ["format=raw, vdev=xvda, access=rw, target=/var/lib/xen/images/xenguest.img"]
    subprocess.run(["e2fsck", "-fn", str(img)], check=True, capture_output=True)
    assert fs_type(img) == "ext4"
    menu = debugfs_cat(img, "/boot/grub/menu.lst")
    assert "kernel /boot/vmlinuz-6.1.0-10-amd64 root=/dev/xvda ro console=hvc0\n" in menu
    assert "initrd /boot/initrd.img-6.1.0-10-amd64\n" in menu
    grub2 = debugfs_cat(img, "/boot/grub/grub.cfg")
    assert "\tlinux /boot/vmlinuz-6.1.0-10-amd64 root=/dev/xvda ro console=hvc0\n" in grub2
    assert debugfs_cat(img, "/boot/vmlinuz-6.1.0-10-amd64").startswith("KERNEL 6.1.0-10-amd64")
    fstab = debugfs_cat(img, "/etc/fstab")
    assert re.search(rf"^LABEL={fs_label(img)}\s+/\s+ext4\s", fstab, re.M)
    assert not (tmp_path / "root" / "boot" / "grub").exists()    # the tree is left as it was


@pytest.mark.root
def test_el5_tree_gets_xvc0_ext3_and_securetty(tmp_path):
    make_tree(tmp_path / "root", EL5, securetty="console\ntty1\n")
    r = load("distro=centos", "release=\"5.11\"", "arch=x86_64", "bootstrap.mirror=https://vault.centos.org/5.11",
             "bootstrap.release_package=centos-release", "bootstrap.variant=null", "init=none",
             "bootstrap.packages=[kernel-xen]")
    made = produce(tmp_path, r, toolstack="xm")
    img = made["xen-image"]
    assert fs_type(img) == "ext3"          # Xen 3's pygrub and EL5's kernel read no ext4
    menu = debugfs_cat(img, "/boot/grub/menu.lst")
    assert "kernel /boot/vmlinuz-2.6.18-419.el5xen root=/dev/xvda ro console=xvc0\n" in menu
    assert "initrd /boot/initrd-2.6.18-419.el5xen.img\n" in menu
    assert debugfs_cat(img, "/etc/securetty").split() == ["console", "tty1", "xvc0"]
    cfg = xenconf.read_xm(made["xen-config"].read_text())
    assert cfg.get("bootloader") == "/usr/bin/pygrub"
    assert cfg.get("disk") == ["file:/var/lib/xen/images/xenguest.img,xvda,w"]


def test_no_kernel_names_the_recipe_key(tmp_path):
    make_tree(tmp_path / "root", {})
    with pytest.raises(InputError) as e:
        produce(tmp_path, load())
    assert "targets.xen.boot is pygrub" in e.value.message and "no kernel in /boot" in e.value.message
    assert "bootstrap.packages" in e.value.hint and "linux-image-amd64" in e.value.hint
    assert not list((tmp_path / "stage").iterdir())


@pytest.mark.root
@needs_pygrub
def test_xens_pygrub_boots_what_the_image_names(tmp_path):
    """Xen's own pygrub, run on the image without a hypervisor: it picks grub.cfg, copies out the kernel and
    initrd the config names, with its arguments; with grub.cfg gone it reads menu.lst the same way."""
    make_tree(tmp_path / "root", DEBIAN)
    img = produce(tmp_path, load(), extra="quiet")["xen-image"]
    got = run_pygrub(img, tmp_path / "out1")
    assert got["parser"] == "Grub2ConfigFile" and got["config"] == "/boot/grub/grub.cfg"
    assert got["kernel"] == (tmp_path / "root/boot/vmlinuz-6.1.0-10-amd64").read_bytes()
    assert got["ramdisk"] == (tmp_path / "root/boot/initrd.img-6.1.0-10-amd64").read_bytes()
    assert got["args"] == "root=/dev/xvda ro console=hvc0 quiet"

    old = tmp_path / "menu-only.img"
    shutil.copyfile(img, old)
    subprocess.run(["debugfs", "-w", "-R", "rm /boot/grub/grub.cfg", str(old)], check=True, capture_output=True)
    got = run_pygrub(old, tmp_path / "out2")
    assert got["parser"] == "GrubConfigFile" and got["config"] == "/boot/grub/menu.lst"
    assert got["kernel"] == (tmp_path / "root/boot/vmlinuz-6.1.0-10-amd64").read_bytes()
    assert got["args"] == "root=/dev/xvda ro console=hvc0 quiet"

    # --isconfig: pygrub's own parser on the grub.cfg file alone
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(debugfs_cat(img, "/boot/grub/grub.cfg"))
    r = subprocess.run([PYGRUB, "-q", "--isconfig", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "kernel: /boot/vmlinuz-6.1.0-10-amd64" in r.stdout
    assert "initrd: /boot/initrd.img-6.1.0-10-amd64" in r.stdout


def run_pygrub(img: Path, out: Path) -> dict:
    out.mkdir()
    r = subprocess.run([PYGRUB, "-q", "--output-format=simple", f"--output-directory={out}", str(img)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    fields = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    m = re.search(r"Using <class 'grub\.GrubConf\.(\w+)'> to parse (\S+)", r.stderr)
    return {"parser": m.group(1), "config": m.group(2), "args": fields.get("args", "").strip(),
            "kernel": Path(fields["kernel"]).read_bytes(),
            "ramdisk": Path(fields["ramdisk"]).read_bytes() if "ramdisk" in fields else None}


# ------------------------------------------------------------------ a real build


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
@needs_xl
def test_debian_xen_guest_build(tmp_path):
    """A Debian 12 guest with linux-image-amd64 (about 70 MB from the mirror; about a minute in all)."""
    out = tmp_path / "out"
    r = imgbuild(RECIPE, "-o", out, "--keep-tree", timeout=1200)
    assert r.returncode == 0, r.stderr
    guest, tree = out / "xenguest", out / "xenguest.rootfs"
    img, cfg_file = guest / "xenguest.img", guest / "xenguest.cfg"
    assert cfg_file.read_text() == (DATA / "xl.cfg").read_text()
    cfg = xl.parse(cfg_file.read_text())
    assert (cfg.string("name"), cfg.long("memory"), cfg.long("vcpus")) == ("xenguest", 512, 1)
    assert cfg.string("bootloader") == "pygrub"
    assert cfg.strings("vif") == ["mac=00:16:3e:00:03:20,bridge=xenbr0"]
    for spec in cfg.strings("disk"):
        assert xl.check_disk(spec) is None

    fsck = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    boot = debugfs_ls(img, "/boot")
    kernels = [n for n in boot if n.startswith("vmlinuz-")]
    assert len(kernels) == 1, boot
    version = kernels[0][len("vmlinuz-"):]
    assert f"initrd.img-{version}" in boot
    assert version == xen.find_kernels(tree / "boot")[0].version
    menu = debugfs_cat(img, "/boot/grub/menu.lst")
    assert f"kernel /boot/vmlinuz-{version} root=/dev/xvda ro console=hvc0" in menu
    assert f"initrd /boot/initrd.img-{version}" in menu
    assert f"linux /boot/vmlinuz-{version} " in debugfs_cat(img, "/boot/grub/grub.cfg")

    label = fs_label(img)
    assert label == "root"
    fstab = [line.split() for line in debugfs_cat(img, "/etc/fstab").splitlines() if line and line[0] != "#"]
    assert ["LABEL=root", "/", "ext4"] == fstab[0][:3]
    assert debugfs_cat(img, "/etc/hostname").strip() == "xenguest"

    import json

    manifest = json.loads((guest / "manifest.json").read_text())
    assert {a["kind"]: a["path"] for a in manifest["artifacts"]} == {"xen-config": "xenguest.cfg",
                                                                     "xen-image": "xenguest.img",
                                                                     "sbom": "xenguest.spdx.json"}
    if PYGRUB:
        got = run_pygrub(img, tmp_path / "pygrub")
        assert got["kernel"] == (tree / "boot" / f"vmlinuz-{version}").read_bytes()
        assert got["ramdisk"] == (tree / "boot" / f"initrd.img-{version}").read_bytes()
        assert got["args"] == "root=/dev/xvda ro console=hvc0"
    assert os.path.getsize(img) % (64 << 20) == 0
