"""Builds side by side, for real: a build paused inside a chroot hook (its /proc, /sys, /dev mounted), and
other imgbuild processes meanwhile. A second build of the same OUTPUT/NAME is refused and touches nothing; a
build of another recipe into the same directory leaves the first's mounts and work directory alone; the
leftovers of a build killed with SIGKILL are cleaned by the next; `cache prune` during a build leaves the
build's cache temp alone. The pause is a fifo the hook reads: no sleeps, no timing."""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, DEFAULT_RECIPE, REPO, mounts_under

SMALL = ("--set", "bootstrap.packages=[]", "--set", "init=none")

pytestmark = [pytest.mark.root, pytest.mark.network, pytest.mark.slow]


def write_recipe(path: Path, **keys) -> Path:
    path.write_text(yaml.safe_dump({"extends": str(DEFAULT_RECIPE), **keys}, sort_keys=False))
    return path


def read_fifo(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    """A line written into the fifo at path (blocks until then; fails if proc ends first)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    data = b""
    try:
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            assert proc.poll() is None, f"the build ended first:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no word from the build:\n{log.read_text()}"
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                data += os.read(fd, 4096)
    finally:
        os.close(fd)
    return data.decode().strip()


class PausedBuild:
    """`imgbuild RECIPE -o out` stopped in a post-files chroot hook until release(): mounts up, work dir there."""

    def __init__(self, tmp: Path, out: Path, tag: str, env: dict | None = None, **recipe):
        ready = tmp / f"{tag}.ready"
        os.mkfifo(ready)
        self.recipe = write_recipe(tmp / f"{tag}.yml", hooks={"post-files": [
            {"host": f'mkfifo "$IMGBUILD_ROOT/tmp/gate" "$IMGBUILD_ROOT/tmp/inside" && '
                     f'echo "$IMGBUILD_ROOT" > {ready}'},
            {"run": "echo in > /tmp/inside; read x < /tmp/gate; echo released"}]}, **recipe)
        self.log = tmp / f"{tag}.log"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen([str(BIN / "imgbuild"), str(self.recipe), "-o", str(out), *SMALL],
                                         cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.root = Path(read_fifo(ready, self.proc, self.log))
        read_fifo(self.root / "tmp" / "inside", self.proc, self.log)     # the chroot hook runs
        self.work = self.root.parent

    def release(self) -> int:
        with open(self.root / "tmp" / "gate", "w") as g:
            g.write("go\n")
        return self.wait()

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the build did not end:\n{self.log.read_text()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def force_unmount(path: Path) -> None:
    for mp in sorted(mounts_under(path), key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "--lazy", mp], capture_output=True)


def imgbuild(*args, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "imgbuild"), *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_a_build_never_touches_another_running_builds_work(tmp_path: Path):
    out = tmp_path / "out"
    first = PausedBuild(tmp_path, out, "first")
    try:
        mounted = sorted(mounts_under(first.work))
        assert str(first.root / "proc") in mounted and str(first.root / "dev" / "pts") in mounted
        listing = sorted(os.listdir(first.root))

        # the same OUTPUT/NAME again: refused at once, exit 1, naming the running build
        second = imgbuild(first.recipe, "-o", out, *SMALL, timeout=300)   # a bound only a build that runs needs
        assert second.returncode == 1, second.stderr
        assert f"error: another imgbuild (pid {first.pid}) is building {out}/debian12" in second.stderr
        assert "hint:" in second.stderr and "Traceback" not in second.stderr
        assert "==> bootstrap" not in second.stderr
        assert sorted(mounts_under(first.work)) == mounted, "the refused build unmounted the running one's mounts"

        # another recipe into the same directory: runs (and here fails in its own hook); its start-up cleanup
        # leaves the running build's mounts and tree alone
        other = write_recipe(tmp_path / "other.yml", name="other",
                             hooks={"post-bootstrap": [{"run": "exit 3"}]})
        third = imgbuild(other, "-o", out, *SMALL)
        assert third.returncode == 1 and "hook post-bootstrap[0] failed with exit status 3" in third.stderr, \
            third.stderr
        assert sorted(mounts_under(first.work)) == mounted, "another build unmounted the running one's mounts"
        assert sorted(os.listdir(first.root)) == listing, "another build removed the running one's tree"

        assert first.release() == 0, first.output()
        assert (out / "debian12" / "debian12.tar.zst").is_file() and (out / "debian12" / "manifest.json").is_file()
        assert mounts_under(out) == []
        assert sorted(os.listdir(out)) == ["debian12"], "a work dir, stage dir or lock file was left"
    finally:
        first.stop()
        force_unmount(out)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                ppid = int(Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_the_leftovers_of_killed_builds_are_cleaned_by_the_next(tmp_path: Path):
    out = tmp_path / "out"
    first = PausedBuild(tmp_path, out, "first")
    fake = out / ".work" / "other-4242" / "rootfs" / "proc"     # another recipe's run, killed long ago
    try:
        hook = _descendants(first.pid)
        first.stop()                                   # SIGKILL: no cleanup of its own
        for pid in hook:                               # the hook it had started, orphaned now
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        assert str(first.root / "proc") in mounts_under(out), "expected the killed build's mounts to be left"
        fake.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "imgbuild-test", str(fake)], check=True)
        legacy = out / ".debian12.partial-4242"        # a stage dir as older versions kept it
        legacy.mkdir()

        r = imgbuild(first.recipe, "-o", out, *SMALL, "--set", "hooks.post-files=[]")
        assert r.returncode == 0, r.stderr
        assert f"removing {first.work}, left by an interrupted run" in r.stderr
        assert mounts_under(out) == [], "mounts of dead builds are left"
        assert sorted(os.listdir(out)) == ["debian12"], "leftovers of dead builds are left"
    finally:
        first.stop()
        force_unmount(out)


def test_cache_prune_during_a_build_leaves_the_entry_under_its_overlay_alone(tmp_path: Path):
    """A build paused in a hook, its tree an overlay above the bootstrap cache entry it just kept, and `imgbuild
    cache prune --all` (and --max-size 0, and rm) meanwhile: the entry stays, named as in use; the build
    completes; the entry is intact and nothing else is left in the cache."""
    shared = Path(os.environ["IMGBUILD_CACHE"]) / "packages"
    cache = Path(tempfile.mkdtemp(prefix="imgbuild-test-cache-", dir=tmp_path))   # on the output's file system
    if shared.is_dir():            # the session's packages, linked or copied: no downloads again
        shutil.copytree(shared, cache / "packages", ignore=shutil.ignore_patterns(".*"))
    env = {**os.environ, "IMGBUILD_CACHE": str(cache), "IMGBUILD_BOOTSTRAP_IN_RAM": "0"}   # the tree kept as is
    out = tmp_path / "out"
    build = PausedBuild(tmp_path, out, "held", env=env)
    try:
        assert build.root in [Path(p) for p in mounts_under(out)], "the tree is not a mount (an overlay)"
        (entry,) = [p for p in (cache / "bootstrap").iterdir() if not p.name.startswith(".")]
        for args in (("prune", "--all"), ("prune", "--max-size", "0")):
            r = subprocess.run([str(BIN / "imgbuild"), "cache", *args], capture_output=True, text=True, env=env)
            assert r.returncode == 0, r.stderr
            assert f"kept {entry.name} (debian12): in use by a running imgbuild (pid {build.pid})" in r.stderr, r.stderr
        r = subprocess.run([str(BIN / "imgbuild"), "cache", "rm", "debian12"], capture_output=True, text=True, env=env)
        assert r.returncode == 1 and "is in use by a running imgbuild" in r.stderr, r.stderr
        assert (entry / "tree" / "etc" / "os-release").exists()
        assert build.release() == 0, build.output()
        assert f"miss, kept as {entry.name} (overlay)" in (out / "debian12" / "manifest.json").read_text()
        r = subprocess.run([str(BIN / "imgbuild"), "cache", "verify"], capture_output=True, text=True, env=env)
        assert r.returncode == 0 and f"{entry.name}  debian12: ok" in r.stdout, r.stdout + r.stderr
        assert sorted(p.name for p in (cache / "bootstrap").iterdir()) == [entry.name], "temps or locks left"
        assert mounts_under(out) == []
    finally:
        if build.proc.poll() is None:
            build.proc.kill()
            build.proc.wait()
        force_unmount(out)
        shutil.rmtree(cache, ignore_errors=True)
