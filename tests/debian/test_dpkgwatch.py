"""The `installed N/T` bar's count: dpkg's .list files in the tree, read without following a link out of it."""
from __future__ import annotations

import os
from pathlib import Path

from builder.debian import dpkgwatch


def _tree(tmp_path: Path, names: list[str]) -> Path:
    info = tmp_path / "tree/var/lib/dpkg/info"
    info.mkdir(parents=True)
    for n in names:
        (info / n).write_text("")
    return tmp_path / "tree"


def test_it_counts_what_dpkg_unpacked(tmp_path):
    tree = _tree(tmp_path, ["bash.list", "bash.md5sums", "libc6:amd64.list", "libc6:amd64.postinst"])
    assert dpkgwatch.installed(tree) == 2
    assert dpkgwatch.installed(tmp_path / "empty") == 0


def test_a_link_out_of_the_tree_is_not_followed(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    for i in range(5):
        (host / f"p{i}.list").write_text("")
    tree = tmp_path / "tree"
    (tree / "var/lib/dpkg").mkdir(parents=True)
    os.symlink(str(host), tree / "var/lib/dpkg/info")     # absolute: resolved inside the tree, where it is not
    assert dpkgwatch.installed(tree) == 0


def test_the_watch_reports_each_change_once(tmp_path):
    tree = _tree(tmp_path, ["a.list"])
    seen: list[int] = []
    w = dpkgwatch.Watch(tree, seen.append)
    w.poll()
    w.poll()
    (tree / "var/lib/dpkg/info/b.list").write_text("")
    w.poll()
    assert seen == [1, 2]


def test_no_bar_off_a_terminal(tmp_path, capsys):
    with dpkgwatch.watching(_tree(tmp_path, ["a.list"]), 10) as w:
        assert w is None       # pytest's stderr is not a terminal
