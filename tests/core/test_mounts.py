"""Scoped mounts: whatever happens inside, nothing stays mounted."""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.build import hooks
from builder.build.context import Context
from builder.build.families import family_of
from builder.core import mounts
from builder.core.errors import UnsafePath
from builder.core.rootfs import RootFS
from tests.conftest import DEFAULT_RECIPE, imgbuild


@pytest.mark.root
def test_chroot_mounts_are_taken_down_on_error(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(RuntimeError):
        with mounts.chroot_mounts(root) as ms:
            assert len(mounts.mounted_under(root)) == 4
            assert (root / "dev/null").is_char_device() and (root / "proc/self").exists()
            assert len(ms.points) == 4
            raise RuntimeError("boom")
    assert mounts.mounted_under(root) == []
    assert not (root / "dev/null").exists()


@pytest.mark.root
def test_clean_stale_unmounts_leftovers(tmp_path):
    work = tmp_path / "work"
    (work / "a/proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "leftover", str(work / "a/proc")], check=True)
    try:
        assert mounts.clean_stale(work) == [str(work / "a/proc")]
        assert mounts.mounted_under(work) == []
    finally:
        if mounts.mounted_under(work):
            subprocess.run(["umount", "-l", str(work / "a/proc")])


# ---------------------------------------------------------------------------------------------------------------
# A tree's mount points may be links out of it (an absolute /dev link would mount over the host's /dev): refused
# before anything is mounted, naming the link; nothing mounted anywhere, nothing made outside.


HOST_POINTS = {"/", "/dev", "/dev/pts", "/dev/shm", "/proc", "/sys", "/tmp", "/run"}


def _mountinfo(base: Path) -> list[str]:
    """(root, mount point) of the mounts at or under base, and of those on the host's own API points (other
    processes of this machine mount elsewhere meanwhile)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            root, point = line.split()[3:5]
            if point in HOST_POINTS or point == str(base) or point.startswith(f"{base}/"):
                out.append(f"{root} {point}")
    return sorted(out)


def _linked_tree(tmp_path: Path, point: str, target: str) -> tuple[Path, Path]:
    """A tree with real /proc, /sys, /dev except `point`, which is a link to `target` (OUTSIDE: a directory
    beside the tree standing in for the host's)."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host file\n")
    root.mkdir()
    for d in ("proc", "sys", "dev", "etc"):
        if d != point:
            (root / d).mkdir()
    (root / point).symlink_to(target.replace("OUTSIDE", str(outside)))
    return root, outside


LINKS = [("dev", "OUTSIDE"), ("dev", "../outside"), ("dev", "/dev"), ("proc", "../../.."), ("proc", "/"),
         ("sys", "OUTSIDE"), ("sys", "../../../../../../../../../../sys")]


@pytest.mark.root
@pytest.mark.parametrize("point,target", LINKS)
def test_chroot_mounts_refuse_a_mount_point_that_is_a_link(tmp_path, point, target):
    root, outside = _linked_tree(tmp_path, point, target)
    before = _mountinfo(tmp_path)
    with pytest.raises(UnsafePath, match=f"{root}/{point} is a symbolic link .*refusing to mount /{point}") as e:
        with mounts.chroot_mounts(root):
            pass
    assert e.value.hint and f"/{point} must be a real directory" in e.value.hint
    assert _mountinfo(tmp_path) == before
    assert sorted(os.listdir(outside)) == ["keep"]
    assert (root / point).is_symlink()


@pytest.mark.root
def test_chroot_mounts_leave_a_mount_that_was_replaced_by_a_link_alone(tmp_path, caplog):
    """A process in the chroot unmounts /dev/pts and puts a link to a host mount point there: taking the stack
    down must not unmount through that link (umount would follow it to the host's mount)."""
    root = tmp_path / "root"
    root.mkdir()
    host_mnt = tmp_path / "hostmnt"
    host_mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "imgbuild-test-hostmnt", str(host_mnt)], check=True)
    try:
        with caplog.at_level(logging.WARNING, logger="imgbuild"):
            with mounts.chroot_mounts(root):
                subprocess.run(["umount", str(root / "dev/pts")], check=True)
                os.rmdir(root / "dev/pts")
                os.symlink(str(host_mnt), root / "dev/pts")
        assert mounts.mounted_under(host_mnt) == [str(host_mnt)]
        assert mounts.mounted_under(root) == []
        assert "dev/pts is no longer the mount imgbuild made" in caplog.text
    finally:
        for p in mounts.mounted_under(tmp_path):
            subprocess.run(["umount", "-l", p])


@pytest.mark.root
def test_chroot_mounts_in_a_tree_whose_dev_is_missing_make_it(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with mounts.chroot_mounts(RootFS(root)) as ms:
        assert sorted(ms.points) == sorted(str(root / p) for p in ("proc", "sys", "dev", "dev/pts"))
        assert os.readlink(root / "dev/fd") == "/proc/self/fd"
        assert stat_mode(root / "dev/shm") == 0o1777
    assert mounts.mounted_under(root) == []


def stat_mode(p: Path) -> int:
    return os.lstat(p).st_mode & 0o7777


@pytest.mark.root
@pytest.mark.parametrize("point,target", [("proc", "../../.."), ("dev", "OUTSIDE")])
def test_a_chroot_hook_refuses_a_tree_whose_mount_point_is_a_link(tmp_path, point, target):
    """hooks.run_hook: the hook never runs, nothing is mounted, the policy-rc.d it wrote is gone again."""
    from builder.build.recipe import Recipe
    from builder.core import schema

    root, outside = _linked_tree(tmp_path, point, target)
    loader = schema.Loader("test.yml")
    recipe = loader.load(Recipe, {"name": "t1", "distro": "debian", "release": "bookworm"}, "")
    ctx = Context(recipe=recipe, source=tmp_path / "test.yml", root=RootFS(root), work=tmp_path, stage=tmp_path / "s",
                  epoch=1_700_000_000, family=family_of("debian"))
    before = _mountinfo(tmp_path)
    with pytest.raises(UnsafePath, match=f"{root}/{point} is a symbolic link"):
        hooks.run_hook(ctx, "post-files", 0, hooks.Hook(run="touch /ran"))
    assert _mountinfo(tmp_path) == before
    assert not (root / "usr/sbin/policy-rc.d").exists() and not (root / "ran").exists()
    assert sorted(os.listdir(outside)) == ["keep"]


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_a_build_whose_tree_gets_a_dev_link_stops_with_an_error_naming_it(debian12_build, tmp_path):
    """The real CLI: a host hook turns the tree's /dev into a link to a directory outside (as a hostile package
    could); the next chroot hook is refused: exit 1, `error:` naming the link, no traceback, nothing mounted,
    nothing written outside, no output published."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host file\n")
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({
        "extends": str(DEFAULT_RECIPE),
        "hooks": {"post-bootstrap": [{"host": f'rm -rf "$IMGBUILD_ROOT/dev" && ln -s {outside} "$IMGBUILD_ROOT/dev"'},
                                     {"run": "touch /ran"}]},
    }))
    out = tmp_path / "out"
    before = _mountinfo(tmp_path)
    r = imgbuild(recipe, "-o", out)
    assert r.returncode == 1, r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr
    assert "/dev is a symbolic link" in r.stderr and str(outside) in r.stderr
    assert _mountinfo(tmp_path) == before
    assert sorted(os.listdir(outside)) == ["keep"]
    assert not (out / "debian12").exists()


@pytest.mark.root
def test_mount_in_binds_onto_a_file_and_takes_it_down(tmp_path):
    """What an unprivileged build does for /dev/null: the host's node bound onto an empty file of the tree."""
    root = RootFS(tmp_path / "root")
    root.write("/dev/null", b"", 0o666)
    with mounts.MountStack() as ms:
        host = ms.mount_in(root, "/dev/null", "/dev/null", bind=True, create="file")
        assert host == str(root.path / "dev/null") and (root.path / "dev/null").is_char_device()
    assert mounts.mounted_under(root.path) == [] and (root.path / "dev/null").is_file()
