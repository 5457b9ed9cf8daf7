"""Scoped mounts: whatever happens inside, nothing stays mounted."""
from __future__ import annotations

import subprocess

import pytest

from builder import mounts


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
