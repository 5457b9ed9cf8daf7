"""Chroot deploy on a real host (seed 001): push an OS tree, install the boot script, start it by hand, reach
the new system's own sshd while the host's sshd (the backdoor, port 2222) still answers, escape to the real root,
enable at boot, disable, stop. The "host" is a network namespace running a real sshd (tests/support/sshhost.py)."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import migrate
from tests.support.sshhost import base_tree, ssh_args, tree_state

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
    key = "etc/ssh/ssh_host_ed25519_key"
    assert (tree / key).read_bytes() != (host.root / key).read_bytes()
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
    assert f'ExecStart="{DEST}/usr/local/sbin/imgbuild-chroot" start' in unit.read_text()
    assert link.is_symlink()
    r = migrate("chroot-disable", *ssh_args(host), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    assert not unit.exists() and not link.is_symlink() and rc.read_text() == RC_LOCAL
    r = migrate("chroot-disable", *ssh_args(host), "--dest", DEST)
    assert "nothing to undo" in r.stdout


def test_start_without_install_names_what_to_do(sshhost):
    r = migrate("chroot-start", *ssh_args(sshhost), "--dest", DEST)
    assert r.returncode == 2 and "chroot-install" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ what the host answers is checked again


def small_tree(host, dest: str = "/srv/t"):
    """A tree with what chroot-install needs (etc/), made directly in the host's root."""
    t = host.root / dest.lstrip("/")
    (t / "etc").mkdir(parents=True)
    (t / "usr/local/sbin").mkdir(parents=True)
    return t


def host_mounts(host) -> list[str]:
    return host.ssh("awk '{print $2}' /proc/mounts").stdout.split()


COMMANDS = (["chroot-install"], ["chroot-start"], ["chroot-stop"], ["chroot-status"], ["chroot-enable"],
            ["chroot-disable"])


def test_a_destination_resolving_to_the_root_or_the_system_is_refused(sshhost):
    """chroot-stop on a --dest that resolves to / would end every process whose root is / (all of them): every
    command checks the path the host resolved, with push's rules, before it runs anything there."""
    fake = sshhost.root / "usr/local/sbin/imgbuild-chroot"          # what $REAL/usr/local/sbin/... would run
    fake.write_text('#!/bin/sh\ntouch "/tmp/ran-$1"\n')
    fake.chmod(0o755)
    sshhost.ssh("ln -s / /srv/rootlink && ln -s /etc /srv/etclink && ln -s /usr/local /srv/locallink && "
                "ln -s /var/lib /srv/varliblink")
    for link, real in (("/srv/rootlink", "/"), ("/srv/etclink", "/etc"), ("/srv/locallink", "/usr/local"),
                       ("/srv/varliblink", "/var/lib")):
        for cmd in COMMANDS:
            r = migrate(*cmd, *ssh_args(sshhost), "--dest", link)
            assert r.returncode == 2, (cmd, r.stderr)
            assert f"target:{link} resolves to {real} there, part of the running system" in r.stderr, r.stderr
    assert not list((sshhost.root / "tmp").glob("ran-*"))
    assert len([p for p, _ in sshhost.processes()]) >= 1 and sshhost.tcp_banner(2222).startswith("SSH-")


def test_boot_script_refuses_a_root_that_is_no_longer_itself(sshhost):
    small_tree(sshhost)
    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", "/srv/t")
    assert r.returncode == 0, r.stderr
    before = len(sshhost.processes())
    sleeper = sshhost.ssh("nohup sleep 300 >/dev/null 2>&1 & echo $!").stdout.strip()
    r = sshhost.ssh("mv /srv/t /srv/t2 && ln -s / /srv/t && /srv/t2/usr/local/sbin/imgbuild-chroot stop",
                    check=False)
    assert r.returncode == 1 and "refusing to touch it" in r.stderr, r.stderr
    assert sshhost.ssh(f"kill -0 {sleeper} && echo alive").stdout.strip() == "alive"
    assert len(sshhost.processes()) >= before
    sshhost.ssh(f"kill {sleeper}")


def test_start_never_mounts_through_a_link_out_of_the_tree(sshhost):
    """An absolute /dev link in the tree would bind the host's /dev over the host's own directory: refused, and
    nothing at all is mounted; a link inside the tree (a merged-usr lib -> usr/lib) is followed."""
    tree = small_tree(sshhost)
    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", "/srv/t")
    assert r.returncode == 0, r.stderr
    victim = sshhost.root / "srv/victim"
    victim.mkdir()
    (victim / "data").write_text("host's own\n")
    for link in ("/srv/victim", "../victim"):
        if os.path.lexists(tree / "dev"):
            (tree / "dev").unlink()
        (tree / "dev").symlink_to(link)
        r = migrate("chroot-start", *ssh_args(sshhost), "--dest", "/srv/t", "--wait", "1")
        assert r.returncode == 1 and "leads out of /srv/t" in r.stderr, r.stderr
        assert not [m for m in host_mounts(sshhost) if m.startswith(("/srv/t/", "/srv/victim"))]
        assert [p.name for p in victim.iterdir()] == ["data"]
    (tree / "dev").unlink()
    (tree / "usr/dev").mkdir()
    (tree / "dev").symlink_to("usr/dev")
    r = migrate("chroot-start", *ssh_args(sshhost), "--dest", "/srv/t", "--wait", "1")
    assert "nothing answers ssh" in r.stderr, r.stderr                     # started; no sshd in this tree
    assert "/srv/t/usr/dev" in host_mounts(sshhost) and "/srv/victim" not in host_mounts(sshhost)
    r = migrate("chroot-stop", *ssh_args(sshhost), "--dest", "/srv/t")
    assert r.returncode == 0, r.stderr
    assert not [m for m in host_mounts(sshhost) if m.startswith("/srv/t/")]


def test_install_never_writes_through_the_trees_links(sshhost):
    tree = small_tree(sshhost)
    host_hostname = (sshhost.root / "etc/hostname").read_bytes()
    host_sshd = (sshhost.root / "etc/ssh/sshd_config").read_bytes()
    (tree / "etc/machine-id").symlink_to("/tmp/planted-machine-id")         # dangling, absolute
    (tree / "etc/hostname").symlink_to("/etc/hostname")                     # the host's, when read on the host
    # the temporary names the install writes before renaming, planted as links out of the tree
    (sshhost.root / "root/victim").write_text("host file\n")
    for tmp in (".hostname.imgbuild-tmp", "fstab.imgbuild-tmp", ".machine-id.imgbuild-tmp"):
        (tree / "etc" / tmp).symlink_to("/root/victim")
    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", "/srv/t", "--hostname", "newos")
    assert r.returncode == 0, r.stderr
    assert (sshhost.root / "root/victim").read_text() == "host file\n"
    assert "# This OS runs in a chroot" in (tree / "etc/fstab").read_text()
    assert not (sshhost.root / "tmp/planted-machine-id").exists()
    assert (sshhost.root / "etc/hostname").read_bytes() == host_hostname
    assert (tree / "etc/hostname").read_text() == "newos\n" and not (tree / "etc/hostname").is_symlink()
    (tree / "etc/ssh").mkdir()
    (tree / "etc/ssh/sshd_config").symlink_to("/etc/ssh/sshd_config")
    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", "/srv/t", "--ssh-port", "2299")
    assert r.returncode == 1 and "is a symlink: Port 2299 not set" in r.stderr, r.stderr
    assert (sshhost.root / "etc/ssh/sshd_config").read_bytes() == host_sshd
    # the boot script's own directory reached through an absolute link: nothing written on the host
    other = sshhost.root / "srv/u"
    (other / "etc").mkdir(parents=True)
    (other / "usr").mkdir()
    (other / "usr/local").symlink_to("/usr/local")
    listing = sorted(p.name for p in (sshhost.root / "usr/local/sbin").iterdir())
    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", "/srv/u")
    assert r.returncode == 1 and "/srv/u/usr/local is a symlink" in r.stderr, r.stderr
    assert sorted(p.name for p in (sshhost.root / "usr/local/sbin").iterdir()) == listing


def test_enable_writes_rc_local_only(sshhost):
    """An /etc/rc.local that resolves to another file (here /etc/passwd) is refused; nothing is written."""
    small_tree(sshhost)
    assert migrate("chroot-install", *ssh_args(sshhost), "--dest", "/srv/t").returncode == 0
    passwd = (sshhost.root / "etc/passwd").read_bytes()
    (sshhost.root / "etc/rc.local").symlink_to("/etc/passwd")
    for extra in ((), ("--dry-run",)):
        r = migrate("chroot-enable", *ssh_args(sshhost), "--dest", "/srv/t", "--via", "rc.local", *extra)
        assert r.returncode == 2 and "/etc/rc.local resolves to /etc/passwd" in r.stderr, r.stderr
    assert (sshhost.root / "etc/passwd").read_bytes() == passwd


PER_HOST = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/fstab", "/etc/machine-id")


def test_push_names_the_per_host_files_it_left_out_and_install_gives_the_tree_its_own(sshhost):
    """A fresh destination: the dry run and the run both name the per-host files the source has and the
    destination lacks (they are protected: not sent), and count alike; chroot-install then gives the tree every
    per-host file a chroot needs (fstab and a loopback-only interfaces among them). -v stays readable: the
    commands, not rsync's line per file, and no ssh chatter."""
    src = base_tree()
    have = [f for f in PER_HOST if os.path.lexists(src / f.lstrip("/"))]
    assert {"/etc/hostname", "/etc/fstab"} <= set(have), have      # what a bootstrapped Debian tree has
    dry = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", src, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    real = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", src)
    assert real.returncode == 0, real.stderr
    for out in (dry.stdout, real.stderr):
        line = next(ln for ln in out.splitlines() if "not sent (per-host files" in ln)
        assert all(f in line for f in have), line
        assert "chroot-install" in line and "--unprotect" in line
    assert "+ rsync" not in dry.stdout + dry.stderr + real.stderr            # the command only with -v
    counts = lambda text: re.search(r"(\d+) files .*?(\d+) directories/links/devices, .*?attributes of (\d+)",
                                    text).groups()
    assert counts(dry.stdout) == counts(real.stderr), (dry.stdout, real.stderr)
    tree = sshhost.root / DEST.lstrip("/")
    assert not any(os.path.lexists(tree / f.lstrip("/")) for f in have)
    assert not os.path.lexists(tree / "etc/network/interfaces")
    (tree / "etc/network").mkdir(exist_ok=True)            # as ifupdown leaves it (this minbase tree has none)

    r = migrate("chroot-install", *ssh_args(sshhost), "--dest", DEST)
    assert r.returncode == 0, r.stderr
    for f in (*PER_HOST, "/etc/network/interfaces"):
        assert (tree / f.lstrip("/")).is_file(), f
    assert "iface lo inet loopback" in (tree / "etc/network/interfaces").read_text()
    assert re.fullmatch(r"[0-9a-f]{32}\n", (tree / "etc/machine-id").read_text())
    assert list((tree / "etc/ssh").glob("ssh_host_*_key"))

    v = migrate("push", *ssh_args(sshhost), "--dest", DEST + "2", "--source", src, "-v")
    assert v.returncode == 0, v.stderr
    lines = v.stderr.splitlines()
    assert any(ln.startswith("+ rsync") for ln in lines) and len(lines) < 100, len(lines)
    assert "Pseudo-terminal" not in v.stderr
    vv = migrate("push", *ssh_args(sshhost), "--dest", DEST + "3", "--source", src, "-vv")
    assert vv.returncode == 0 and len(vv.stderr.splitlines()) > 1000        # rsync's line per file
