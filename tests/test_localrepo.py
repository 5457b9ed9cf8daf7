"""The local repository of prepared packages (builder/localrepo.py): what apt reads from it, and how a failure
while mmdebstrap runs comes out. The whole path is built for real in test_bcache and test_unprivileged; here a
download fails on purpose (a refused connection on loopback)."""
from __future__ import annotations

import hashlib
import types

import pytest

from builder import apt, debresolve, localrepo, pkgcache
from builder.errors import CommandError, MirrorError

STANZAS = {
    "ess": "Package: ess\nVersion: 1\nArchitecture: amd64\nEssential: yes\nPriority: required\n",
    "two": "Package: two\nVersion: 2\nArchitecture: all\nPriority: optional\nDepends: ess\n",
}
DEB = b"!<arch>\nprepared stand-in\n"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    texts = []
    for name, body in STANZAS.items():
        arch = "amd64" if name == "ess" else "all"
        texts.append(body + f"Filename: pool/main/{name}/{name}_{arch}.deb\nSize: 5\nSHA256: {'ab' * 32}\n")
    packages = "\n".join(texts).encode()
    sha = hashlib.sha256(packages).hexdigest()
    idx_dir = tmp_path / "cache/indexes"
    idx_dir.mkdir(parents=True)
    (idx_dir / f"{sha}.Packages").write_bytes(packages)
    (idx_dir / f"{sha}.Packages.sha256").write_text(sha + "\n")
    (idx_dir / f"{sha}.debs").write_text(f"ess_1_amd64.deb {'ab' * 32} 5\ntwo_2_all.deb {'ab' * 32} 5\n")
    index = apt.Index("http://127.0.0.1:9/debian", "bookworm", "amd64", 0, (sha,), frozenset(STANZAS),
                      ("http://127.0.0.1:9/debian/dists/bookworm/main/binary-amd64/Packages",),
                      (("Origin", "Debian"), ("Suite", "stable"), ("Codename", "bookworm")))
    # ess: its prepared copy is in the cache; two: nothing, so it must be downloaded (and the mirror refuses)
    prepared = pkgcache.prepared_dir()
    prepared.mkdir(parents=True)
    (prepared / "ess_1_amd64.deb").write_bytes(DEB)
    (prepared / "ess_1_amd64.deb.sha256").write_text(f"{hashlib.sha256(DEB).hexdigest()} {len(DEB)}\n")
    work = tmp_path / "work"
    work.mkdir()
    recipe = types.SimpleNamespace(bootstrap=types.SimpleNamespace(variant="minbase", packages=("two",)))
    return types.SimpleNamespace(index=index, recipe=recipe, work=work)


def test_the_repository_lists_the_prepared_files(setup):
    res = debresolve.resolve(setup.index, "minbase", ["two"])
    assert [s.name for s in res.stanzas] == ["ess", "two"] and res.first == {"ess"}
    repo = setup.work / "repo"
    localrepo.write_index(repo, setup.index, [s.text for s in res.stanzas],
                          {b"ess": ("pool/ess_1_amd64.deb", "cd" * 32, 7), b"two": ("pool/two_2_all.deb", "ef" * 32, 9)})
    packages = (repo / "dists/bookworm/main/binary-amd64/Packages").read_bytes()
    assert packages.count(b"Filename:") == 2 and b"pool/main/" not in packages and b"ab" * 32 not in packages
    assert b"Package: ess\n" in packages and b"Filename: pool/ess_1_amd64.deb\nSize: 7\nSHA256: " + b"cd" * 32 in packages
    release = (repo / "dists/bookworm/Release").read_text()
    assert "Suite: stable\n" in release and "Codename: bookworm\n" in release
    assert f" {hashlib.sha256(packages).hexdigest()} {len(packages)} main/binary-amd64/Packages" in release


def test_a_second_stage_download_failure_is_the_error_raised(setup):
    with pytest.raises(MirrorError, match="cannot download http://127.0.0.1:9/debian/pool/main/two"):
        with localrepo.prepared(setup) as plan:
            assert plan is not None and (plan.debs / "ess_1_amd64.deb").read_bytes() == DEB
            assert "--essential-hook=" in plan.essential_hook and plan.line.startswith("deb [trusted=yes] file://")
            # mmdebstrap's essential hook would now wait for the marker, see the failure and exit 1
            marker = setup.work / "stage2.failed"
            for _ in range(600):
                if marker.exists():
                    break
                __import__("time").sleep(0.05)
            assert marker.exists()
            raise CommandError("mmdebstrap", 1, ["E: hook failed"])
    assert not (setup.work / "repo").exists() and not (setup.work / "debs-prepared").exists()


def test_mmdebstraps_own_error_is_kept_when_the_second_stage_is_fine(setup):
    (pkgcache.prepared_dir() / "two_2_all.deb").write_bytes(DEB)
    (pkgcache.prepared_dir() / "two_2_all.deb.sha256").write_text(f"{hashlib.sha256(DEB).hexdigest()} {len(DEB)}\n")
    with pytest.raises(CommandError, match="mmdebstrap"):
        with localrepo.prepared(setup):
            raise CommandError("mmdebstrap", 1, ["E: something else"])
