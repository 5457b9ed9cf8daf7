"""builder/core/treecopy.py against `cp -a` itself: the same tree, attribute for attribute, on a tree with one of
everything; and a directory swapped for a link while the tree is copied stops the copy, naming it."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from builder.core import treecopy

pytestmark = pytest.mark.root


def _state(root: Path) -> list[str]:
    """Every file's path, type and mode, owner, size, link count, mtime, link target, device, xattrs (ACLs and
    capabilities among them) and sha256 of its contents."""
    listing = subprocess.run(["find", ".", "-printf", r"%p %M %U %G %s %n %T@ %l\n"], cwd=root, check=True,
                             capture_output=True, text=True, errors="surrogateescape").stdout.splitlines()
    xattrs = subprocess.run(["getfattr", "-R", "-P", "-d", "-m", "-", "--absolute-names", "."], cwd=root,
                            capture_output=True, text=True, errors="surrogateescape").stdout.splitlines()
    sums = subprocess.run("find . -type f -print0 | sort -z | xargs -0 sha256sum", shell=True, cwd=root,
                          check=True, capture_output=True, text=True, errors="surrogateescape").stdout.splitlines()
    devs = subprocess.run("find . \\( -type c -o -type b \\) -print0 | xargs -0 -r stat -c '%n %t:%T'", shell=True,
                          cwd=root, check=True, capture_output=True, text=True).stdout.splitlines()
    return sorted(listing) + xattrs + sums + devs


def _everything(a: Path) -> None:
    (a / "d/e").mkdir(parents=True)
    (a / "d/f").write_text("hi\n")
    os.link(a / "d/f", a / "d/hardlink")
    os.chmod(a / "d/f", 0o4755)
    os.symlink("/etc/passwd", a / "out")              # a link out of the tree: copied as a link, not followed
    os.mkfifo(a / "fifo")
    os.mknod(a / "null", 0o666 | 0o020000, os.makedev(1, 3))
    with open(a / "sparse", "wb") as f:
        f.truncate(1 << 26)
        f.seek(50_000_000)
        f.write(b"x")
    shutil.copy("/usr/bin/true", a / "capable")
    subprocess.run(["setcap", "cap_net_raw+ep", str(a / "capable")], check=True)
    subprocess.run(["setfacl", "-m", "u:nobody:r", str(a / "d/e")], check=True)
    os.chown(a / "d/e", 1234, 5678)
    os.chmod(a / "d", 0o2750)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(a / "sock"))
    s.close()
    (a / os.fsdecode(b"name-\xff")).write_bytes(b"not utf-8\n")
    os.utime(a / "d", (1_000_000_000, 1_000_000_000))


def test_the_copy_is_cp_a(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    _everything(a)
    subprocess.run(["cp", "-a", str(a), str(tmp_path / "cp")], check=True)
    treecopy.copy_tree(a, tmp_path / "ours")
    assert _state(tmp_path / "ours") == _state(tmp_path / "cp")
    assert "capable cap_net_raw=ep" in subprocess.run(["getcap", str(tmp_path / "ours/capable")], text=True,
                                                      capture_output=True).stdout
    assert os.stat(tmp_path / "ours/sparse").st_blocks * 512 < 1 << 20, "the hole was filled"
    assert (tmp_path / "ours/d/f").stat().st_ino == (tmp_path / "ours/d/hardlink").stat().st_ino


def test_a_directory_swapped_for_a_link_stops_the_copy(tmp_path, monkeypatch):
    a, host = tmp_path / "a", tmp_path / "host"
    (a / "etc").mkdir(parents=True)
    (a / "etc/shadow").write_text("guest\n")
    host.mkdir()
    (host / "shadow").write_text("the host's secret\n")
    walk = treecopy._walk

    def walk_then_swap(src, dest, plan):
        walk(src, dest, plan)
        os.rename(a / "etc", a / "etc.real")        # what a running guest could do between the walk and the copy
        os.symlink(host, a / "etc")
    monkeypatch.setattr(treecopy, "_walk", walk_then_swap)
    with pytest.raises(treecopy.CopyError, match=r"etc/shadow: changed while it was copied"):
        treecopy.copy_tree(a, tmp_path / "ours")
    assert not (tmp_path / "ours/etc/shadow").exists() or \
        (tmp_path / "ours/etc/shadow").read_text() != "the host's secret\n"


def test_not_a_directory_and_an_existing_destination_are_copy_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(treecopy.CopyError, match="not a directory"):
        treecopy.copy_tree(tmp_path / "file", tmp_path / "out")
    (tmp_path / "exists").mkdir()
    with pytest.raises(treecopy.CopyError, match="File exists"):
        treecopy.copy_tree(tmp_path, tmp_path / "exists")
