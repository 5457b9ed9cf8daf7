"""builder.rpm.unpack against the host's real rpm: the packages of el_repo (tests/support/rpmrepo.py) unpacked with
rpmfile
into one root and installed with `rpm -i --nodeps --noscripts` into another must give the same trees: file types,
modes (setuid included), owners, symlink targets, contents, hardlink sets, mtimes of files; %ghost files in
neither."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from builder.core.errors import BuilderError
from builder.core.rootfs import RootFS
from builder.rpm.unpack import Owners, read_files, unpack

# Which packages go into one root, by (repo, name). testos-base comes along everywhere: it carries the root's
# /etc/passwd and /etc/group, which both rpm and Owners.apply() read to turn owner names into ids.
BASE = ("os", "testos-base")
SETS = {
    "base": [BASE],
    "release": [BASE, ("os", "testos-release")],
    "tools-2.0": [BASE, ("os", "testos-tools")],
    "tools-2.1": [BASE, ("updates", "testos-tools")],
    "net": [BASE, ("os", "testos-net")],
    "extra": [BASE, ("os", "testos-extra")],
    "broken": [BASE, ("os", "testos-broken")],
    "all-os": [BASE] + [("os", n) for n in ("testos-release", "testos-tools", "testos-net", "testos-extra",
                                            "testos-broken")],
}
# What rpm itself adds to a root besides the packages' files: its database.
RPM_OWN = ("/var/lib/rpm",)


def _rpm_path(el_repo, repo: str, name: str) -> Path:
    return (el_repo.packages if repo == "os" else el_repo.updates)[name][2]


def rpm_install(paths: list[Path], root: Path, home: Path) -> None:
    """The reference: the host's rpm, a private HOME (no ~/.rpmdb, no ~/.rpmmacros), database inside the root."""
    home.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(home), "LC_ALL": "C"}
    r = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts",
                        *map(str, paths)], check=False, env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert not (home / ".rpmdb").exists()


def snapshot(root: Path) -> dict[str, dict]:
    """Every path below root (rpm's own database left out): what an install is judged by."""
    out: dict[str, dict] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            host = Path(dirpath) / name
            rel = "/" + str(host.relative_to(root))
            if any(rel == p or rel.startswith(p + "/") for p in RPM_OWN):
                continue
            st = host.lstat()
            kind = stat.S_IFMT(st.st_mode)
            e = {"type": stat.filemode(st.st_mode)[0], "uid": st.st_uid, "gid": st.st_gid}
            if kind == stat.S_IFLNK:
                e["target"] = os.readlink(host)
            else:
                e["mode"] = oct(stat.S_IMODE(st.st_mode))
            if kind == stat.S_IFREG:
                e["data"] = host.read_bytes()
                e["mtime"] = int(st.st_mtime)
                inodes.setdefault(st.st_ino, []).append(rel)
            out[rel] = e
    for paths in inodes.values():
        for p in paths:
            out[p]["links"] = tuple(sorted(paths))
    return out


@pytest.mark.root
@pytest.mark.parametrize("which", list(SETS))
def test_unpack_lays_files_down_as_rpm_does(el_repo, tmp_path, which):
    paths = [_rpm_path(el_repo, repo, name) for repo, name in SETS[which]]
    mine = tmp_path / "unpacked"
    mine.mkdir()
    root = RootFS(mine)
    owners = Owners()
    nvrs = [unpack(p, root, owners) for p in paths]
    owners.apply(root)
    for (repo, name), nvr in zip(SETS[which], nvrs):
        version, release, _ = (el_repo.packages if repo == "os" else el_repo.updates)[name]
        assert nvr == f"{name}-{version}-{release}"

    theirs = tmp_path / "rpm"
    rpm_install(paths, theirs, tmp_path / "home")

    got, want = snapshot(mine), snapshot(theirs)
    assert sorted(got) == sorted(want)
    differ = {p: (got[p], want[p]) for p in want if got[p] != want[p]}
    assert not differ, "\n".join(f"{p}:\n  unpack: {a}\n  rpm:    {b}" for p, (a, b) in differ.items())


@pytest.mark.root
def test_unpack_details_of_testos_tools(el_repo, tmp_path):
    """The interesting entries, spelled out (the comparison above would also pass if both were wrong alike)."""
    root = RootFS(tmp_path / "r")
    root.path.mkdir()
    owners = Owners()
    for repo, name in (BASE, ("updates", "testos-tools")):
        unpack(_rpm_path(el_repo, repo, name), root, owners)
    owners.apply(root)
    r = root.path
    sutool = (r / "usr/bin/sutool").lstat()
    assert stat.S_ISREG(sutool.st_mode) and stat.S_IMODE(sutool.st_mode) == 0o4755
    assert (sutool.st_uid, sutool.st_gid) == (0, 0)
    owned = (r / "var/lib/testos/owned").lstat()
    assert stat.S_IMODE(owned.st_mode) == 0o640 and (owned.st_uid, owned.st_gid) == (321, 654)
    assert os.readlink(r / "usr/bin/tool-link") == "tool"
    a, b = (r / "usr/lib/testos/a").lstat(), (r / "usr/lib/testos/b").lstat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert (r / "usr/lib/testos/a").read_bytes() == b"hardlinked data 2.1\n"
    assert not os.path.lexists(r / "var/lib/testos/state")          # %ghost
    assert stat.S_IMODE((r / "tmp").lstat().st_mode) == 0o1777
    assert stat.S_IMODE((r / "root").lstat().st_mode) == 0o550
    assert stat.S_IMODE((r / "etc/shadow").lstat().st_mode) == 0
    assert (r / "bin/sh").read_bytes() == Path("/bin/busybox").read_bytes()


def test_unpack_refuses_garbage(tmp_path):
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(b"this is not an rpm" * 10)
    root = RootFS(tmp_path / "r")
    root.path.mkdir()
    with pytest.raises(BuilderError, match="not a readable RPM package"):
        unpack(bad, root, Owners())
    assert list(root.path.iterdir()) == []


@pytest.mark.root
def test_owners_unknown_in_the_root_fall_back_to_root(el_repo, tmp_path, caplog):
    """testos-tools without testos-base: daemonuser/daemongrp are not in the root; the file goes to root, with a
    warning that names them, and its mode is still applied."""
    root = RootFS(tmp_path / "r")
    root.path.mkdir()
    owners = Owners()
    unpack(_rpm_path(el_repo, "updates", "testos-tools"), root, owners)
    with caplog.at_level("WARNING", logger="imgbuild"):
        owners.apply(root)
    st = (root.path / "var/lib/testos/owned").lstat()
    assert (st.st_uid, st.st_gid) == (0, 0) and stat.S_IMODE(st.st_mode) == 0o640
    assert "user daemonuser" in caplog.text and "group daemongrp" in caplog.text


def _installed_files(el_repo, tmp_path, repo, name) -> dict[str, bytes]:
    theirs = tmp_path / f"rpm-{name}"
    rpm_install([_rpm_path(el_repo, *BASE), _rpm_path(el_repo, repo, name)], theirs, tmp_path / "home")
    out = {}
    for dirpath, _, filenames in os.walk(theirs):
        for f in filenames:
            host = Path(dirpath) / f
            rel = "/" + str(host.relative_to(theirs))
            if host.is_file() and not host.is_symlink() and not rel.startswith("/var/lib/rpm/"):
                out[rel] = host.read_bytes()
    return out


@pytest.mark.root
def test_read_files_of_the_release_package(el_repo, tmp_path):
    """What release seeding reads: the repo file and the key, as rpm would install them; only regular files."""
    path = _rpm_path(el_repo, "os", "testos-release")
    installed = _installed_files(el_repo, tmp_path, "os", "testos-release")
    got = read_files(path, lambda p: p.startswith("/etc/"))
    assert set(got) == {"/etc/testos-release", "/etc/yum.repos.d/testos.repo",
                        "/etc/pki/rpm-gpg/RPM-GPG-KEY-testos"}      # not the /etc/system-release symlink
    for p, data in got.items():
        assert data == installed[p], p
    assert got["/etc/pki/rpm-gpg/RPM-GPG-KEY-testos"] == el_repo.key_path.read_bytes()
    only = read_files(path, lambda p: p.endswith(".repo"))
    assert list(only) == ["/etc/yum.repos.d/testos.repo"]


@pytest.mark.root
@pytest.mark.parametrize("repo", ["os", "updates"])
def test_read_files_gives_every_regular_file_its_data(el_repo, tmp_path, repo):
    """Every regular file of testos-tools with the bytes rpm installs, both names of the hardlink pair included
    (cpio carries the data with one of them only); the %ghost file is not in the payload and not returned."""
    path = _rpm_path(el_repo, repo, "testos-tools")
    installed = _installed_files(el_repo, tmp_path, repo, "testos-tools")
    got = read_files(path, lambda p: True)
    expected = {p: d for p, d in installed.items()
                if p.startswith(("/usr/bin/", "/usr/lib/testos/", "/etc/testos/", "/var/lib/testos/"))}
    assert "/var/lib/testos/state" not in got
    assert set(got) == set(expected)
    differ = {p: (got[p], expected[p]) for p in expected if got[p] != expected[p]}
    assert not differ, f"read_files data differs from what rpm installs: {differ}"
