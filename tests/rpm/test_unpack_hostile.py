"""Hostile package contents: whatever links, modes, hard links and device nodes packages ship, unpacking them
into a root changes nothing outside it.

Real packages, built with rpmbuild (tests/support/rpmrepo.py's helpers), unpacked in order into one root with
builder.rpm.unpack, then Owners.apply(). A directory beside the root stands in for the host; its files must keep
their content, mode, owner, mtime and link count, and nothing may appear in it. The classic attack: package A
ships /opt/x mode 0666, package B ships /opt/x -> a host file; after both, the host file must not be 0666.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from builder.core.errors import BuilderError
from builder.core.rootfs import RootFS
from builder.rpm.unpack import Owners, unpack
from tests.support.rpmrepo import _Pkg, _rpmbuild, _workdir, missing_tools

UP = "../" * 12          # enough `..` to reach / from anywhere in the root, for a relative link out of it


def _pkgs(host: Path) -> dict[str, _Pkg]:
    secret = f"{host}/secret"
    rel_secret = UP + secret.lstrip("/")
    rel_host = UP + str(host).lstrip("/")

    def p(name: str, files: str, tree: dict) -> _Pkg:
        return _Pkg(name, "1.0", "1", "noarch", "os", "gzip", f"hostile test package {name}", files, tree)

    return {
        # a regular file with a wide-open mode, and the same path as a link out of the root
        "file-0666": p("file-0666", "%attr(0666,root,root) /opt/x\n", {"opt/x": "from package A\n"}),
        "link-abs": p("link-abs", "/opt/x\n", {"opt/x": ("symlink", secret)}),
        "link-rel": p("link-rel", "/opt/x\n", {"opt/x": ("symlink", rel_secret)}),
        # a directory entry where another package put a link to a host directory
        "dirlink-abs": p("dirlink-abs", "/opt/x\n", {"opt/x": ("symlink", str(host))}),
        "dir-0777": p("dir-0777", "%dir %attr(0777,root,root) /opt/x\n", {"opt/x": ("dir",)}),
        # an intermediate directory that is a link out of the root, then files below it
        "opt-abs": p("opt-abs", "/opt\n", {"opt": ("symlink", str(host))}),
        "opt-rel": p("opt-rel", "/opt\n", {"opt": ("symlink", rel_host)}),
        "opt-files": p("opt-files", "%attr(0666,root,root) /opt/secret\n%attr(4755,root,root) /opt/su\n"
                                    "%attr(0666,root,root) %dev(b,8,0) /opt/disk\n",
                       {"opt/secret": "written by a package\n", "opt/su": "#!/bin/sh\n"}),
        # a hard link set whose first file is replaced by a link out of the root before the second name is made:
        # /opt/lnk -> /opt (package one), then /opt/a, /opt/lnk/a (= /opt/a) -> host file, /opt/z (= /opt/a's inode)
        "lnk-to-opt": p("lnk-to-opt", "/opt/lnk\n", {"opt/lnk": ("symlink", "/opt")}),
        "hardlink-out": p("hardlink-out", "%attr(0666,root,root) /opt/a\n/opt/lnk/a\n%attr(0666,root,root) /opt/z\n",
                          {"opt/a": "data of the set\n", "opt/z": ("hardlink", "opt/a"),
                           "opt/lnk/a": ("symlink", secret)}),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(rpm path by name, the host stand-in directory the packages' links point into)."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")
    base = tmp_path_factory.mktemp("hostile")
    host = base / "host"
    out = base / "rpms"
    out.mkdir()
    rpms = {}
    with _workdir() as (work, _, env):
        for name, pkg in _pkgs(host).items():
            built = _rpmbuild(pkg, work, env)
            rpms[name] = Path(shutil.copy2(built, out / built.name))
    return rpms, host


def _fresh_host(host: Path) -> dict:
    """The host stand-in, made again: a secret file 0600 and a directory 0700, owned by a non-root user."""
    if host.exists():
        shutil.rmtree(host)
    host.mkdir(mode=0o700)
    (host / "secret").write_text("host secret\n")
    os.chmod(host / "secret", 0o600)
    (host / "sub").mkdir(mode=0o700)
    for p in (host, host / "secret", host / "sub"):
        os.chown(p, 4321, 4321)
    os.utime(host / "secret", (1_000_000_000, 1_000_000_000))
    return _snapshot(host)


def _snapshot(host: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(host):
        for n in [".", *dirnames, *filenames] if dirpath == str(host) else [*dirnames, *filenames]:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_nlink, st.st_mtime_ns,
                           p.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


def _unpack_all(rpms: dict, names: list[str], root: RootFS) -> Owners:
    owners = Owners()
    for n in names:
        unpack(rpms[n], root, owners)
    owners.apply(root)
    return owners


def _root(tmp_path) -> RootFS:
    (tmp_path / "root").mkdir()
    return RootFS(tmp_path / "root")


@pytest.mark.root
@pytest.mark.parametrize("order", [["file-0666", "link-abs"], ["file-0666", "link-rel"], ["link-abs", "file-0666"],
                                   ["link-rel", "file-0666"]])
def test_a_later_link_never_takes_an_earlier_files_mode_out_of_the_root(hostile, tmp_path, order):
    """A: /opt/x 0666; B: /opt/x -> host file (absolute or `../../..`). The later entry replaces the earlier one
    (the link, or the file); Owners.apply chmods the entry itself, never what a link points to."""
    rpms, host = hostile
    before = _fresh_host(host)
    root = _root(tmp_path)
    _unpack_all(rpms, order, root)
    assert _snapshot(host) == before
    x = root.path / "opt/x"
    if order[-1] == "file-0666":
        assert x.lstat().st_mode == stat.S_IFREG | 0o666 and x.read_text() == "from package A\n"
    else:
        assert x.is_symlink()


@pytest.mark.root
def test_a_directory_entry_over_a_link_to_a_host_directory_stays_inside(hostile, tmp_path):
    """A: /opt/x -> host dir; B: %dir 0777 /opt/x: the directory is made inside the root (where the link leads
    there), and the host directory keeps its mode."""
    rpms, host = hostile
    before = _fresh_host(host)
    root = _root(tmp_path)
    _unpack_all(rpms, ["dirlink-abs", "dir-0777"], root)
    assert _snapshot(host) == before
    assert (root.path / "opt/x").is_symlink()
    assert (root.path / str(host).lstrip("/")).is_dir()


@pytest.mark.root
@pytest.mark.parametrize("opt", ["opt-abs", "opt-rel"])
def test_files_below_an_intermediate_link_out_of_the_root_land_inside(hostile, tmp_path, opt):
    """/opt -> host dir (absolute, or relative with `..` past the top); then /opt/secret (0666), /opt/su (setuid)
    and /opt/disk (a block device 8,0 mode 0666): all inside the root, where the link leads in a chroot; nothing
    on the host changes and no device node or setuid file appears there."""
    rpms, host = hostile
    before = _fresh_host(host)
    root = _root(tmp_path)
    _unpack_all(rpms, [opt, "opt-files"], root)
    assert _snapshot(host) == before
    inside = root.path / str(host).lstrip("/")
    assert (inside / "secret").read_text() == "written by a package\n"
    assert stat.S_IMODE((inside / "secret").lstat().st_mode) == 0o666
    assert stat.S_IMODE((inside / "su").lstat().st_mode) == 0o4755
    disk = (inside / "disk").lstat()
    assert stat.S_ISBLK(disk.st_mode) and os.major(disk.st_rdev) == 8 and stat.S_IMODE(disk.st_mode) == 0o666


@pytest.mark.root
def test_a_hard_link_to_a_file_replaced_by_a_link_out_is_refused(hostile, tmp_path):
    """/opt/lnk -> /opt; then a package whose /opt/lnk/a entry replaces its own /opt/a by a link to the host file
    before /opt/z (a hard link of /opt/a) is made. Linking through that link would give the root a hard link to
    the host file (same inode: its mode, mtime and bytes). Refused, naming the package and the path."""
    rpms, host = hostile
    before = _fresh_host(host)
    root = _root(tmp_path)
    owners = Owners()
    unpack(rpms["lnk-to-opt"], root, owners)
    with pytest.raises(BuilderError, match=r"hardlink-out.*: /opt/z: .*hard link of /opt/a.*not a regular file"):
        unpack(rpms["hardlink-out"], root, owners)
    owners.apply(root)
    assert _snapshot(host) == before
    assert not os.path.lexists(root.path / "opt/z")
    for dirpath, _, filenames in os.walk(root.path):
        for n in filenames:
            st = (Path(dirpath) / n).lstat()
            assert (st.st_dev, st.st_ino) != (os.lstat(host / "secret").st_dev, os.lstat(host / "secret").st_ino)


@pytest.mark.root
def test_hard_links_of_a_package_still_work(hostile, tmp_path):
    """The same hard link set without the hostile entry in the way: one inode, two names, mode applied."""
    rpms, host = hostile
    _fresh_host(host)
    root = _root(tmp_path)
    _unpack_all(rpms, ["hardlink-out"], root)      # /opt/lnk is a real directory here: /opt/lnk/a is just a link
    a, z = (root.path / "opt/a").lstat(), (root.path / "opt/z").lstat()
    assert (a.st_ino, a.st_nlink) == (z.st_ino, 2) and stat.S_IMODE(a.st_mode) == 0o666
    assert os.readlink(root.path / "opt/lnk/a") == f"{host}/secret"
