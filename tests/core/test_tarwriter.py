"""The tar writer: GNU tar must read back exactly the tree (owners, modes, devices, links, xattrs), in
`tar --sort=name` order, with mtimes clamped, and the same bytes every time."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tarfile

import pytest

from builder.core import tarwriter

EPOCH = 1_700_000_000
# security.capability for cap_net_raw=ep (VFS_CAP_REVISION_2)
CAP_NET_RAW = bytes([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    (t / "etc").mkdir(parents=True)
    (t / "usr/bin").mkdir(parents=True)
    (t / "dev").mkdir()
    (t / "tmp").mkdir(mode=0o1777)
    os.chmod(t / "tmp", 0o1777)
    (t / "etc/hostname").write_text("vm0\n")
    (t / "etc/B-upper").write_text("sorted bytewise: uppercase before lowercase\n")
    big = os.urandom(300_000)
    (t / "usr/bin/big").write_bytes(big)
    os.chmod(t / "usr/bin/big", 0o4755)
    os.link(t / "usr/bin/big", t / "usr/bin/big-hardlink")
    os.symlink("../etc/hostname", t / "usr/hostname-link")
    os.setxattr(t / "etc/hostname", "user.note", b"kept")
    os.utime(t / "etc/hostname", (EPOCH - 100, EPOCH - 100))
    os.utime(t / "usr/bin/big", (EPOCH + 10_000, EPOCH + 10_000))
    if os.geteuid() == 0:
        os.setxattr(t / "usr/bin/big", "security.capability", CAP_NET_RAW)
        os.mknod(t / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(t / "dev/null", 0o666)
        os.mknod(t / "dev/loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
        os.mkfifo(t / "dev/initctl", 0o600)
        os.chown(t / "etc/hostname", 101, 102)
    return t


def _write(tree, dest):
    with open(dest, "wb") as f:
        return tarwriter.write(tarwriter.entries(tree), f.fileno(), EPOCH)


def test_order_matches_gnu_tar_sort_name(tree, tmp_path):
    ours = tmp_path / "ours.tar"
    _write(tree, ours)
    gnu = subprocess.run(["tar", "--sort=name", "-cf", "-", "-C", str(tree), "."], capture_output=True,
                         check=True).stdout
    (tmp_path / "gnu.tar").write_bytes(gnu)
    names = lambda p: subprocess.run(["tar", "-tf", str(p)], capture_output=True, text=True,
                                     check=True).stdout.split()
    assert names(ours) == names(tmp_path / "gnu.tar")
    assert names(ours)[0] == "./"


def test_same_bytes_every_time(tree, tmp_path):
    _write(tree, tmp_path / "a.tar")
    _write(tree, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_headers_numeric_owners_and_clamped_mtimes(tree, tmp_path):
    _write(tree, tmp_path / "t.tar")
    with tarfile.open(tmp_path / "t.tar") as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    assert all(m.mtime <= EPOCH for m in members.values())
    assert members["./etc/hostname"].mtime == EPOCH - 100       # older stays
    assert members["./usr/bin/big"].mtime == EPOCH               # newer is clamped
    assert members["./usr/bin/big-hardlink"].islnk()
    assert members["./usr/bin/big-hardlink"].linkname == "./usr/bin/big"
    assert members["./usr/hostname-link"].issym()
    assert members["./usr/bin/big"].mode == 0o4755
    assert members["./tmp"].mode == 0o1777


def test_gnu_tar_restores_everything(tree, tmp_path):
    _write(tree, tmp_path / "t.tar")
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tmp_path / "t.tar"),
                    "-C", str(out)], check=True)
    assert (out / "usr/bin/big").read_bytes() == (tree / "usr/bin/big").read_bytes()
    assert os.stat(out / "usr/bin/big").st_ino == os.stat(out / "usr/bin/big-hardlink").st_ino
    assert os.readlink(out / "usr/hostname-link") == "../etc/hostname"
    assert os.getxattr(out / "etc/hostname", "user.note") == b"kept"
    assert stat.S_IMODE(os.stat(out / "usr/bin/big").st_mode) == 0o4755


@pytest.mark.root
def test_devices_owners_and_capabilities_survive(tree, tmp_path):
    _write(tree, tmp_path / "t.tar")
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "t.tar")], capture_output=True, text=True,
                             check=True).stdout
    null = next(line for line in listing.splitlines() if line.endswith(" ./dev/null"))
    assert null.startswith("crw-rw-rw- 0/0") and "1,3" in null
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tmp_path / "t.tar"),
                    "-C", str(out)], check=True)
    st = os.lstat(out / "dev/loop0")
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 7
    assert stat.S_ISFIFO(os.lstat(out / "dev/initctl").st_mode)
    st = os.lstat(out / "etc/hostname")
    assert (st.st_uid, st.st_gid) == (101, 102)
    assert os.getxattr(out / "usr/bin/big", "security.capability") == CAP_NET_RAW


@pytest.mark.parametrize("kind, magic", [("zst", b"\x28\xb5\x2f\xfd"), ("xz", b"\xfd7zXZ"), ("gz", b"\x1f\x8b"),
                                         ("none", None)])
def test_pack_compresses_reproducibly(tree, tmp_path, kind, magic):
    a, b = tmp_path / f"a.{kind}", tmp_path / f"b.{kind}"
    n = tarwriter.pack(tree, a, EPOCH, kind)
    tarwriter.pack(tree, b, EPOCH, kind)
    assert n > 5
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    if magic:
        assert a.read_bytes()[: len(magic)] == magic
    listing = subprocess.run(["tar", "-tf", str(a)], capture_output=True, text=True, check=True).stdout
    assert "./etc/hostname" in listing.split()
    assert not list(tmp_path.glob(".*.part"))


def test_data_size_counts_hardlinks_once(tree):
    items = tarwriter.entries(tree)
    size = tarwriter.data_size(items)
    assert size == sum(p.stat().st_size for p in (tree / "etc/hostname", tree / "etc/B-upper", tree / "usr/bin/big"))


def test_what_ustar_cannot_hold_goes_to_pax_records(tmp_path):
    t = tmp_path / "tree"
    deep = t / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "long-name-file").write_text("x")
    (t / "ünïcødé").write_text("u")
    os.symlink("/" + "t" * 150, t / "long-link")
    if os.geteuid() == 0:
        os.chown(t / "ünïcødé", 3_000_000, 4_000_000)   # beyond ustar's 7 octal digits
    _write(t, tmp_path / "t.tar")
    with tarfile.open(tmp_path / "t.tar") as tf:
        m = {x.name: x for x in tf.getmembers()}
    long_name = f"./{'d' * 60}/{'e' * 60}/long-name-file"
    assert long_name in m and m[long_name].size == 1
    assert m["./long-link"].linkname == "/" + "t" * 150
    assert "./ünïcødé" in m
    if os.geteuid() == 0:
        assert (m["./ünïcødé"].uid, m["./ünïcødé"].gid) == (3_000_000, 4_000_000)
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "t.tar")], capture_output=True, text=True)
    assert listing.returncode == 0 and listing.stderr == ""
    assert long_name in listing.stdout and "t" * 150 in listing.stdout


def test_header_is_ustar_with_a_valid_checksum():
    from builder.core.tarwriter import REG, header
    h = header(b"./etc/passwd", 0o644, 0, 0, 5, EPOCH, REG)
    assert len(h) == 512 and h[257:265] == b"ustar\x0000"
    stored = int(h[148:154], 8)
    assert stored == sum(h[:148]) + 8 * 32 + sum(h[156:])
    ti = tarfile.TarInfo.frombuf(h, "utf-8", "surrogateescape")
    assert (ti.name, ti.mode, ti.size, ti.mtime) == ("./etc/passwd", 0o644, 5, EPOCH)
