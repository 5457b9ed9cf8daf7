"""Every step on a root whose files are links out of it (as a package or a guest may ship them): the file outside
(a directory beside the root standing in for the host) keeps its content, mode, owner and mtime, and nothing
appears in it. What the step writes replaces the link inside the root; what it reads is read inside the root."""
from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from builder.build.families import family_of
from builder.build.steps import basefiles, cleanup, devices, files, init, init_el, network, password
from builder.core.errors import InputError

UP = "../" * 12
KINDS = ["absolute", "relative"]


@pytest.fixture
def outside(tmp_path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "file").write_text("SELINUX=enforcing\nroot:HOSTHASH:19000:0:99999:7:::\n")
    os.chmod(d / "file", 0o600)
    os.chown(d / "file", 4321, 4321)
    os.utime(d / "file", (1_000_000_000, 1_000_000_000))
    (d / "dir").mkdir(mode=0o700)
    (d / "dir" / "keep").write_text("keep\n")
    return d


def state(d: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in [*dirnames, *filenames]:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                           p.read_bytes() if stat.S_ISREG(st.st_mode) else None)
    return out


def link_out(root: Path, path: str, target: Path, kind: str) -> None:
    host = root / path.lstrip("/")
    host.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(host):
        os.unlink(host)
    os.symlink(str(target) if kind == "absolute" else UP + str(target).lstrip("/"), host)


def written(root: Path, path: str) -> bytes:
    host = root / path.lstrip("/")
    assert not host.is_symlink() and host.is_file(), path
    return host.read_bytes()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["/etc/hostname", "/etc/hosts", "/etc/fstab", "/etc/resolv.conf"])
def test_basefiles(ctx_for, outside, kind, path):
    ctx = ctx_for(dns=["10.0.3.1"])
    link_out(ctx.root.path, path, outside / "file", kind)
    before = state(outside)
    basefiles.run(ctx)
    assert state(outside) == before
    assert b"written by imgbuild" in written(ctx.root.path, path) or path == "/etc/hostname"


@pytest.mark.parametrize("kind", KINDS)
def test_basefiles_drops_a_resolv_conf_link_not_its_target(ctx_for, outside, kind):
    ctx = ctx_for()
    link_out(ctx.root.path, "/etc/resolv.conf", outside / "file", kind)
    before = state(outside)
    basefiles.run(ctx)
    assert state(outside) == before and not os.path.lexists(ctx.root.path / "etc/resolv.conf")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family,path", [("debian", "/etc/network/interfaces"), ("rhel", "/etc/sysconfig/network"),
                                         ("rhel", "/etc/sysconfig/network-scripts/ifcfg-eth0")])
def test_network(ctx_for, outside, kind, family, path):
    ctx = ctx_for(network={"eth0": {"address": "10.0.3.2/24"}})
    ctx = dataclasses.replace(ctx, family=family_of("centos" if family == "rhel" else "debian"))
    link_out(ctx.root.path, path, outside / "file", kind)
    before = state(outside)
    network.run(ctx)
    assert state(outside) == before
    assert b"10.0.3.2" in written(ctx.root.path, path) or b"NETWORKING" in written(ctx.root.path, path)


@pytest.mark.parametrize("kind", KINDS)
def test_password_never_reads_or_writes_a_shadow_outside(ctx_for, outside, kind):
    """/etc/shadow a link out of the root: inside the root it leads nowhere, so there is no shadow file to edit
    (the host's hash is never read into the guest, the host file never written)."""
    ctx = ctx_for(root_password={"lock": True})
    link_out(ctx.root.path, "/etc/shadow", outside / "file", kind)
    before = state(outside)
    with pytest.raises(InputError, match="no /etc/shadow"):
        password.run(ctx, ctx.recipe.root_password)
    assert state(outside) == before


def test_password_edits_a_shadow_linked_inside_the_root(ctx_for):
    ctx = ctx_for(root_password={"lock": True})
    r = ctx.root.path
    os.rename(r / "etc/shadow", r / "etc/shadow.real")
    os.symlink("shadow.real", r / "etc/shadow")
    password.run(ctx, ctx.recipe.root_password)
    assert written(r, "/etc/shadow").startswith(b"root:!*:")
    assert stat.S_IMODE(os.lstat(r / "etc/shadow").st_mode) == 0o640


@pytest.mark.parametrize("kind", KINDS)
def test_sysvinit_shim(ctx_for, outside, kind):
    ctx = ctx_for(init="sysvinit-container")
    ctx.root.write("/etc/init.d/rc", "#!/bin/sh\n", 0o755)
    ctx.root.write("/sbin/init", "", 0o755)
    link_out(ctx.root.path, "/etc/inittab", outside / "file", kind)
    before = state(outside)
    init.run(ctx, "sysvinit-container")
    assert state(outside) == before
    assert b"console" in written(ctx.root.path, "/etc/inittab")


@pytest.mark.parametrize("kind", KINDS)
def test_systemd_shim(ctx_for, outside, kind):
    ctx = ctx_for()
    ctx.root.write("/lib/systemd/system/systemd-journald.service", "[Unit]\n")
    for p in ("/etc/systemd/system/default.target", "/etc/systemd/system/getty@.service"):
        link_out(ctx.root.path, p, outside / "file", kind)
    link_out(ctx.root.path, "/etc/systemd/system/getty.target.wants", outside / "dir", kind)
    before = state(outside)
    init.run(ctx, "systemd-container")
    assert state(outside) == before
    assert os.readlink(ctx.root.path / "etc/systemd/system/getty@.service") == "/dev/null"


@pytest.mark.parametrize("kind", KINDS)
def test_el_container_fixes_edit_nothing_outside(ctx_for, outside, kind):
    """_edit reads inside the root: a link out leads nowhere there, nothing is edited (and a link inside the root
    is edited as the file it leads to, written back as a file)."""
    ctx = ctx_for()
    r = ctx.root.path
    link_out(r, "/etc/selinux/config", outside / "file", kind)
    ctx.root.write("/etc/pam.d/login.real", "session    required     pam_loginuid.so\n", 0o600)
    os.symlink("login.real", r / "etc/pam.d/login")
    before = state(outside)
    init_el.container_fixes(ctx.root)
    assert state(outside) == before
    assert (r / "etc/selinux/config").is_symlink()
    assert written(r, "/etc/pam.d/login") == b"#session    required     pam_loginuid.so\n"
    assert stat.S_IMODE(os.lstat(r / "etc/pam.d/login").st_mode) == 0o600


@pytest.mark.parametrize("kind", KINDS)
def test_files(ctx_for, outside, kind):
    ctx = ctx_for(files=[{"path": "/etc/motd", "content": "hi\n", "mode": "0666"},
                         {"path": "/opt/keep", "content": "below a link out\n", "mode": "0666"}])
    link_out(ctx.root.path, "/etc/motd", outside / "file", kind)
    link_out(ctx.root.path, "/opt", outside / "dir", kind)
    before = state(outside)
    files.run(ctx, ctx.recipe.files)
    assert state(outside) == before
    assert written(ctx.root.path, "/etc/motd") == b"hi\n"
    assert written(ctx.root.path, str(outside / "dir" / "keep")) == b"below a link out\n"   # inside the root


@pytest.mark.parametrize("kind", KINDS)
def test_cleanup(ctx_for, outside, kind):
    """machine-id written as a file; a truncated log, a removed file and ssh host keys that are links lose the
    link only; an emptied directory that is a link out (/tmp) empties nothing outside."""
    ctx = ctx_for()
    r = ctx.root.path
    for p in ("/etc/machine-id", "/var/log/wtmp", "/var/log/dpkg.log", "/etc/ssh/ssh_host_rsa_key"):
        link_out(r, p, outside / "file", kind)
    link_out(r, "/tmp", outside / "dir", kind)
    link_out(r, "/var/tmp", outside / "dir", kind)
    before = state(outside)
    cleanup.run(ctx)
    assert state(outside) == before
    assert written(r, "/etc/machine-id") == b""
    assert not os.path.lexists(r / "var/log/dpkg.log") and not os.path.lexists(r / "etc/ssh/ssh_host_rsa_key")
    assert (r / "var/log/wtmp").is_symlink()


@pytest.mark.root
@pytest.mark.parametrize("kind", KINDS)
def test_devices(ctx_for, outside, kind):
    ctx = ctx_for()
    r = ctx.root.path
    link_out(r, "/dev/null", outside / "file", kind)
    link_out(r, "/dev/shm", outside / "dir", kind)
    before = state(outside)
    devices.run(ctx, "container")
    assert state(outside) == before
    assert stat.S_ISCHR(os.lstat(r / "dev/null").st_mode)
    assert (r / "dev/shm").is_symlink()


@pytest.mark.root
def test_copy_skel_copies_links_as_links_and_never_opens_a_device(ctx_for, outside):
    """EL's /etc/skel -> /root: a link is copied as a link, a device node (here /dev/null's numbers) is neither
    read nor copied, and a /root entry that is a link out is kept, not written through."""
    ctx = ctx_for()
    root = ctx.root
    root.write("/etc/skel/.bashrc", "skel\n")
    os.symlink(str(outside / "file"), root.path / "etc/skel/.out")
    root.mknod("/etc/skel/dev", "c", 1, 3, 0o666)
    root.mkdir("/root", 0o700)
    link_out(root.path, "/root/.bashrc", outside / "file", "absolute")
    before = state(outside)
    basefiles.copy_skel(root)
    assert state(outside) == before
    assert os.readlink(root.path / "root/.out") == str(outside / "file")
    assert (root.path / "root/.bashrc").is_symlink()
    assert not os.path.lexists(root.path / "root/dev")
