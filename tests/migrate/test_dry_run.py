"""A dry run changes nothing anywhere: for every remote command with --dry-run, the test host's destination tree,
/tmp, /etc, /root, /srv, /usr/local and /var/tmp are compared entry by entry (content, mode, owner, mtime) before
and after, and so are the local files a command could write (known_hosts, the stage, the inventory and its lock).
Real hosts in network namespaces (tests/support/sshhost.py)."""
from __future__ import annotations

import pytest

from tests.conftest import migrate
from tests.support.pushtree import DEST, make_tree
from tests.support.sshhost import ssh_args, tree_diff, tree_state
from tests.support.xenguest import OLD_IP, xen_args

pytestmark = [pytest.mark.root]

WATCHED = (DEST, "/tmp", "/etc", "/root", "/srv", "/usr/local", "/var/tmp", "/var/xen")


def snapshot(host) -> dict:
    out = {}
    for p in WATCHED:
        full = host.root / p.lstrip("/")
        out[p] = tree_state(full, mtime=True) if full.exists() else None
    return out


def diff(a: dict, b: dict) -> list[str]:
    out = []
    for p in WATCHED:
        if a[p] != b[p]:
            out += [f"{p}: {d}" for d in (tree_diff(a[p] or {}, b[p] or {}) or ["appeared or vanished"])]
    return out


def test_push_and_chroot_dry_runs_change_nothing(sshhost, tmp_path):
    source = make_tree(tmp_path / "src")
    (source / "usr/local/sbin").mkdir(parents=True)
    assert migrate("push", *ssh_args(sshhost), "--dest", DEST, "--source", source).returncode == 0
    assert migrate("chroot-install", *ssh_args(sshhost), "--dest", DEST).returncode == 0
    (sshhost.root / "etc/rc.local").write_text("#!/bin/sh -e\nexit 0\n")
    (source / "usr/share/new").write_text("new\n")
    known = sshhost.known_hosts.read_bytes()
    dry = [
        ["push", "--dest", DEST, "--source", source, "--delete"],
        ["push", "--dest", "/srv/new/os", "--source", source],          # a new directory: not even made
        ["push", "--dest", DEST, "--source", source, "--verify"],
        ["chroot-install", "--dest", DEST, "--hostname", "other", "--ssh-port", "2299", "--service", "cron"],
        ["chroot-start", "--dest", DEST],
        ["chroot-stop", "--dest", DEST],
        ["chroot-enable", "--dest", DEST, "--via", "unit"],
        ["chroot-enable", "--dest", DEST, "--via", "rc.local"],
        ["chroot-disable", "--dest", DEST],
    ]
    before = snapshot(sshhost)
    for args in dry:
        r = migrate(args[0], *ssh_args(sshhost), *args[1:], "--dry-run")
        assert r.returncode == 0, (args, r.stderr)
        changed = diff(before, snapshot(sshhost))
        assert not changed, (args, changed)
    # with something to undo: disable's dry run keeps it
    for via in ("unit", "rc.local"):
        assert migrate("chroot-enable", *ssh_args(sshhost), "--dest", DEST, "--via", via).returncode == 0
    enabled = snapshot(sshhost)
    r = migrate("chroot-disable", *ssh_args(sshhost), "--dest", DEST, "--dry-run")
    assert r.returncode == 0 and r.stdout.count("would remove") == 2, r.stdout
    assert not diff(enabled, snapshot(sshhost))
    assert sshhost.known_hosts.read_bytes() == known


def test_xen_dry_run_changes_nothing_on_either_host_or_here(xen_hosts, tmp_path):
    src, dst = xen_hosts
    before = snapshot(src), snapshot(dst)
    known = src.known_hosts.read_bytes()
    for extra in (["--ip", f"{OLD_IP}=192.0.2.30"], ["--cutover"], ["--ip", f"{OLD_IP}=192.0.2.30", "--keep-stage"]):
        r = migrate("xen", "src", "www", "--to", "dst", "--disk-map", "/var/xen=/srv/xen", *extra, "--dry-run",
                    *xen_args(src, tmp_path))
        assert r.returncode == 0, r.stderr
        assert "would be removed" in r.stderr or "would be kept" in r.stderr
        assert not diff(before[0], snapshot(src)) and not diff(before[1], snapshot(dst))
    assert (src.root / "run/xm-www").exists()                   # still running
    assert not (tmp_path / "stage").exists()
    assert not (tmp_path / "inventory.yml").exists() and not (tmp_path / "inventory.db").exists()
    assert src.known_hosts.read_bytes() == known
