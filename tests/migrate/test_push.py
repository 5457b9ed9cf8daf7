"""migrate push against a real sshd + rsync in a network namespace the test makes (tests/support/sshhost.py).

Every check compares real trees: the source, and the receiver's files as the test sees them (host.root/DEST)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, migrate
from tests.support.pushtree import DEST, N_FILES, make_tree
from tests.support.sshhost import ssh_args, tree_diff, tree_state

pytestmark = [pytest.mark.root]


def pushed(host) -> Path:
    return host.root / DEST.lstrip("/")


def comparable(state: dict) -> dict:
    skip = ("etc/hostname", "etc/ssh/ssh_host_ed25519_key", "tmp/scratch", ".", ".imgbuild-push")
    return {k: v for k, v in state.items() if k not in skip}


@pytest.fixture
def source(tmp_path) -> Path:
    return make_tree(tmp_path / "src")


def test_full_push_then_no_change_then_one_percent(sshhost, source):
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source)
    assert r.returncode == 0, r.stderr
    dst = pushed(sshhost)
    diff = tree_diff(comparable(tree_state(source)), comparable(tree_state(dst)))
    assert not diff, diff
    assert not (dst / "etc" / "hostname").exists()                      # protected: never sent
    assert not (dst / "etc" / "ssh" / "ssh_host_ed25519_key").exists()
    assert (dst / "tmp").is_dir() and not (dst / "tmp" / "scratch").exists()
    assert (dst / ".imgbuild-push").is_file()                            # the marker: later --delete runs may delete
    st = os.stat(dst / "var" / "lib" / "sparse.img")
    assert st.st_size == 64 << 20 and st.st_blocks * 512 < 1 << 20, "the sparse file arrived dense"
    assert "sent 6" in r.stderr                                          # "sent 6xx files"

    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source)
    assert r.returncode == 0, r.stderr
    assert "sent 0 files (0 B)" in r.stderr and "deleted 0" in r.stderr

    changed = [source / "usr" / "share" / f"d{i % 20:02d}" / f"f{i:04d}" for i in range(0, N_FILES, 100)]
    for p in changed:                                                   # 6 of 600 files: 1 %
        p.write_text(p.read_text() + "changed\n")
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source)
    assert r.returncode == 0, r.stderr
    assert f"sent {len(changed)} files" in r.stderr, r.stderr
    assert not tree_diff(comparable(tree_state(source)), comparable(tree_state(dst)))


def test_dry_run_changes_nothing_and_lists_deletions(sshhost, source):
    assert migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source).returncode == 0
    (source / "etc" / "app.conf").write_text("setting = 22\n")   # another size: a same-second rewrite
    # of the same size is invisible to rsync's quick check (that is what --verify is for)
    (source / "usr" / "share" / "d00" / "f0000").unlink()
    (source / "usr" / "share" / "new").write_text("new\n")
    before = tree_state(pushed(sshhost), mtime=True)      # (the host's own /run, /var/log change with each login)
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--delete", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert tree_state(pushed(sshhost), mtime=True) == before
    assert "nothing was changed" in r.stdout
    assert "would send 2 files" in r.stdout and "would delete 1" in r.stdout
    # every path, under what happens to it
    assert re.search(r"^  delete \(1\):\n    /usr/share/d00/f0000$", r.stdout, re.M), r.stdout
    assert re.search(r"^  change content \(1\):\n    /etc/app.conf$", r.stdout, re.M), r.stdout
    assert re.search(r"^  create \(1\):\n    /usr/share/new$", r.stdout, re.M), r.stdout
    j = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--delete", "--dry-run", "--json")
    assert j.returncode == 0, j.stderr
    got = json.loads(j.stdout)
    assert (got["create"], got["delete"]) == (["/usr/share/new"], ["/usr/share/d00/f0000"])
    assert {"path": "/etc/app.conf", "what": "content"} in got["change"]
    assert tree_state(pushed(sshhost), mtime=True) == before


def test_protected_files_survive_and_mounts_are_left_alone(sshhost, source):
    dst = pushed(sshhost)
    (dst / "etc" / "ssh").mkdir(parents=True)
    (dst / ".imgbuild-push").write_text("an earlier push\n")          # --delete may delete here
    (dst / "etc" / "hostname").write_text("target-host\n")
    (dst / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("TARGET KEY\n")
    (dst / "etc" / "only-on-target").write_text("deleted by --delete\n")
    # a running chroot's bind mount inside DEST: --delete must not touch the host's files behind it
    sshhost.ssh(f"mkdir -p {DEST}/lib/modules && mount --bind /usr/share/doc {DEST}/lib/modules")
    docs_before = sshhost.ssh("ls /usr/share/doc | wc -l").stdout.strip()
    assert int(docs_before) > 10
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--delete")
    assert r.returncode == 0, r.stderr
    assert (dst / "etc" / "hostname").read_text() == "target-host\n"
    assert (dst / "etc" / "ssh" / "ssh_host_ed25519_key").read_text() == "TARGET KEY\n"
    assert not (dst / "etc" / "only-on-target").exists()
    assert "lib/modules is a mount point: left alone" in r.stderr
    assert sshhost.ssh("ls /usr/share/doc | wc -l").stdout.strip() == docs_before
    sshhost.ssh(f"umount {DEST}/lib/modules")


def test_verify_finds_what_a_quick_check_misses(sshhost, source):
    assert migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source).returncode == 0
    target = pushed(sshhost) / "etc" / "app.conf"
    st = os.stat(target)
    target.write_text("setting = X\n")               # same size, same mtime: rsync's quick check cannot see it
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--verify")
    assert r.returncode == 1, r.stderr
    assert "differs: etc/app.conf" in r.stderr and "--verify found 1 difference" in r.stderr
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--verify",
                "--exclude", "/etc/app.conf")
    assert r.returncode == 0 and "every file equal by checksum" in r.stderr


def _rsync_children(pid: int) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and stat.split("(", 1)[1].startswith("rsync)"):
                found.append(int(p.name))
    return found


def test_interrupted_push_keeps_partial_data_and_resumes(sshhost, tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    (src / "etc").mkdir()
    (src / "blob").write_bytes(os.urandom(24 << 20))
    p = subprocess.Popen([str(BIN / "migrate"), "push", *ssh_args(sshhost), "--dest", DEST, "--source", str(src),
                          "--bwlimit", "2000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = pushed(sshhost) / ".imgbuild-partial" / "blob"

    def in_flight() -> int:      # rsync's temp file (.blob.XXXXXX) while it writes
        return max((q.stat().st_size for q in pushed(sshhost).glob(".blob.*")), default=0) \
            if pushed(sshhost).is_dir() else 0

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and in_flight() < 2 << 20:
        time.sleep(0.1)
    kids = _rsync_children(p.pid)
    assert kids, "rsync was not running"
    for k in kids:
        os.kill(k, signal.SIGKILL)                   # the test kills rsync itself
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "stopped part-way" in err and "run the same command again" in err
    assert partial.exists() and 1 << 20 < partial.stat().st_size < 24 << 20
    assert not (pushed(sshhost) / "blob").exists()     # no half-written file in place
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", src, "--verify")
    assert r.returncode == 0, r.stderr
    assert (pushed(sshhost) / "blob").read_bytes() == (src / "blob").read_bytes()
    assert not partial.exists()


def test_refusals_name_the_host_and_change_nothing(sshhost, source, tmp_path):
    before = tree_state(sshhost.root / "etc", mtime=True)
    r = migrate("push", *ssh_args(sshhost), "--dest", "/", "--source", source)
    assert r.returncode == 2 and "refusing to push into the remote system's own /" in r.stderr
    assert "Traceback" not in r.stderr
    # a destination that resolves into the running system on the host: refused as if named, with or without --delete
    sshhost.ssh("ln -s /usr/share /srv/link && ln -s /var/lib/dpkg /srv/link2 && ln -s / /srv/rootlink")
    for link, real in (("/srv/link", "/usr/share"), ("/srv/link2", "/var/lib/dpkg"), ("/srv/rootlink", "/")):
        for extra in ((), ("--delete",)):
            r = migrate("push", *ssh_args(sshhost), "--dest", link, "--source", source, *extra)
            assert r.returncode == 2, r.stderr
            assert f"target:{link} resolves to {real} there, part of the running system" in r.stderr
    # a symlinked destination with --delete would delete elsewhere
    sshhost.ssh("mkdir -p /srv/other && ln -s /srv/other /srv/otherlink")
    r = migrate("push", *ssh_args(sshhost), "--dest", "/srv/otherlink", "--source", source, "--delete")
    assert r.returncode == 2 and "really /srv/other" in r.stderr and "target:/srv/otherlink" in r.stderr
    # an unknown host key: refused, accepted only when asked
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshhost.ssh_config.read_text().replace(str(sshhost.known_hosts), str(tmp_path / "kh")))
    args = [sshhost.alias, "--ssh-config", str(cfg), "--dest", DEST, "--source", str(source)]
    r = migrate("push", *args)
    assert r.returncode == 2 and "not in your known_hosts" in r.stderr and "--accept-new-host-key" in r.stderr
    real_fp = subprocess.run(["ssh-keygen", "-l", "-f", sshhost.root / "etc/ssh/ssh_host_ed25519_key.pub"],
                             capture_output=True, text=True, check=True).stdout.split()[1]
    assert f"(it answers with ED25519 {real_fp})" in r.stderr, r.stderr     # shown, to compare out of band
    assert tree_state(sshhost.root / "etc", mtime=True) == before
    assert not pushed(sshhost).exists()
    r = migrate("push", *args, "--accept-new-host-key")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "kh").read_text().count("ssh-ed25519") == 1


def test_delete_only_where_a_push_was_or_nothing_is(sshhost, source):
    """--delete into a directory of someone's files (no marker of an earlier push) is refused; a push into a new
    or empty directory leaves the marker, and from then on --delete works there."""
    sshhost.ssh(f"mkdir -p {DEST}/data && echo precious > {DEST}/data/db && mkdir -p /srv/empty")
    before = tree_state(pushed(sshhost), mtime=True)
    for extra in ((), ("--dry-run",)):
        r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--delete", *extra)
        assert r.returncode == 2 and "no earlier push's .imgbuild-push" in r.stderr and "--force" in r.stderr
    assert tree_state(pushed(sshhost), mtime=True) == before
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source)      # without --delete: a merge
    assert r.returncode == 0, r.stderr
    assert (pushed(sshhost) / "data/db").read_text() == "precious\n"
    assert not (pushed(sshhost) / ".imgbuild-push").exists()      # not ours: still no --delete there
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--delete")
    assert r.returncode == 2
    for new in ("/srv/empty", "/srv/new/os"):                    # empty or new: the push marks it
        r = migrate("push", *ssh_args(sshhost), "--dest", new, "--source", source, "--delete")
        assert r.returncode == 0, r.stderr
        sshhost.ssh(f"echo stray > {new}/stray")
        r = migrate("push", *ssh_args(sshhost), "--dest", new, "--source", source, "--delete")
        assert r.returncode == 0, r.stderr
        assert not (sshhost.root / new.lstrip("/") / "stray").exists()
        assert (sshhost.root / new.lstrip("/") / ".imgbuild-push").is_file()
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--delete", "--force")
    assert r.returncode == 0, r.stderr
    assert not (pushed(sshhost) / "data/db").exists()


def test_dest_root_with_force_leaves_every_mount_alone(sshhost, source):
    """--dest / --force --delete (dry run): the host's /proc, /sys, /dev, /dev/shm mounts are found and left
    alone, so nothing under them would be deleted."""
    r = migrate("push", *ssh_args(sshhost), "--dest", "/", "--source", source, "--delete", "--force", "--dry-run")
    assert r.returncode == 0, r.stderr
    for m in ("/proc", "/sys", "/dev", "/dev/shm"):
        assert f"target:{m} is a mount point: left alone" in r.stderr, r.stderr
    listed = r.stdout.split("  delete (", 1)
    assert len(listed) == 2, "a dry run with --delete into / lists what it would delete"
    deleted = re.findall(r"^    (/\S*)$", listed[1], re.M)            # the delete group is the last one
    assert deleted and not [d for d in deleted if d.startswith(("/dev/", "/proc/", "/sys/"))], deleted[:20]
    assert not re.search(r"under /(dev|proc|sys)\b", listed[1]), listed[1][-2000:]


def test_local_input_is_checked_before_any_connection(tmp_path, source):
    """No host at all: a bad local value exits 2 naming it (not 1 "cannot connect")."""
    host = ["nosuch.invalid", "--ssh-option", "ConnectTimeout=1"]
    for extra, what in (((), "--source"), (("--profile", "nosuch"), "--profile"),
                        (("--files-from", str(tmp_path / "nosuch")), "--files-from"),
                        (("--protect", "etc/x"), "--protect"), (("--rsync-path", "rsync;id"), "--rsync-path")):
        src = tmp_path / "nosuch" if what == "--source" else source
        r = migrate("push", *host, "--dest", DEST, "--source", src, *extra)
        assert r.returncode == 2 and f"error: {what}" in r.stderr, r.stderr
        assert "cannot connect" not in r.stderr and "Traceback" not in r.stderr


def test_dry_run_with_a_new_host_key_writes_no_known_hosts(sshhost, source, tmp_path):
    """--accept-new-host-key --dry-run: the key is accepted for the run only; the user's known_hosts stays byte
    for byte as it was (also when it does not exist); a CHANGED key is still refused."""
    kh = tmp_path / "kh"
    cfg = tmp_path / "ssh_config"
    cfg.write_text(sshhost.ssh_config.read_text().replace(str(sshhost.known_hosts), str(kh))
                   .replace("UpdateHostKeys no", "UpdateHostKeys yes"))
    args = [sshhost.alias, "--ssh-config", str(cfg), "--dest", DEST, "--source", str(source)]
    r = migrate("push", *args, "--accept-new-host-key", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not kh.exists()
    assert "accepted for this dry run only" in r.stderr and "SHA256:" in r.stderr
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "otherkey")], check=True)
    key = " ".join((tmp_path / "otherkey.pub").read_text().split()[:2])
    other = f"[10.231.99.2]:2222 {key}\n"            # another host's entry: must stay as it is
    kh.write_text(other)
    r = migrate("push", *args, "--accept-new-host-key", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert kh.read_text() == other
    assert not pushed(sshhost).exists()
    for cmd in (["chroot-start"], ["chroot-stop"], ["chroot-install"], ["chroot-enable"], ["chroot-disable"]):
        r = migrate(*cmd, sshhost.alias, "--ssh-config", str(cfg), "--dest", DEST, "--accept-new-host-key", "--dry-run")
        assert "not in your known_hosts" not in r.stderr and kh.read_text() == other, (cmd, r.stderr)
    # a changed key: refused, nothing written
    changed = f"[{sshhost.addr}]:2222 " + other.split(" ", 1)[1]
    kh.write_text(changed)
    r = migrate("push", *args, "--accept-new-host-key", "--dry-run")
    assert r.returncode == 2 and "CHANGED" in r.stderr
    assert kh.read_text() == changed
    # the real run records the key (and only then)
    kh.write_text(other)
    r = migrate("push", *args, "--accept-new-host-key")
    assert r.returncode == 0, r.stderr
    assert kh.read_text().startswith(other) and kh.read_text().count("ssh-ed25519") == 2


def test_profiles_and_files_from_choose_what_is_sent(sshhost, source, tmp_path):
    (source / "var" / "log").mkdir(parents=True)
    (source / "var" / "log" / "syslog").write_text("log lines\n")
    (source / "home" / "alice").mkdir(parents=True)
    (source / "home" / "alice" / "notes").write_text("private\n")
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--profile", "core")
    assert r.returncode == 0, r.stderr
    dst = pushed(sshhost)
    assert (dst / "usr" / "bin" / "su").is_file() and (dst / "etc" / "app.conf").is_file()
    assert (dst / "var" / "log").is_dir() and not (dst / "var" / "log" / "syslog").exists()
    assert (dst / "home").is_dir() and not (dst / "home" / "alice").exists()
    assert (dst / "dev" / "null").exists() and not (dst / "etc" / "hostname").exists()   # protection still wins
    listing = tmp_path / "list"
    listing.write_text("home/alice/notes\n")
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--files-from", listing)
    assert r.returncode == 0, r.stderr
    assert (dst / "home" / "alice" / "notes").read_text() == "private\n"
    assert not (dst / "var" / "log" / "syslog").exists()
    r = migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source, "--profile", "nosuch")
    assert r.returncode == 2 and "no such profile" in r.stderr and "core" in r.stderr
