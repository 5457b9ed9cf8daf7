"""RootFS: nothing done through it touches a file outside the root, whatever links the tree holds."""
from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tempfile
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.core.errors import UnsafePath
from builder.core.rootfs import RootFS


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


# ---------------------------------------------------------------------------------------------------------------
# No write, chmod, chown, utime or link through RootFS follows a link out of the root: every operation, with the
# last component, or a directory on the way, a link out (absolute, relative with `..` past the top).

UP = "../" * 12


def _outside_state(outside) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(outside):
        for n in [*dirnames, *filenames]:
            p = os.path.join(dirpath, n)
            s = os.lstat(p)
            data = open(p, "rb").read() if stat.S_ISREG(s.st_mode) else None
            out[p] = (s.st_mode, s.st_uid, s.st_gid, s.st_nlink, s.st_mtime_ns, s.st_size, data)
    return out


@pytest.fixture
def hostile(tmp_path):
    """A root whose /etc/x (/etc/xr) is an absolute (relative, climbing past the top) link to a file outside, and
    whose /etc/d (/etc/r) is one to the directory outside; the outside file is 4321's, 0600, an old mtime."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not touch\n")
    os.chmod(outside / "secret", 0o600)
    os.chown(outside / "secret", 4321, 4321)
    os.utime(outside / "secret", (1_000_000_000, 1_000_000_000))
    os.symlink(str(outside / "secret"), root / "etc" / "x")
    os.symlink(UP + str(outside / "secret").lstrip("/"), root / "etc" / "xr")
    os.symlink(str(outside), root / "etc" / "d")
    os.symlink(UP + str(outside).lstrip("/"), root / "etc" / "r")
    return RootFS(root), outside


OPS = {
    "write": lambda r, p: r.write(p, "pwned\n", 0o666, 0, 0),
    "copy_in": lambda r, p: r.copy_in("/etc/hostname" if os.path.exists("/etc/hostname") else __file__, p, 0o666),
    "symlink": lambda r, p: r.symlink("/pwned", p),
    "mknod": lambda r, p: r.mknod(p, "p", 0, 0, 0o666),
    "chmod": lambda r, p: r.chmod(p, 0o666),
    "chown": lambda r, p: r.chown(p, 0, 0),
    "utime": lambda r, p: r.utime(p, (5, 5)),
    "truncate": lambda r, p: r.truncate(p),
    "remove": lambda r, p: r.remove(p, tree=True),
    "link": lambda r, p: r.link(p, "/etc/new-link"),
    "mkdir-reset": lambda r, p: r.mkdir(p, 0o777, 0, 0, reset=True),
}


@pytest.mark.root
@pytest.mark.parametrize("path", ["/etc/x", "/etc/xr", "/etc/d/secret", "/etc/r/secret"])
@pytest.mark.parametrize("op", list(OPS))
def test_no_operation_reaches_outside_through_a_link(hostile, op, path):
    root, outside = hostile
    before = _outside_state(outside)
    try:
        OPS[op](root, path)
    except UnsafePath:
        pass      # refusing is fine (e.g. a hard link to a link); touching the outside is not
    assert _outside_state(outside) == before


@pytest.mark.parametrize("path", ["/etc/x", "/etc/xr", "/etc/d/secret", "/etc/r/secret"])
def test_reads_never_see_outside(hostile, path):
    root, _ = hostile
    assert root.read_bytes(path) is None
    assert root.read_bytes(path, follow_last=False) is None
    assert root.stat(path) is None
    assert "secret" not in root.listdir(path.rsplit("/", 1)[0])


def test_a_final_link_keeps_its_targets_mode(hostile):
    """chmod of a link does nothing (Linux has no link modes), chown acts on the link itself."""
    root, outside = hostile
    assert root.chmod("/etc/x", 0o666) is False
    assert stat.S_IMODE(os.stat(outside / "secret").st_mode) == 0o600


@pytest.mark.root
def test_device_nodes_and_fifos_are_never_opened(tmp_path):
    """A device node (here /dev/zero's numbers) or a fifo where a file is expected reads as missing: opening
    one could block or act on a device of the host."""
    root = RootFS(tmp_path)
    root.mknod("/etc/shadow", "c", 1, 5, 0o644)
    root.mknod("/etc/fifo", "p", 0, 0, 0o644)
    assert root.read_bytes("/etc/shadow") is None and root.read_text("/etc/fifo") is None
    assert root.truncate("/etc/shadow") is False and root.truncate("/etc/fifo") is False
    assert stat.S_ISCHR(os.lstat(tmp_path / "etc/shadow").st_mode)


def test_a_later_entry_replaces_an_earlier_one(hostile):
    """write, symlink, mknod and link replace what is there (the link itself), never write through it."""
    root, outside = hostile
    root.write("/etc/x", "a file now\n")
    assert not (root.path / "etc/x").is_symlink() and (outside / "secret").read_text() == "do not touch\n"
    root.symlink("/elsewhere", "/etc/x")
    assert os.readlink(root.path / "etc/x") == "/elsewhere"
    root.write("/etc/y", "y\n")
    root.link("/etc/y", "/etc/x")
    assert os.path.samestat(os.lstat(root.path / "etc/x"), os.lstat(root.path / "etc/y"))


def test_a_hard_link_is_made_only_to_a_regular_file_of_the_root(hostile):
    root, outside = hostile
    for src in ("/etc/x", "/etc/xr", "/etc/d", "/etc/missing"):
        with pytest.raises(UnsafePath, match="not a regular file|not in the root"):
            root.link(src, "/etc/new")
    assert not os.path.lexists(root.path / "etc/new")
    assert os.lstat(outside / "secret").st_nlink == 1


def test_a_symlink_over_a_directory_is_refused_by_name(tmp_path):
    root = RootFS(tmp_path)
    root.mkdir("/etc/d")
    with pytest.raises(UnsafePath, match="/etc/d is a directory"):
        root.symlink("/x", "/etc/d")
    assert (tmp_path / "etc/d").is_dir() and os.listdir(tmp_path / "etc") == ["d"]


def test_mount_point_refuses_any_link_on_the_way(hostile, tmp_path):
    root, outside = hostile
    (root.path / "dev").symlink_to(str(outside))
    (root.path / "proc").symlink_to("../../..")
    (root.path / "run").mkdir()
    (root.path / "run" / "lock").symlink_to("/run")
    for p in ("/dev", "/proc", "/run/lock", "/etc/d/sub", "/etc/x"):
        with pytest.raises(UnsafePath, match=f"{root.path}{p.rsplit('/sub', 1)[0]} is a symbolic link"):
            os.close(root.mount_point(p))
    fd = root.mount_point("/run/new")
    os.close(fd)
    assert (root.path / "run/new").is_dir()
    assert sorted(os.listdir(outside)) == ["secret"]


_renameat2 = ctypes.CDLL(None, use_errno=True).renameat2


@pytest.mark.root
def test_a_tree_that_changes_meanwhile_still_keeps_writes_inside(tmp_path):
    """/etc swapped (atomically, RENAME_EXCHANGE) with a link to a directory outside, over and over, while files
    are written, chmod-ed and removed under it: whatever each walk sees, nothing lands outside."""
    root = RootFS(tmp_path / "root")
    (root.path / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("outside\n")
    os.chmod(outside / "f", 0o600)
    (root.path / "swap").symlink_to(str(outside))
    before = _outside_state(outside)
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            _renameat2(-100, str(root.path / "etc").encode(), -100, str(root.path / "swap").encode(), 2)

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    try:
        for _ in range(300):
            for op in (lambda: root.write("/etc/f", "in\n", 0o666), lambda: root.chmod("/etc/f", 0o666),
                       lambda: root.utime("/etc/f", (5, 5)), lambda: root.symlink("/x", "/etc/f"),
                       lambda: root.remove("/etc/f")):
                try:
                    op()
                except (UnsafePath, OSError):
                    pass
    finally:
        stop.set()
        t.join()
    assert _outside_state(outside) == before


_NAMES = st.sampled_from(["a", "b", "c", "..", "."])
_REL = st.lists(_NAMES, min_size=1, max_size=4).map("/".join)


@st.composite
def _trees(draw):
    """Entries (path, kind, link target) of a small hostile tree: links absolute into the root, absolute to the
    outside (filled in at run time), relative with `..` past the top, to themselves."""
    entries = []
    for _ in range(draw(st.integers(0, 8))):
        path = "/" + "/".join(draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3)))
        kind = draw(st.sampled_from(["dir", "file", "link"]))
        target = None
        if kind == "link":
            target = draw(st.one_of(st.just("OUTSIDE"), st.just("OUTSIDE/secret"), _REL, _REL.map(lambda r: "/" + r),
                                    st.just(UP + "OUTSIDE_REL")))
        entries.append((path, kind, target))
    return entries


_OP_NAMES = st.sampled_from(sorted(OPS) + ["read", "mkdir"])
_PATHS = st.lists(st.sampled_from(["a", "b", "c", "..", "secret"]), min_size=1,
                  max_size=4).map(lambda x: "/" + "/".join(x))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees(), ops=st.lists(st.tuples(_OP_NAMES, _PATHS), min_size=1, max_size=6))
def test_property_nothing_outside_changes_whatever_the_tree_and_the_operations(tree, ops):
    with tempfile.TemporaryDirectory() as d:
        rootdir, outside = os.path.join(d, "root"), os.path.join(d, "outside")
        os.makedirs(rootdir)
        os.makedirs(os.path.join(outside, "a"))
        with open(os.path.join(outside, "secret"), "w") as f:
            f.write("outside secret\n")
        os.chmod(os.path.join(outside, "secret"), 0o600)
        for path, kind, target in tree:
            host = rootdir + path
            if os.path.lexists(host) or not os.path.isdir(os.path.dirname(host)) \
                    or os.path.islink(os.path.dirname(host)):
                continue
            if kind == "dir":
                os.mkdir(host)
            elif kind == "file":
                with open(host, "w") as f:
                    f.write("inside\n")
            else:
                target = target.replace("OUTSIDE_REL", outside.lstrip("/")).replace("OUTSIDE", outside)
                os.symlink(target, host)
        before = _outside_state(outside)
        root = RootFS(rootdir)
        for op, path in ops:
            try:
                if op == "read":
                    assert root.read_bytes(path) != b"outside secret\n"
                elif op == "mkdir":
                    root.mkdir(path)
                elif op in ("chown", "mkdir-reset", "mknod") and os.geteuid() != 0:
                    continue
                else:
                    OPS[op](root, path)
            except (UnsafePath, OSError):
                pass
            assert _outside_state(outside) == before, (op, path)
        shutil.rmtree(rootdir)
