"""Builds that are attacked, interrupted or fail: the root never writes outside itself, Ctrl-C and a failing
hook leave nothing mounted, nothing partial, no stray process, and the previous output untouched."""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from builder.build import bootcache
from tests.build.targets.conftest import VM_RECIPE, loop_devices
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
    assert set(before) == {"debian12.tar.zst", "lxc.conf", "manifest.json", "debian12.spdx.json", "SHA256SUMS"}
    return before


def assert_nothing_left(out: Path, before: dict[str, str]) -> None:
    assert mounts_under(out) == []
    assert not (out / ".work").exists()
    assert not list(out.glob(".debian12.partial-*"))
    assert not list(out.glob(".debian12.old-*"))
    assert sorted(os.listdir(out)) == ["debian12"], "a work dir, stage dir or lock file was left"
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


# ---------------------------------------------------------------- b: Ctrl-C, whatever child is running
#
# The build is stopped with SIGINT while a given child runs: a chroot hook, mmdebstrap, the tarball's
# compressor, e2fsck checking the image, qemu-img converting a VM disk. It must exit 130 at once (within a
# generous bound that only a lost signal exceeds), start no later phase, leave nothing mounted, no loop device,
# no work dir, no stray process and the previous output as it was. Each case runs twice: with SIGINT inherited
# as the default, and inherited as ignored - as in a job a non-interactive shell started in the background, where
# Python keeps it ignored: that is how a Ctrl-C was lost in the full suite (the hook slept to its end and the
# build went on).
#
# Synchronisation without timing: the hook and the stand-ins for the compressor and e2fsck write into a fifo
# the test reads (blocking) and then block themselves (a compressor that stops reading, as under load: the
# build blocks writing into it); mmdebstrap is the real one, and the signal goes when its dpkg runs.

GATED = """#!/bin/sh
# {tool} as the build runs it, except the call named below: it says so and blocks
case " $* " in
  {match}) echo $$ > "$IMGBUILD_TEST_READY"; exec sleep 3600 ;;
esac
exec {real} "$@"
"""


def _gated(bindir: Path, tool: str, match: str) -> None:
    real = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert real, tool
    (bindir / tool).write_text(GATED.format(tool=tool, match=match, real=real))
    (bindir / tool).chmod(0o755)


def _read_fifo(path: Path, proc: subprocess.Popen, timeout: float = 900) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    data = b""
    try:
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            assert proc.poll() is None, f"the build ended before the point of the interrupt:\n{proc.communicate()[1]}"
            assert time.monotonic() < deadline, "the build never reached the point of the interrupt"
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                data += os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode().strip()


def _wait_for_child(proc: subprocess.Popen, comm: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not any(c == comm for _, c in descendants(proc.pid).values()):
        assert proc.poll() is None, f"the build ended before {comm} ran:\n{proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"{comm} never ran"
        time.sleep(0.1)


CASES = {
    # where: (recipe keys, extra args, phase that must be the last one started)
    "hook": ({}, (), "hooks post-files"),
    "mmdebstrap": ({}, ("--no-cache",), "bootstrap"),
    # (xz: its compressor is a command to stop; zstd compresses in imgbuild's own threads)
    "tarball": ({"targets": {"tarball": {"compression": "xz"}}}, (), "target tarball"),
    "image": ({"targets": {"image": {}}}, (), "target image"),
    # the VM recipe (its kernel and GRUB; the bootstrap cache from the session's VM build): stopped in qemu-img,
    # after the partition table, the root filesystem, the ESP and the boot sectors were written into the raw disk
    "disk": ({"extends": str(VM_RECIPE), "name": "debian12"}, (), "target disk"),
}


# the disk case only as the default: how SIGINT arrives is the same for every phase, what it leaves is not
@pytest.mark.parametrize("where, disposition", [(w, d) for w in CASES for d in ("default", "ignored")
                                                if (w, d) != ("disk", "ignored")])
def test_interrupt_stops_the_build_at_once(debian12_build: Path, tmp_path: Path, where: str, disposition: str):
    out = tmp_path / "out"
    before = previous_output(debian12_build, out)
    keys, extra, last_phase = CASES[where]
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "IMGBUILD_TEST_READY": str(ready)}
    if where == "hook":
        # `echo` after the sleep keeps the shell waiting for sleep as its child (no exec of the last command)
        keys = {"hooks": {"post-files": [
            {"host": f'mkfifo "$IMGBUILD_ROOT/tmp/inside" && echo "$IMGBUILD_ROOT" > {ready}'},
            {"run": "echo in > /tmp/inside; sleep 3600; echo slept"}]}}
    elif where == "tarball":
        _gated(bindir, "xz", '*" -T0 -c "*')         # the tarball's compressor
    elif where == "image":
        # the image's check, after mke2fs and debugfs wrote it (those run with a fixed PATH, so no stub reaches them)
        _gated(bindir, "e2fsck", '*" -fn "*')
    elif where == "disk":
        _gated(bindir, "qemu-img", '*" convert "*')
    recipe = write_recipe(tmp_path / "debian12.yml", **keys)
    loops = loop_devices()
    argv = [str(BIN / "imgbuild"), str(recipe), "-o", str(out), *(SMALL if where != "disk" else ()), *extra]
    if disposition == "ignored":
        argv = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    started: dict[int, tuple[int, str]] = {}
    try:
        if where == "hook":
            root = Path(_read_fifo(ready, proc))
            _read_fifo(root / "tmp" / "inside", proc)
            assert str(root / "proc") in mounts_under(out), "the hook's chroot has no /proc mounted"
            assert str(root) in mounts_under(out), "the tree is not an overlay above the cache entry"
        elif where == "mmdebstrap":
            _wait_for_child(proc, "dpkg")
        else:
            _read_fifo(ready, proc)
        started = descendants(proc.pid)
        assert list(out.glob(".work/debian12-*")), "expected the work dir of the running build"

        os.kill(proc.pid, signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the build did not stop after SIGINT:\n{proc.communicate()[1]}")
        t_stopped = time.monotonic()

        assert proc.returncode == 130, stderr
        assert "error: interrupted" in stderr and "Traceback" not in stderr, stderr
        phases = [line[4:].split(" (")[0] for line in stderr.splitlines() if line.startswith("==> ")]
        assert phases[-1] == last_phase, f"the build went on after the interrupt: {phases}"
        assert_nothing_left(out, before)
        assert loop_devices() == loops
        if "--no-cache" not in extra:        # the entry the overlay stood on: still as it was sealed
            for e in bootcache.entries():
                assert not bootcache.problems(e), f"cache entry {e.key} changed: {bootcache.problems(e)}"
        left = still_alive(started)
        assert not left, (f"processes of the interrupted build still run after imgbuild exited: {left} "
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
