"""rpmdb.register with a real rpm *inside* the root (the path every real EL root takes).

No EL rpm runs here, so the root gets a copy of the host's rpm (binary, its libraries, /usr/lib/rpm): a real
rpm in a chroot, with its own database. What cannot be reproduced is an rpm older than 4.16 (Berkeley DB): the
test lowers SQLITE_SINCE past the host's version so that the rebuild-in-the-root path (initdb, key import,
--justdb registration) runs for real, as it does for EL5-EL8 roots.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.core.rootfs import RootFS
from builder.rpm import rpmdb
from builder.rpm.unpack import Owners, unpack

pytestmark = pytest.mark.root


def _install_host_rpm(root: Path) -> None:
    for prog in ("rpm", "rpmdb", "rpmkeys"):
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(f"/usr/bin/{prog}", root / "usr/bin" / prog)
    libs = subprocess.run(["ldd", "/usr/bin/rpm"], capture_output=True, text=True, check=True).stdout
    for line in libs.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, root / path.lstrip("/"), follow_symlinks=True)
    shutil.copytree("/usr/lib/rpm", root / "usr/lib/rpm", symlinks=True, dirs_exist_ok=True)


def _root_with_packages(el_repo, tmp_path) -> tuple[SimpleNamespace, list[Path]]:
    root = RootFS(tmp_path / "root")
    root.path.mkdir()
    rpms = [el_repo.newest(n)[2] for n in ("testos-base", "testos-tools", "testos-net", "testos-release")]
    owners = Owners()
    for p in rpms:
        unpack(Path(p), root, owners)
    owners.apply(root)
    _install_host_rpm(root.path)
    work = tmp_path / "work"
    work.mkdir()
    return SimpleNamespace(root=root, work=work), [Path(p) for p in rpms]


def _qa(root: Path) -> list[str]:
    out = subprocess.run(["chroot", str(root), "/usr/bin/rpm", "--dbpath", "/var/lib/rpm", "-qa", "--qf",
                          "%{NAME}\\n"], capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


def test_root_rpm_installs_and_runs_scriptlets(el_repo, tmp_path):
    ctx, rpms = _root_with_packages(el_repo, tmp_path)
    assert not (ctx.root.path / "var/lib/testos/post-ran").exists()   # unpacking runs no scriptlet
    how = rpmdb.register(ctx, rpms, ("/etc/pki/rpm-gpg/RPM-GPG-KEY-testos",), scripts_ran=False)
    assert how == "target"
    assert _qa(ctx.root.path) == ["gpg-pubkey", "testos-base", "testos-net", "testos-release", "testos-tools"]
    assert (ctx.root.path / "var/lib/testos/post-ran").read_text().strip() == "2.1"
    assert not (ctx.root.path / rpmdb.STAGE.lstrip("/")).exists()


def test_old_root_rpm_rebuilds_the_database_with_justdb(el_repo, tmp_path, monkeypatch):
    ctx, rpms = _root_with_packages(el_repo, tmp_path)
    # a database the host made, as after dnf --installroot: it must be replaced by the root's own
    subprocess.run(["rpm", "--root", str(ctx.root.path), "--dbpath", "/var/lib/rpm", "-i", "--justdb",
                    "--nodeps", "--noscripts", str(rpms[0])], check=True, capture_output=True,
                   env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    monkeypatch.setattr(rpmdb, "SQLITE_SINCE", (99,))   # pretend the root's rpm predates sqlite (EL5-EL8)
    how = rpmdb.register(ctx, rpms, ("/etc/pki/rpm-gpg/RPM-GPG-KEY-testos",), scripts_ran=True)
    assert how == "target"
    assert _qa(ctx.root.path) == ["gpg-pubkey", "testos-base", "testos-net", "testos-release", "testos-tools"]
    assert not (ctx.root.path / "var/lib/testos/post-ran").exists()   # --justdb: dnf already ran them


def test_root_without_rpm_gets_the_host_rpm(el_repo, tmp_path):
    root = RootFS(tmp_path / "root")
    root.path.mkdir()
    rpms = [Path(el_repo.newest(n)[2]) for n in ("testos-base", "testos-tools")]
    owners = Owners()
    for p in rpms:
        unpack(p, root, owners)
    owners.apply(root)
    work = tmp_path / "work"
    work.mkdir()
    how = rpmdb.register(SimpleNamespace(root=root, work=work), rpms, (), scripts_ran=False)
    assert how == "host"
    out = subprocess.run(["rpm", "--root", str(root.path), "--dbpath", "/var/lib/rpm", "-qa"], capture_output=True,
                         text=True, check=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}).stdout
    assert sorted(line.split("-")[1] for line in out.split()) == ["base", "tools"]
    assert (root.path / "var/lib/testos/post-ran").exists()
