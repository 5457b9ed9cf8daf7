"""The test hosts of tests/support/sshhost.py are what other tests take them for: a real sshd as pid 1 of its own root,
reachable only over the test's veth, separate from each other, and gone without a trace when the test ends;
and tree_state notices every kind of difference rsync -aHAX must carry over.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.sshhost import (
    SSH_PORT,
    link_exists,
    mounts_under,
    netns_names,
    pid_alive,
    require_base,
    ssh_host,
    tree_diff,
    tree_state,
)


def sh(*cmd: str) -> None:
    subprocess.run(list(map(str, cmd)), check=True, capture_output=True)


def make_sample_tree(d: Path) -> Path:
    """A small tree with everything rsync -aHAXS must keep: owners, setuid, hardlinks across directories, symlinks
    (one dangling), a device node, a fifo, a sparse file, user xattrs, access and default ACLs, odd names."""
    d.mkdir()
    (d / "etc").mkdir()
    (d / "bin").mkdir()
    (d / "empty").mkdir(mode=0o750)
    (d / "etc/config").write_text("key = value\n")
    (d / "bin/tool").write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    os.chmod(d / "bin/tool", 0o4755)
    os.link(d / "bin/tool", d / "etc/tool-link")           # hardlink across directories
    (d / "owned").write_text("someone else's\n")
    os.chown(d / "owned", 1234, 5678)
    os.symlink("../etc/config", d / "bin/config")
    os.symlink("/nowhere/at/all", d / "dangling")
    os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(d / "fifo", 0o640)
    with open(d / "sparse", "wb") as f:
        f.seek(8 << 20)
        f.write(b"end")
    (d / "with space").write_text("x")
    os.setxattr(d / "etc/config", "user.imgbuild", b"marker")
    sh("setfacl", "-m", "u:1000:rx", d / "bin/tool")
    sh("setfacl", "-d", "-m", "g:100:rwx", d / "empty")
    # old times, with nanoseconds, as in a real tree. (rsync leaves a directory, symlink, device or fifo alone when
    # its time already matches to the second, so entries made in the same second as the source would differ.)
    for i, (dirpath, dirs, files) in enumerate(sorted(os.walk(d), reverse=True)):
        for j, name in enumerate(sorted(dirs + files) + ["."]):
            os.utime(os.path.join(dirpath, name), ns=(1_600_000_000_000_000_000, 1_500_000_000_000_000_000
                                                      + i * 1_000_000_007 + j * 123_456_789), follow_symlinks=False)
    return d


# ------------------------------------------------------------------ tree_state


MUTATIONS = {
    # name: (change made in the copy, the Entry field expected to differ, path)
    "content": (lambda d: (d / "etc/config").write_text("key = valuE\n"), "content", "etc/config"),
    "mode": (lambda d: os.chmod(d / "bin/tool", 0o755), "mode", "bin/tool"),
    "owner": (lambda d: os.chown(d / "owned", 1234, 0), "gid", "owned"),
    "symlink": (lambda d: (os.unlink(d / "dangling"), os.symlink("/nowhere/at/al", d / "dangling")), "content",
                "dangling"),
    "xattr": (lambda d: os.setxattr(d / "etc/config", "user.imgbuild", b"Marker"), "xattrs", "etc/config"),
    "acl": (lambda d: sh("setfacl", "-m", "u:1001:r", d / "bin/tool"), "xattrs", "bin/tool"),
    "default acl": (lambda d: sh("setfacl", "-k", d / "empty"), "xattrs", "empty"),
    "device": (lambda d: (os.unlink(d / "null"), os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 5))),
               "size", "null"),
    "hardlink": (lambda d: sh("cp", "--preserve=all", d / "bin/tool", d / "tmp"), None, None),
}


@pytest.mark.root
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_tree_state_sees_every_difference(tmp_path, mutation):
    src = make_sample_tree(tmp_path / "src")
    copy = tmp_path / "copy"
    sh("cp", "-a", src, copy)
    before = tree_state(src, mtime=True)
    assert tree_state(copy, mtime=True) == before, tree_diff(before, tree_state(copy, mtime=True))
    assert before["etc/tool-link"].hardlink == before["bin/tool"].hardlink == "bin/tool"
    assert before["null"].size == (1, 3) and before["dangling"].content == "/nowhere/at/all"
    assert any(n == "system.posix_acl_access" for n, _ in before["bin/tool"].xattrs)
    assert any(n == "system.posix_acl_default" for n, _ in before["empty"].xattrs)

    change, field, path = MUTATIONS[mutation]
    if mutation == "hardlink":     # bin/tool stops being a hardlink of etc/tool-link: same bytes, owner, mode, ACL
        change(copy)
        os.replace(copy / "tmp", copy / "bin/tool")
        field, path = "hardlink", "etc/tool-link"
    else:
        change(copy)
    after = tree_state(copy)
    assert after != tree_state(src)
    assert getattr(after[path], field) != getattr(before[path], field), f"{mutation}: {field} of {path} unchanged"
    assert tree_state(src, mtime=True) == before       # reading a tree changes nothing in it


@pytest.mark.root
def test_tree_state_mtime_only_when_asked(tmp_path):
    src = make_sample_tree(tmp_path / "src")
    before, before_t = tree_state(src), tree_state(src, mtime=True)
    os.utime(src / "etc/config", ns=(0, 123456789))
    assert tree_state(src) == before
    assert tree_state(src, mtime=True) != before_t
    assert tree_state(src, mtime=True)["etc/config"].mtime_ns == 123456789


# ------------------------------------------------------------------ one host


@pytest.mark.root
@pytest.mark.network
def test_host_runs_sshd_as_pid_1_of_its_own_root(sshhost):
    h = sshhost
    assert h.ssh("id -u").stdout.strip() == "0"
    assert h.ssh("readlink /proc/1/root").stdout.strip() == "/"
    assert h.ssh("cat /proc/1/comm").stdout.strip() == "sshd"
    assert h.ssh("hostname").stdout.strip() == "target"
    assert h.ssh("rsync --version").stdout.startswith("rsync  version")
    # a fresh procfs: only sshd, this session and ps are there
    ps = h.ssh("ps -eo pid=,comm=").stdout.split("\n")
    assert ps[0].split() == ["1", "sshd"], ps
    assert len([x for x in ps if x.strip()]) < 8, ps
    assert h.ssh("stat -f -c %T /proc /sys /dev/shm").stdout.split() == ["proc", "sysfs", "tmpfs"]
    assert h.ssh("ls -A /dev/shm").stdout == ""          # its own, not the real one that holds the test's trees
    h.ssh("test -c /dev/null && test -d /dev/pts && test -c /dev/pts/ptmx")
    assert h.addr in h.ssh("ip -4 -o addr show").stdout

    assert h.tcp_banner(SSH_PORT).startswith("SSH-2.0-OpenSSH")
    assert h.tcp_banner(22) is None                        # free for an sshd a test starts in the host
    assert h.ssh("cat /etc/hostname").stdout == "target\n" and (h.root / "etc/hostname").read_text() == "target\n"

    # the host's mounts are its own: nothing under its root in the test's mount table
    assert mounts_under(h.root) == []
    assert h.name in netns_names() and link_exists(h.veth)

    procs = dict(h.processes())
    assert h.init_pid in procs and "sshd" in procs[h.init_pid], procs
    assert h.pid not in procs                              # the unshare parent is outside the host

    config = h.ssh_config.read_text()
    for line in ("Host target", f"HostName {h.addr}", f"Port {SSH_PORT}", "User root", "StrictHostKeyChecking yes",
                 "BatchMode yes", "LogLevel ERROR", f'IdentityFile "{h.key}"',
                 f'UserKnownHostsFile "{h.known_hosts}"'):
        assert line in config, line
    assert h.known_hosts.read_text().startswith(f"[{h.addr}]:{SSH_PORT} ssh-ed25519 ")


@pytest.mark.root
@pytest.mark.network
def test_host_checks_its_host_key(sshhost, tmp_path):
    """StrictHostKeyChecking really applies: the same config with another host key in known_hosts is refused."""
    other = tmp_path / "other"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshhost.addr}]:{SSH_PORT} " + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    config = tmp_path / "ssh_config"
    config.write_text(sshhost.ssh_config.read_text().replace(str(sshhost.known_hosts), str(wrong)))
    r = subprocess.run(["ssh", "-F", config, "target", "true"], check=False, capture_output=True, text=True, timeout=30)
    assert r.returncode == 255 and "Host key verification failed" in r.stderr, r.stderr


@pytest.mark.root
@pytest.mark.network
def test_a_chroot_inside_the_host_gets_back_through_proc_1_root(sshhost):
    h = sshhost
    h.ssh("mkdir -p /jail/usr /jail/proc && mount --bind /usr /jail/usr && mount -t proc proc /jail/proc && "
          "ln -s usr/bin /jail/bin && ln -s usr/lib /jail/lib && ln -s usr/lib64 /jail/lib64")
    r = h.ssh("chroot /jail /bin/sh -c 'test ! -e /etc/hostname && chroot /proc/1/root cat /etc/hostname'")
    assert r.stdout == "target\n"
    assert mounts_under(h.root) == []                      # the host's mounts stay in the host


@pytest.mark.root
@pytest.mark.network
def test_rsync_push_into_the_host_keeps_everything(sshhost, tmp_path):
    h = sshhost
    src = make_sample_tree(tmp_path / "src")
    want = tree_state(src, mtime=True)
    cmd = ["rsync", "-aHAXS", "--numeric-ids", "-i", "-e", " ".join(h.rsh), f"{src}/", f"{h.alias}:/srv/copy/"]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = tree_state(h.root / "srv/copy", mtime=True)
    assert got == want, tree_diff(want, got)
    # sparse on arrival (-S): 8 MiB of size, hardly any blocks
    assert os.lstat(h.root / "srv/copy/sparse").st_blocks * 512 < 1 << 20
    # a second push finds nothing to do and changes nothing
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr
    assert tree_state(h.root / "srv/copy", mtime=True) == got
    assert tree_state(src, mtime=True) == want


@pytest.mark.root
@pytest.mark.network
def test_an_index_in_use_is_refused(sshhost, request):
    index = int(sshhost.addr.split(".")[2])
    with pytest.raises(AssertionError, match="already in use"), ssh_host(require_base(request), index):
        pass
    assert sshhost.ssh("true").returncode == 0


# ------------------------------------------------------------------ two hosts


@pytest.mark.root
@pytest.mark.network
def test_two_hosts_share_one_config_and_nothing_else(two_sshhosts):
    src, dst = two_sshhosts
    assert src.ssh_config == dst.ssh_config and src.key == dst.key and src.known_hosts == dst.known_hosts
    config = src.ssh_config.read_text()
    assert "Host src\n" in config and "Host dst\n" in config
    assert (src.alias, dst.alias) == ("src", "dst")
    assert src.ssh("hostname").stdout.strip() == "src" and dst.ssh("hostname").stdout.strip() == "dst"
    assert src.addr.split(".")[:3] != dst.addr.split(".")[:3]    # one /24 each
    assert src.name != dst.name and src.root != dst.root

    src.ssh("echo from-src > /root/marker")
    assert (src.root / "root/marker").read_text() == "from-src\n"
    assert not (dst.root / "root/marker").exists()
    assert dst.ssh("test -e /root/marker", check=False).returncode == 1
    (dst.root / "srv/dst-only").write_text("x")
    assert src.ssh("test -e /srv/dst-only", check=False).returncode == 1

    assert not {p for p, _ in src.processes()} & {p for p, _ in dst.processes()}
    # each host reaches only its own veth: src's address is not on dst's network
    assert src.addr not in dst.ssh("ip -4 -o addr show").stdout


# ------------------------------------------------------------------ the end of a host


@pytest.mark.root
@pytest.mark.network
def test_host_leaves_nothing_behind(request):
    base = require_base(request)
    with ssh_host(base, None, alias="gone") as h:
        inner = h.ssh("nohup sleep 300 >/dev/null 2>&1 </dev/null & echo $!").stdout.strip()
        assert inner.isdigit()
        sleepers = [pid for pid, cmd in h.processes() if cmd == "sleep 300"]
        assert len(sleepers) == 1, h.processes()
        assert h.name in netns_names() and link_exists(h.veth) and pid_alive(h.pid) and h.root.is_dir()
    assert h.name not in netns_names()
    assert not link_exists(h.veth)
    assert not pid_alive(h.pid) and not pid_alive(h.init_pid)
    assert not pid_alive(sleepers[0])                     # the kernel ended the rest of the host with its init
    assert mounts_under(h.root) == []
    assert not h.root.exists()
    assert h.leftovers() == []


@pytest.mark.root
@pytest.mark.network
def test_host_is_removed_when_the_test_fails(request):
    base = require_base(request)
    seen = []
    with pytest.raises(RuntimeError, match="the test failed"), ssh_host(base, None, alias="failing") as h:
        seen.append(h)
        raise RuntimeError("the test failed")
    (h,) = seen
    assert h.leftovers() == []
    assert h.name not in netns_names() and not link_exists(h.veth) and not h.root.exists()


@pytest.mark.root
@pytest.mark.network
def test_sshd_that_does_not_start_is_reported_with_its_output(request):
    base = require_base(request)
    t0 = time.monotonic()
    with (pytest.raises(AssertionError, match=r"(?s)did not answer.*NoSuchOption") as e,
          ssh_host(base, None, sshd_options=["NoSuchOption yes"])):
        pass
    assert time.monotonic() - t0 < 10                      # sshd's exit is noticed, not waited out
    name = re.search(r"test host (ibs[0-9a-f]+) ", str(e.value)).group(1)
    assert name not in netns_names()
    assert not link_exists(f"{name}h")
    assert not any(name in m for m in mounts_under(Path("/")))
