"""The identity engine below the CLI: plan/apply on a tree, the two Tree kinds (a directory and an unmounted ext4
image read and written with debugfs), and clone/reidentify on every guest kind (Xen .cfg + image, an imgbuild
output directory, a plain root directory). Nothing here boots a guest (tests/identity/test_clone_lxc.py does).

The small guests (make_root, make_container, tree_state ...) come from tests/support/guests.py. Every test points
the inventory into its own tmp_path (IMGBUILD_INVENTORY and Where), and looks for other guests only in tmp_path
directories, so the host's inventory and guest configs are never read or written.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from builder.build.targets import image as img
from builder.core.errors import BuilderError, InputError
from builder.guestconf import xen as xenconf
from builder.identity import engine, inventory
from builder.identity import reidentify as rid
from builder.identity.guest import locate, open_tree
from builder.identity.tree import DirTree, ImageTree, Meta
from tests.support.guests import (
    EPOCH,
    MACHINE_ID,
    OLD_HOST,
    OLD_MAC,
    debugfs_cat,
    file_sha,
    fsck,
    hosts,
    interfaces,
    make_container,
    make_root,
    state_diff,
    tree_state,
)

# ================================================================== helpers


def where(tmp_path: Path) -> rid.Where:
    """Everything the engine looks at, inside tmp_path."""
    return rid.Where(inventory_file=str(tmp_path / "inventory.yml"), lxcpath=str(tmp_path / "lxc"),
                     xen_dir=str(tmp_path / "xen"), vz_dir=str(tmp_path / "vz"))


def make_request(hostname=None, ips=(), macs=(), **kw) -> engine.Request:
    return engine.Request(hostname=hostname, ips=tuple(engine.parse_ip(i) for i in ips),
                          macs=tuple(engine.parse_mac(m) for m in macs), **kw)


@pytest.fixture(autouse=True)
def _own_inventory(tmp_path, monkeypatch):
    """No test here may touch the host's inventory, even through a default."""
    monkeypatch.setenv(inventory.ENV_VAR, str(tmp_path / "inventory.yml"))


# ================================================================== plan / apply on a directory tree


NEW_MAC = "00:16:3e:00:03:11"
REQ = dict(hostname="web1", ips=("10.0.3.2=10.0.3.11",), macs=(f"{OLD_MAC}={NEW_MAC}",))


def no_alloc(n: int) -> list[str]:
    raise AssertionError("the engine allocated a MAC although every MAC was given")


@pytest.mark.root
def test_plan_writes_nothing_and_apply_writes_exactly_the_plan(tmp_path):
    cdir = make_container(tmp_path / "lxc", "vm0", OLD_HOST, keys=True)
    before = tree_state(cdir)
    old_pubs = {p.name: p.read_text() for p in (cdir / "rootfs/etc/ssh").glob("*.pub")}
    tree = DirTree(cdir / "rootfs", "rootfs")
    p = engine.plan(tree, make_request(**REQ), no_alloc, ("lxc", cdir / "config"))
    assert tree_state(cdir) == before, "plan() changed the guest"

    where_ = sorted(e.where for e in p.edits)
    expected = {"rootfs:/etc/hostname", "rootfs:/etc/hosts", "rootfs:/etc/network/interfaces",
                f"config:{cdir / 'config'}", "rootfs:/etc/machine-id", "rootfs:/var/lib/dbus/machine-id",
                "rootfs:/var/lib/dhcp/dhclient.eth0.leases", "rootfs:/etc/ssh/ssh_host_rsa_key",
                "rootfs:/etc/ssh/ssh_host_ecdsa_key", "rootfs:/etc/ssh/ssh_host_ed25519_key"}
    assert set(where_) == expected, where_
    assert len(where_) == len(expected), f"an edit planned twice: {where_}"
    assert p.new_macs == {OLD_MAC: NEW_MAC}

    assert engine.apply(p) == len(expected)
    r = cdir / "rootfs"
    assert (r / "etc/hostname").read_text() == "web1\n"
    assert (r / "etc/hosts").read_text() == hosts("10.0.3.11", "web1")
    assert (r / "etc/network/interfaces").read_text() == interfaces("10.0.3.11", NEW_MAC)
    cfg = (cdir / "config").read_text()
    assert "lxc.uts.name = web1\n" in cfg and f"lxc.net.0.hwaddr = {NEW_MAC}\n" in cfg and OLD_MAC not in cfg
    assert (r / "etc/machine-id").read_bytes() == b""
    assert not (r / "var/lib/dbus/machine-id").exists()
    assert not (r / "var/lib/dhcp/dhclient.eth0.leases").exists()
    for name, old in old_pubs.items():
        new = (r / "etc/ssh" / name).read_text()
        assert new != old and new.rstrip().endswith("root@web1 (imgbuild)"), name
        assert stat.S_IMODE((r / "etc/ssh" / name.removesuffix(".pub")).stat().st_mode) == 0o600
    # what the plan did not name was not touched
    changed = state_diff(before, tree_state(cdir))
    allowed = {"config", "rootfs/etc/hostname", "rootfs/etc/hosts", "rootfs/etc/network/interfaces",
               "rootfs/etc/machine-id", "rootfs/var/lib/dbus/machine-id", "rootfs/var/lib/dhcp/dhclient.eth0.leases",
               "rootfs/etc", "rootfs/etc/network", "rootfs/etc/ssh", "rootfs/var/lib/dbus", "rootfs/var/lib/dhcp", "."}
    allowed |= {f"rootfs/etc/ssh/{n}" for n in os.listdir(r / "etc/ssh")}
    assert set(changed) <= allowed, set(changed) - allowed


@pytest.mark.root
@pytest.mark.parametrize("kind", ["dir", "image"])
def test_the_emptied_machine_id_keeps_its_mode_and_owner(tmp_path, kind):
    """systemd ships /etc/machine-id 0444 root; emptying it must not take the mode or owner of another file
    (here: the DHCP lease the same reset removes, 0644 and owned by uid 100)."""
    root = make_root(tmp_path / "root")
    os.chown(root / "var/lib/dhcp/dhclient.eth0.leases", 100, 101)
    if kind == "dir":
        tree = DirTree(root)
    else:
        tree = ImageTree(img.make_image(root, tmp_path / "vm0.ext4", img.ImageOptions(fstab=False), EPOCH))
    assert tree.meta("/etc/machine-id") == Meta(stat.S_IFREG | 0o444, 0, 0)
    engine.apply(engine.plan(tree, make_request(**REQ), no_alloc))
    assert tree.read("/etc/machine-id") == b""
    assert tree.meta("/var/lib/dhcp/dhclient.eth0.leases") is None
    assert tree.meta("/etc/machine-id") == Meta(stat.S_IFREG | 0o444, 0, 0)


@pytest.mark.root
def test_a_second_plan_of_the_same_request_is_empty(tmp_path):
    cdir = make_container(tmp_path / "lxc", "vm0", keys=True)
    tree = DirTree(cdir / "rootfs", "rootfs")
    engine.apply(engine.plan(tree, make_request(**REQ), no_alloc, ("lxc", cdir / "config")))
    again = engine.plan(tree, make_request(**REQ), no_alloc, ("lxc", cdir / "config"))
    assert again.edits == [], again.diff()


@pytest.mark.root
def test_plan_diff_is_a_unified_diff_of_each_edit_and_hides_keys(tmp_path):
    cdir = make_container(tmp_path / "lxc", "vm0", keys=True)
    key = (cdir / "rootfs/etc/ssh/ssh_host_ed25519_key").read_text()
    p = engine.plan(DirTree(cdir / "rootfs", "rootfs"), make_request(**REQ), no_alloc, ("lxc", cdir / "config"))
    d = p.diff()
    assert "--- rootfs:/etc/hostname\n+++ rootfs:/etc/hostname\n@@ -1 +1 @@\n-vm0\n+web1\n" in d
    assert f"-    hwaddress ether {OLD_MAC}\n+    hwaddress ether {NEW_MAC}\n" in d
    assert f"-lxc.net.0.hwaddr = {OLD_MAC}\n+lxc.net.0.hwaddr = {NEW_MAC}\n" in d
    assert "-lxc.uts.name = vm0\n+lxc.uts.name = web1\n" in d
    assert f"-{MACHINE_ID}" in d
    assert "--- rootfs:/etc/ssh/ssh_host_ed25519_key\n" in d and "not shown" in d
    assert key.splitlines()[1] not in d, "private key material in the diff"


@pytest.mark.root
def test_mac_auto_allocates_macs_no_known_guest_has(tmp_path):
    cdir = make_container(tmp_path / "lxc", "vm0")
    asked = []

    def allocate(n):
        asked.append(n)
        return ["00:16:3e:7a:00:01"][:n]
    p = engine.plan(DirTree(cdir / "rootfs"), make_request(hostname="web1", mac_auto=True), allocate,
                    ("lxc", cdir / "config"))
    assert asked == [1], "one MAC (interfaces and config carry the same one) must be allocated once"
    assert p.new_macs == {OLD_MAC: "00:16:3e:7a:00:01"}


@pytest.mark.root
def test_the_same_plan_on_a_directory_and_on_its_image(tmp_path):
    """DirTree and ImageTree are interchangeable under the engine: the same request plans the same edits."""
    root = make_root(tmp_path / "root", keys=True)
    image = img.make_image(root, tmp_path / "vm0.ext4", img.ImageOptions(fstab=False), EPOCH)
    d = engine.plan(DirTree(root, "t"), make_request(**REQ), no_alloc)
    i = engine.plan(ImageTree(image, "t"), make_request(**REQ), no_alloc)
    assert [(e.where, e.old, e.new, e.secret) for e in d.edits] == [(e.where, e.old, e.new, e.secret) for e in i.edits]


@pytest.mark.root
def test_apply_on_an_image_edits_it_without_mounting(tmp_path):
    root = make_root(tmp_path / "root", keys=True)
    image = img.make_image(root, tmp_path / "vm0.ext4", img.ImageOptions(fstab=False), EPOCH)
    old_pub = debugfs_cat(image, "/etc/ssh/ssh_host_ed25519_key.pub")
    mounts = Path("/proc/self/mountinfo").read_text()
    tree = ImageTree(image, "image")
    engine.apply(engine.plan(tree, make_request(**REQ), no_alloc))
    assert Path("/proc/self/mountinfo").read_text() == mounts
    assert debugfs_cat(image, "/etc/hostname") == "web1\n"
    assert debugfs_cat(image, "/etc/network/interfaces") == interfaces("10.0.3.11", NEW_MAC)
    assert debugfs_cat(image, "/etc/machine-id") == ""
    assert tree.meta("/var/lib/dhcp/dhclient.eth0.leases") is None
    new_pub = debugfs_cat(image, "/etc/ssh/ssh_host_ed25519_key.pub")
    assert new_pub != old_pub and new_pub.rstrip().endswith("root@web1 (imgbuild)")
    assert tree.meta("/etc/ssh/ssh_host_ed25519_key") == Meta(0o100600, 0, 0)
    assert fsck(image).returncode == 0, fsck(image).stdout
    assert engine.plan(tree, make_request(**REQ), no_alloc).edits == []


# ================================================================== tree.py: DirTree and ImageTree


@pytest.fixture
def small_tree(tmp_path) -> tuple[Path, Path]:
    """A small tree of every kind of entry, and its ext4 image (made by the image target's make_image)."""
    r = tmp_path / "root"
    for d in ("etc/sub", "etc/real", "dev", "var/empty"):
        (r / d).mkdir(parents=True)
    (r / "etc/hostname").write_bytes(b"vm0\n")
    (r / "etc/secret").write_bytes(b"s\x00\xff\n")
    os.chown(r / "etc/secret", 1000, 33)
    os.chmod(r / "etc/secret", 0o640)
    (r / "etc/empty").write_bytes(b"")
    (r / "etc/with space").write_bytes(b"x\n")
    (r / "etc/real/f").write_bytes(b"in real\n")
    os.symlink("real", r / "etc/alt")
    os.symlink("/etc/hostname", r / "etc/hn")
    os.symlink("/nowhere", r / "etc/dangling")
    os.mknod(r / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(r / "dev/loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(r / "etc/fifo")
    os.chmod(r / "dev/null", 0o666)
    os.chmod(r / "etc/fifo", 0o640)
    os.chmod(r / "etc/sub", 0o750)
    os.chown(r / "etc/sub", 0, 4)
    image = img.make_image(r, tmp_path / "small.ext4", img.ImageOptions(fstab=False), EPOCH)
    return r, image


TREE_PATHS = ["/", "/etc", "/etc/hostname", "/etc/secret", "/etc/empty", "/etc/with space", "/etc/alt",
              "/etc/alt/f", "/etc/real/f", "/etc/hn", "/etc/dangling", "/etc/sub", "/var/empty", "/dev/null",
              "/dev/loop0", "/etc/fifo", "/nope", "/etc/nope", "/etc/hostname/x", "/nope/deeper"]


@pytest.mark.root
@pytest.mark.parametrize("path", TREE_PATHS)
def test_dirtree_and_imagetree_answer_alike(small_tree, path):
    root, image = small_tree
    d, i = DirTree(root), ImageTree(image)
    assert d.read(path) == i.read(path)
    assert d.meta(path) == i.meta(path)
    listing = [n for n in i.listdir(path) if not (path == "/" and n == "lost+found")]   # mke2fs makes it
    assert d.listdir(path) == listing


@pytest.mark.root
def test_tree_answers_are_the_entries(small_tree):
    """Not only alike, but right (a Tree that answered None everywhere would pass the test above)."""
    root, image = small_tree
    for t in (DirTree(root), ImageTree(image)):
        assert t.read("/etc/secret") == b"s\x00\xff\n"
        assert t.meta("/etc/secret") == Meta(stat.S_IFREG | 0o640, 1000, 33)
        assert t.read("/etc/alt/f") == b"in real\n"          # a symlinked directory on the way is followed
        assert t.read("/etc/hn") is None                      # a symlink is not a file to edit
        assert t.meta("/etc/hn") is not None and stat.S_ISLNK(t.meta("/etc/hn").mode)
        assert t.meta("/etc/sub") == Meta(stat.S_IFDIR | 0o750, 0, 4)
        assert t.listdir("/etc/real") == ["f"]
        assert t.read("/etc") is None and t.listdir("/etc/hostname") == []
        assert t.meta("/nope") is None and t.read("/nope") is None and t.listdir("/nope") == []


@pytest.mark.root
@pytest.mark.parametrize("kind", ["dir", "image"])
def test_write_keeps_mode_and_owner_of_the_file_it_replaces(small_tree, kind):
    root, image = small_tree
    t = DirTree(root) if kind == "dir" else ImageTree(image)
    t.write("/etc/secret", b"replaced\n")
    assert t.read("/etc/secret") == b"replaced\n"
    assert t.meta("/etc/secret") == Meta(stat.S_IFREG | 0o640, 1000, 33)
    t.write("/etc/new", b"n\n", Meta(stat.S_IFREG | 0o600, 5, 6))
    assert t.meta("/etc/new") == Meta(stat.S_IFREG | 0o600, 5, 6) and t.read("/etc/new") == b"n\n"
    t.write("/etc/plain", b"p\n")
    assert t.meta("/etc/plain") == Meta(stat.S_IFREG | 0o644, 0, 0)
    t.remove("/etc/plain")
    assert t.meta("/etc/plain") is None and "plain" not in t.listdir("/etc")
    t.remove("/etc/plain")        # removing what is gone is no error
    if kind == "image":
        assert fsck(image).returncode == 0, fsck(image).stdout


@pytest.mark.root
def test_imagetree_write_into_a_missing_directory_is_a_builder_error(small_tree):
    _, image = small_tree
    t = ImageTree(image)
    with pytest.raises(BuilderError) as e:
        t.write("/no/such/dir/file", b"x\n")
    assert image.name in e.value.message and "write" in e.value.message
    assert t.meta("/no") is None and t.meta("/no/such/dir/file") is None
    assert fsck(image).returncode == 0, fsck(image).stdout


@pytest.mark.root
def test_imagetree_write_replaces_a_symlink_by_a_file_as_dirtree_does(small_tree):
    root, image = small_tree
    for t in (DirTree(root), ImageTree(image)):
        t.write("/etc/hn", b"now a file\n")
        assert stat.S_ISREG(t.meta("/etc/hn").mode) and t.read("/etc/hn") == b"now a file\n"
    assert (root / "etc/hostname").read_bytes() == b"vm0\n", "the write followed the link"
    assert debugfs_cat(image, "/etc/hostname") == "vm0\n", "the write followed the link"


# ================================================================== locate / open_tree


@pytest.mark.root
def test_locate_knows_every_kind(tmp_path):
    lxcpath = tmp_path / "lxc"
    cdir = make_container(lxcpath, "vm0")
    root = make_root(tmp_path / "plain")
    image = img.make_image(root, tmp_path / "disk.ext4", img.ImageOptions(fstab=False), EPOCH)
    cfg = tmp_path / "xen" / "vm0.cfg"
    cfg.parent.mkdir()
    cfg.write_text(f'name = "vm0"\ndisk = [ "format=raw, vdev=xvda, access=rw, target={image}" ]\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"name": "debian12", "artifacts": []}))

    g = locate(str(cdir))
    assert (g.kind, g.name, g.where, g.config) == ("lxc", "vm0", f"lxc:{cdir}", ("lxc", cdir / "config"))
    assert locate("lxc:vm0", str(lxcpath)).where == f"lxc:{cdir}"
    g = locate(str(cfg))
    assert (g.kind, g.name, g.image, g.config) == ("xen", "vm0", image, ("xen", cfg))
    g = locate(str(image))
    assert (g.kind, g.image, g.config) == ("image", image, None)
    assert locate(str(root)).kind == "rootfs"
    assert locate(str(out)).kind == "output" and locate(str(out)).name == "debian12"
    (tmp_path / "junk").write_text("not a guest\n")
    for bad in (tmp_path / "junk", tmp_path / "missing"):
        with pytest.raises(InputError):
            locate(str(bad))
    with open_tree(locate(str(cfg))) as t:
        assert t.read("/etc/hostname") == b"vm0\n"


# ================================================================== other guest kinds: Xen


def xen_cfg(path: Path, image: Path, name: str = "vm0", mac: str = OLD_MAC) -> Path:
    path.write_text(f'# a PV guest\nname = "{name}"\nmemory = 512\nbootloader = "pygrub"\n'
                    f'disk = [ "format=raw, vdev=xvda, access=rw, target={image}" ]\n'
                    f'vif = [ "mac={mac},bridge=xenbr0" ]\n')
    return path


@pytest.mark.root
def test_clone_a_xen_guest_copies_its_image_and_gives_both_a_new_identity(tmp_path):
    xdir = tmp_path / "xen"
    xdir.mkdir()
    root = make_root(tmp_path / "root", keys=True)
    image = img.make_image(root, xdir / "vm0.img", img.ImageOptions(), EPOCH)
    cfg = xen_cfg(xdir / "vm0.cfg", image)
    cfg_before, img_before = cfg.read_bytes(), file_sha(image)
    old_pub = debugfs_cat(image, "/etc/ssh/ssh_host_ed25519_key.pub")
    w = where(tmp_path)

    o = rid.clone(str(cfg), "vmX", make_request(ips=("10.0.3.2=10.0.3.31",)), w)

    new_cfg, new_img = xdir / "vmX.cfg", xdir / "vmX.img"
    assert o.applied and o.guest.kind == "xen" and o.guest.path == new_cfg.resolve()
    assert new_cfg.is_file() and new_img.is_file()
    new_mac = o.plan.new_macs[OLD_MAC]
    assert re.fullmatch(r"00:16:3e:[0-7][0-9a-f](:[0-9a-f]{2}){2}", new_mac) and new_mac != OLD_MAC
    text = new_cfg.read_text()
    cfg_read = xenconf.read_xm(text)
    assert cfg_read.get("name") == "vmX"
    assert cfg_read.get("disk") == [f"format=raw, vdev=xvda, access=rw, target={new_img}"]
    assert cfg_read.get("vif") == [f"mac={new_mac},bridge=xenbr0"]
    assert text.startswith("# a PV guest\n") and "memory = 512\n" in text
    # the original is as it was
    assert cfg.read_bytes() == cfg_before and file_sha(image) == img_before
    # the copy is sparse, a whole filesystem, and re-identified inside
    st = new_img.stat()
    assert st.st_size == image.stat().st_size and st.st_blocks * 512 < st.st_size
    assert fsck(new_img).returncode == 0, fsck(new_img).stdout
    assert debugfs_cat(new_img, "/etc/hostname") == "vmX\n"
    assert debugfs_cat(new_img, "/etc/network/interfaces") == interfaces("10.0.3.31", new_mac)
    assert debugfs_cat(new_img, "/etc/hosts") == hosts("10.0.3.31", "vmX")
    assert debugfs_cat(new_img, "/etc/machine-id") == ""
    new_pub = debugfs_cat(new_img, "/etc/ssh/ssh_host_ed25519_key.pub")
    assert new_pub != old_pub and "root@vmX (imgbuild)" in new_pub
    # recorded, and found again by discovery
    inv = inventory.load(w.inventory_file)
    rec = inv.at(f"xen:{new_cfg.resolve()}")
    assert rec is not None and rec.macs == (new_mac,) and rec.ips == ("10.0.3.31",) and rec.hostname == "vmX"
    found = {g.name: g for g in inventory.scan_xen(xdir)}
    assert found["vmX"].macs == (new_mac,) and found["vm0"].macs == (OLD_MAC,)


@pytest.mark.root
def test_a_second_xen_clone_takes_neither_the_first_clones_mac_nor_its_name(tmp_path):
    xdir = tmp_path / "xen"
    xdir.mkdir()
    image = img.make_image(make_root(tmp_path / "root"), xdir / "vm0.img", img.ImageOptions(), EPOCH)
    cfg = xen_cfg(xdir / "vm0.cfg", image)
    w = where(tmp_path)
    a = rid.clone(str(cfg), "vmX", make_request(ips=("10.0.3.2=10.0.3.31",)), w)
    with pytest.raises(InputError) as e:
        rid.clone(str(cfg), "vmY", make_request(ips=("10.0.3.2=10.0.3.31",)), w)
    assert "vmY" in e.value.message and "vmX" in e.value.message
    assert not (xdir / "vmY.cfg").exists() and not (xdir / "vmY.img").exists()
    b = rid.clone(str(cfg), "vmY", make_request(ips=("10.0.3.2=10.0.3.32",)), w)
    macs = {OLD_MAC, a.plan.new_macs[OLD_MAC], b.plan.new_macs[OLD_MAC]}
    assert len(macs) == 3


@pytest.mark.root
def test_a_xen_clone_does_not_keep_the_originals_uuid(tmp_path):
    """xl refuses a second domain with a UUID already running, and tools key domains by it (formats.py leaves
    uuid= to the clone)."""
    xdir = tmp_path / "xen"
    xdir.mkdir()
    image = img.make_image(make_root(tmp_path / "root"), xdir / "vm0.img", img.ImageOptions(), EPOCH)
    cfg = xen_cfg(xdir / "vm0.cfg", image)
    uuid = "5b2e8a7c-3f44-4d0e-9a55-6f0f1c2d3e4f"
    with open(cfg, "a") as f:
        f.write(f'uuid = "{uuid}"\n')
    rid.clone(str(cfg), "vmX", make_request(ips=("10.0.3.2=10.0.3.31",)), where(tmp_path))
    assert uuid not in (xdir / "vmX.cfg").read_text()


# ================================================================== other guest kinds: a plain root directory


@pytest.mark.root
def test_reidentify_and_clone_a_plain_root_directory(tmp_path):
    root = make_root(tmp_path / "guests" / "vm0", keys=True)
    w = where(tmp_path)
    before = tree_state(root)

    o = rid.clone(str(root), str(tmp_path / "guests" / "web2"), make_request(ips=("10.0.3.2=10.0.3.12",)), w)
    copy = tmp_path / "guests" / "web2"
    assert o.guest.kind == "rootfs" and o.guest.path == copy
    assert tree_state(root) == before, "clone changed its source"
    mac = o.plan.new_macs[OLD_MAC]
    assert (copy / "etc/hostname").read_text() == "web2\n"
    assert (copy / "etc/network/interfaces").read_text() == interfaces("10.0.3.12", mac)
    assert (copy / "home/ann/.profile").stat().st_uid == 1000
    assert stat.S_ISCHR((copy / "dev/null").lstat().st_mode) and os.readlink(copy / "etc/mtab") == "/proc/self/mounts"
    assert (copy / "etc/ssh/ssh_host_rsa_key.pub").read_text() != (root / "etc/ssh/ssh_host_rsa_key.pub").read_text()

    g = locate(str(root))
    o = rid.reidentify(g, make_request(hostname="db1", ips=("10.0.3.2=10.0.3.13",),
                                       macs=(f"{OLD_MAC}=00:16:3e:00:03:13",)),
                       w)
    assert o.applied
    assert (root / "etc/hostname").read_text() == "db1\n"
    assert (root / "etc/hosts").read_text() == hosts("10.0.3.13", "db1")
    assert (root / "etc/network/interfaces").read_text() == interfaces("10.0.3.13", "00:16:3e:00:03:13")
    names = {g.name for g in inventory.load(w.inventory_file).guests}
    assert names == {"web2", "vm0"}


# ================================================================== other guest kinds: an imgbuild output directory


def tar_cat(tarball: Path, member: str) -> bytes:
    return subprocess.run(["tar", "-xOf", str(tarball), f"./{member.lstrip('/')}"], capture_output=True,
                          check=True).stdout


def tar_has(tarball: Path, member: str) -> bool:
    r = subprocess.run(["tar", "-tf", str(tarball), f"./{member.lstrip('/')}"], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def output_copy(debian12_build, tmp_path) -> Path:
    """A copy of the session build's output directory (the build itself must stay as built)."""
    dest = tmp_path / "out" / "debian12"
    shutil.copytree(debian12_build, dest)
    return dest


OUT_REQ = dict(hostname="web1", ips=("10.0.3.2=10.0.3.41",), macs=(f"{OLD_MAC}=00:16:3e:00:03:41",))


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_reidentify_an_output_repacks_its_tarball_reproducibly(output_copy, tmp_path):
    manifest = json.loads((output_copy / "manifest.json").read_text())
    tar_entry = next(a for a in manifest["artifacts"] if a["kind"] == "tarball")
    tarball = output_copy / tar_entry["path"]
    original = file_sha(tarball)
    assert tar_entry["sha256"] == original
    parent_before = sorted(os.listdir(output_copy.parent))
    w = where(tmp_path)

    o = rid.reidentify(locate(str(output_copy)), make_request(**OUT_REQ), w)
    assert o.applied and o.guest.kind == "output"
    first = file_sha(tarball)
    assert first != original
    manifest = json.loads((output_copy / "manifest.json").read_text())
    tar_entry = next(a for a in manifest["artifacts"] if a["kind"] == "tarball")
    assert tar_entry["sha256"] == first and tar_entry["size"] == tarball.stat().st_size
    assert tar_cat(tarball, "/etc/hostname") == b"web1\n"
    assert tar_cat(tarball, "/etc/network/interfaces").decode() == interfaces("10.0.3.41", "00:16:3e:00:03:41")
    assert b"10.0.3.41\tweb1\n" in tar_cat(tarball, "/etc/hosts")
    assert tar_has(tarball, "/etc/hello") and tar_cat(tarball, "/etc/hello") == b"hello\n"
    assert sorted(os.listdir(output_copy.parent)) == parent_before, "a temporary unpack dir was left behind"
    manifest_bytes = (output_copy / "manifest.json").read_bytes()

    o2 = rid.reidentify(locate(str(output_copy)), make_request(**OUT_REQ), w)
    assert o2.plan.edits == [], o2.plan.diff()
    assert file_sha(tarball) == first, "the repack of an unchanged tree is not byte-identical"
    assert (output_copy / "manifest.json").read_bytes() == manifest_bytes


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_reidentify_an_output_also_rewrites_its_guest_configs(output_copy, tmp_path):
    """The output's lxc.conf is what `imgbuild install-lxc` installs: if it kept the old MAC and name, every
    container installed from the re-identified output would come up with the original's MAC (seed 004)."""
    rid.reidentify(locate(str(output_copy)), make_request(**OUT_REQ), where(tmp_path))
    conf = (output_copy / "lxc.conf").read_text()
    assert OLD_MAC not in conf, conf
    assert "lxc.net.0.hwaddr = 00:16:3e:00:03:41" in conf
    assert "lxc.uts.name = web1" in conf
    manifest = json.loads((output_copy / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        assert a["sha256"] == file_sha(output_copy / a["path"]), a["path"]
    assert manifest["hostname"] == "web1"
