"""imgbuild sysprep on a guest tree seeded with what a used guest has: every default operation removes or resets
its part, the opt-in ones only when asked; --dry-run lists it all and changes nothing (every byte, mode and owner
hashed before and after); links in the guest are never followed; bad input is exit 2."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from builder.build.targets import image as img
from builder.core.rootfs import RootFS
from builder.identity import sysprep
from tests.conftest import imgbuild
from tests.support.guests import EPOCH, debugfs_cat, debugfs_stat, file_sha, fsck

pytestmark = [pytest.mark.root]

PASSWD = ("root:x:0:0:root:/root:/bin/bash\nsshd:x:105:65534::/run/sshd:/usr/sbin/nologin\n"
          "alice:x:1000:1000:Alice:/home/alice:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
SHADOW = "root:$6$r$h:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nalice:$6$a$h:19000:0:99999:7:::\n"
GROUP = "root:x:0:\nadm:x:4:alice,syslog\ncrontab:x:107:\nalice:x:1000:\n"
GSHADOW = "root:*::\nadm:*:alice:alice,syslog\nalice:!::\n"


def write(root: Path, path: str, data: str | bytes = "x\n", mode: int = 0o644, owner: tuple[int, int] = (0, 0)):
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(p, mode)
    os.chown(p, *owner)
    return p


@pytest.fixture
def guest(tmp_path) -> Path:
    """A used guest: histories, logs (with rotated ones and a journal), leases, host keys, spools, a used
    machine-id, udev net rules, caches, temp files, a person's account; and two hostile links."""
    g = tmp_path / "guest"
    for d in ("etc/ssh", "etc/udev/rules.d", "var/log/journal/0123", "var/tmp", "tmp", "var/lib/dbus",
              "home/alice/.ssh", "root/.ssh", "var/spool/cron/crontabs", "var/spool/mail", "var/crash",
              "var/cache/apt/archives/partial", "var/lib/rpm", "var/lib/yum", "var/lib/dhcp", "usr/bin"):
        (g / d).mkdir(parents=True, exist_ok=True)
    os.chmod(g / "var/spool/cron/crontabs", 0o1730)
    os.chown(g / "var/spool/cron/crontabs", 0, 107)
    write(g, "/etc/passwd", PASSWD)
    write(g, "/etc/shadow", SHADOW, 0o640, (0, 42))
    write(g, "/etc/group", GROUP)
    write(g, "/etc/gshadow", GSHADOW, 0o640, (0, 42))
    write(g, "/etc/shadow-", SHADOW, 0o600)
    write(g, "/etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
    write(g, "/var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n")
    write(g, "/etc/ssh/ssh_host_ed25519_key", "PRIVATE\n", 0o600)
    write(g, "/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA root@old\n")
    write(g, "/etc/ssh/sshd_config", "Port 22\n")
    write(g, "/usr/sbin/sshd", "", 0o755)
    write(g, "/usr/bin/ssh-keygen", "", 0o755)
    write(g, "/lib/systemd/systemd", "", 0o755)
    write(g, "/etc/udev/rules.d/70-persistent-net.rules", 'SUBSYSTEM=="net", NAME="eth0"\n')
    write(g, "/root/.bash_history", "mysql -p secret\n", 0o600)
    write(g, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA admin\n", 0o600)
    write(g, "/home/alice/.bash_history", "ls\n", 0o600, (1000, 1000))
    write(g, "/home/alice/.viminfo", "x\n", 0o600, (1000, 1000))
    write(g, "/home/alice/.ssh/id_ed25519", "PRIVATE\n", 0o600, (1000, 1000))
    write(g, "/var/log/syslog", "Dec  6 host kernel: hello\n", 0o640, (0, 4))
    write(g, "/var/log/syslog.1", "older\n", 0o640, (0, 4))
    write(g, "/var/log/syslog.2.gz", b"\x1f\x8b old", 0o640, (0, 4))
    write(g, "/var/log/messages-20261201", "older\n")
    write(g, "/var/log/wtmp", b"\0" * 384, 0o664, (0, 43))
    write(g, "/var/log/journal/0123/system.journal", b"LPKSHHRH", 0o640)
    write(g, "/var/lib/dhcp/dhclient.eth0.leases", "lease { fixed-address 10.0.3.50; }\n")
    write(g, "/var/spool/cron/crontabs/alice", "* * * * * true\n", 0o600, (1000, 107))
    write(g, "/var/spool/mail/alice", "From root\n", 0o660, (1000, 8))
    write(g, "/var/crash/_usr_bin_x.0.crash", "core\n")
    write(g, "/var/cache/apt/archives/vim_9.0_amd64.deb", "deb\n")
    write(g, "/var/cache/apt/pkgcache.bin", "cache\n")
    write(g, "/var/lib/rpm/__db.001", "db\n")
    write(g, "/var/lib/yum/uuid", "1234\n")
    write(g, "/tmp/junk", "x\n")
    (g / "var/tmp/build-dir").mkdir()
    write(g, "/var/tmp/build-dir/file", "x\n")
    # hostile: a log that is a link to the guest's passwd, and a spool directory that is a link to /etc
    os.symlink("/etc/passwd", g / "var/log/evil.log")
    os.symlink("/etc", g / "var/spool/atjobs")
    return g


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: type, mode, owner, and its bytes' (or link target's) sha256."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            body = (os.readlink(p).encode() if stat.S_ISLNK(st.st_mode) else
                    p.read_bytes() if stat.S_ISREG(st.st_mode) else b"")
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, hashlib.sha256(body).hexdigest())
    return out


def test_dry_run_lists_everything_and_changes_nothing(guest):
    before = snapshot(guest)
    r = imgbuild("sysprep", guest, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert snapshot(guest) == before
    for line in ("bash-history: remove /root/.bash_history", "bash-history: remove /home/alice/.bash_history",
                 "logfiles: truncate /var/log/syslog", "logfiles: remove /var/log/syslog.1",
                 "logfiles: remove /var/log/syslog.2.gz", "logfiles: remove /var/log/messages-20261201",
                 "logfiles: remove /var/log/journal/0123", "logfiles: truncate /var/log/wtmp",
                 "dhcp-client-state: remove /var/lib/dhcp/dhclient.eth0.leases",
                 "ssh-hostkeys: remove /etc/ssh/ssh_host_ed25519_key", "machine-id: empty /etc/machine-id",
                 "machine-id: remove /var/lib/dbus/machine-id", "cron-spool: remove /var/spool/cron/crontabs/alice",
                 "mail-spool: remove /var/spool/mail/alice", "crash-data: remove /var/crash/_usr_bin_x.0.crash",
                 "udev-persistent-net: remove /etc/udev/rules.d/70-persistent-net.rules",
                 "package-manager-cache: remove /var/cache/apt/archives/vim_9.0_amd64.deb",
                 "rpm-db: remove /var/lib/rpm/__db.001", "yum-uuid: remove /var/lib/yum/uuid",
                 "tmp-files: remove /tmp/junk", "tmp-files: remove /var/tmp/build-dir",
                 "passwd-backups: remove /etc/shadow-"):
        assert line in r.stdout.splitlines(), (line, r.stdout)
    assert "/home/alice/.ssh" not in r.stdout and "user-account" not in r.stdout      # opt-in only
    assert "evil.log" not in r.stdout and "/etc/passwd" not in r.stdout
    assert "/var/spool/atjobs: a symbolic link where a directory is expected; left alone" in r.stderr
    assert "nothing was changed" in r.stderr


def test_the_defaults_clean_and_keep_what_must_stay(guest):
    passwd = (guest / "etc/passwd").read_bytes()
    r = imgbuild("sysprep", guest)
    assert r.returncode == 0, r.stderr
    gone = ["root/.bash_history", "home/alice/.bash_history", "home/alice/.viminfo", "var/log/syslog.1",
            "var/log/syslog.2.gz", "var/log/messages-20261201", "var/lib/dhcp/dhclient.eth0.leases",
            "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub", "var/lib/dbus/machine-id",
            "var/spool/cron/crontabs/alice", "var/spool/mail/alice", "var/crash/_usr_bin_x.0.crash",
            "etc/udev/rules.d/70-persistent-net.rules", "var/cache/apt/archives/vim_9.0_amd64.deb",
            "var/cache/apt/pkgcache.bin", "var/lib/rpm/__db.001", "var/lib/yum/uuid", "tmp/junk",
            "var/tmp/build-dir", "etc/shadow-", "var/log/journal/0123"]
    assert [p for p in gone if os.path.lexists(guest / p)] == []
    # logs emptied in place: the file, its mode and owner stay
    for p, mode, owner in (("var/log/syslog", 0o640, (0, 4)), ("var/log/wtmp", 0o664, (0, 43))):
        st = os.lstat(guest / p)
        assert st.st_size == 0 and stat.S_IMODE(st.st_mode) == mode and (st.st_uid, st.st_gid) == owner, p
    assert (guest / "etc/machine-id").read_bytes() == b"" and (guest / "var/log/journal").is_dir()
    st = os.lstat(guest / "var/spool/cron/crontabs")
    assert stat.S_IMODE(st.st_mode) == 0o1730 and st.st_gid == 107
    assert (guest / "tmp").is_dir() and (guest / "var/tmp").is_dir()
    # new host keys at the next boot: the first-boot unit a build installs
    unit = guest / "etc/systemd/system/imgbuild-ssh-keygen.service"
    assert "ssh-keygen -A" in unit.read_text()
    assert os.path.islink(guest / "etc/systemd/system/multi-user.target.wants/imgbuild-ssh-keygen.service")
    # opt-in data stays; links were not followed
    assert (guest / "home/alice/.ssh/id_ed25519").exists() and (guest / "root/.ssh/authorized_keys").exists()
    assert (guest / "etc/passwd").read_bytes() == passwd and os.path.islink(guest / "var/log/evil.log")
    assert os.path.islink(guest / "var/spool/atjobs")
    # a second run (after one that stopped halfway, say) finishes the job and changes nothing more
    after = snapshot(guest)
    again = imgbuild("sysprep", guest)
    assert again.returncode == 0, again.stderr
    assert snapshot(guest) == after


def test_opt_in_user_accounts_and_ssh_dirs(guest):
    r = imgbuild("sysprep", guest, "--operations", "user-account,ssh-userdir")
    assert r.returncode == 0, r.stderr
    assert "alice" not in (guest / "etc/passwd").read_text() and "nobody" in (guest / "etc/passwd").read_text()
    assert "alice" not in (guest / "etc/shadow").read_text()
    assert (guest / "etc/group").read_text() == "root:x:0:\nadm:x:4:syslog\ncrontab:x:107:\n"
    assert (guest / "etc/gshadow").read_text() == "root:*::\nadm:*::syslog\n"
    st = os.lstat(guest / "etc/shadow")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 42
    assert not (guest / "home/alice").exists() and not (guest / "root/.ssh").exists()
    assert (guest / "root/.bash_history").exists(), "only the operations named ran"


def test_operations_selection():
    defaults = [o.name for o in sysprep.OPERATIONS if o.default]
    assert [o.name for o in sysprep.select(None)] == defaults
    assert [o.name for o in sysprep.select("-logfiles")] == [n for n in defaults if n != "logfiles"]
    assert [o.name for o in sysprep.select("defaults,ssh-userdir,-tmp-files")] == sorted(
        [n for n in defaults if n != "tmp-files"] + ["ssh-userdir"], key=[o.name for o in sysprep.OPERATIONS].index)
    assert [o.name for o in sysprep.select("tmp-files")] == ["tmp-files"]
    assert len(sysprep.select("all")) == len(sysprep.OPERATIONS)


def test_bad_input_is_exit_2_and_changes_nothing(guest, tmp_path):
    before = snapshot(guest)
    r = imgbuild("sysprep", guest, "--operations", "logfiles,nosuch")
    assert r.returncode == 2 and "no operation 'nosuch'" in r.stderr and "--list-operations" in r.stderr
    r = imgbuild("sysprep", tmp_path / "nowhere")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = imgbuild("sysprep")
    assert r.returncode == 2 and "no TARGET" in r.stderr
    assert snapshot(guest) == before
    r = imgbuild("sysprep", "--list-operations")
    assert r.returncode == 0 and all(o.name in r.stdout for o in sysprep.OPERATIONS)


def test_a_tree_without_the_files_is_fine(tmp_path):
    g = tmp_path / "bare"
    (g / "etc").mkdir(parents=True)
    p = sysprep.plan(RootFS(g), sysprep.select("all"))
    assert p.actions == [] and p.skipped == []


def test_an_image_is_loop_mounted_only_while_it_runs(guest, tmp_path):
    """An ext4 image: --dry-run leaves every byte of it; a run cleans it and leaves no mount or loop device."""
    image = img.make_image(guest, tmp_path / "tmpl.ext4", img.ImageOptions(), EPOCH)
    sha = file_sha(image)
    r = imgbuild("sysprep", image, "--dry-run")
    assert r.returncode == 0 and "bash-history: remove /root/.bash_history" in r.stdout, r.stderr
    assert file_sha(image) == sha, "--dry-run changed the image"
    r = imgbuild("sysprep", image)
    assert r.returncode == 0, r.stderr
    assert debugfs_stat(image, "/root/.bash_history") == "" and debugfs_cat(image, "/etc/machine-id") == ""
    assert "Inode:" in debugfs_stat(image, "/home/alice/.ssh/id_ed25519"), "an opt-in operation ran"
    assert fsck(image).returncode == 0
    assert subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout == ""
