"""The package cache (.debs): only what the index vouches for goes in, under a temp name; what comes out is
checked again, and a damaged file is dropped, never handed to a build."""
from __future__ import annotations

import hashlib
import os

import pytest

from builder.debian import apt, pkgcache


def _sums(*files: tuple[str, bytes]) -> dict[str, tuple[str, int]]:
    return {name: (hashlib.sha256(data).hexdigest(), len(data)) for name, data in files}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "packages" / "deb"


A = ("vim_2%3a9.0-1_amd64.deb", b"vim deb")
B = ("less_590-2_amd64.deb", b"less deb")


def test_store_keeps_only_what_the_index_vouches_for(tmp_path, cache):
    src = tmp_path / "out"
    src.mkdir()
    (src / A[0]).write_bytes(A[1])
    (src / B[0]).write_bytes(b"tampered")             # checksum differs from the index
    (src / "unknown_1_amd64.deb").write_bytes(b"x")     # not in the index
    got = pkgcache.store(_sums(A, B), src)
    assert (got.files, got.bytes) == (1, len(A[1]))
    assert sorted(p.name for p in cache.iterdir()) == [A[0]]    # no temp files left, nothing unverified
    assert (cache / A[0]).read_bytes() == A[1] and oct((cache / A[0]).stat().st_mode & 0o777) == "0o644"
    assert pkgcache.store(_sums(A, B), src).files == 0          # already there
    assert pkgcache.size() == (1, len(A[1]))


def test_stage_in_checks_every_file_and_drops_damaged_ones(tmp_path, cache):
    cache.mkdir(parents=True)
    (cache / A[0]).write_bytes(A[1])
    (cache / B[0]).write_bytes(b"bit rot")
    (cache / "other_1_amd64.deb").write_bytes(b"another release's")
    dest = tmp_path / "in"
    got = pkgcache.stage_in(_sums(A, B), dest)
    assert (got.files, got.damaged) == (1, 1)
    assert sorted(p.name for p in dest.iterdir()) == [A[0]]          # only this index's, only good ones
    assert not (cache / B[0]).exists() and (cache / "other_1_amd64.deb").exists()
    assert os.stat(dest / A[0]).st_ino == os.stat(cache / A[0]).st_ino   # linked, not copied, on one fs
    assert pkgcache.prune() == (2, len(A[1]) + len(b"another release's")) and not cache.exists()


def test_index_scan_gives_archive_names_and_checksums():
    data = (b"Package: vim\nVersion: 2:9.0.1378-2\nArchitecture: amd64\nProvides: editor\nSize: 1234\n"
            b"SHA256: " + b"a" * 64 + b"\n\nPackage: base-files\nVersion: 12.4\nArchitecture: amd64\n"
            b"Size: 70\nSHA256: " + b"b" * 64 + b"\n")
    scan = apt._scan(data)
    assert scan.names == {"vim", "editor", "base-files"}
    assert scan.debs == {"vim_2%3a9.0.1378-2_amd64.deb": ("a" * 64, 1234),
                         "base-files_12.4_amd64.deb": ("b" * 64, 70)}
    import io
    assert apt._stream_scan(io.BytesIO(data), chunk=7).debs == scan.debs


def test_the_cache_keeps_to_its_bound_least_recently_used_first(cache, monkeypatch):
    prepared = cache.parent / "deb-prepared"
    prepared.mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(["old_1_all.deb", "mid_1_all.deb", "new_1_all.deb", "mine_1_all.deb"]):
        (cache / name).write_bytes(b"x" * 100)
        (prepared / name).write_bytes(b"y" * 400)
        (prepared / f"{name}.sha256").write_text("0" * 64 + " 400\n")
        for p in (cache / name, prepared / name, prepared / f"{name}.sha256"):
            os.utime(p, (1000 + i, 1000 + i))
    os.utime(cache / "mine_1_all.deb", (1, 1))            # the oldest, but the current build's: kept
    for p in (prepared / "mine_1_all.deb", prepared / "mine_1_all.deb.sha256"):
        os.utime(p, (1, 1))
    pkgcache.used(cache / "old_1_all.deb")                # just used: now the newest
    size = sum(p.stat().st_size for d in (cache, prepared) for p in d.iterdir())
    assert pkgcache.fit(size - 1, keep={"mine"}) == (1, 500 + 69)
    left = sorted(p.name for p in cache.iterdir())
    assert left == ["mine_1_all.deb", "new_1_all.deb", "old_1_all.deb"]
    assert not (prepared / "mid_1_all.deb").exists() and not (prepared / "mid_1_all.deb.sha256").exists()
    assert pkgcache.fit(10 ** 9) == (0, 0)
    monkeypatch.setenv("IMGBUILD_PACKAGES_MAX", "1K")
    assert pkgcache.max_size() == 1024
    assert pkgcache.fit(pkgcache.max_size(), keep={"mine"})[0] == 2
    assert sorted(p.name for p in cache.iterdir()) == ["mine_1_all.deb"]
