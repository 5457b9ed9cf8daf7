"""mmdebstrap's hooks and apt in a private work directory.

- The customize hook that keeps the .debs apt used (for the package cache) runs when the tree holds its packages'
  files: it reads the tree through RootFS. A link on the way to /var/cache/apt/archives is resolved inside the
  tree (never on the host), and a link named *.deb is skipped, never followed: no host file is ever hard-linked
  out. Tested on hand-made trees, through the very shell line mmdebstrap runs.
- The build's work directory is private (0700), which apt's _apt user cannot reach: apt runs its downloads as
  root, said up front (no "Download is performed unsandboxed" warning), and that setting does not stay in the
  tree (the guest's apt keeps its sandbox). Tested with the real mmdebstrap against the host's mirror.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from builder.build.bootstrap.mmdebstrap import APT_CONF, SANDBOX, Mmdebstrap, _link_out, apt_settled, link_out
from builder.core.rootfs import RootFS
from tests.conftest import mirror_reason

ARCH = "var/cache/apt/archives"


def host_files(tmp_path: Path) -> Path:
    """A directory standing in for the host: .debs and a secret a hostile tree's links point at."""
    h = tmp_path / "host"
    (h / "apt/archives").mkdir(parents=True)
    (h / "shadow").write_text("root:host-hash:1::::::\n")
    (h / "apt/archives/host_1.0_amd64.deb").write_text("a host package\n")
    return h


def nlinks(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_nlink for p in d.rglob("*") if p.is_file()}


def run_hook(out: Path, root: Path) -> None:
    """The customize hook as mmdebstrap runs it: sh -c HOOK exec ROOT."""
    hook = _link_out(out).split("=", 1)[1]
    r = subprocess.run(["sh", "-c", hook, "exec", str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def tree(tmp_path: Path, host: Path, kind: str) -> tuple[Path, set[str]]:
    """A tree whose archive directory holds (or leads to) .debs of every kind; and the names to be linked out."""
    r = tmp_path / f"tree-{kind}"
    if kind == "links-in-archives":
        (r / ARCH).mkdir(parents=True)
        (r / ARCH / "good_1_amd64.deb").write_text("a package of the build\n")
        os.symlink(str(host / "shadow"), r / ARCH / "abs_1_amd64.deb")
        os.symlink("../../../../../../../../" + str(host / "shadow").lstrip("/"), r / ARCH / "rel_1_amd64.deb")
        (r / ARCH / "dir_1_amd64.deb").mkdir()
        os.mkfifo(r / ARCH / "fifo_1_amd64.deb")
        (r / ARCH / "lock").write_text("")
        return r, {"good_1_amd64.deb"}
    if kind == "cache-links-to-the-host":
        (r / "var").mkdir(parents=True)
        os.symlink(str(host), r / "var/cache")                       # /var/cache -> a host directory
        decoy = r / str(host).lstrip("/") / "apt/archives"           # the same path inside the tree
        decoy.mkdir(parents=True)
        (decoy / "inside_1_amd64.deb").write_text("the tree's own\n")
        return r, {"inside_1_amd64.deb"}
    if kind == "archives-links-inside":
        (r / "var/cache/apt").mkdir(parents=True)
        (r / "srv/debs").mkdir(parents=True)
        (r / "srv/debs/moved_1_amd64.deb").write_text("moved\n")
        os.symlink("/srv/debs", r / ARCH)
        return r, {"moved_1_amd64.deb"}
    if kind == "relative-up-and-out":
        (r / "var/cache").mkdir(parents=True)
        os.symlink("../../../../../../../../../../" + str(host / "apt").lstrip("/"), r / "var/cache/apt")
        return r, set()
    raise AssertionError(kind)


KINDS = ["links-in-archives", "cache-links-to-the-host", "archives-links-inside", "relative-up-and-out"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["hook", "function"])
def test_link_out_reads_the_tree_inside_it_and_links_only_its_regular_debs(tmp_path, kind, how):
    host = host_files(tmp_path)
    before = nlinks(host)
    root, want = tree(tmp_path, host, kind)
    out = tmp_path / "debs-out"
    if how == "hook":
        run_hook(out, root)
    else:
        assert link_out(root, out) == len(want)
    assert sorted(os.listdir(out)) == sorted(want)
    t = RootFS(root)
    for name in want:
        assert os.path.samestat(os.stat(out / name), t.stat(f"/{ARCH}/{name}")), "not the tree's own file"
    assert nlinks(host) == before, "a host file was hard-linked out of the tree"
    assert (host / "shadow").read_text() == "root:host-hash:1::::::\n"


def test_link_out_twice_is_no_error(tmp_path):
    host = host_files(tmp_path)
    root, want = tree(tmp_path, host, "links-in-archives")
    link_out(root, tmp_path / "o")
    link_out(root, tmp_path / "o")
    assert sorted(os.listdir(tmp_path / "o")) == sorted(want)


# ------------------------------------------------------------------ apt's sandbox


def conf_tree(tmp_path: Path, text: str | None, link: bool = False) -> RootFS:
    r = tmp_path / "conf-tree"
    (r / "etc/apt/apt.conf.d").mkdir(parents=True)
    if link:
        (r / "etc/apt/real.conf").write_text(text)
        os.symlink("../real.conf", r / APT_CONF.lstrip("/"))
    elif text is not None:
        (r / APT_CONF.lstrip("/")).write_text(text)
        os.chmod(r / APT_CONF.lstrip("/"), 0o640)
    return RootFS(r)


def test_apt_settled_takes_the_sandbox_setting_out_and_keeps_the_rest(tmp_path):
    t = conf_tree(tmp_path, f'Acquire::Retries "3";\n{SANDBOX};\nAcquire::http::Proxy "x";\n')
    apt_settled(t)
    assert t.read_text(APT_CONF) == 'Acquire::Retries "3";\nAcquire::http::Proxy "x";\n'
    assert stat.S_IMODE(t.lstat(APT_CONF).st_mode) == 0o640


def test_apt_settled_removes_a_file_that_held_only_the_sandbox_setting(tmp_path):
    t = conf_tree(tmp_path, f"{SANDBOX};\n")
    apt_settled(t)
    assert not t.lexists(APT_CONF)


def test_apt_settled_leaves_a_link_and_other_files_alone(tmp_path):
    t = conf_tree(tmp_path, f"{SANDBOX};\n", link=True)
    apt_settled(t)
    assert t.readlink(APT_CONF) == "../real.conf" and t.read_text("/etc/apt/real.conf") == f"{SANDBOX};\n"
    apt_settled(conf_tree(tmp_path / "none", None))      # no file at all: nothing to do


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_mmdebstrap_in_a_private_work_directory_downloads_without_the_sandbox_warning(tmp_path):
    """The options every build gives mmdebstrap, for a one-package extract into a 0700 work directory (as
    OUTPUT/.work/NAME-PID is): no warning, and after apt_settled the tree keeps apt's sandbox."""
    if mirror_reason():
        pytest.skip(mirror_reason())
    from builder.debian.apt import host_mirror

    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o700)
    root = work / "rootfs"
    argv = [*Mmdebstrap.base("extract"), "--include=base-files", "bookworm", str(root), host_mirror("bookworm")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "unsandboxed" not in r.stderr and "_apt" not in r.stderr, r.stderr
    assert (root / "etc/debian_version").is_file()
    t = RootFS(root)
    assert SANDBOX in (t.read_text(APT_CONF) or "")       # what mmdebstrap leaves in the tree ...
    apt_settled(t)
    assert "Sandbox" not in (t.read_text(APT_CONF) or ""), "the guest's apt would download as root"
    assert 'Acquire::Retries "3"' in t.read_text(APT_CONF)
