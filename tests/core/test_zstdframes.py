"""zstd tarballs as independent frames: the real zstd reads them back as exactly tarwriter's stream; a rebuild
reuses the frames of unchanged chunks and gives the same bytes as a fresh pack; a damaged or hostile store is
never trusted (the output is still the fresh pack's, byte for byte)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from builder.core import tarwriter, zstdframes

EPOCH = 1_700_000_000


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of a few KB, so a small tree makes many frames (the same code as with megabytes)."""
    monkeypatch.setattr(zstdframes, "CUT_MIN", 8 << 10)
    monkeypatch.setattr(zstdframes, "CUT_MAX", 32 << 10)
    monkeypatch.setattr(zstdframes, "BIG", 16 << 10)
    monkeypatch.setattr(zstdframes, "CUT_ODDS", 4)


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    for d in range(12):
        (t / f"d{d:02}").mkdir(parents=True)
        for f in range(20):
            # compressible text, different in every file
            (t / f"d{d:02}" / f"f{f:02}").write_text(f"file {d} {f}\n" * (50 + 37 * f))
    (t / "big").write_bytes(os.urandom(40_000) + b"\0" * 200_000)     # one chunk of its own, streamed
    os.link(t / "d00/f01", t / "d11/hardlink")
    os.symlink("d00/f00", t / "link")
    return t


def plain(tree: Path) -> bytes:
    r, w = os.pipe()
    out = bytearray()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        tarwriter.write(tarwriter.entries(tree), w, EPOCH)
        os._exit(0)
    os.close(w)
    while data := os.read(r, 1 << 16):
        out += data
    os.close(r)
    os.waitpid(pid, 0)
    return bytes(out)


def pack(tree: Path, dest: Path, frames: Path | None = None) -> bytes:
    tarwriter.pack(tree, dest, EPOCH, "zst", frames=frames)
    return dest.read_bytes()


def frames_in(data: bytes) -> int:
    return data.count(b"\x28\xb5\x2f\xfd")     # the zstd frame magic (random bytes could add one: >= is enough)


def unzstd(p: Path) -> bytes:
    return subprocess.run(["zstd", "-dc", str(p)], capture_output=True, check=True).stdout


def reuse(tree: Path, frames: Path, out: Path) -> tuple[int, int]:
    """(frames reused, frames) of packing tree with the store in frames."""
    store = zstdframes.open_store(frames, "t.tar.zst", zstdframes.DEFAULT_LEVEL)
    try:
        with open(out, "wb") as f:
            _, rows, reused = zstdframes.write(tarwriter.entries(tree), tarwriter.entry_header, f, EPOCH,
                                               zstdframes.DEFAULT_LEVEL, store, out.parent)
    finally:
        if store:
            store.close()
    return reused, len(rows)


def test_real_zstd_and_tar_read_the_frames_as_one_stream(tree, tmp_path):
    data = pack(tree, tmp_path / "t.tar.zst")
    assert frames_in(data) > 10
    assert unzstd(tmp_path / "t.tar.zst") == plain(tree)
    names = subprocess.run(["tar", "--zstd", "-tf", str(tmp_path / "t.tar.zst")], capture_output=True, text=True,
                           check=True).stdout.split()
    assert "./big" in names and "./d11/hardlink" in names
    assert len(names) == 1 + 12 + 12 * 20 + 3     # ., directories, files, hardlink, big, link


def test_a_rebuild_reuses_unchanged_chunks_and_gives_the_same_bytes(tree, tmp_path):
    frames = tmp_path / "frames"
    first = pack(tree, tmp_path / "t.tar.zst", frames)
    assert sorted(os.listdir(frames))[-1] == "t.tar.zst.json"
    reused, total = reuse(tree, frames, tmp_path / "again.tar.zst")
    assert reused == total > 10 and (tmp_path / "again.tar.zst").read_bytes() == first
    # one file changed (its inode and ctime are new): only its chunk is compressed again
    f = tree / "d05/f07"
    f.unlink()
    f.write_text("changed\n" * 40)
    fresh = pack(tree, tmp_path / "fresh.tar.zst")             # no store: everything compressed
    reused, total = reuse(tree, frames, tmp_path / "rebuilt.tar.zst")
    assert total - 3 <= reused < total, (reused, total)
    assert (tmp_path / "rebuilt.tar.zst").read_bytes() == fresh != first
    assert unzstd(tmp_path / "rebuilt.tar.zst") == plain(tree)
    # the store follows the last tarball: the old one is gone from it
    pack(tree, tmp_path / "t.tar.zst", frames)
    assert len([n for n in os.listdir(frames) if n.endswith(".tar.zst")]) == 1


def _corrupt_stored_tarball(frames: Path) -> None:
    tar = frames / json.loads((frames / "t.tar.zst.json").read_text())["tarball"]
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0x55
    tar.unlink()                    # (a hard link of the output: change the store's copy only)
    tar.write_bytes(bytes(data))


def _index_points_outside(frames: Path) -> None:
    i = json.loads((frames / "t.tar.zst.json").read_text())
    i["tarball"] = "../../etc/passwd"
    (frames / "t.tar.zst.json").write_text(json.dumps(i))


def _index_is_a_link(frames: Path) -> None:
    (frames / "t.tar.zst.json").rename(frames / "elsewhere.json")
    (frames / "t.tar.zst.json").symlink_to(frames / "elsewhere.json")


def _rows_lie(frames: Path) -> None:
    i = json.loads((frames / "t.tar.zst.json").read_text())
    for row in i["frames"]:
        row[1] += 7                  # every offset off by a few bytes
    (frames / "t.tar.zst.json").write_text(json.dumps(i))


@pytest.mark.parametrize("damage, reusable", [
    (_corrupt_stored_tarball, True),      # the frames around the damage are still good
    (_index_points_outside, False),
    (_index_is_a_link, False),
    (_rows_lie, False),
    (lambda frames: (frames / "t.tar.zst.json").write_text("{not json"), False),
    (lambda frames: (frames / "t.tar.zst.json").write_text(json.dumps({"format": 1, "frames": [[1, 2]]})), False),
])
def test_a_damaged_or_hostile_store_changes_nothing_in_the_output(tree, tmp_path, damage, reusable):
    frames = tmp_path / "frames"
    good = pack(tree, tmp_path / "t.tar.zst", frames)
    damage(frames)
    reused, total = reuse(tree, frames, tmp_path / "out.tar.zst")
    assert (tmp_path / "out.tar.zst").read_bytes() == good
    if reusable:
        assert 0 < reused < total
    else:
        assert reused == 0
