"""Locks between imgbuild processes (builder/core/locks.py) and what they protect: another process holds a lock
(a real process, started here, using builder.core.locks as the build does), and this one must wait, refuse or
leave its directories alone; once that process is dead - killed with SIGKILL, no chance to clean up - its
leftovers are removable. The caches: `imgbuild cache prune` leaves entries in use and live temps alone and
removes what dead runs left. (Builds side by side, for real: tests/build/test_concurrent_builds.py.)"""
from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.build import bootcache, sealed
from builder.core import locks
from builder.core.errors import BuilderError
from builder.debian import pkgcache
from tests.conftest import BIN, REPO


class Holder:
    """Another process that takes a lock with builder.core.locks, says so on stdout, and holds it until told to
    let go (a line on stdin) or killed."""

    def __init__(self, code: str, env: dict | None = None):
        prog = ("import sys\nsys.path.insert(0, %r)\nfrom builder.core import locks\n"
                "from builder.build import bootcache\nfrom builder.debian import pkgcache\n" % str(REPO)
                + code + "\nprint('holding', flush=True)\nsys.stdin.readline()\n")
        self.proc = subprocess.Popen([sys.executable, "-c", prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()       # blocks until the lock is held (or the process failed)
        assert line == "holding\n", self.proc.communicate()[1]
        self.pid = self.proc.pid

    def release(self) -> None:
        self.proc.communicate("go\n", timeout=60)
        assert self.proc.returncode == 0

    def kill(self) -> None:
        self.proc.kill()          # SIGKILL: no cleanup of its own
        self.proc.wait()

    def __enter__(self) -> "Holder":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.kill()


def test_an_exclusive_lock_is_refused_while_its_holder_lives_and_free_once_it_is_killed(tmp_path):
    path = tmp_path / ".out.lock"
    with Holder(f"l = locks.Lock({str(path)!r}, what='building x'); l.acquire()") as h:
        mine = locks.Lock(path)
        assert not mine.acquire(wait=False)
        assert mine.holders() == [h.pid]
        assert locks.describe(mine.holders(), path) == f"pid {h.pid}"
        assert path.read_text() == f"{h.pid} building x\n"
        assert not locks.Lock(path, shared=True).acquire(wait=False)
        h.kill()
        assert mine.acquire(wait=False), "the lock of a killed process is still held"
        assert mine.holders() == [os.getpid()]
        mine.release()


def test_shared_holders_exclude_only_exclusive_ones(tmp_path):
    d = tmp_path / "entry"
    d.mkdir()
    with Holder(f"l = locks.Lock({str(locks.lock_path(d))!r}, shared=True); l.acquire()") as h:
        with locks.using(d):                                   # another reader: fine
            pass
        with locks.removable(d) as free:
            assert not free
        assert not locks.is_stale(d)
        assert locks.owner(d) == f"pid {h.pid}"
        h.release()
    with locks.removable(d) as free:
        assert free
    assert not locks.lock_path(d).exists(), "the remover's lock file stays behind"


def test_a_claimed_directory_is_stale_only_when_its_owner_is_dead(tmp_path):
    d = tmp_path / ".work" / "debian12-4242"
    code = f"c = locks.claim(__import__('pathlib').Path({str(d)!r})); c.__enter__()"
    with Holder(code) as h:
        assert d.is_dir() and locks.lock_path(d).exists()
        assert not locks.is_stale(d)
        with locks.removable(d) as free:
            assert not free
        h.kill()
        assert locks.is_stale(d)
        with locks.removable(d) as free:
            assert free
            d.rmdir()
    assert os.listdir(d.parent) == [], "a lock file was left"
    assert not locks.is_stale(d), "a directory that is not there is not stale"


def test_a_lock_file_removed_by_its_holder_is_not_the_one_a_waiter_ends_up_holding(tmp_path):
    """The holder removes its lock file on release; a waiter blocked on that file must not think it holds the
    lock (a third process could then take a fresh file at the same path alongside it)."""
    path = tmp_path / ".x.lock"
    first = locks.Lock(path, remove=True)
    assert first.acquire(wait=False)
    waiter = subprocess.Popen([sys.executable, "-c", (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); from builder.core import locks\n"
        f"l = locks.Lock({str(path)!r}); print('waiting', flush=True); l.acquire(); print('got', flush=True);"
        f" sys.stdin.readline()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert waiter.stdout.readline() == "waiting\n"
        deadline = time.monotonic() + 120
        while waiter.pid not in _waiters(path):      # until it is blocked in flock() on the file we hold
            assert waiter.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        first.release()
        assert waiter.stdout.readline() == "got\n"
        assert path.exists(), "the waiter holds a lock on a file that is no longer there"
        assert locks.holders(path) == [waiter.pid]
        assert not locks.Lock(path).acquire(wait=False)
    finally:
        waiter.kill()
        waiter.wait()


def _waiters(path: Path) -> list[int]:
    st = os.stat(path)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    out = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 6 and parts[1] == "->" and parts[6] == want:
            out.append(int(parts[5]))
    return out


def test_a_symlink_in_place_of_a_lock_file_is_refused_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    path = tmp_path / ".out.lock"
    path.symlink_to(victim)
    with pytest.raises(BuilderError, match="symbolic link"):
        locks.Lock(path).acquire()
    assert victim.read_text() == "keep me\n" and path.is_symlink()


def test_lock_files_are_private_and_orphans_go(tmp_path):
    d = tmp_path / "w"
    with locks.claim(d):
        assert os.stat(locks.lock_path(d)).st_mode & 0o777 == 0o600
        d.rmdir()
    orphan = tmp_path / ".gone.lock"
    orphan.write_text("")
    held = tmp_path / ".busy.lock"
    with Holder(f"l = locks.Lock({str(held)!r}); l.acquire()"):
        locks.clean_orphan_locks(tmp_path)
        assert not orphan.exists() and held.exists()


# ------------------------------------------------------------------------------------ the bootstrap cache


def _entry(base: Path, name: str, key: str, used: float) -> Path:
    """A sealed entry as a build keeps it: its tree, listing and meta, in a 0700 directory."""
    d = base / key
    (d / bootcache.TREE / "etc").mkdir(parents=True)
    os.chmod(base, 0o700)
    os.chmod(d, 0o700)
    (d / bootcache.TREE / "etc" / "hostname").write_text(f"tree of {key}\n")
    (d / bootcache.LISTING).write_text(json.dumps(sealed.seal(d / bootcache.TREE)))
    (d / bootcache.META).write_text(json.dumps({
        "name": name, "inputs": {"format": bootcache.FORMAT}, "created": used, "last_used": used, "size": 100}))
    return d


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "imgbuild"), *args], capture_output=True, text=True, env=env, timeout=300)


def test_cache_prune_leaves_entries_in_use_and_live_temps_alone(tmp_path):
    env = {**os.environ, "IMGBUILD_CACHE": str(tmp_path / "cache")}
    base = tmp_path / "cache" / "bootstrap"
    used = _entry(base, "web", "a" * 24, 1)
    idle = _entry(base, "db", "b" * 24, 2)
    live_tmp = base / f".{'c' * 24}.4242.tmp"
    dead_tmp = base / f".{'d' * 24}.4343.tmp"
    (dead_tmp / bootcache.TREE).mkdir(parents=True)
    (dead_tmp / bootcache.TREE / "half").write_bytes(b"half")
    reader = Holder(f"c = locks.using({str(used)!r}); c.__enter__()", env=env)          # a build restoring
    saver = Holder(f"c = locks.claim(__import__('pathlib').Path({str(live_tmp)!r})); c.__enter__()", env=env)
    try:
        (live_tmp / bootcache.TREE).mkdir()
        (live_tmp / bootcache.TREE / "file").write_bytes(b"being written")
        r = _cli("cache", "prune", "--all", env=env)
        assert r.returncode == 0, r.stderr
        assert f"removed {'b' * 24} (db" in r.stdout and "a" * 24 not in r.stdout
        assert f"kept {'a' * 24} (web): in use by a running imgbuild (pid {reader.pid})" in r.stderr
        assert (used / bootcache.TREE / "etc" / "hostname").exists(), "prune removed an entry a build is reading"
        assert (live_tmp / bootcache.TREE / "file").read_bytes() == b"being written", \
            "prune removed the temp of a running build"
        assert not idle.exists() and not dead_tmp.exists()
        assert [e.key for e in bootcache.entries(base)] == ["a" * 24]
        # the reader is done, the saver killed: now both go
        reader.release()
        saver.kill()
        r = _cli("cache", "prune", "--all", env=env)
        assert r.returncode == 0 and f"removed {'a' * 24} (web" in r.stdout, r.stderr
        assert sorted(os.listdir(base)) == [], "left behind: temps or lock files"
    finally:
        reader.__exit__()
        saver.__exit__()


def _open(data: dict, name: str = "web"):
    """open_entry as a build calls it; returns the entry (or None) and the stack holding it."""
    stack = contextlib.ExitStack()
    return bootcache.open_entry(data, name, stack), stack


def test_a_damaged_entry_in_use_is_not_removed_under_its_reader(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    data = {"format": bootcache.FORMAT, "x": 1}
    d = _entry(bootcache.root_dir(), "web", bootcache.key_of(data), 1)
    e, stack = _open(data)
    assert e is not None and e.tree == d / bootcache.TREE
    stack.close()
    assert not locks.lock_path(d).exists(), "the entry's lock file outlived the last build holding it"
    (d / bootcache.TREE / "etc" / "hostname").write_text("changed\n")
    with Holder(f"c = locks.using({str(d)!r}); c.__enter__()", env=dict(os.environ)) as h:
        assert _open(data)[0] is None     # not used: a miss
        assert "/etc/hostname: size" in caplog.text and "damaged" in caplog.text
        assert d.is_dir(), "removed while another build holds it"
        h.release()
    assert _open(data)[0] is None
    assert not d.exists()


@pytest.mark.parametrize("change", ["ctime", "mode", "added", "removed", "entry mode", "listing"])
def test_a_changed_entry_is_found_before_use(tmp_path, monkeypatch, caplog, change):
    """Metadata only, and still: a file written with its mtime and size set back is found by its ctime."""
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    data = {"format": bootcache.FORMAT, "x": change}
    d = _entry(bootcache.root_dir(), "web", bootcache.key_of(data), 1)
    f = d / bootcache.TREE / "etc" / "hostname"
    st = f.stat()
    if change == "ctime":
        f.write_text(f.read_text().upper())           # same size
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        want = "/etc/hostname: ctime"
    elif change == "mode":
        os.chmod(f, 0o4755)
        want = "/etc/hostname: mode 644 -> 4755"
    elif change == "added":
        (f.parent / "passwd").write_text("x")
        want = "/etc/passwd: added"
    elif change == "removed":
        f.unlink()
        want = "/etc/hostname: removed"
    elif change == "entry mode":
        os.chmod(d, 0o755)
        want = "not a 0700 directory"
    else:
        (d / bootcache.LISTING).write_text("[not json")
        want = "listing.json"
    assert _open(data)[0] is None
    assert want in caplog.text, caplog.text
    assert not d.exists()


def test_two_builds_keeping_one_key_the_first_stays(tmp_path, monkeypatch):
    """Two builds that missed the same key both keep it: the first one's entry stays; the second builds on its
    own temp, which goes when that build ends."""
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    data = {"format": bootcache.FORMAT, "x": 2}
    trees = []
    for text in ("one", "two"):
        tree = tmp_path / text
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "hostname").write_text(text + "\n")
        trees.append(tree)
    with contextlib.ExitStack() as first_build:
        first = bootcache.keep(data, "web", trees[0], first_build)
        assert first is not None and first.moved and not trees[0].exists()
        assert first.entry.path == bootcache.root_dir() / bootcache.key_of(data)
        with contextlib.ExitStack() as second_build:
            second = bootcache.keep(data, "web", trees[1], second_build)
            assert second is not None and second.entry.path.name.endswith(".tmp")
            assert (second.entry.tree / "etc" / "hostname").read_text() == "two\n"
        assert not second.entry.path.exists(), "the second build's temp outlived it"
    assert (first.entry.tree / "etc" / "hostname").read_text() == "one\n"
    assert sorted(p.name for p in bootcache.root_dir().iterdir()) == [bootcache.key_of(data)]
    assert _open(data)[0] is not None


def test_a_failed_keep_leaves_the_tree_where_it_was_and_no_temp(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    data = {"format": bootcache.FORMAT, "x": 3}
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("one\n")

    def broken(_tree):
        raise OSError(5, "Input/output error", str(_tree))
    monkeypatch.setattr(bootcache.sealed, "seal", broken)
    with contextlib.ExitStack() as build:
        assert bootcache.keep(data, "web", tree, build) is None
    assert (tree / "etc" / "hostname").read_text() == "one\n"
    assert "could not keep the bootstrap in the cache" in caplog.text and "Input/output error" in caplog.text
    assert sorted(os.listdir(bootcache.root_dir())) == []

# -------------------------------------------------------------------------------------- the package cache


def _debs(cache: Path) -> list[Path]:
    d = cache / "packages" / "deb"
    d.mkdir(parents=True)
    out = []
    for n in ("vim_1_amd64.deb", "less_1_amd64.deb"):
        (d / n).write_bytes(n.encode())
        out.append(d / n)
    return out


def test_package_cache_prune_waits_for_the_builds_using_it(tmp_path):
    env = {**os.environ, "IMGBUILD_CACHE": str(tmp_path / "cache")}
    debs = _debs(tmp_path / "cache")
    with Holder("c = pkgcache.using(); c.__enter__()", env=env) as h:
        prune = subprocess.Popen([str(BIN / "imgbuild"), "cache", "prune", "--packages"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        try:
            line = _line(prune.stderr, "package cache")
            assert f"in use by a running imgbuild (pid {h.pid}); waiting" in line
            assert prune.poll() is None and all(p.exists() for p in debs), "pruned under a build using them"
            h.release()
            out, err = prune.communicate(timeout=120)
        finally:
            if prune.poll() is None:
                prune.kill()
                prune.wait()
    assert prune.returncode == 0, err
    assert "removed 2 packages" in out and not any(p.exists() for p in debs)


def test_fit_leaves_a_cache_in_use_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    debs = _debs(tmp_path / "cache")
    dead_part = debs[0].with_name(".part-4242-1-x.deb")
    dead_part.write_bytes(b"half")
    with Holder("c = pkgcache.using(); c.__enter__()", env=dict(os.environ)) as h:
        assert pkgcache.fit(0) == (0, 0)
        assert all(p.exists() for p in debs) and dead_part.exists()
        h.release()
    assert pkgcache.fit(0)[0] == 2
    assert not any(p.exists() for p in debs) and not dead_part.exists()


def _line(stream, word: str, timeout: float = 120) -> str:
    """The first line of stream holding word (blocking; fails after timeout or at its end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([stream], [], [], 1)
        if r:
            line = stream.readline()
            assert line, f"ended without a line containing {word!r}"
            if word in line:
                return line
    pytest.fail(f"no line containing {word!r}")
