"""Chroot deploy on a real host (seed 001): push an OS tree, install the boot script, start it by hand, reach
the new system's own sshd while the host's sshd (the backdoor, port 2222) still answers, escape to the real root,
enable at boot, disable, stop. The "host" is a network namespace running a real sshd (tests/sshhost.py)."""
from __future__ import annotations

import subprocess

import pytest

from tests.migrate.test_push import migrate, ssh_args
from tests.sshhost import base_tree, tree_state

pytestmark = [pytest.mark.root]

DEST = "/srv/newos"

RC_LOCAL = "#!/bin/sh -e\n# the host's own boot commands\necho host-boot > /run/host-boot\n\nexit 0\n"


def chroot_mounts(host) -> list[str]:
    out = host.ssh(f"awk '$2 ~ \"^{DEST}/\" {{print $2}}' /proc/mounts").stdout.split()
    return sorted(out)


def new_system(host, tmp_path, command: str) -> subprocess.CompletedProcess:
    """ssh into the NEW system (the chroot's sshd on port 22), with the test's key."""
    return subprocess.run(["ssh", "-F", "/dev/null", "-i", str(host.key), "-p", "22", "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={tmp_path}/kh-new",
                           "-o", "LogLevel=ERROR", f"root@{host.addr}", command],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def deployed(sshhost, tmp_path):
    """The base tree pushed to DEST with the boot script installed (not started)."""
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", base_tree())
    assert r.returncode == 0, r.stderr
    keys = sshhost.root / DEST.lstrip("/") / "root" / ".ssh"
    keys.mkdir(mode=0o700, exist_ok=True)
    (keys / "authorized_keys").write_text(sshhost.key.with_suffix(".pub").read_text()
                                          if sshhost.key.with_suffix(".pub").exists()
                                          else (sshhost.root / "root/.ssh/authorized_keys").read_text())
    before = tree_state(sshhost.root / DEST.lstrip("/"), mtime=True)
    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", DEST, "--hostname", "newos", "--dry-run")
    assert r.returncode == 0 and "would write" in r.stdout, r.stderr
    assert tree_state(sshhost.root / DEST.lstrip("/"), mtime=True) == before
    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", DEST, "--hostname", "newos")
    assert r.returncode == 0, r.stderr
    yield sshhost
    migrate("chroot-stop", *ssh_args(sshhost), "--dest", DEST)


def test_start_reach_escape_stop(deployed, tmp_path):
    host = deployed
    tree = host.root / DEST.lstrip("/")
    assert (tree / "etc/hostname").read_text() == "newos\n"
    assert list((tree / "etc/ssh").glob("ssh_host_*_key")), "no host keys of its own"
    assert (tree / "etc/ssh/ssh_host_ed25519_key").read_bytes() != (host.root / "etc/ssh/ssh_host_ed25519_key").read_bytes()
    assert host.tcp_banner(22, timeout=0.5) is None
    r = migrate("chroot-start", *ssh_args(host), "--dest", DEST, "--dry-run")
    assert r.returncode == 0 and "would run" in r.stdout, r.stderr
    assert "listens on 0.0.0.0:2222: sshd (pid 1)" in r.stderr
    assert chroot_mounts(host) == [] and host.tcp_banner(22, timeout=0.5) is None

    r = migrate("chroot-start", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    assert f"answers on {host.addr}:22" in r.stderr and "still answers on 2222" in r.stderr
    mounts = chroot_mounts(host)
    assert mounts == sorted(f"{DEST}{b}" for b in ("/proc", "/sys", "/dev", "/dev/pts", "/lib/modules")) or \
        set(f"{DEST}{b}" for b in ("/proc", "/sys", "/dev", "/dev/pts")) <= set(mounts), mounts
    assert host.tcp_banner(22).startswith("SSH-2.0") and host.tcp_banner(2222).startswith("SSH-2.0")

    # the new system: its own host name; chroot-escape reaches the host's real root
    r = new_system(host, tmp_path, "cat /etc/hostname; chroot-escape cat /etc/hostname; chroot-escape ls /srv")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == "newos" and lines[1] != "newos" and "newos" in lines[2:], r.stdout

    # idempotent: a second start mounts nothing twice
    r = migrate("chroot-start", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    assert chroot_mounts(host) == mounts

    r = migrate("chroot-stop", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    assert chroot_mounts(host) == []
    assert host.tcp_banner(22, timeout=1) is None
    assert host.tcp_banner(2222).startswith("SSH-2.0")
    assert "processes: none" in r.stdout


def test_port_conflict_is_refused_naming_port_and_process(deployed):
    host = deployed
    r = migrate("chroot-install", *ssh_args(host), "--dest", DEST, "--ssh-port", "2222")
    assert r.returncode == 0, r.stderr
    r = migrate("chroot-start", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 2, r.stderr
    assert "port 2222 is already in use by sshd (pid 1)" in r.stderr and "--ssh-port" in r.stderr
    assert chroot_mounts(host) == []                  # nothing was started
    assert not [c for _, c in host.processes() if "/usr/sbin/sshd" in c and "2222" not in c and "-D" not in c]


def test_enable_disable_edit_only_their_own_lines(deployed):
    host = deployed
    rc = host.root / "etc/rc.local"
    rc.write_text(RC_LOCAL)
    rc.chmod(0o755)
    r = migrate("chroot-enable", *ssh_args(host), "--dest", DEST, "--dry-run")
    assert r.returncode == 0 and "would add to /etc/rc.local" in r.stdout
    assert rc.read_text() == RC_LOCAL
    r = migrate("chroot-enable", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    text = rc.read_text()
    assert f"{DEST}/usr/local/sbin/imgbuild-chroot start" in text and text.rstrip().endswith("exit 0")
    assert text.replace("".join(f"{x}\n" for x in text.splitlines()[4:7]), "") == RC_LOCAL
    assert migrate("chroot-enable", *ssh_args(host), "--dest", DEST).stdout.strip().endswith("already starts it")
    assert subprocess.run(["sh", "-n", str(rc)]).returncode == 0
    r = migrate("chroot-disable", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    assert rc.read_text() == RC_LOCAL and rc.stat().st_mode & 0o777 == 0o755

    r = migrate("chroot-enable", *ssh_args(host), "--dest", DEST, "--via", "unit")
    assert r.returncode == 0, r.stderr
    unit = host.root / "etc/systemd/system/imgbuild-chroot-srv-newos.service"
    link = host.root / "etc/systemd/system/multi-user.target.wants" / unit.name
    assert f"ExecStart={DEST}/usr/local/sbin/imgbuild-chroot start" in unit.read_text()
    assert link.is_symlink()
    r = migrate("chroot-disable", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    assert not unit.exists() and not link.is_symlink() and rc.read_text() == RC_LOCAL
    r = migrate("chroot-disable", *ssh_args(host), "--dest", DEST)
    assert "nothing to undo" in r.stdout


def test_start_without_install_names_what_to_do(sshhost):
    r = migrate("chroot-start", *ssh_args(sshhost), "--dest", DEST)
    assert r.returncode == 2 and "chroot-install" in r.stderr and "Traceback" not in r.stderr
