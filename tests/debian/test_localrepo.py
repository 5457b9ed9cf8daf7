"""The local repository of prepared packages (builder/debian/localrepo.py): what apt reads from it, and how a failure
while mmdebstrap runs comes out. The whole path is built for real in tests/build/test_bootcache.py and
test_unprivileged.py; here a download fails on purpose (a refused connection on loopback)."""
from __future__ import annotations

import email.utils
import hashlib
import subprocess
import types

import pytest

from builder.build.families import Plan
from builder.core.errors import CommandError, MirrorError
from builder.debian import apt, localrepo, pkgcache, repoindex
from builder.debian import resolve as debresolve

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
    (prepared / "ess_1_amd64.deb.sha256").write_text(f"{hashlib.sha256(DEB).hexdigest()} {len(DEB)} {'ab' * 32}\n")
    work = tmp_path / "work"
    work.mkdir()
    recipe = types.SimpleNamespace(bootstrap=types.SimpleNamespace(variant="minbase", packages=("two",)))
    return types.SimpleNamespace(index=index, plan=Plan(index=index), recipe=recipe, work=work,
                                 root=types.SimpleNamespace(path=work / "rootfs"))


def test_the_repository_lists_the_prepared_files(setup):
    res = debresolve.resolve(setup.index, "minbase", ["two"])
    assert [s.name for s in res.stanzas] == ["ess", "two"] and res.first == {"ess"}
    repo = setup.work / "repo"
    repoindex.write_index(repo, setup.index, [s.text for s in res.stanzas],
                          {b"ess": ("pool/ess_1_amd64.deb", "cd" * 32, 7), b"two": ("pool/two_2_all.deb", "ef" * 32,
                                                                                    9)})
    packages = (repo / "dists/bookworm/main/binary-amd64/Packages").read_bytes()
    assert packages.count(b"Filename:") == 2 and b"pool/main/" not in packages and b"ab" * 32 not in packages
    assert b"Package: ess\n" in packages
    assert b"Filename: pool/ess_1_amd64.deb\nSize: 7\nSHA256: " + b"cd" * 32 in packages
    release = (repo / "dists/bookworm/Release").read_text()
    assert "Suite: stable\n" in release and "Codename: bookworm\n" in release
    # the mirror's own Date (apt warns "Invalid 'Date' entry" without one), in apt's RFC 2822 form
    assert f"Date: {email.utils.formatdate(setup.index.date, usegmt=True).replace('GMT', 'UTC')}\n" in release
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
    (pkgcache.prepared_dir() / "two_2_all.deb.sha256").write_text(
        f"{hashlib.sha256(DEB).hexdigest()} {len(DEB)} {'ab' * 32}\n")
    with pytest.raises(CommandError, match="mmdebstrap"):
        with localrepo.prepared(setup):
            raise CommandError("mmdebstrap", 1, ["E: something else"])


# ---------------------------------------------------------------------------------------------- trust
# The local repository is given to apt as `[trusted=yes] file://`: its only trust is that every file in it was
# made from the very .deb the signed index lists. Real .debs (dpkg-deb, data.tar.xz) so that preparing one
# changes its bytes.


def _deb(tmp_path, name: str, version: str, arch: str, marker: str) -> bytes:
    d = tmp_path / f"src-{name}-{marker}"
    (d / "DEBIAN").mkdir(parents=True)
    (d / "DEBIAN/control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
                                      "Maintainer: t <t@example.invalid>\nDescription: t\n")
    (d / "usr/share").mkdir(parents=True)
    (d / "usr/share" / name).write_text(marker * 100)
    out = tmp_path / f"{name}-{marker}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", str(d), str(out)], check=True,
                   capture_output=True)
    return out.read_bytes()


@pytest.fixture
def real(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    debs = {"ess": ("1", "amd64", _deb(tmp_path, "ess", "1", "amd64", "genuine")),
            "two": ("2", "all", _deb(tmp_path, "two", "2", "all", "genuine"))}
    texts = []
    for name, (version, arch, data) in debs.items():
        texts.append(STANZAS[name] + f"Filename: pool/main/{name}/{name}_{version}_{arch}.deb\nSize: {len(data)}\n"
                     f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    packages = "\n".join(texts).encode()
    sha = hashlib.sha256(packages).hexdigest()
    idx_dir = tmp_path / "cache/indexes"
    idx_dir.mkdir(parents=True)
    (idx_dir / f"{sha}.Packages").write_bytes(packages)
    (idx_dir / f"{sha}.Packages.sha256").write_text(sha + "\n")
    (idx_dir / f"{sha}.debs").write_text("".join(
        f"{name}_{v}_{a}.deb {hashlib.sha256(d).hexdigest()} {len(d)}\n" for name, (v, a, d) in debs.items()))
    index = apt.Index("http://127.0.0.1:9/debian", "bookworm", "amd64", 0, (sha,), frozenset(STANZAS),
                      ("http://127.0.0.1:9/debian/dists/bookworm/main/binary-amd64/Packages",),
                      (("Origin", "Debian"), ("Suite", "stable"), ("Codename", "bookworm")))
    pkgcache.deb_dir().mkdir(parents=True)
    for name, (v, a, d) in debs.items():
        (pkgcache.deb_dir() / f"{name}_{v}_{a}.deb").write_bytes(d)
    work = tmp_path / "work"
    work.mkdir()
    recipe = types.SimpleNamespace(bootstrap=types.SimpleNamespace(variant="minbase", packages=("two",)))
    ctx = types.SimpleNamespace(plan=Plan(index=index), recipe=recipe, work=work,
                                root=types.SimpleNamespace(path=work / "rootfs"))
    return types.SimpleNamespace(ctx=ctx, debs=debs, tmp=tmp_path)


def _check_repository(plan, real) -> None:
    """Every file apt will be given is the prepared form of the .deb the index lists, and the repository's
    Packages names exactly that file's sha256 (apt checks it again)."""
    from builder.debian import prepared as debprep

    # the repository apt's first update reads is never rewritten under it: its Release still lists its Packages
    first = (plan.repo / "dists/bookworm/main/binary-amd64/Packages").read_bytes()
    assert hashlib.sha256(first).hexdigest() in (plan.repo / "dists/bookworm/Release").read_text()
    # the second stage's index, as the essential hook moves it into the repository once apt's first update is over
    stage2 = plan.repo.with_name("repo-stage2") / "dists/bookworm/main/binary-amd64/Packages"
    packages = (stage2 if stage2.exists() else plan.repo / "dists/bookworm/main/binary-amd64/Packages").read_bytes()
    for name, (v, a, data) in real.debs.items():
        file = f"{name}_{v}_{a}.deb"
        want = debprep.prepare(data)
        assert want != data                                         # preparing changed it: the test can tell
        sidecar = (pkgcache.prepared_dir() / f"{file}.sha256").read_text().split()
        assert sidecar == [hashlib.sha256(want).hexdigest(), str(len(want)), hashlib.sha256(data).hexdigest()]
        assert (pkgcache.prepared_dir() / file).read_bytes() == want
        assert f"Filename: pool/{file}\nSize: {len(want)}\nSHA256: {hashlib.sha256(want).hexdigest()}".encode() \
            in packages
    assert (plan.debs / "ess_1_amd64.deb").read_bytes() == debprep.prepare(real.debs["ess"][2])


@pytest.mark.parametrize("stale", ["from-another-original", "old-sidecar-without-original", "tampered-content",
                                   "none"])
def test_every_file_in_the_trusted_repository_traces_to_the_signed_index(real, stale):
    from builder.debian import prepared as debprep

    prepared = pkgcache.prepared_dir()
    prepared.mkdir(parents=True)
    for name, (v, a, data) in real.debs.items():
        file = prepared / f"{name}_{v}_{a}.deb"
        other = debprep.prepare(_deb(real.tmp, name, v, a, "attacker"))     # same name and version, other bytes
        sha_other, sha_orig = hashlib.sha256(other).hexdigest(), hashlib.sha256(data).hexdigest()
        if stale == "from-another-original":
            file.write_bytes(other)
            (prepared / f"{file.name}.sha256").write_text(f"{sha_other} {len(other)} "
                                                          f"{hashlib.sha256(b'attacker').hexdigest()}\n")
        elif stale == "old-sidecar-without-original":
            file.write_bytes(other)
            (prepared / f"{file.name}.sha256").write_text(f"{sha_other} {len(other)}\n")
        elif stale == "tampered-content":
            good = debprep.prepare(data)
            file.write_bytes(other)
            (prepared / f"{file.name}.sha256").write_text(f"{hashlib.sha256(good).hexdigest()} {len(good)} "
                                                          f"{sha_orig}\n")
    with localrepo.prepared(real.ctx) as plan:
        assert plan is not None and plan.line.startswith("deb [trusted=yes] file://")
        marker = real.ctx.work / "stage2.done"
        for _ in range(600):
            if marker.exists():
                break
            __import__("time").sleep(0.05)
        _check_repository(plan, real)


def test_a_cached_original_that_differs_from_the_index_is_never_prepared(real):
    """The cache's .deb was replaced (same name): it is not used; the package is downloaded again (here the
    mirror refuses), never prepared from the replaced file."""
    (pkgcache.deb_dir() / "ess_1_amd64.deb").write_bytes(_deb(real.tmp, "ess", "1", "amd64", "attacker"))
    with pytest.raises(MirrorError, match="cannot download http://127.0.0.1:9/debian/pool/main/ess"):
        with localrepo.prepared(real.ctx):
            pass
    assert not (pkgcache.prepared_dir() / "ess_1_amd64.deb").exists()
