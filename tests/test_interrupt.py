"""Builds that are attacked, interrupted or fail: the root never writes outside itself, Ctrl-C and a failing
hook leave nothing mounted, nothing partial, no stray process, and the previous output untouched."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import BIN, DEFAULT_RECIPE, REPO, imgbuild, mounts_under, sha256

# what the acceptance points here do not depend on: a smaller package set and no init shim
SMALL = ("--set", "bootstrap.packages=[]", "--set", "init=none")

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]


# ---------------------------------------------------------------- helpers


def write_recipe(path: Path, **keys) -> Path:
    path.write_text(yaml.safe_dump({"extends": str(DEFAULT_RECIPE), **keys}, sort_keys=False))
    return path


def hashes(d: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(d.iterdir())}


def force_unmount(path: Path) -> None:
    """Last-resort cleanup of what a failed test's build left mounted under our own tmp dir."""
    for mp in sorted(mounts_under(path), key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "--lazy", mp], capture_output=True)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, start time, comm) of a process, None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19]), comm


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """pid -> (start time, comm) of every live descendant of pid."""
    children: dict[int, list[int]] = {}
    info = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                children.setdefault(st[0], []).append(int(entry))
                info[int(entry)] = (st[1], st[2])
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = info[c]
            todo.append(c)
    return out


def still_alive(procs: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Those of procs (recorded by descendants()) that still run: same pid and same start time."""
    alive = {}
    for pid, (start, comm) in procs.items():
        st = _stat(pid)
        if st and st[1] == start and Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0:
            alive[pid] = comm
    return alive


def previous_output(debian12_build: Path, out: Path) -> dict[str, str]:
    """OUT/debian12 holding a copy of the session build's good output; returns its files' hashes."""
    out.mkdir()
    shutil.copytree(debian12_build, out / "debian12")
    before = hashes(out / "debian12")
    assert set(before) == {"debian12.tar.zst", "lxc.conf", "manifest.json"}
    return before


def assert_nothing_left(out: Path, before: dict[str, str]) -> None:
    assert mounts_under(out) == []
    assert not (out / ".work").exists()
    assert not list(out.glob(".debian12.partial-*"))
    assert not list(out.glob(".debian12.old-*"))
    assert sorted(os.listdir(out)) == ["debian12"]
    assert hashes(out / "debian12") == before


# ---------------------------------------------------------------- a: links out of the root


def test_links_out_of_the_root_are_not_followed(tmp_path: Path):
    """Hooks point /etc files at files outside the root (inside the chroot and, the real attempt, on the
    host through $IMGBUILD_ROOT); the steps that write those files replace the links and never touch the
    outside files."""
    outside = tmp_path / "outside"
    outside.mkdir()
    files = {name: outside / name for name in ("resolv", "hostname", "hosts", "machine-id", "motd")}
    for name, p in files.items():
        p.write_text(f"outside {name} - must not change\n")
    netdir = outside / "network"
    netdir.mkdir()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files.values()}

    R = '"$IMGBUILD_ROOT"'
    depth = "../" * 12
    recipe = write_recipe(tmp_path / "escape.yml", hooks={"post-bootstrap": [
        {"run": f"ln -sf {files['resolv']} /etc/resolv.conf"},
        {"host": f"ln -sf {files['resolv']} {R}/etc/resolv.conf"},
        {"host": f"ln -sf {files['hostname']} {R}/etc/hostname"},
        {"host": f"ln -sf {depth}{str(files['hosts']).lstrip('/')} {R}/etc/hosts"},   # relative, climbing out
        {"host": f"ln -sf {files['machine-id']} {R}/etc/machine-id"},
        {"host": f"ln -sf {files['motd']} {R}/etc/motd"},
        {"host": f"rm -rf {R}/etc/network && ln -s {netdir} {R}/etc/network"},       # a directory link
        {"host": f"readlink {R}/etc/resolv.conf | grep -qx {files['resolv']}"},      # the link really is there
    ]})
    out = tmp_path / "out"
    try:
        r = imgbuild(recipe, "-o", out, "--keep-tree", *SMALL)
        assert r.returncode == 0, r.stderr

        for p, (data, mtime) in before.items():
            assert p.read_bytes() == data, f"{p} was written through a link in the root"
            assert p.stat().st_mtime_ns == mtime, p
        assert os.listdir(netdir) == [], "network config was written outside the root"
        assert sorted(os.listdir(outside)) == sorted([*files, "network"])

        tree = out / "debian12.rootfs"
        resolv = tree / "etc/resolv.conf"
        assert not resolv.is_symlink() and resolv.is_file()
        assert "nameserver 10.0.3.1" in resolv.read_text().splitlines()
        for name, content in (("hostname", "vm0\n"), ("motd", "built by imgbuild\n"), ("machine-id", "")):
            p = tree / "etc" / name
            assert not p.is_symlink() and p.read_text() == content, name
        hosts = tree / "etc/hosts"
        assert not hosts.is_symlink() and "10.0.3.2\tvm0" in hosts.read_text()

        # and the tarball carries the regular files, not the links
        p = subprocess.Popen(["zstd", "-dc", str(out / "debian12" / "debian12.tar.zst")], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=p.stdout, mode="r|") as tf:
            got = {m.name: (m.type, tf.extractfile(m).read() if m.isfile() else m.linkname) for m in tf
                   if m.name in ("./etc/resolv.conf", "./etc/hostname", "./etc/hosts")}
        p.stdout.close()
        assert p.wait() == 0
        assert got["./etc/resolv.conf"][0] == tarfile.REGTYPE
        assert b"nameserver 10.0.3.1\n" in got["./etc/resolv.conf"][1]
        assert got["./etc/hostname"] == (tarfile.REGTYPE, b"vm0\n")
        assert got["./etc/hosts"][0] == tarfile.REGTYPE
    finally:
        force_unmount(out)
    assert mounts_under(out) == []


# ---------------------------------------------------------------- b: Ctrl-C during a hook


def test_sigint_during_hook_cleans_up(debian12_build: Path, tmp_path: Path):
    out = tmp_path / "out"
    before = previous_output(debian12_build, out)
    # `echo` after the sleep keeps the shell waiting for sleep as its child (no exec of the last command)
    recipe = write_recipe(tmp_path / "debian12.yml", hooks={"post-files": [
        {"run": "touch /tmp/started; sleep 120; echo slept"}]})
    proc = subprocess.Popen([str(BIN / "imgbuild"), str(recipe), "-o", str(out), *SMALL], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    started: dict[int, tuple[int, str]] = {}
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"the build ended before the hook ran:\n{proc.communicate()[1]}"
            assert time.monotonic() < deadline, "the hook never started"
            marker = list(out.glob(".work/*/rootfs/tmp/started"))
            kids = descendants(proc.pid)
            if marker and any(comm == "sleep" for _, comm in kids.values()):
                break
            time.sleep(0.2)
        started = kids
        root = marker[0].parent.parent
        assert str(root / "proc") in mounts_under(out), "the hook's chroot has no /proc mounted"
        assert list(out.glob(".debian12.partial-*")), "expected the stage dir of the running build"

        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        t_stopped = time.monotonic()

        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr.lower()
        assert "Traceback" not in stderr
        assert_nothing_left(out, before)
        left = still_alive(started)
        assert not left, (f"processes of the interrupted hook still run after imgbuild exited: {left} "
                          f"({time.monotonic() - t_stopped:.1f} s after)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in still_alive(started):
            os.kill(pid, signal.SIGKILL)
        force_unmount(out)


# ---------------------------------------------------------------- c: a failing hook


def test_failing_hook_reports_and_cleans_up(debian12_build: Path, tmp_path: Path):
    out = tmp_path / "out"
    before = previous_output(debian12_build, out)
    # the hook's output (upper case) differs from its command line (lower case), which is logged too
    recipe = write_recipe(tmp_path / "debian12.yml", hooks={"post-files": [
        {"run": "echo hello > /etc/hello"},
        {"run": "echo some-marker-text | tr a-z A-Z; exit 3"}]})
    try:
        r = imgbuild(recipe, "-o", out, *SMALL)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        err = r.stderr
        assert "error: hook post-files[1] failed with exit status 3: echo some-marker-text | tr a-z A-Z; exit 3" \
            in err
        tail = err[err.index("last output:"):]
        assert "SOME-MARKER-TEXT" in tail
        assert "hint:" in err
        assert r.stdout == ""
        assert_nothing_left(out, before)
    finally:
        force_unmount(out)
