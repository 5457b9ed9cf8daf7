"""RootFS: nothing done through it touches a file outside the root, whatever links the tree holds."""
from __future__ import annotations

import os
import stat

import pytest

from builder.errors import UnsafePath
from builder.rootfs import RootFS


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "run").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not touch\n")
    return RootFS(root), outside


@pytest.mark.parametrize("link", ["ABS_OUTSIDE", "../../outside/secret", "/../../outside/secret"])
def test_write_replaces_a_link_pointing_outside(tree, link):
    root, outside = tree
    target = str(outside / "secret") if link == "ABS_OUTSIDE" else link
    os.symlink(target, root.path / "etc" / "resolv.conf")
    root.write("/etc/resolv.conf", "nameserver 10.0.3.1\n")
    host = root.path / "etc" / "resolv.conf"
    assert not host.is_symlink() and host.read_text() == "nameserver 10.0.3.1\n"
    assert (outside / "secret").read_text() == "do not touch\n"


def test_absolute_links_resolve_inside_the_root(tree):
    root, outside = tree
    os.symlink(str(outside), root.path / "etc" / "conf.d")   # a directory link to an absolute host path
    host = root.resolve("/etc/conf.d/secret")
    assert str(host).startswith(str(root.path) + "/")
    root.write("/etc/conf.d/secret", "inside\n")
    assert (outside / "secret").read_text() == "do not touch\n"
    assert (root.path / str(outside).lstrip("/") / "secret").read_text() == "inside\n"


def test_dotdot_stops_at_the_top(tree):
    root, _ = tree
    assert root.resolve("/../../../etc") == root.path / "etc"
    os.symlink("../../../../..", root.path / "etc" / "up")
    assert root.resolve("/etc/up/etc") == root.path / "etc"


def test_link_loops_are_an_error(tree):
    root, _ = tree
    os.symlink("/etc/b", root.path / "etc" / "a")
    os.symlink("/etc/a", root.path / "etc" / "b")
    with pytest.raises(UnsafePath, match="too many levels"):
        root.resolve("/etc/a")


def test_relative_paths_are_refused(tree):
    root, _ = tree
    with pytest.raises(UnsafePath):
        root.resolve("etc/passwd")


def test_write_sets_mode_and_owner_and_creates_parents(tree):
    root, _ = tree
    root.write("/etc/ssh/sshd_config.d/x.conf", b"Port 22\n", 0o600, 12, 34)
    st = os.lstat(root.path / "etc/ssh/sshd_config.d/x.conf")
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (12, 34)
    assert not list((root.path / "etc/ssh/sshd_config.d").glob(".imgbuild-*"))


def test_write_refuses_a_directory(tree):
    root, _ = tree
    with pytest.raises(UnsafePath, match="is a directory"):
        root.write("/etc", "x")


def test_symlink_and_remove_act_on_the_link_itself(tree):
    root, outside = tree
    root.symlink(str(outside / "secret"), "/etc/link")
    assert os.readlink(root.path / "etc/link") == str(outside / "secret")
    assert root.remove("/etc/link")
    assert (outside / "secret").exists()
    assert not root.remove("/etc/link")


@pytest.mark.root
def test_mknod_makes_device_nodes(tree):
    root, _ = tree
    root.write("/dev/null", "a regular file squatting the name")
    root.mknod("/dev/null", "c", 1, 3, 0o666)
    st = os.lstat(root.path / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_users_come_from_the_roots_own_database(tree):
    root, _ = tree
    root.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\nmysql:x:105:108::/nonexistent:/bin/false\n")
    root.write("/etc/group", "root:x:0:\ntty:x:5:\nmysql:x:108:\n")
    assert root.uid("mysql") == 105 and root.gid("mysql") == 108 and root.gid("tty") == 5
    assert root.uid("1234") == 1234
    with pytest.raises(KeyError):
        root.uid("nobody-here")


def test_read_missing_returns_none(tree):
    root, _ = tree
    assert root.read_text("/etc/nothing") is None
    os.symlink("/nonexistent", root.path / "etc" / "dangling")
    assert root.read_text("/etc/dangling") is None
    assert root.lexists("/etc/dangling") and not root.exists("/etc/dangling")
