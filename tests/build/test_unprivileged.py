"""Unprivileged builds: a real ordinary user (made by the test, with its own /etc/subuid range) builds the default
recipe; the tarball is the same, bit for bit, as root's; device nodes are real in the tarball and the image;
hooks get /proc, /sys and /dev; outputs belong to the user; what needs root is refused with a clear error."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from builder.build import unprivileged as unpriv
from builder.core.errors import InputError
from tests.conftest import DEFAULT_RECIPE, imgbuild, sha256
from tests.support.unprivileged import USER

HOOK = 'hooks.pre-pack=[{run: "test -c /dev/null && test -r /proc/self/status && test -d /sys/class"}]'
IMAGE = "targets.image={size: 1G}"


def test_check_names_the_missing_subordinate_ids(tmp_path):
    sub = tmp_path / "subuid"
    sub.write_text("someone:100000:65536\n")
    with pytest.raises(InputError, match=r"65536 ids for .* in .*subuid") as e:
        unpriv.check(uid=os.getuid(), subuid=sub, subgid=sub)
    assert "usermod --add-subuids" in e.value.hint
    name = pwd.getpwuid(os.getuid()).pw_name
    sub.write_text(f"{name}:200000:1000\n")
    with pytest.raises(InputError, match=r"\(it has 1000\)"):
        unpriv.check(uid=os.getuid(), subuid=sub, subgid=sub)
    sub.write_text(f"{name}:200000:65536\n")
    unpriv.check(uid=os.getuid(), subuid=sub, subgid=sub)
    assert unpriv.subrange(str(os.getuid()), os.getuid(), sub) is None
    assert unpriv.subrange(name, os.getuid(), sub) == (200000, 65536)


def as_user(u: dict, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(u["home"]), "LANG": "C.UTF-8",
           "PYTHONPATH": f"{u['code']}:{u['site']}"}
    return subprocess.run(["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           u["python"], "-m", "builder", *args], cwd=u["code"], capture_output=True, text=True,
                          timeout=900)


@pytest.mark.root
@pytest.mark.network
@pytest.mark.slow
def test_unprivileged_build_is_roots_build(user, tmp_path):
    out = user["home"] / "out"
    r = as_user(user, "recipes/debian12.yml", "-o", str(out), "--set", HOOK, "--set", IMAGE)
    assert r.returncode == 0, r.stderr
    built = out / "debian12"
    assert "automatically chosen mode: root" in r.stderr      # mmdebstrap as root of the user namespace
    # the user's own caches, decided before entering the namespace
    assert list((user["home"] / ".cache/imgbuild/packages/deb").glob("*.deb"))
    assert list((user["home"] / ".cache/imgbuild/bootstrap").iterdir())
    for f in built.iterdir():
        assert f.stat().st_uid == user["uid"], f"{f} is not the user's"
    assert not (out / ".work").exists()

    members = _members(built / "debian12.tar.zst", {"./dev/null", "./etc/shadow"})
    null, shadow = members["./dev/null"], members["./etc/shadow"]
    assert null.ischr() and (null.devmajor, null.devminor, null.uid, null.mode) == (1, 3, 0, 0o666)
    assert (shadow.uid, shadow.gid, shadow.mode) == (0, 42, 0o640)        # owners as root would set them
    assert not any("imgbuild" in k for m in members.values() for k in m.pax_headers)   # no placeholder marks

    dbg = subprocess.run(["debugfs", "-R", "stat /dev/null", str(built / "debian12.ext4")], capture_output=True,
                         text=True).stdout
    assert "character special" in dbg and "01:03" in dbg

    root = imgbuild(DEFAULT_RECIPE, "-o", tmp_path / "root", "--set", HOOK)
    assert root.returncode == 0, root.stderr
    assert sha256(tmp_path / "root/debian12/debian12.tar.zst") == sha256(built / "debian12.tar.zst"), \
        "an unprivileged build gave another tarball than root's"

    # the same path as root's: the bootstrap kept as a cache entry, the build above it on an overlay (mounted
    # with userxattr in the user namespace); a rebuild above the same entry; the user checks and prunes entries
    # holding files of the namespace's ids
    cache = json.loads((built / "manifest.json").read_text())["bootstrap"]["cache"]
    assert cache.startswith("miss, kept as ") and cache.endswith(" (overlay)"), cache
    first = sha256(built / "debian12.tar.zst")
    r = as_user(user, "recipes/debian12.yml", "-o", str(out), "--set", HOOK, "--set", IMAGE, "--force")
    assert r.returncode == 0, r.stderr
    cache = json.loads((built / "manifest.json").read_text())["bootstrap"]["cache"]
    assert cache.startswith("hit ") and cache.endswith(" (overlay)"), cache
    assert sha256(built / "debian12.tar.zst") == first
    r = as_user(user, "cache", "verify")
    assert r.returncode == 0 and "debian12: ok" in r.stdout, r.stdout + r.stderr
    r = as_user(user, "cache", "prune", "--all")
    assert r.returncode == 0 and "removed " in r.stdout, r.stdout + r.stderr
    assert not [p for p in (user["home"] / ".cache/imgbuild/bootstrap").iterdir() if not p.name.startswith(".")]


def _members(path: Path, names: set[str]) -> dict[str, tarfile.TarInfo]:
    """The named members of a .tar.zst, read as a stream."""
    with subprocess.Popen(["zstd", "-dc", str(path)], stdout=subprocess.PIPE) as p:
        with tarfile.open(fileobj=p.stdout, mode="r|") as t:
            found = {m.name: m for m in t if m.name in names}
    assert p.returncode == 0 and set(found) == names, found
    return found


@pytest.mark.root
@pytest.mark.network
def test_what_needs_root_is_refused(user):
    r = as_user(user, "recipes/debian12.yml", "-o", str(user["home"] / "x"), "--install-lxc")
    assert r.returncode == 2 and "--install-lxc needs root" in r.stderr and "Traceback" not in r.stderr
    shm = Path(tempfile.mkdtemp(prefix="imgbuild-unpriv-", dir="/dev/shm"))
    try:
        os.chown(shm, user["uid"], -1)
        r = as_user(user, "recipes/debian12.yml", "-o", str(shm / "out"))
        assert r.returncode == 2 and "cannot work under /dev/shm" in r.stderr, r.stderr
        assert not (shm / "out").exists()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    r = as_user(user, "recipes/debian12.yml", "-o", str(user["home"] / "x"), "--set", "bootstrap.method=debootstrap")
    assert r.returncode == 2 and "debootstrap needs root" in r.stderr, r.stderr
    assert not (user["home"] / "x").exists()
    r = as_user(user, "build", "--help")
    assert r.returncode == 0 and "user namespace" in r.stdout


def test_a_placeholder_becomes_a_device_node_in_the_tarball(tmp_path, monkeypatch):
    """Where mknod is refused, RootFS leaves a marked empty file; the tarball holds the real node, unmarked,
    exactly as for a node made by mknod."""
    from builder.core import tarwriter
    from builder.core.rootfs import RootFS

    def refuse(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    root = RootFS(tmp_path / "root")
    root.path.mkdir()
    with monkeypatch.context() as m:
        m.setattr(os, "mknod", refuse)
        root.mknod("/dev/null", "c", 1, 3, 0o666, 0, 0)
        root.mknod("/dev/sda", "b", 8, 0, 0o660, 0, 6)
        with pytest.raises(PermissionError):
            root.mknod("/run/initctl", "p", 0, 0, 0o600)   # a fifo needs no privilege: a real error stays one
    st = os.lstat(root.path / "dev/null")
    assert st.st_size == 0 and tarwriter.placeholder(str(root.path / "dev/null"), st) == ("c", 1, 3)
    (root.path / "etc").mkdir()
    (root.path / "etc/empty").write_bytes(b"")            # an ordinary empty file stays one
    with open(tmp_path / "t.tar", "wb") as f:
        tarwriter.write(tarwriter.entries(root.path), f.fileno(), 1_700_000_000)
    with tarfile.open(tmp_path / "t.tar") as t:
        null, sda, empty = t.getmember("./dev/null"), t.getmember("./dev/sda"), t.getmember("./etc/empty")
        assert null.ischr() and (null.devmajor, null.devminor, null.mode, null.uid) == (1, 3, 0o666, 0)
        assert sda.isblk() and (sda.devmajor, sda.devminor, sda.mode, sda.gid) == (8, 0, 0o660, 6)
        assert empty.isfile() and not any(m.pax_headers for m in (null, sda, empty))
